"""Label check plots: frame energy against the label track for a few clips per source.

``python -m vadnet.model.training.sources_plots CACHE_DIR OUT_DIR`` writes ``OUT_DIR/<source>.png``
(the pictures in docs/labels/). Each row is one clip: waveform (grey, right axis), frame
energy in dB (blue), the clip's threshold (dashed) and the labels (orange band).
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .labels import HOP, frame_energy_db, frame_labels, speech_band, threshold_db  # noqa: E402
from .sources import SAMPLE_RATE, load_cache  # noqa: E402


def plot_source(clips: list[tuple[str, np.ndarray, np.ndarray]], title: str, out: Path) -> None:
    """Plot ``(name, (n,) float32 audio, (frames,) labels)`` rows into ``out``."""
    fig, axes = plt.subplots(len(clips), 1, figsize=(11, 1.9 * len(clips)), squeeze=False)
    for ax, (name, x, lab) in zip(axes[:, 0], clips, strict=True):
        e = frame_energy_db(speech_band(x))
        t = (np.arange(e.size) + 0.5) * HOP / SAMPLE_RATE
        ax.plot(t, e, color="tab:blue", lw=1)
        ax.axhline(threshold_db(e), color="k", ls="--", lw=0.8)
        ax.fill_between(t, -100, -100 + 100 * lab, step="mid", color="tab:orange", alpha=0.25)
        ax.set_ylim(-100, 0)
        ax.set_ylabel("dB")
        ax.set_title(name, fontsize=7, loc="left")
        wav = ax.twinx()
        wav.plot(np.arange(x.size) / SAMPLE_RATE, x, color="0.5", lw=0.3, alpha=0.6)
        lim = max(float(np.abs(x).max()), 1e-4)
        wav.set_ylim(-lim, lim)
        wav.set_yticks([])
        ax.set_xlim(0, max(x.size / SAMPLE_RATE, 1e-3))
    axes[-1, 0].set_xlabel("s")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=70)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cache_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--per-source", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--group", choices=["source", "speaker"], default="source")
    ap.add_argument("--paths", nargs="*", help="plot these clips (path suffixes) as one figure")
    ap.add_argument("--name", default="selected", help="file name (no .png) for --paths")
    args = ap.parse_args(argv)
    speech, _ = load_cache(args.cache_dir)
    if args.paths:
        pick = [i for i, c in enumerate(speech.clips) if c["path"].endswith(tuple(args.paths))]
        # labels recomputed with the current rule: the cache may be an older build
        rows = [
            (speech.clips[i]["path"][-70:], speech.clip(i), frame_labels(speech.clip(i)))
            for i in pick
        ]
        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        plot_source(rows, args.name, Path(args.out_dir) / f"{args.name}.png")
        return
    groups: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(speech.clips):
        key = c["source"] if args.group == "source" else c["speaker"].replace("/", "_")
        groups[key.replace(":", "_")].append(i)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    for key, idx in sorted(groups.items()):
        pick = sorted(rng.sample(idx, min(args.per_source, len(idx))))
        rows = [
            (
                f"{speech.clips[i]['speaker']}  {speech.clips[i]['path'][-70:]}",
                speech.clip(i),
                speech.clip_labels(i),
            )
            for i in pick
        ]
        plot_source(rows, f"{key}: {len(idx)} clips", out_dir / f"{key}.png")


if __name__ == "__main__":
    main()
