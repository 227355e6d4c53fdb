"""The stage-2 recipe plus an auxiliary "is there music?" head on B, for training only (run
v24 in the model card's history). Not part of the package.

    .venv/bin/python docs/experiments/music_head.py --init runs/v4.pt --out runs/v24

Why: every recipe so far lands at 0.8-1.1 % music false alarms at matched recall, and
all models fire on the same passages. F only ever hears "not speech" for music, the same
as for silence or a door slam; a second target that names music (per frame: does this
example's background hold recorded or synthetic music?) asks B to keep music apart as a
kind, where F can use it. The head (a 1x1 conv, b_channels -> 1) is dropped from the
written ``vadnet.pt``, so the model that is scored is a plain VadNet.

The training mixer marks music by adding 2 to an example's frame labels (so labels stay
one tensor through the DataLoader); the loss splits them again. The dev set is untouched.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

import vadnet.model.training.train as train_module
from vadnet.model.checkpoint import read_checkpoint
from vadnet.model.network import ModelConfig, VadNet
from vadnet.model.training import augment
from vadnet.model.training.data import Mixer

MUSIC_WEIGHT = 0.5  # the music BCE's weight beside the speech loss
STAGE2 = {"epochs": 20, "lr": 1e-3, "hard_negative_fraction": 0.05, "mix": {"p_melody": 0.3}}
_current: dict[str, VadNet] = {}  # the model being trained, for the loss
plain_frame_loss = train_module.frame_loss


class MusicMarkingMixer(Mixer):
    """The training mixer, with labels + 2 on examples whose background holds music. It
    draws exactly the random numbers the plain mixer draws."""

    def __init__(self, speech, *args, **kwargs) -> None:
        super().__init__(speech, *args, **kwargs)
        self.marks = bool(speech.clips) and speech.clips[0]["split"] == "train"
        self.music = False

    def _pick_kind(self, rng):
        pool = super()._pick_kind(rng)
        if self.music_pool is not None and pool is self.noise_pools[self.music_pool]:
            self.music = True
        return pool

    def _generated(self, rng, n):
        if self.cfg.p_melody and rng.random() < self.cfg.p_melody:
            self.music = True
            return augment.melody(rng, n)
        return augment.generated_noise(rng, n)

    def example(self, rng):
        self.music = False
        x, y = super().example(rng)
        return x, (y + 2.0 if self.marks and self.music else y)


def forward_logits(self: VadNet, x: torch.Tensor) -> torch.Tensor:
    """VadNet.forward_logits, also keeping the music head's logits when there is a head."""
    b = self.frame_features(x)
    if hasattr(self, "music"):
        self.music_logits = self.music(b).squeeze(1)
    return self.F(b)


def load_with_head(path=None, device="cpu") -> VadNet:
    """A VadNet from ``path`` with a music head (new, or the checkpoint's own)."""
    blob = read_checkpoint(path)
    model = VadNet(ModelConfig.from_dict(blob["config"]))
    model.music = nn.Conv1d(model.cfg.b_channels, 1, 1)
    missing, unexpected = model.load_state_dict(blob["state_dict"], strict=False)
    if unexpected or not set(missing) <= {"music.weight", "music.bias"}:
        raise RuntimeError(f"{path}: unexpected {unexpected}, missing {missing}")
    _current["model"] = model
    return model.eval().to(device)


def frame_loss_with_music(logits, y, fraction=0.0, weight=1.0):
    music = (y >= 2).float()
    loss = plain_frame_loss(logits, y - 2 * music, fraction, weight)
    aux = _current["model"].music_logits
    return loss + MUSIC_WEIGHT * F.binary_cross_entropy_with_logits(aux, music)


def drop_head(path: Path) -> None:
    """Rewrite a checkpoint without the music head: a plain VadNet checkpoint."""
    blob = torch.load(path, map_location="cpu", weights_only=True)
    blob["state_dict"] = {k: v for k, v in blob["state_dict"].items() if not k.startswith("music.")}
    torch.save(blob, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--init", default="runs/v4.pt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="3 steps on 8 dev examples (a check)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = {**STAGE2, "init": args.init, "out_dir": args.out}
    if args.quick:
        cfg.update(epochs=1, steps_per_epoch=3, dev_examples=8, workers=0, batch_size=4)
    train_module.Mixer = MusicMarkingMixer
    train_module.load_model = load_with_head
    train_module.frame_loss = frame_loss_with_music
    VadNet.forward_logits = forward_logits
    final = train_module.train(cfg)
    drop_head(final)


if __name__ == "__main__":
    main()
