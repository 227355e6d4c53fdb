"""Second opinion on the cache: where does an independent VAD (Silero) hear speech?

``python -m vadnet.model.training.sources_vet CACHE_DIR [--kind noise|speech]`` prints, per source,
the share of time Silero calls speech, then the clips that disagree most with our labels
(noise clips with speech in them, speech clips with little). It flags files to look at and
listen to; it does not decide (Silero is not ground truth, and it needs the optional
``silero-vad`` package from the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import numpy as np
import torch

from .sources import load_cache

WINDOW = 512  # Silero's window at 16 kHz (32 ms)


def silero_probs(model, x: np.ndarray) -> np.ndarray:
    """``(n,)`` float32 at 16 kHz -> ``(n // 512,)`` Silero speech probabilities."""
    model.reset_states()
    n = x.shape[0] // WINDOW
    out = np.empty(n, np.float32)
    with torch.no_grad():
        for i in range(n):
            out[i] = float(model(torch.from_numpy(x[i * WINDOW : (i + 1) * WINDOW]), 16000))
    return out


def main(argv: list[str] | None = None) -> None:
    from silero_vad import load_silero_vad

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache_dir")
    ap.add_argument("--kind", choices=["noise", "speech"], default="noise")
    ap.add_argument("--max-seconds", type=float, default=60.0, help="per clip, to bound time")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--sources", default="", help="comma-separated sources to check (default all)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load_silero_vad()
    speech, noise = load_cache(args.cache_dir)
    cs = noise if args.kind == "noise" else speech
    per_source: dict[str, list[float]] = defaultdict(list)
    rows = []
    keep = set(filter(None, args.sources.split(",")))
    for i, c in enumerate(cs.clips):
        if keep and c["source"] not in keep:
            continue
        x = cs.clip(i)[: int(args.max_seconds * 16000)]
        if x.shape[0] < WINDOW:
            continue
        p = silero_probs(model, x)
        frac = float((p > 0.5).mean())
        per_source[c["source"]].append(frac)
        ours = float(cs.clip_labels(i).mean()) if args.kind == "speech" else 0.0
        rows.append((frac - ours, frac, ours, c["path"]))
    out = sys.stdout
    out.write(f"{'source':16s} clips  mean silero speech share\n")
    for s, v in sorted(per_source.items()):
        out.write(f"{s:16s} {len(v):5d}  {np.mean(v):.3f}\n")
    rows.sort(key=lambda r: abs(r[0]), reverse=True)
    out.write("\nlargest disagreement (silero share, our share, path):\n")
    for _, frac, ours, path in rows[: args.top]:
        out.write(f"{frac:.2f} {ours:.2f} {path}\n")


if __name__ == "__main__":
    main()
