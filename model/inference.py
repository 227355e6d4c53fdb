"""Whole-input inference: P(speech) per frame of a whole signal."""

from __future__ import annotations

import numpy as np

CHUNK_S = 60.0  # inference chunk: bounds memory on long files; streaming keeps it exact


def frame_probs(model, samples: np.ndarray, chunk_s: float = CHUNK_S) -> np.ndarray:
    """P(speech) per frame of a whole signal.

    (n,) float32 at 16 kHz -> (ceil(n / hop),) float32; equal to ``model(x[None])[0]``
    (the exact streaming bank runs it ``chunk_s`` at a time).
    """
    from .streaming import StreamBank  # torch: imported only when inference runs

    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    step = max(1, int(chunk_s * model.sample_rate) // model.hop_samples) * model.hop_samples
    bank = StreamBank(model, device=next(model.parameters()).device, capacity=1)
    slot = bank.open()
    out = []
    starts = list(range(0, x.size, step)) or [0]
    for i, start in enumerate(starts):
        res = bank.advance([slot], [x[start : start + step]], [i == len(starts) - 1])[0]
        out.append(res.probs)
    bank.close(slot)
    return np.concatenate(out).astype(np.float32, copy=False)
