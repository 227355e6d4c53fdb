"""The stage-2 recipe (docs/model.md) with one change, for the experiments v19-v26 and
v30-v32 in the model card's history. Not part of the package; only deep-b was kept (as the
bundled recipe).

    .venv/bin/python docs/experiments/stage2_variants.py VARIANT --init runs/v4.pt --out runs/vNN

VARIANT:
  long-a         (v19) A's filters grown from 256 to 512 taps (32 ms, ~31 Hz resolution):
                 the init's filters become the newest 256 taps, the older ones start at
                 zero, so training starts from exactly the init's function.
  no-synthetic   (v20) no synthetic speech in the training mix (p_synthetic 0).
  no-megaglest   (v21) megaglest left out of the training speech.
  no-commander   (v22) warzone2100's commander voice (audio/memressp/cmndrvoc) left out.
  more-synthetic (v23) synthetic speech in half the utterances (p_synthetic 0.5, not 0.25).
  deep-b         (v25, v25r) a sixth B layer (dilation 32): 2 s of context, as v5 had, but
                 grown onto the init as a near-identity (model/training/grow.py), then given stage
                 2's hard negatives and synthetic music, which v5 never had. It halved
                 music false alarms at matched recall and became the bundled recipe
                 (`vadnet train --grow-b 32`, run v27). v25 and v25r ran this script's
                 first version, which grew the layer by the same rule in here, drawing the
                 new conv's random weights before the training seed was set.
  wide-b         (v26) B grown from 64 to 96 channels; everything reads the new channels
                 through weights that start at zero, so training starts from exactly the
                 init's function. Tests whether B lacks capacity: v11 still calls 10 % of
                 its own kind of synthetic lead speech. It does not (no better than v11).
  long-examples  (v30) the bundled 8 s recipe (`--grow-b 32 64 128`, v29) trained on 12 s
                 examples instead of 6 s, 16 to a batch instead of 32 (the same audio per
                 step). In 6 s examples the 8 s net's oldest taps mostly read the zeros
                 before an example's start, never the audio a live stream has there.
                 No better than v29 on music or 60 s streams, and worse on dev.
  spliced        (v31, v32) the bundled 8 s recipe with 30 % of training examples spliced
                 (`--splice-share`; v32: 10 %): a second, independent mixture takes over
                 at a random frame (speaker, background and level change at once, as in
                 a transferred call). The 8 s net is less accurate for seconds after such
                 a change (bench/long_streams.py "joined"); this teaches it the change.
                 At 30 % it does, but music false alarms and the 60 s streams' AUC fall
                 back to 2 s levels; at 10 % too.

The dev set is untouched in every variant: only the training mixer or the net changes.
STAGE2 below is v11's stage 2, the recipe the variants were measured against.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

import vadnet.model.training.train as train_module
from vadnet.model.checkpoint import load_model, save_checkpoint
from vadnet.model.network import VadNet
from vadnet.model.training.data import Mixer

STAGE2 = {"epochs": 20, "lr": 1e-3, "hard_negative_fraction": 0.05, "mix": {"p_melody": 0.3}}


def grow_a(init: str, out: Path, taps: int = 512) -> str:
    """Save ``init`` with A's filters zero-padded (older samples) to ``taps``."""
    old = load_model(init)
    new = VadNet(replace(old.cfg, a_kernel=taps)).eval()
    state = old.state_dict()
    w = state["A.filters.weight"]
    state["A.filters.weight"] = torch.cat([w.new_zeros(*w.shape[:2], taps - w.shape[2]), w], 2)
    new.load_state_dict(state)
    path = out / f"init_a{taps}.pt"
    save_checkpoint(path, new)
    return str(path)


def widen_b(init: str, out: Path, channels: int = 96) -> str:
    """Save ``init`` with B widened to ``channels``, computing exactly the init's function:
    the new channels are computed (random init) but every old channel and F read them
    through weights that start at zero, which get gradients at once because the new
    channels are not zero."""
    old = load_model(init)
    new = VadNet(replace(old.cfg, b_channels=channels)).eval()
    state = new.state_dict()
    for name, value in old.state_dict().items():  # old tensors fill the leading corner
        state[name][tuple(slice(0, n) for n in value.shape)] = value
    n_old = old.cfg.b_channels
    for i in range(len(old.cfg.b_dilations)):
        state[f"B.layers.{i}.conv.weight"][:n_old, n_old:] = 0
    state["F.hidden.weight"][:, n_old:] = 0
    new.load_state_dict(state)
    path = out / f"init_b{channels}.pt"
    save_checkpoint(path, new)
    return str(path)


def _training(speech) -> bool:
    """Whether a Mixer's ``speech`` is the training split (variants leave dev alone)."""
    return bool(speech.clips) and speech.clips[0]["split"] == "train"


def training_speech_without(keep) -> type[Mixer]:
    """A Mixer whose *training* speech keeps only clips for which ``keep(clip)`` is true."""

    class Filtered(Mixer):
        def __init__(self, speech, *args, **kwargs) -> None:
            super().__init__(speech, *args, **kwargs)
            if _training(speech):
                pools = [[i for i in pool if keep(speech.clips[i])] for pool in self.real]
                self.real = [pool for pool in pools if pool]

    return Filtered


def training_examples_of(seconds: float) -> type[Mixer]:
    """A Mixer whose *training* examples are ``seconds`` long (the dev set's stay 6 s)."""

    class Longer(Mixer):
        def __init__(self, speech, *args, **kwargs) -> None:
            super().__init__(speech, *args, **kwargs)
            if _training(speech):
                self.cfg = replace(self.cfg, example_s=seconds)

    return Longer


def training_examples_spliced(p: float) -> type[Mixer]:
    """A Mixer whose *training* examples are, with probability ``p``, one mixture up to a
    random frame and an independent one after it (the dev set's are left whole)."""

    class Spliced(Mixer):
        def example(self, rng):
            x, y = super().example(rng)
            if not _training(self.speech) or rng.random() >= p:
                return x, y
            x2, y2 = super().example(rng)
            cut = int(rng.integers(1, y.size))
            hop = x.size // y.size
            return np.concatenate([x[: cut * hop], x2[cut * hop :]]), np.concatenate(
                [y[:cut], y2[cut:]]
            )

    return Spliced


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "variant",
        choices=(
            "long-a",
            "no-synthetic",
            "more-synthetic",
            "no-megaglest",
            "no-commander",
            "deep-b",
            "wide-b",
            "long-examples",
            "spliced",
        ),
    )
    ap.add_argument("--init", default="runs/v4.pt")
    ap.add_argument("--splice-share", type=float, default=0.3, help="spliced: share of examples")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {**STAGE2, "init": args.init, "out_dir": str(out)}
    if args.variant == "long-a":
        cfg["init"] = grow_a(args.init, out)
    elif args.variant == "deep-b":
        cfg["grow_b_dilations"] = (32,)
    elif args.variant == "wide-b":
        cfg["init"] = widen_b(args.init, out)
    elif args.variant == "long-examples":
        cfg.update(grow_b_dilations=(32, 64, 128), batch_size=16)
        train_module.Mixer = training_examples_of(12.0)
    elif args.variant == "spliced":
        cfg["grow_b_dilations"] = (32, 64, 128)
        train_module.Mixer = training_examples_spliced(args.splice_share)
    elif args.variant in ("no-synthetic", "more-synthetic"):
        cfg["mix"] = {**cfg["mix"], "p_synthetic": 0.0 if args.variant == "no-synthetic" else 0.5}
    elif args.variant == "no-megaglest":
        train_module.Mixer = training_speech_without(lambda c: c["source"] != "megaglest")
    else:
        train_module.Mixer = training_speech_without(lambda c: "/cmndrvoc/" not in c["path"])
    train_module.train(cfg)


if __name__ == "__main__":
    main()
