"""The stage-2 recipe (docs/model.md) with one change, for the experiments v19-v23 in the
model card's history. Not part of the package: each variant was tried once and not kept.

    .venv/bin/python docs/experiments/stage2_variants.py VARIANT --init runs/v4.pt --out runs/vNN

VARIANT:
  long-a         (v19) A's filters grown from 256 to 512 taps (32 ms, ~31 Hz resolution):
                 the init's filters become the newest 256 taps, the older ones start at
                 zero, so training starts from exactly the init's function.
  no-synthetic   (v20) no synthetic speech in the training mix (p_synthetic 0).
  no-megaglest   (v21) megaglest left out of the training speech.
  no-commander   (v22) warzone2100's commander voice (audio/memressp/cmndrvoc) left out.
  more-synthetic (v23) synthetic speech in half the utterances (p_synthetic 0.5, not 0.25).

The dev set is untouched in every variant: only the training mixer changes.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import torch

import vadnet.model.train as train_module
from vadnet.model.checkpoint import load_model, save_checkpoint
from vadnet.model.data import Mixer
from vadnet.model.network import VadNet

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


def training_speech_without(keep) -> type[Mixer]:
    """A Mixer whose *training* speech keeps only clips for which ``keep(clip)`` is true."""

    class Filtered(Mixer):
        def __init__(self, speech, *args, **kwargs) -> None:
            super().__init__(speech, *args, **kwargs)
            if speech.clips and speech.clips[0]["split"] == "train":
                pools = [[i for i in pool if keep(speech.clips[i])] for pool in self.real]
                self.real = [pool for pool in pools if pool]

    return Filtered


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "variant",
        choices=("long-a", "no-synthetic", "more-synthetic", "no-megaglest", "no-commander"),
    )
    ap.add_argument("--init", default="runs/v4.pt")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = {**STAGE2, "init": args.init, "out_dir": str(out)}
    if args.variant == "long-a":
        cfg["init"] = grow_a(args.init, out)
    elif args.variant in ("no-synthetic", "more-synthetic"):
        cfg["mix"] = {**cfg["mix"], "p_synthetic": 0.0 if args.variant == "no-synthetic" else 0.5}
    elif args.variant == "no-megaglest":
        train_module.Mixer = training_speech_without(lambda c: c["source"] != "megaglest")
    else:
        train_module.Mixer = training_speech_without(lambda c: "/cmndrvoc/" not in c["path"])
    train_module.train(cfg)


if __name__ == "__main__":
    main()
