"""Is there a threshold at which vadnet meets the music target without losing speech?

    python bench/threshold_sweep.py --cache-dir cache/sources --model model/weights/vadnet.pt

For each model (side by side, one run) and each threshold: dev F1, precision and recall
on the same 400 dev mixtures that ``bench/compare.py`` scores, and the share of frames
called speech (P >= threshold) on its 300 s of held-out music and 300 s of other noise at
-20 dBFS; plus the highest P on music, the threshold that music false alarms need to be 0.
Then the same figures for every model at dev recall 0.75 and 0.8, each at its own
threshold: run-to-run spread moves where calibration puts the operating point, so models
are compared there, on one curve, rather than at 0.5. Last, each model at the threshold
that today's exact calibration (``train.best_f1_threshold``, at the training default cap
or each ``--cap``) picks: where its 0.5 would be if it were calibrated again. "free FA" is
the share of the frames of the speech-free dev examples called speech, the quantity the
calibration caps; "late ms" how much non-speech after each labelled speech offset (within
256 ms) is called speech on average (``metrics.edge_overhang``): false alarms that delay a
speech end rather than start a false segment on music or noise.

Why: the default threshold is calibrated on dev (``docs/model.md``), and the issue's
music target is at that default. This shows what moving the operating point would buy.
Silero's figures at 0.5 are in ``bench/results/compare.md`` (dev F1 0.828, FA music 0).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from vadnet.model.training.train import TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import (  # noqa: E402
    HOP_S,
    add_model_arguments,
    compare_backgrounds,
    frame_probs,
    load_dev,
    model_paths,
)

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
# Dev recalls to compare models at: around the bundled models' calibrated 0.79.
RECALLS = (0.75, 0.8)
CAP = TrainConfig.calibration_max_false_alarm  # the training default: what ships


def sweep(model, dev, music, noise, thresholds, recalls, caps=(CAP,)) -> dict:
    """One model's rows: {"music_max": P, "rows": [...], "matched": [...]}.

    ``rows``: one per threshold, {threshold, dev_f1, dev_precision, dev_recall, fa_music,
    fa_noise, dev_free_fa}. ``matched``: the same, one per dev recall in ``recalls``, at
    the threshold that gives that recall; comparing models there takes calibration out of
    the comparison. ``calibrated``: the same at the threshold exact calibration picks, one
    per cap in ``caps`` (with a "cap" key).
    """
    from vadnet.model.training.train import best_f1_threshold

    p_dev = frame_probs(model, [dev.audio[i : i + 32] for i in range(0, len(dev.audio), 32)])
    p_music, p_noise = frame_probs(model, music.clips), frame_probs(model, noise.clips)
    speech = p_dev[dev.labels.reshape(-1) > 0.5]
    at_recall = [float(np.quantile(speech, 1.0 - r, method="higher")) for r in recalls]
    calibrated = [best_f1_threshold(p_dev.reshape(dev.labels.shape), dev.labels, c) for c in caps]
    row = lambda t: _row(t, p_dev, dev.labels, p_music, p_noise)  # noqa: E731
    return {
        "music_max": float(p_music.max()),
        "rows": [row(t) for t in thresholds],
        "matched": [row(t) for t in at_recall],
        "calibrated": [{"cap": c, **row(t)} for c, t in zip(caps, calibrated, strict=True)],
    }


def _row(t: float, p_dev, labels, p_music, p_noise) -> dict:
    from vadnet.model.training.metrics import edge_overhang, frame_metrics

    m = frame_metrics(p_dev, labels, t, with_auc=False)
    p_dev = p_dev.reshape(labels.shape)
    free = p_dev[labels.sum(axis=1) == 0]
    edges = edge_overhang(p_dev, labels, t)
    return {
        "dev_free_fa": float(np.mean(free >= t)) if free.size else float("nan"),
        "dev_late_ms": 1000 * HOP_S * edges["late_frames"],
        "threshold": t,
        "dev_f1": m["f1"],
        "dev_precision": m["precision"],
        "dev_recall": m["recall"],
        "fa_music": float(np.mean(p_music >= t)),
        "fa_noise": float(np.mean(p_noise >= t)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(ap)
    ap.add_argument("--dev-examples", type=int, default=400, help="compare.py's default")
    ap.add_argument(
        "--cap",
        type=float,
        action="append",
        help="calibration cap(s) on speech-free dev false alarms for the last table"
        f" (default {CAP}); repeat to compare",
    )
    args = ap.parse_args(argv)
    from vadnet.model.checkpoint import load_model

    torch.set_num_threads(1)
    dev = load_dev(args.cache_dir, args.dev_examples)
    music, noise = compare_backgrounds(args.cache_dir)
    paths, caps = model_paths(args), tuple(args.cap or (CAP,))
    results = {
        p: sweep(load_model(p).eval(), dev, music, noise, THRESHOLDS, RECALLS, caps) for p in paths
    }
    out = sys.stdout
    for p, r in results.items():
        out.write(f"\n{p} (highest P on music: {r['music_max']:.4f})\n\n")
        _table(out, r["rows"])
    out.write("\nAt matched dev recall (each model at its own threshold):\n\n")
    _table(out, [{"model": p, **row} for p, r in results.items() for row in r["matched"]])
    out.write("\nAt the threshold exact calibration picks, for each cap on free FA:\n\n")
    _table(
        out,
        [
            {"model": f"{p} @{row['cap']:.2%}", **row}
            for p, r in results.items()
            for row in r["calibrated"]
        ],
    )
    if args.out:
        Path(args.out).write_text(json.dumps({"command": sys.argv, "results": results}, indent=1))
    return 0


def _table(out, rows: list[dict]) -> None:
    model = "model" in rows[0]
    out.write(("| model " if model else "") + "| threshold | dev F1 | precision | recall ")
    out.write("| free FA | late ms | FA music | FA noise |\n")
    out.write(("|---" if model else "") + "|---:" * 8 + "|\n")
    for row in rows:
        out.write(
            (f"| {row['model']} " if model else "")
            + f"| {row['threshold']:.3f} | {row['dev_f1']:.4f} | {row['dev_precision']:.3f} "
            f"| {row['dev_recall']:.3f} | {100 * row['dev_free_fa']:.2f} % "
            f"| {row['dev_late_ms']:.0f} "
            f"| {100 * row['fa_music']:.2f} % "
            f"| {100 * row['fa_noise']:.2f} % |\n"
        )


if __name__ == "__main__":
    sys.exit(main())
