"""Scoring for ``bench/realworld.py``: a 10 ms grid, a +-20 ms collar, AUC with a bootstrap.

* Every system's scores are put on the 10 ms grid by the frame holding each grid frame's
  centre sample (a system with hop ``h`` samples: frame ``(160 k + 80) // h``).
* Frames within 20 ms of a truth edge are not scored: at a boundary between grid frames
  ``b - 1`` and ``b``, the frames ``b - 2 .. b + 1`` (centres 5 and 15 ms from it) drop out.
  Label edges are uncertain by about that much, and every system has some delay.
* ROC-AUC pools the scored frames of the scenes; its 95 % interval resamples whole scenes
  (frames inside a scene are not independent). The bootstrap bins the scores at the pooled
  quantiles (4096 bins), so one replicate costs a matrix product, not a sort.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score

GRID = 160
COLLAR_FRAMES = 2  # 20 ms on the 10 ms grid
BINS = 4096


def to_grid(scores: np.ndarray, hop: int, n_grid: int) -> np.ndarray:
    """A system's ``(frames,)`` scores at ``hop`` samples -> ``(n_grid,)`` on the 10 ms grid."""
    centres = np.arange(n_grid) * GRID + GRID // 2
    idx = np.minimum(centres // hop, scores.size - 1)
    return np.asarray(scores, np.float32)[idx]


def scored_mask(truth: np.ndarray) -> np.ndarray:
    """``(n,)`` truth -> ``(n,)`` bool, False within the collar of every truth edge."""
    keep = np.ones(truth.size, bool)
    for b in np.flatnonzero(np.diff(truth.astype(np.int8))) + 1:
        keep[max(0, b - COLLAR_FRAMES) : b + COLLAR_FRAMES] = False
    return keep


@dataclass
class Frames:
    """The scored frames of every scene: ``truth[s]`` and ``scores[system][s]`` (1-D each)."""

    truth: list[np.ndarray]
    scores: dict[str, list[np.ndarray]]


def auc(truth: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC-AUC, or None without both classes."""
    if truth.min(initial=1) == truth.max(initial=0):
        return None
    return float(roc_auc_score(truth, scores))


def pooled(frames: Frames, system: str, scenes: list[int]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.concatenate([frames.truth[i] for i in scenes]),
        np.concatenate([frames.scores[system][i] for i in scenes]),
    )


def _histograms(frames: Frames, system: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-scene counts of positive and negative frames in pooled-quantile score bins."""
    everything = np.concatenate(frames.scores[system])
    edges = np.unique(np.quantile(everything, np.linspace(0, 1, BINS + 1)[1:-1]))
    pos = np.zeros((len(frames.truth), edges.size + 1))
    neg = np.zeros_like(pos)
    for i, (t, s) in enumerate(zip(frames.truth, frames.scores[system], strict=True)):
        b = np.searchsorted(edges, s, side="right")
        pos[i] = np.bincount(b[t > 0], minlength=edges.size + 1)
        neg[i] = np.bincount(b[t == 0], minlength=edges.size + 1)
    return pos, neg


def _binned_auc(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC of ``(R, bins)`` positive/negative counts, ties counted half -> ``(R,)``."""
    neg_below = np.cumsum(neg, axis=1) - neg
    num = (pos * (neg_below + 0.5 * neg)).sum(axis=1)
    return num / (pos.sum(axis=1) * neg.sum(axis=1) + 1e-12)


def bootstrap_auc(
    frames: Frames, systems: list[str], reps: int = 2000, seed: int = 0
) -> dict[str, np.ndarray]:
    """AUC of each system over ``reps`` resamplings of the scenes (the same for every
    system, so differences are paired) -> ``{system: (reps,)}``."""
    rng = np.random.default_rng(seed)
    n = len(frames.truth)
    weights = np.stack([np.bincount(rng.integers(n, size=n), minlength=n) for _ in range(reps)])
    out = {}
    for name in systems:
        pos, neg = _histograms(frames, name)
        out[name] = _binned_auc(weights @ pos, weights @ neg)
    return out


def interval(values: np.ndarray) -> list[float]:
    """The 95 % percentile interval."""
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def f1(truth: np.ndarray, decision: np.ndarray) -> float:
    tp = float(np.sum(decision & (truth > 0)))
    fp = float(np.sum(decision & (truth == 0)))
    fn = float(np.sum(~decision & (truth > 0)))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def threshold_for_false_alarm(free_scores: np.ndarray, share: float) -> float:
    """The lowest threshold at which at most ``share`` of ``free_scores`` (speech-free
    frames) are called speech (``p >= threshold``)."""
    if not free_scores.size:
        return 0.0
    allowed = int(np.floor(share * free_scores.size))
    ranked = np.sort(free_scores)[::-1]
    if allowed >= ranked.size:
        return float(ranked[-1])
    # just above the first score that would be one false alarm too many (ties stay out)
    return float(np.nextafter(ranked[allowed], np.inf))


def at_false_alarm(
    truth: np.ndarray, scores: np.ndarray, free_scores: np.ndarray, share: float
) -> dict:
    """F1 and miss over (truth, scores) at the threshold that calls ``share`` of the
    speech-free frames speech: two systems compared at the same false-alarm rate, whatever
    their own default thresholds are calibrated to."""
    th = threshold_for_false_alarm(free_scores, share)
    speech = truth > 0
    return {
        "false_alarm": share,
        "threshold": th,
        "f1": f1(truth, scores >= th),
        "miss": float((scores[speech] < th).mean()) if speech.any() else None,
    }
