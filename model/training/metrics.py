"""Frame-level detection metrics, shared by ``vadnet eval`` and the training loop.

All values are plain Python floats/ints (checkpoints store them and load with
``weights_only=True``); a metric that is undefined for the data (AUC with one class,
miss rate with no speech...) is NaN.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import InvalidInputError


def frame_metrics(
    probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5, *, with_auc: bool = True
) -> dict:
    """Score per-frame speech probabilities against 0/1 labels.

    Args:
        probs: (frames,) P(speech) in [0, 1] (any shape; flattened).
        labels: (frames,) 1 = speech, 0 = not (same size as ``probs``).
        threshold: a frame with ``prob >= threshold`` is called speech (the segmenter's rule).
        with_auc: compute ROC-AUC (sklearn; O(n log n)); skip it when sweeping thresholds.

    Returns:
        dict with ``auc``, ``f1``, ``precision``, ``recall``, ``miss_rate`` (speech frames
        called non-speech / speech frames), ``false_alarm_rate`` (non-speech frames called
        speech / non-speech frames), ``accuracy``, ``threshold``, ``frames``,
        ``speech_frames``.
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if p.shape != y.shape:
        raise InvalidInputError(f"probs ({p.size} frames) and labels ({y.size}) differ in size")
    if not np.all(np.isfinite(p)):
        raise InvalidInputError("probs contain NaN/Inf")
    y = y.astype(bool)
    pred = p >= threshold
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    fn = int(np.count_nonzero(~pred & y))
    tn = int(p.size - tp - fp - fn)
    pos, neg = tp + fn, fp + tn

    def ratio(a: int, b: int) -> float:
        return a / b if b else math.nan

    precision, recall = ratio(tp, tp + fp), ratio(tp, pos)
    # F1 from counts: defined (0.0) even when nothing is predicted, NaN only with no speech
    # at all and no false alarms either.
    f1 = ratio(2 * tp, 2 * tp + fp + fn)
    auc = math.nan
    if with_auc and pos and neg:
        from sklearn.metrics import roc_auc_score  # heavy import, only when asked

        auc = float(roc_auc_score(y, p))
    return {
        "auc": auc,
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "miss_rate": ratio(fn, pos),
        "false_alarm_rate": ratio(fp, neg),
        "accuracy": ratio(tp + tn, p.size),
        "threshold": float(threshold),
        "frames": int(p.size),
        "speech_frames": int(pos),
    }


def edge_overhang(
    probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5, window_frames: int = 16
) -> dict:
    """How far calls of speech spill over the labelled speech edges, in frames per edge.

    Args:
        probs: (N, frames) P(speech); labels: (N, frames) 1 = speech, 0 = not.
        threshold: a frame with ``prob >= threshold`` is called speech.
        window_frames: only non-speech frames this close to speech count (16 = 256 ms).

    Returns:
        ``late_frames``: non-speech frames called speech after a speech offset (the nearer
        speech frame is before them), per offset inside an example; ``early_frames``: the
        same before each onset. Times a hop, the first is how much later than the label a
        speech end is called on average: a voice bot's end of turn waits for it.
    """
    probs, speech = np.atleast_2d(probs), np.atleast_2d(labels) > 0.5
    if probs.shape != speech.shape:
        raise InvalidInputError(f"probs {probs.shape} and labels {speech.shape} differ")
    idx = np.broadcast_to(np.arange(speech.shape[1]), speech.shape)
    far = speech.shape[1] + window_frames + 1
    prev = np.maximum.accumulate(np.where(speech, idx, -far), axis=1)  # last speech at or before
    nxt = np.minimum.accumulate(np.where(speech, idx, 2 * far)[:, ::-1], axis=1)[:, ::-1]
    after, before = idx - prev, nxt - idx
    called = (probs >= threshold) & ~speech
    late = called & (after <= window_frames) & (after <= before)
    early = called & (before <= window_frames) & (before < after)
    offsets = int(np.sum(speech[:, :-1] & ~speech[:, 1:]))
    onsets = int(np.sum(~speech[:, :-1] & speech[:, 1:]))
    return {
        "late_frames": float(late.sum() / offsets) if offsets else math.nan,
        "early_frames": float(early.sum() / onsets) if onsets else math.nan,
    }
