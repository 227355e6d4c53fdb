"""The audio ``bench/compare.py`` scores on, all from the training-data cache.

* dev: exactly the fixed dev set training evaluates on (the dev mixer of
  ``make_mixers(TrainConfig(cache_dir=...))``, ``fixed_set(dev_mixer, count, seed=0)``):
  speakers and sources never trained on, ``(N, 96000)`` audio with ``(N, 375)`` labels.
* music / noise: the dev split's background clips with no speech, split by their "kind"
  ("music" vs "sfx" + "ambient"), cut into pieces of at most ``max_clip_s`` taken
  round-robin over the clips until ``max_total_s`` per group; each piece is scaled to ``level_dbfs`` RMS (the mixer's
  central level) so the result does not depend on how loud a recording happened to be.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import numpy as np

SR = 16_000
HOP_S = 256 / SR  # every bench scores on vadnet's 16 ms frame grid


@dataclass
class DevSet:
    """``audio`` (N, T) float32 at 16 kHz, ``labels`` (N, T / 256) in {0, 1}."""

    audio: np.ndarray
    labels: np.ndarray

    @property
    def seconds(self) -> float:
        return self.audio.size / SR


@dataclass
class ClipGroup:
    """Background-only clips of one group: ``clips`` is a list of (T_i,) float32 at 16 kHz."""

    name: str
    clips: list[np.ndarray] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(c.size for c in self.clips) / SR


def load_dev(cache_dir: str, count: int, seed: int = 0) -> DevSet:
    """The fixed dev set of ``count`` 6 s mixtures, as training builds it."""
    from vadnet.model.training.data import fixed_set
    from vadnet.model.training.train import TrainConfig, make_mixers

    _, dev_mixer = make_mixers(TrainConfig(cache_dir=cache_dir, seed=seed))
    audio, labels = fixed_set(dev_mixer, count, seed)
    return DevSet(audio.astype(np.float32), labels.astype(np.float32))


# compare.py's held-out backgrounds (its full run's defaults): pieces of at most 30 s,
# 300 s of music and 300 s of other noise, each piece at -20 dBFS RMS, the mixer's central
# level, so that a result does not depend on how loud a recording happened to be.
PIECE_S, GROUP_S, LEVEL_DBFS = 30.0, 300.0, -20.0


def load_backgrounds(
    cache_dir: str,
    max_clip_s: float,
    max_total_s: float,
    level_dbfs: float | None = LEVEL_DBFS,
) -> tuple[ClipGroup, ClipGroup]:
    """Dev-split music pieces and other (sfx/ambient) noise pieces -> (music, noise).

    Each clip is cut into consecutive pieces of at most ``max_clip_s``; pieces are taken
    round-robin over the clips (first piece of every clip, then second pieces...) until
    ``max_total_s`` per group, so a few long recordings (the dev split has few music
    clips) still fill the budget without one recording crowding out the others.
    """
    from vadnet.model.training.sources import load_cache

    _, noise = load_cache(cache_dir)
    dev = noise.select("dev")
    piece = int(max_clip_s * SR)
    groups = {"music": ClipGroup("music"), "noise": ClipGroup("noise")}
    todo = {"music": [], "noise": []}
    for i, rec in enumerate(dev.clips):
        name = "music" if rec.get("kind") == "music" else "noise"
        todo[name] += [(k, i) for k in range(-(-rec["length"] // piece))]
    for name, group in groups.items():
        for k, i in sorted(todo[name]):  # round-robin: piece index first, then cache order
            left = int((max_total_s - group.seconds) * SR)
            if left < 512:
                break
            x = dev.clip(i)[k * piece : (k + 1) * piece][:left]
            rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2))) if x.size else 0.0
            if x.size < 512 or rms < 1e-5:  # under one Silero chunk, or digital silence
                continue
            if level_dbfs is not None:
                x = np.clip(x * (10 ** (level_dbfs / 20) / rms), -1.0, 1.0)
            group.clips.append(x.astype(np.float32))
    return groups["music"], groups["noise"]


def model_paths(args: argparse.Namespace) -> list[str]:
    """The --model paths, or the bundled checkpoint's when none was given."""
    from vadnet.model.checkpoint import bundled_path

    return args.model or [str(bundled_path())]
