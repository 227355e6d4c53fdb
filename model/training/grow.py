"""Grow a trained net's context: append B layers that start as near-identities.

Why: stage 2 (hard negatives and synthetic music) is where music false alarms are learnt,
and a sixth B layer (dilation 32, 2 s of context instead of 1 s) grown onto stage 1's
weights before it halved them at the same dev recall (runs v25, v25r and v27); the
bundled model grows three (32, 64, 128: 8 s, run v29; docs/model.md). A net trained
with 2 s from scratch and no stage 2 (v5) gained nothing on music: the context
helps only once the mix has the music to use it on. Growing keeps stage 1's 27 minutes.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..errors import InvalidInputError
from ..network import VadNet

# A new layer's norm scale. 0 would be the exact init function, but the layer would never
# learn: its ReLU sees exactly 0 and passes no gradient. 1e-3 keeps the grown net within
# ~1e-3 of the init's logits while every new weight gets a gradient.
NEW_LAYER_SCALE = 1e-3


def check_dilations(dilations) -> tuple[int, ...]:
    """``dilations`` as a tuple of ints; InvalidInputError if any is < 1."""
    dilations = tuple(int(d) for d in dilations or ())
    if any(d < 1 for d in dilations):
        raise InvalidInputError(f"--grow-b dilations must be >= 1, got {list(dilations)}")
    return dilations


@torch.no_grad()
def append_b_layers(model: VadNet, dilations: tuple[int, ...]) -> VadNet:
    """A copy of ``model`` with B layers of ``dilations`` appended after its last one.

    Each new layer is a residual ``x + relu(norm(conv(x)))`` whose norm scale starts at
    ``NEW_LAYER_SCALE`` and shift at 0, so it adds almost nothing until training moves it.
    The receptive field grows by ``(b_kernel - 1) * sum(dilations)`` frames; latency does
    not change (the layers are causal). Raises InvalidInputError for a dilation < 1.
    """
    dilations = check_dilations(dilations)
    cfg = replace(model.cfg, b_dilations=model.cfg.b_dilations + dilations)
    grown = VadNet(cfg).to(next(model.parameters()).device)
    grown.load_state_dict(model.state_dict(), strict=False)  # the old layers keep their names
    for layer in grown.B.layers[len(model.cfg.b_dilations) :]:
        layer.norm.weight.fill_(NEW_LAYER_SCALE)
        layer.norm.bias.zero_()
    return grown.train(model.training)
