"""Where false alarms on music come from: per held-out recording, and on synthetic music.

    python bench/music_fa.py --cache-dir cache/sources --model model/weights/vadnet.pt \\
        --model runs/v4/vadnet.pt

For each model (side by side, one run), the share of 16 ms frames called speech (P >= 0.5):

* on each held-out music recording: the same 30 s pieces at -20 dBFS that
  ``bench/compare.py`` scores as "FA music", grouped by the file they were cut from;
* on synthetic music from ``model/training/augment.py``, drawn from seeds training never uses
  (``default_rng([7919, i])``; training draws from ``(seed, index)`` pairs of its own):
  ``lead`` (one legato lead voice alone), ``notes`` (one voice of separate notes alone)
  and ``melody`` (the training mix's 1-3 voices with drums), ``--clips`` of 6 s each, at
  -20 dBFS.

With ``--training-music``, also 20 minutes of the *training* music (60 s pieces, every
recording's first piece first), by source. Not an evaluation (training saw these files):
a fit diagnostic. If the net calls as much of its own training music speech as of
held-out music, more music will not help by itself; the training objective decides (v29:
0.28 % and 0.45 % of its training music against 0.30 % of held-out music, docs/model.md).

Not a target: a map of the failure modes, for choosing what to train on next.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import (  # noqa: E402
    LEVEL,
    LEVEL_DBFS,
    add_model_arguments,
    compare_backgrounds,
    frame_probs,
    load_backgrounds,
    model_paths,
)

SR = 16_000


def synthetic(kind: str, count: int, seconds: float = 6.0) -> list[np.ndarray]:
    """``count`` clips of one kind of synthetic music at -20 dBFS."""
    from vadnet.model.training import augment

    n, out = int(seconds * SR), []
    for i in range(count):
        rng = np.random.default_rng([7919, i])
        if kind == "melody":
            x = augment.melody(rng, n)
        else:
            scale = augment.SCALES[rng.integers(len(augment.SCALES))]
            root = int(rng.integers(40, 76))
            voice = augment.lead_voice if kind == "lead" else augment.note_voice
            x = voice(rng, n, root, scale)
        out.append((x * (LEVEL / (np.std(x) + 1e-12))).astype(np.float32))
    return out


def false_alarms(model, clips: list[np.ndarray]) -> tuple[int, int]:
    """(frames with P >= 0.5, frames) over ``clips``."""
    p = frame_probs(model, clips)
    return int((p >= 0.5).sum()), p.size


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(ap)
    ap.add_argument("--clips", type=int, default=100, help="synthetic clips per kind")
    ap.add_argument(
        "--training-music",
        action="store_true",
        help="also the training split's music (a fit diagnostic, not an evaluation)",
    )
    args = ap.parse_args(argv)
    from vadnet.model.checkpoint import load_model

    torch.set_num_threads(1)
    music, _ = compare_backgrounds(args.cache_dir)
    sets: dict[str, list[np.ndarray]] = defaultdict(list)
    for x, name in zip(music.clips, music.recordings, strict=True):
        sets[f"held-out {name}"].append(x)
    for kind in ("lead", "notes", "melody"):
        sets[f"synthetic {kind}"] = synthetic(kind, args.clips)
    if args.training_music:  # 20 min in 60 s pieces, every recording's first piece first
        fit, _ = load_backgrounds(args.cache_dir, 60.0, 1200.0, LEVEL_DBFS, split="train")
        for x, source in zip(fit.clips, fit.sources, strict=True):
            sets[f"training music (fit only) {source}"].append(x)
    paths = model_paths(args)
    results = {}
    for p in paths:
        model = load_model(p).eval()
        results[p] = {k: false_alarms(model, v) for k, v in sets.items()}
    sys.stdout.write("| audio | seconds | " + " | ".join(paths) + " |\n")
    sys.stdout.write("|---|---:|" + "---:|" * len(paths) + "\n")
    for k, v in sets.items():
        cells = [f"{100 * results[p][k][0] / results[p][k][1]:.2f} %" for p in paths]
        seconds = sum(x.size for x in v) / SR
        sys.stdout.write(f"| {k} | {seconds:.0f} | " + " | ".join(cells) + " |\n")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": sys.argv, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
