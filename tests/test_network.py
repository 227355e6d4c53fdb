"""Shapes, sizes and hyper-parameter checks of the network."""

import math

import pytest
import torch

from vadnet.model.network import ModelConfig, VadNet


def test_forward_shapes_follow_frame_convention():
    model = VadNet().eval()
    hop = model.hop_samples
    for t in (1, hop - 1, hop, hop + 1, 16000, 16001):
        with torch.no_grad():
            p = model(torch.randn(3, t))
        assert p.shape == (3, math.ceil(t / hop))
        assert torch.all((p >= 0) & (p <= 1))


def test_frame_features_are_what_f_classifies_frame_by_frame():
    model = VadNet().eval()
    for t in (1, 300, 16001):
        x = torch.randn(2, t) * 0.1
        with torch.no_grad():
            b = model.frame_features(x)
            assert b.shape == (2, model.cfg.b_channels, math.ceil(t / model.hop_samples))
            torch.testing.assert_close(model.F(b), model.forward_logits(x))
    with pytest.raises(ValueError, match="batch, samples"):
        model.frame_features(torch.zeros(16000))


def test_empty_signal_gives_no_frames():
    with torch.no_grad():
        assert VadNet().eval()(torch.zeros(2, 0)).shape == (2, 0)


def test_constraints_of_the_design():
    model = VadNet()
    assert model.hop_s <= 0.032
    assert model.lookahead_s + model.hop_s <= 0.100
    assert model.num_parameters() <= 500_000
    assert not any(isinstance(m, torch.nn.RNNBase) for m in model.modules())
    # A, max-pool, B and F are named parts of the net, in that order.
    assert [n for n, _ in model.named_children()] == ["A", "B", "F"]
    assert isinstance(model.A.pool, torch.nn.MaxPool1d)
    assert model.receptive_field_samples == 256 + 3 * 64 + 2 * 31 * 256


def test_lookahead_is_exactly_what_it_says():
    """Changing samples after (i+1)*hop + lookahead must not change frame i; changing one
    sample just inside the lookahead must."""
    torch.manual_seed(0)
    model = VadNet().eval()
    x = torch.randn(1, 16000)
    i = 20
    edge = (i + 1) * model.hop_samples + model.lookahead_samples
    y = x.clone()
    y[0, edge:] = torch.randn(16000 - edge)
    with torch.no_grad():
        assert torch.allclose(model(x)[0, : i + 1], model(y)[0, : i + 1])
        z = x.clone()
        z[0, edge - 1] += 1.0
        assert not torch.allclose(model(x)[0, i], model(z)[0, i])


def test_receptive_field_is_exact():
    """A change R samples before frame i's last input sample leaves frame i alone;
    a change at R - 1 does not."""
    torch.manual_seed(1)
    model = VadNet().eval()
    for mod in model.modules():  # non-trivial BN statistics
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.running_mean.normal_()
    x = torch.randn(1, 48000) * 0.1
    i = 150
    end = (i + 1) * model.hop_samples + model.lookahead_samples  # exclusive
    first = end - model.receptive_field_samples
    with torch.no_grad():
        base = model(x)[0, i]
        y = x.clone()
        y[0, :first] = 0.5
        assert torch.allclose(model(y)[0, i], base)
        # a loud burst starting at the first sample: large enough to win A's max-pool
        y[0, first : first + 16] = 5.0
        assert not torch.allclose(model(y)[0, i], base)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"a_kernel": 100, "a_stride": 64}, "multiple of a_stride"),
        ({"pool": 16}, "32 ms"),
        ({"lookahead_frames": 6}, "100 ms"),
        ({"b_dilations": ()}, "B needs a layer"),
        ({"sample_rate": 8000}, "resample"),
    ],
)
def test_bad_hyper_parameters_fail_with_a_fix(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)


def test_config_round_trips_through_dict():
    cfg = ModelConfig(b_dilations=(1, 3), lookahead_frames=2)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_fold_batchnorm_is_the_same_function_in_fewer_ops():
    from vadnet.model.checkpoint import load_model
    from vadnet.model.network import fold_batchnorm

    model = load_model()  # trained BatchNorm statistics, far from identity
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fused = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in fused.modules())
    x = torch.randn(3, 16000) * 0.1
    with torch.no_grad():
        assert torch.allclose(fused(x), model(x), atol=1e-5)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # untouched
