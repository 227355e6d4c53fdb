"""Hard-example replay (model/training/replay.py): what it keeps, what it replays, and its state."""

import pytest
import torch

from vadnet.model.errors import InvalidInputError
from vadnet.model.training.replay import HardExampleReplay
from vadnet.model.training.train import TrainConfig, far_from_speech


def batch(rows: int = 8, frames: int = 20):
    """Row i's audio is all i, so a replayed row tells where it came from."""
    x = torch.arange(rows, dtype=torch.float32)[:, None].repeat(1, frames * 4)
    y = torch.zeros(rows, frames)
    return x, y


def test_keeps_the_rows_liked_most_far_from_speech():
    replay = HardExampleReplay(fraction=0.25, capacity=10, seed=0)  # 2 of 8 rows
    x, y = batch()
    y[3, :] = 1.0  # all speech: no far frame, never kept however high its logits
    logits = torch.full((8, 20), -5.0)
    logits[3] = 9.0
    logits[5, 10] = 2.0  # one confusable frame is enough
    logits[6, 0] = -1.0
    logits[1, 12] = -3.0
    far = far_from_speech(y, margin_frames=2)
    assert replay.keep(x, y, logits, far) == 2
    assert sorted(int(a[0]) for a, _ in replay.kept) == [5, 6]


def test_far_frames_exclude_the_margin_around_speech_and_ignored_frames():
    y = torch.zeros(1, 20)
    y[0, 5] = 1.0
    y[0, 15] = -1.0  # labels.IGNORE
    far = far_from_speech(y, margin_frames=2)[0]
    assert far.tolist() == [i not in {3, 4, 5, 6, 7, 13, 14, 15, 16, 17} for i in range(20)]


def test_mix_replaces_the_last_rows_once_something_is_kept():
    replay = HardExampleReplay(fraction=0.25, capacity=4, seed=0)
    x, y = batch()
    same = replay.mix(x, y, step=0)
    assert same[2] == 0 and torch.equal(same[0], x)  # nothing kept yet: all fresh
    for v in (100.0, 200.0):
        replay.kept.append((torch.full((80,), v), torch.zeros(20)))
    mixed, _, k = replay.mix(x, y, step=1)
    assert k == 2
    assert torch.equal(mixed[:6], x[:6])  # the fresh rows stay
    assert set(mixed[6:, 0].tolist()) <= {100.0, 200.0}
    assert torch.equal(x[6:, 0], torch.tensor([6.0, 7.0]))  # the caller's batch is untouched
    again, _, _ = replay.mix(x, y, step=1)
    assert torch.equal(again, mixed)  # the draws depend on (seed, step) only


def test_oldest_kept_drop_out_and_state_round_trips():
    replay = HardExampleReplay(fraction=0.25, capacity=3, seed=0)
    for v in range(5):
        replay.kept.append((torch.full((80,), float(v)), torch.zeros(20)))
    assert [int(a[0]) for a, _ in replay.kept] == [2, 3, 4]
    other = HardExampleReplay(fraction=0.25, capacity=3, seed=0)
    other.load_state(replay.state())
    assert [int(a[0]) for a, _ in other.kept] == [2, 3, 4]
    other.load_state(None)  # a checkpoint from before replay
    assert not other.kept and other.state() == {"x": None, "y": None}


@pytest.mark.parametrize(
    ("options", "message"),
    [({"replay_fraction": 0.5}, "replay_fraction"), ({"replay_fraction": -0.1}, "replay_fraction"),
     ({"replay_buffer": 0}, "replay_buffer")],
)  # fmt: skip
def test_bad_replay_options_fail_in_the_config(options, message):
    with pytest.raises(InvalidInputError, match=message):
        TrainConfig(**options)
