"""Do models with seconds of context hold up on long streams?

    python bench/long_streams.py --cache-dir cache/sources --model model/weights/vadnet.pt \\
        --model runs/v29/vadnet.pt

Training and the dev set use 6 s mixtures, and every frame's context reaches back before
an example's start into zeros: the whole of it for a net with 8 s of context. A live stream
has real audio there. So each model (side by side, one run) is scored three ways, frame
ROC-AUC and, at the default threshold 0.5, F1, precision and recall:

* ``6 s``: the 400 dev examples, as training evaluates them;
* ``joined``: the same frames with ``--join`` consecutive examples played as one stream
  (10: 60 s). Same labels; only what lies before each example changes: the end of another
  mixture (other speakers, background and level) instead of zeros. An abrupt change, as
  when a call is transferred;
* ``long``: ``--long-examples`` (40) new mixtures of ``--long-s`` (60) seconds from the
  same dev protocol: one background and level per mixture, utterances placed as in 6 s
  ones. The steady stream a model with long context is meant for.

Why: a model that learned to lean on the zeros at an example's start would look good on
dev and worse on real streams; this is how we would see it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import add_model_arguments, frame_probs, load_dev, model_paths  # noqa: E402

KEYS = ("auc", "f1", "precision", "recall")


VIEWS = ("6 s", "joined", "long")


def score(model, dev, long, join: int) -> dict:
    """{view: {auc, f1, precision, recall}} at threshold 0.5 for each of ``VIEWS``."""
    from vadnet.model.training.metrics import frame_metrics

    n, t = dev.audio.shape
    if t % model.hop_samples:
        raise ValueError("dev examples must be whole hops long to join them frame for frame")
    n = n // join * join  # whole streams only
    audio, labels = dev.audio[:n], dev.labels[:n]
    probs = {
        "6 s": frame_probs(model, [audio[i : i + 32] for i in range(0, n, 32)]),
        "joined": frame_probs(model, [audio.reshape(n // join, join * t)]),
        "long": frame_probs(model, [long.audio[i : i + 4] for i in range(0, len(long.audio), 4)]),
    }
    truth = {"6 s": labels, "joined": labels, "long": long.labels}
    return {
        view: {k: frame_metrics(p, truth[view].reshape(-1), 0.5)[k] for k in KEYS}
        for view, p in probs.items()
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_model_arguments(ap)
    ap.add_argument("--dev-examples", type=int, default=400, help="compare.py's default")
    ap.add_argument("--join", type=int, default=10, help="examples per stream (10 = 60 s)")
    ap.add_argument("--long-examples", type=int, default=40, help="long mixtures to score")
    ap.add_argument("--long-s", type=float, default=60.0, help="seconds per long mixture")
    args = ap.parse_args(argv)
    if args.join < 2 or args.dev_examples < args.join:
        ap.error("--join must be >= 2 and <= --dev-examples")
    if args.long_examples < 1 or args.long_s < 1:
        ap.error("--long-examples and --long-s must be >= 1")
    from vadnet.model.checkpoint import load_model

    torch.set_num_threads(1)
    dev = load_dev(args.cache_dir, args.dev_examples)
    long = load_dev(args.cache_dir, args.long_examples, seed=1, example_s=args.long_s)
    results = {}
    for path in model_paths(args):
        model = load_model(path).eval()
        results[path] = {"context_s": model.receptive_field_s, **score(model, dev, long, args.join)}
    print(f"Command: `python bench/long_streams.py {' '.join(sys.argv[1:])}`\n")
    print(f"6 s: {args.dev_examples // args.join * args.join} dev examples; joined: the same,")
    print(f"{args.join} to a stream; long: {args.long_examples} dev-protocol mixtures of")
    print(f"{args.long_s:g} s ({100 * long.labels.mean():.1f} % speech frames). Threshold 0.5.\n")
    for key, name in zip(KEYS, ("ROC-AUC", "F1", "precision", "recall"), strict=True):
        print(f"| model | context | {name} 6 s | joined | long |")
        print("|---|---:|---:|---:|---:|")
        for path, r in results.items():
            cells = " | ".join(f"{r[view][key]:.4f}" for view in VIEWS)
            print(f"| {path} | {r['context_s']:.2f} s | {cells} |")
        print()
    if args.out:
        Path(args.out).write_text(json.dumps({"command": sys.argv, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
