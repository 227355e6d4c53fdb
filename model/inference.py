"""Whole-input inference: P(speech) per frame of a whole signal, fast and exact.

What ``vadnet detect``, ``vadnet eval``, the Detect RPC and ``vadnet.detect`` run. It is the
offline forward (``VadNet.forward``) on BatchNorm-folded weights, cut into slices so that
memory stays bounded on long inputs:

* a slice yields frames ``[first_frame, first_frame + num_frames)``;
* its input window reaches back ``context_frames`` (one receptive field) before its first
  frame, so every value a yielded frame reads is computed from real samples, not from the
  zeros a window's own left edge pads with; and forward by the lookahead after its last;
* the first slice starts at sample 0, where the offline pass (and a stream) pads zeros too.

So each slice gives the same probabilities as one pass over the whole signal and as the
streaming bank (to float rounding, ~1e-7; tests/test_inference.py checks 1e-5 and identical
segments), and the pieces join without seams.

Why not the streaming bank (what this module ran before): a bank is built per call and its
step traced into TorchScript (~65 ms per call, and the traced graphs were never freed: RSS
grew ~36 MB per call), and its ring gathers cost ~8x the plain convolutions on a whole file.
Why 60 s slices: the reach-back is recomputed per slice (8.2 s with the bundled net), so a
longer slice wastes less (14 % at 60 s); activations of a 60 s slice take ~8 MB.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import InvalidInputError
from .network import VadNet, exact_float32_on, fold_batchnorm, weights_key

CHUNK_S = 60.0  # frames yielded per slice, in seconds (see the module docstring)


@dataclass(frozen=True)
class Slice:
    """One piece of a whole input: it yields frames ``[first_frame, first_frame + num_frames)``
    from the samples ``[start_sample, stop_sample)`` (zero-padded where the signal ends)."""

    first_frame: int
    num_frames: int
    start_sample: int
    stop_sample: int


class WholeInputVAD:
    """Exact offline inference over whole signals of any length, in bounded slices.

    >>> vad = WholeInputVAD(model)
    >>> probs = vad.probs(samples)  # (n,) float32 at 16 kHz -> (ceil(n / hop),)

    The server runs slices of many inputs in one batch (:meth:`plan`, then :meth:`run`).
    Thread-safe: the folded model is only read.
    """

    def __init__(
        self, model: VadNet, device: torch.device | str = "cpu", chunk_s: float = CHUNK_S
    ) -> None:
        if not (isinstance(chunk_s, int | float) and math.isfinite(chunk_s) and chunk_s > 0):
            raise InvalidInputError(
                f"chunk_s must be a positive number of seconds, got {chunk_s!r}"
            )
        self.device = torch.device(device)
        exact_float32_on(self.device)
        # BatchNorm folded once: the same function in fewer ops per pass.
        self.model = fold_batchnorm(model).to(self.device).eval()
        self._dtype = next(self.model.parameters()).dtype
        cfg = self.model.cfg
        self.hop = cfg.hop_samples
        self.lookahead_frames = cfg.lookahead_frames
        # One receptive field of reach-back, plus one frame for A's own left context.
        self.context_frames = math.ceil(cfg.receptive_field_samples / self.hop) + 1
        self.chunk_frames = max(1, round(chunk_s * cfg.sample_rate / self.hop))

    def num_frames(self, num_samples: int) -> int:
        return self.model.num_frames(num_samples)

    def plan(self, num_samples: int) -> list[Slice]:
        """The slices that cover a signal of ``num_samples``, in order (none for an empty one)."""
        total = self.num_frames(num_samples)
        out = []
        for first in range(0, total, self.chunk_frames):
            n = min(self.chunk_frames, total - first)
            back = min(self.context_frames, first)  # the first slice starts at sample 0
            start = (first - back) * self.hop
            stop = (first + n + self.lookahead_frames) * self.hop
            out.append(Slice(first, n, start, stop))
        return out

    def run(self, signals: Sequence[np.ndarray], slices: Sequence[Slice]) -> list[np.ndarray]:
        """One batched forward: ``slices[i]`` cut from ``signals[i]`` (1-D float32 at 16 kHz,
        the whole signal) -> a list of (``slices[i].num_frames``,) float32 P(speech).

        Windows of different lengths are right-padded with zeros; a causal net's yielded
        frames never read past their window's end, so padding changes nothing.
        """
        if len(signals) != len(slices):
            raise InvalidInputError("signals and slices must have the same length")
        if not slices:
            return []
        width = max(s.stop_sample - s.start_sample for s in slices)
        x = np.zeros((len(slices), width), np.float32)
        offsets = []
        for r, (sig, s) in enumerate(zip(signals, slices, strict=True)):
            piece = np.asarray(sig, np.float32).reshape(-1)[s.start_sample : s.stop_sample]
            x[r, : piece.size] = piece
            # the causal logit of frame f ends at sample (f + 1) * hop; read it lookahead late
            offsets.append(s.first_frame - s.start_sample // self.hop + self.lookahead_frames)
        with torch.inference_mode():
            xt = torch.from_numpy(x).to(self.device, self._dtype)
            probs = torch.sigmoid(self.model.causal_logits(xt).float()).cpu().numpy()
        return [
            probs[r, o : o + s.num_frames].copy()  # copied: a result must not pin the batch
            for r, (o, s) in enumerate(zip(offsets, slices, strict=True))
        ]

    def probs(self, samples: np.ndarray) -> np.ndarray:
        """P(speech) per frame: (n,) float32 at 16 kHz -> (ceil(n / hop),) float32; equal to
        ``model(x[None])[0]`` and to the streaming bank, whatever the slicing."""
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        slices = self.plan(x.size)
        out = [p for s in slices for p in self.run([x], [s])]
        return np.concatenate(out) if out else np.zeros(0, np.float32)


# One WholeInputVAD per model: built on first use, rebuilt when the weights change in place
# (a model being trained), freed with the model.
_RUNNERS: weakref.WeakKeyDictionary[VadNet, tuple[tuple, WholeInputVAD]] = (
    weakref.WeakKeyDictionary()
)
_RUNNERS_LOCK = threading.Lock()


def runner_for(model: VadNet, chunk_s: float = CHUNK_S) -> WholeInputVAD:
    """The cached :class:`WholeInputVAD` of ``model``, on the model's device."""
    key = (weights_key(model), float(chunk_s))
    with _RUNNERS_LOCK:
        cached = _RUNNERS.get(model)
        if cached is None or cached[0] != key:
            cached = (key, WholeInputVAD(model, next(model.parameters()).device, chunk_s))
            _RUNNERS[model] = cached
        return cached[1]


def frame_probs(model: VadNet, samples: np.ndarray, chunk_s: float = CHUNK_S) -> np.ndarray:
    """P(speech) per frame of a whole signal: (n,) float32 at 16 kHz -> (ceil(n / hop),).

    The model's folded copy is made once and reused while its weights stay the same
    (no per-call cost, no growth).
    """
    return runner_for(model, chunk_s).probs(samples)
