"""Weight averaging (model/training/averaging.py): the EMA arithmetic, BatchNorm statistics,
the state round trip, and bad decays."""

import pytest
import torch
from torch import nn

from vadnet.model.errors import InvalidInputError
from vadnet.model.training.averaging import WeightAverage
from vadnet.model.training.train import TrainConfig


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(2, 3, 1), nn.BatchNorm1d(3))


def test_average_follows_the_ema_formula_and_batchnorm_statistics():
    net = _net()
    avg = WeightAverage(net, decay=0.9)
    start = {k: v.clone() for k, v in net.state_dict().items()}
    expected = {k: v.clone().float() for k, v in start.items() if v.is_floating_point()}
    for n in range(1, 4):
        with torch.no_grad():
            net[0].weight.add_(1.0)
        net.train()(torch.randn(4, 2, 5))  # moves the running statistics
        d = min(0.9, (1 + n) / (10 + n))
        for k, v in net.state_dict().items():
            if v.is_floating_point():
                expected[k] = d * expected[k] + (1 - d) * v
        avg.update(net)
    got = avg.of(net).state_dict()
    for k, v in expected.items():
        assert torch.allclose(got[k], v, atol=1e-6), k
    assert not torch.equal(got["0.weight"], net[0].weight)  # an average, not the live weights
    assert not torch.equal(got["1.running_mean"], start["1.running_mean"])
    assert got["1.num_batches_tracked"] == net[1].num_batches_tracked  # counters are copied


def test_off_means_the_live_model_and_state_round_trips():
    net = _net()
    assert WeightAverage(net, 0.0).of(net) is net and WeightAverage(net, 0.0).state() is None
    avg = WeightAverage(net, 0.99)
    with torch.no_grad():
        net[0].weight.mul_(3)
    avg.update(net)
    other = WeightAverage(_net(), 0.99)
    other.load_state(avg.state())
    assert other.updates == 1
    for k, v in avg.of(net).state_dict().items():
        assert torch.equal(other.of(net).state_dict()[k], v), k
    other.load_state(None)  # a checkpoint from before averaging keeps the fresh copy
    assert other.updates == 1


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_bad_decay_fails_in_the_config(decay):
    with pytest.raises(InvalidInputError, match="ema_decay"):
        TrainConfig(ema_decay=decay)
