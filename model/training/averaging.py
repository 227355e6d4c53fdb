"""Weight averaging: an exponential moving average (EMA) of the weights during training.

Why: with the bundled stage 2's mining and replay, the weights of one seed wander from
batch to batch (dev AUC moved by 0.003-0.008 between neighbouring epochs of v44), and
where a run stops on that walk decides its false-alarm/miss trade: v44's two seeds landed
at 0.69 % and 0.24 % speech-free false alarms on the real-use scenes. An average over the
last few hundred steps sits in the middle of the walk instead of at one end of it. Tried
on the bundled stage 2 (v46, decay 0.995), it scored lower than the last step's weights on
the real-use scenes in both seeds, so the recipe leaves it off (docs/experiments.md).

The average covers every floating-point entry of the state dict, BatchNorm's running
statistics included (they follow the weights they normalise); integer counters are copied.
The first steps use a smaller decay, ``min(decay, (1 + n) / (10 + n))`` after ``n``
updates, so the starting weights do not linger in the average.

The average travels in ``last.pt`` (``state()`` / ``load_state()``), so a resumed run
continues exactly.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import InvalidInputError


class WeightAverage:
    """An EMA copy of ``model`` (``decay`` 0 turns it off: ``of(model)`` is ``model``)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.check(decay)
        self.decay, self.updates = decay, 0
        self.average = copy.deepcopy(model).eval().requires_grad_(False) if decay > 0 else None

    @staticmethod
    def check(decay: float) -> None:
        """Raise InvalidInputError for a decay that cannot work."""
        if not 0.0 <= decay < 1.0:
            raise InvalidInputError(
                f"ema_decay must be in [0, 1), got {decay}: 0 turns averaging off, and"
                " 0.995 averages over about the last 200 steps"
            )

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (after each optimizer step)."""
        if self.average is None:
            return
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        live = model.state_dict()
        for name, avg in self.average.state_dict().items():
            if avg.is_floating_point():
                avg.mul_(d).add_(live[name].detach(), alpha=1 - d)
            else:
                avg.copy_(live[name])

    def of(self, model: nn.Module) -> nn.Module:
        """The model to evaluate and keep: the average when there is one, else ``model``."""
        return model if self.average is None else self.average

    def state(self) -> dict | None:
        if self.average is None:
            return None
        return {"updates": self.updates, "state_dict": self.average.state_dict()}

    def load_state(self, state: dict | None) -> None:
        if self.average is not None and state is not None:
            self.updates = state["updates"]
            self.average.load_state_dict(state["state_dict"])
