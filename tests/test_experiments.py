"""docs/experiments/stage2_variants.py: the two pieces its claims rest on."""

import sys
from pathlib import Path

import numpy as np
import torch

from vadnet.model.checkpoint import load_model, save_checkpoint
from vadnet.model.network import ModelConfig, VadNet

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "docs" / "experiments"))
from stage2_variants import (  # noqa: E402
    grow_a,
    training_examples_of,
    training_examples_spliced,
    training_speech_without,
)


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


def test_longer_training_examples_leave_dev_examples_alone():
    from vadnet.model.training.data import MixConfig

    cfg = MixConfig(example_s=1.0)
    mixer = training_examples_of(3.0)
    for split, seconds in (("train", 3.0), ("dev", 1.0)):
        m = mixer(_OneSpeaker(split), _Noise(), cfg)
        x, y = m.example(np.random.default_rng(0))
        assert x.shape == (m.cfg.example_samples,) and y.shape == (x.size // 256,)
        assert m.cfg.example_s == seconds and abs(x.size / 16000 - seconds) < 0.02


def test_spliced_training_examples_switch_mixtures_and_leave_dev_alone():
    from vadnet.model.training.data import MixConfig, Mixer

    cfg = MixConfig(example_s=2.0, p_no_speech=0.0)
    spliced = training_examples_spliced(1.0)
    for split in ("train", "dev"):
        (x0, y0), (x1, y1) = (
            mixer(_OneSpeaker(split), _Noise(), cfg).example(np.random.default_rng(4))
            for mixer in (Mixer, spliced)
        )
        assert x1.shape == x0.shape and y1.shape == y0.shape
        # the first mixture's draws come first: its head is the plain example's
        assert np.array_equal(x1[:256], x0[:256]) and y1[0] == y0[0]
        assert np.array_equal(x1, x0) == (split == "dev")


class _Noise:
    """Two music and two sfx background sources of constant signals."""

    clips = [
        {"source": f"{kind}{k}", "kind": kind, "split": "train"}
        for kind in ("music", "sfx")
        for k in range(2)
    ]

    def clip(self, i):
        return np.full(16000, 0.01 * (i + 1), np.float32)


class _OneSpeaker(_Speech):
    def clip(self, i):
        return np.sin(np.arange(8000, dtype=np.float32) / 5) * 0.1

    def clip_labels(self, i):
        return np.ones(-(-8000 // 256), np.float32)  # ceil: the last frame is partial


def test_music_head_mixer_marks_music_without_changing_the_mixtures():
    from music_head import MusicMarkingMixer

    from vadnet.model.training.data import MixConfig, Mixer

    cfg = MixConfig(p_melody=0.5, example_s=1.0)
    plain = Mixer(_OneSpeaker("train"), _Noise(), cfg)
    marking = MusicMarkingMixer(_OneSpeaker("train"), _Noise(), cfg)
    dev = MusicMarkingMixer(_OneSpeaker("dev"), _Noise(), cfg)
    r1, r2, r3 = (np.random.default_rng(3) for _ in range(3))
    marked = 0
    for _ in range(40):
        (x, y), (xm, ym), (_, yd) = plain.example(r1), marking.example(r2), dev.example(r3)
        assert np.array_equal(x, xm) and np.array_equal(y, ym % 2)  # same draws, same audio
        assert yd.max() <= 1  # the dev set is never marked
        marked += ym.max() >= 2
    assert 0 < marked < 40  # some examples have music behind them, some do not


def test_widen_b_starts_from_exactly_the_init_function(tmp_path):
    from stage2_variants import widen_b

    torch.manual_seed(0)
    model = VadNet(ModelConfig(a_channels=8, b_channels=8, f_hidden=8))
    with torch.no_grad():  # non-trivial norms, as a trained net has
        for layer in model.B.layers:
            layer.norm.running_mean.uniform_(-1, 1)
            layer.norm.bias.uniform_(-0.5, 0.5)
    model.eval()
    save_checkpoint(tmp_path / "init.pt", model)
    wide = load_model(widen_b(str(tmp_path / "init.pt"), tmp_path, channels=12))
    assert wide.cfg.b_channels == 12
    x = torch.randn(2, 256 * 80) * 0.1
    with torch.no_grad():
        assert torch.allclose(wide.forward_logits(x), model.forward_logits(x), atol=1e-5)
        assert wide.B(wide.A(x))[:, 8:].abs().sum() > 0  # the new channels are alive
