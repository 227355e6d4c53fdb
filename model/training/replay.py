"""Hard-example replay: mixtures the model got wrong far from speech come back in later batches.

In-batch mining (``train.frame_loss``) weighs the hardest frames of a batch the model sees
once. A rare confuser (a lead line in one music track, a tonal hum) turns up in a few
batches out of thousands, so it is weighed a few times and then forgotten. Replay keeps,
from each batch, the ``fraction`` of its fresh mixtures whose frames far from speech the
model likes most (the highest logit), and makes ``fraction`` of each later batch out of
the kept ones; the oldest drop out first. By rank, not by P >= 0.5: calibration moves the
operating point (v36's raw F1 threshold was 0.08), so a fixed P would keep almost nothing
or almost everything.

The buffer travels in ``last.pt`` (``state()`` / ``load_state()``), so a resumed run
continues exactly, and the draws come from ``default_rng([seed, step])``: a run is
deterministic for its seed.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch
from torch import Tensor

from ..errors import InvalidInputError


class HardExampleReplay:
    """A FIFO of up to ``capacity`` hard training mixtures and the batch mixing around it.

    ``fraction``: share of each batch replaced by kept mixtures (0 turns replay off).
    """

    def __init__(self, fraction: float, capacity: int, seed: int) -> None:
        self.check(fraction, capacity)
        self.fraction, self.seed = fraction, seed
        self.kept: deque[tuple[Tensor, Tensor]] = deque(maxlen=capacity)

    @staticmethod
    def check(fraction: float, capacity: int) -> None:
        """Raise InvalidInputError for options that cannot work."""
        if not 0.0 <= fraction < 0.5:
            raise InvalidInputError(
                f"replay_fraction must be in [0, 0.5), got {fraction}: most of a batch must be"
                " fresh mixtures, or replay would feed on itself"
            )
        if capacity < 1:
            raise InvalidInputError(f"replay_buffer must be >= 1 mixture, got {capacity}")

    def count(self, batch_size: int) -> int:
        """How many rows of a ``batch_size`` batch are replayed (and how many are kept)."""
        return int(round(self.fraction * batch_size))

    def reset(self) -> None:
        """Forget every kept mixture."""
        self.kept.clear()

    def mix(self, x: Tensor, y: Tensor, step: int) -> tuple[Tensor, Tensor, int]:
        """(B, T) audio and (B, frames) labels -> the same with the last ``k`` rows drawn
        from the kept mixtures (with replacement), and ``k`` (0 while none is kept). The
        first ``B - k`` rows stay fresh, and only they are offered to :meth:`keep`."""
        k = self.count(x.shape[0])
        if k <= 0 or not self.kept:
            return x, y, 0
        picks = np.random.default_rng([self.seed, step]).integers(len(self.kept), size=k)
        x, y = x.clone(), y.clone()
        for row, i in zip(range(x.shape[0] - k, x.shape[0]), picks, strict=True):
            x[row], y[row] = self.kept[int(i)]
        return x, y, k

    @torch.no_grad()
    def keep(self, x: Tensor, y: Tensor, logits: Tensor, far: Tensor) -> int:
        """Keep the ``count(B)`` rows of fresh ``x``/``y`` whose highest ``logits`` (B,
        frames) over the frames in ``far`` (B, frames) bool, far from any speech, are the
        highest; rows with no such frame are never kept. Returns how many were kept."""
        score = logits.detach().masked_fill(~far, float("-inf")).amax(dim=1)
        k = min(self.count(x.shape[0]), int(torch.isfinite(score).sum()))
        hard = score.topk(k).indices.tolist() if k > 0 else []
        for i in hard:
            self.kept.append((x[i].detach().cpu().clone(), y[i].detach().cpu().clone()))
        return len(hard)

    def state(self) -> dict:
        """The kept mixtures as two stacked tensors (or None when empty), for ``last.pt``."""
        if not self.kept:
            return {"x": None, "y": None}
        xs, ys = zip(*self.kept, strict=True)
        return {"x": torch.stack(xs), "y": torch.stack(ys)}

    def load_state(self, state: dict | None) -> None:
        """Restore what :meth:`state` returned; None (an older checkpoint) keeps nothing."""
        self.reset()
        if state and state.get("x") is not None:
            self.kept.extend(zip(state["x"], state["y"], strict=True))
