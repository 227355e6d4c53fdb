"""model/training/grow.py: a grown net starts from its init, learns, streams exactly; and --grow-b."""

import numpy as np
import pytest
import torch

from vadnet.model.errors import InvalidInputError
from vadnet.model.network import ModelConfig, VadNet
from vadnet.model.streaming import StreamingVAD
from vadnet.model.training.grow import append_b_layers
from vadnet.model.training.train import TrainConfig

SMALL = ModelConfig(a_channels=8, b_channels=8, f_hidden=8, b_dilations=(1, 2))


def trained_looking(cfg=SMALL):
    """A net with non-trivial norms, as a trained one has, so 'near the init' means something."""
    torch.manual_seed(0)
    m = VadNet(cfg)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.running_mean.normal_(0, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.bias.uniform_(-0.5, 0.5)
    return m.eval()


def test_grown_net_starts_near_its_init_with_more_context_and_the_same_latency():
    init = trained_looking()
    grown = append_b_layers(init, (8, 16))
    assert grown.cfg.b_dilations == (1, 2, 8, 16) and not grown.training
    extra = (SMALL.b_kernel - 1) * (8 + 16) * init.hop_samples
    assert grown.receptive_field_samples == init.receptive_field_samples + extra
    assert grown.cfg.latency_s == init.cfg.latency_s
    x = torch.randn(2, 256 * 80) * 0.1
    with torch.no_grad():
        diff = (grown.forward_logits(x) - init.forward_logits(x)).abs().max().item()
    assert 0 < diff < 0.05  # alive, yet starting from the init's function
    for name, value in init.state_dict().items():  # the old layers are untouched
        assert torch.equal(grown.state_dict()[name], value), name


def test_every_new_weight_gets_a_gradient():
    grown = append_b_layers(trained_looking(), (8,)).train()
    loss = grown.forward_logits(torch.randn(4, 256 * 40) * 0.1).square().mean()
    loss.backward()
    new = grown.B.layers[-1]
    for p in (new.conv.weight, new.conv.bias, new.norm.weight, new.norm.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_grown_net_streams_exactly():
    grown = append_b_layers(trained_looking(), (16,))
    with torch.no_grad():  # as if trained: the new layer's scale has left 1e-3
        grown.B.layers[-1].norm.weight.fill_(0.7)
    x = (np.random.default_rng(3).standard_normal(40_000) * 0.1).astype(np.float32)
    vad = StreamingVAD(grown)
    got = np.concatenate([vad(c) for c in np.array_split(x, 17)] + [vad.flush()])
    with torch.no_grad():
        want = grown(torch.from_numpy(x)[None])[0].numpy()
    assert np.abs(got - want).max() <= 1e-5


@pytest.mark.parametrize("bad", [(0,), (4, -1)])
def test_bad_dilations_are_refused(bad):
    with pytest.raises(InvalidInputError, match="--grow-b"):
        append_b_layers(trained_looking(), bad)
    with pytest.raises(InvalidInputError, match="--grow-b"):
        TrainConfig(grow_b_dilations=bad)
