"""How much does the calibrated threshold depend on which dev mixtures it was set on?

    python bench/calibration_draws.py --cache-dir cache/sources --model runs/v33/best.pt \\
        --examples 400 --examples 2000 --draws 4

For each model, each calibration size N (``--examples``) and each draw d (the dev
protocol's mixtures from seed d, the first N, as ``vadnet train --seed d`` would draw
them): the threshold ``train.best_f1_threshold`` picks at the cap (``--cap``, default the
training default), and the dev F1, recall and precision that threshold gives on the 400
seed-0 dev mixtures every benchmark scores, with the share of ``compare.py``'s held-out
music and other noise frames it calls speech. The spread over draws is what a retrain
with another seed would see from calibration alone.

Why: the cap binds, so the threshold is set by the few speech-free frames a model likes
most, and 400 dev mixtures hold only ~115 speech-free ones.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import (  # noqa: E402
    add_model_arguments,
    compare_backgrounds,
    frame_probs,
    load_dev,
    model_paths,
)


def main(argv: list[str] | None = None) -> int:
    from vadnet.model.checkpoint import load_model
    from vadnet.model.training.data import fixed_blocks
    from vadnet.model.training.metrics import frame_metrics
    from vadnet.model.training.train import TrainConfig, best_f1_threshold, make_mixers, predict

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(ap)
    ap.add_argument("--examples", type=int, action="append", help="calibration size (repeat)")
    ap.add_argument("--draws", type=int, default=4, help="dev draws: seeds 0..DRAWS-1")
    ap.add_argument("--cap", type=float, default=TrainConfig.calibration_max_false_alarm)
    ap.add_argument("--dev-examples", type=int, default=400, help="the scored dev set")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    cpu = torch.device("cpu")
    sizes = args.examples or [400, TrainConfig.calibration_examples]
    dev = load_dev(args.cache_dir, args.dev_examples)
    _, dev_mixer = make_mixers(TrainConfig(cache_dir=args.cache_dir))
    music, noise = compare_backgrounds(args.cache_dir)
    rows = []
    for path in model_paths(args):
        model = load_model(path)
        scored = predict(model, dev.audio, cpu).ravel()
        p_music, p_noise = frame_probs(model, music.clips), frame_probs(model, noise.clips)
        for draw in range(args.draws):
            parts = [
                (predict(model, x, cpu), y) for x, y in fixed_blocks(dev_mixer, max(sizes), draw)
            ]
            probs, labels = (np.concatenate(p) for p in zip(*parts, strict=True))
            for n in sizes:
                t = best_f1_threshold(probs[:n], labels[:n], args.cap)
                m = frame_metrics(scored, dev.labels.ravel(), t)
                rows.append({"model": path, "examples": n, "draw": draw, "threshold": t,
                             "f1": m["f1"], "recall": m["recall"], "precision": m["precision"],
                             "fa_music": float(np.mean(p_music >= t)),
                             "fa_noise": float(np.mean(p_noise >= t))})  # fmt: skip
    out = [f"Cap {args.cap:.2%}; scored on the {args.dev_examples} seed-0 dev mixtures.", ""]
    out += [
        "| model | examples | draw | threshold | dev F1 | recall | precision | FA music | FA noise |"
    ]
    out += ["|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: (r["model"], r["examples"], r["draw"])):
        out.append(
            f"| {r['model']} | {r['examples']} | {r['draw']} | {r['threshold']:.3f} "
            f"| {r['f1']:.3f} | {r['recall']:.3f} | {r['precision']:.3f} "
            f"| {r['fa_music']:.2%} | {r['fa_noise']:.2%} |"
        )
    sys.stdout.write("\n".join(out) + "\n")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": sys.argv, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
