"""docs/experiments/stage2_variants.py: the two pieces its claims rest on."""

import sys
from pathlib import Path

import numpy as np
import torch

from vadnet.model.checkpoint import load_model, save_checkpoint
from vadnet.model.network import ModelConfig, VadNet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "experiments"))
from stage2_variants import grow_a, training_speech_without  # noqa: E402


def test_grow_a_starts_from_exactly_the_init_function(tmp_path):
    torch.manual_seed(0)
    model = VadNet(ModelConfig(a_channels=8, b_channels=8, f_hidden=8)).eval()
    save_checkpoint(tmp_path / "init.pt", model)
    grown = load_model(grow_a(str(tmp_path / "init.pt"), tmp_path, taps=512))
    assert (
        grown.cfg.a_kernel == 512 and grown.receptive_field_samples > model.receptive_field_samples
    )
    x = torch.randn(2, 256 * 50) * 0.1
    with torch.no_grad():
        assert torch.equal(model(x), grown(x))


class _Speech:
    def __init__(self, split):
        self.clips = [
            {"source": "wz", "path": f"a/{d}/{i}.ogg", "split": split}
            for i, d in enumerate(["cmndrvoc", "console", "console"])
        ]

    def clip_labels(self, i):
        return np.ones(4)


def test_training_speech_filter_leaves_dev_speech_alone():
    mixer = training_speech_without(lambda c: "/cmndrvoc/" not in c["path"])
    assert mixer(_Speech("train"), None).real == [[1, 2]]
    assert mixer(_Speech("dev"), None).real == [[0, 1, 2]]
