"""Streaming equals offline: random chunkings, random lengths, batches of streams."""

import numpy as np
import pytest
import torch

from vadnet.model.errors import InvalidInputError
from vadnet.model.network import ModelConfig, VadNet
from vadnet.model.streaming import StreamBank, StreamingVAD

TOL = 1e-5


@pytest.fixture(scope="module")
def model():
    """A net with non-trivial BN statistics, so that state bugs cannot hide behind zeros."""
    torch.manual_seed(0)
    m = VadNet()
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.running_mean.normal_(0, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    return m.eval()


def offline(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)[None])[0].numpy()


def random_chunks(rng, x, max_chunk):
    i = 0
    while i < x.size:
        n = int(rng.integers(1, max_chunk + 1))
        yield x[i : i + n]
        i += n


@pytest.mark.parametrize("seed", range(6))
def test_random_chunking_matches_offline(model, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(int(rng.integers(1, 50_000))) * 0.1).astype(np.float32)
    max_chunk = [1, 7, 300, 5000, 60_000, 257][seed]
    if max_chunk == 1:
        x = x[:3000]  # one sample at a time: keep it short
    vad = StreamingVAD(model)
    got = np.concatenate([vad(c) for c in random_chunks(rng, x, max_chunk)] + [vad.flush()])
    want = offline(model, x)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= TOL


def test_batch_of_streams_at_different_positions_and_lengths(model):
    rng = np.random.default_rng(42)
    n = 9
    signals = [
        (rng.standard_normal(int(rng.integers(0, 40_000))) * 0.2).astype(np.float32)
        for _ in range(n)
    ]
    bank = StreamBank(model, capacity=2)  # forces the bank to grow while streams are open
    slots = [bank.open() for _ in range(n)]
    pos = [0] * n
    got = [[] for _ in range(n)]
    ended = [False] * n
    while not all(ended):
        # each call advances a random subset, each stream by its own random amount
        active = [k for k in range(n) if not ended[k] and rng.random() < 0.7]
        chunks, final = [], []
        for k in active:
            m = int(rng.integers(0, 6000))
            chunks.append(signals[k][pos[k] : pos[k] + m])
            pos[k] += m
            final.append(pos[k] >= signals[k].size)
        for k, r, f in zip(
            active, bank.advance([slots[k] for k in active], chunks, final), final, strict=True
        ):
            assert r.first_frame == sum(a.size for a in got[k])
            got[k].append(r.probs)
            ended[k] = ended[k] or f
    for k in range(n):
        want = offline(model, signals[k])
        have = np.concatenate(got[k]) if got[k] else np.zeros(0)
        assert have.shape == want.shape
        assert np.abs(have - want).max(initial=0) <= TOL


def test_traced_step_equals_eager_on_shapes_it_was_not_traced_on(model):
    """The bank's step is a TorchScript trace made on a batch of 2 x 2 hops: it must not
    have baked those sizes in (batch, hops, which rows, a grown bank)."""
    rng = np.random.default_rng(7)
    traced, eager = StreamBank(model, capacity=2), StreamBank(model, capacity=2, trace=False)
    assert isinstance(traced._step, torch.jit.ScriptModule)
    assert not isinstance(eager._step, torch.jit.ScriptModule)
    slots = [(traced.open(), eager.open()) for _ in range(37)]  # both grow to 64 slots
    for n_streams, max_len in [(37, 1600), (1, 256), (5, 40_000), (20, 300), (37, 1)]:
        pick = rng.choice(len(slots), n_streams, replace=False)
        chunks = [
            (rng.standard_normal(int(rng.integers(0, max_len + 1))) * 0.1).astype(np.float32)
            for _ in pick
        ]
        a = traced.advance([slots[k][0] for k in pick], chunks)
        b = eager.advance([slots[k][1] for k in pick], chunks)
        for ra, rb in zip(a, b, strict=True):
            assert ra.first_frame == rb.first_frame
            np.testing.assert_allclose(ra.probs, rb.probs, rtol=0, atol=1e-6)


def test_flush_emits_lookahead_frames_and_reset_restarts(model):
    x = (np.random.default_rng(3).standard_normal(10_000) * 0.1).astype(np.float32)
    vad = StreamingVAD(model)
    early = vad(x)
    # 10,000 samples = 39 complete hops; 4 of them wait for their lookahead
    assert early.size == 10_000 // 256 - model.cfg.lookahead_frames
    rest = vad.flush()
    assert early.size + rest.size == -(-10_000 // 256)
    with pytest.raises(InvalidInputError, match="reset"):
        vad(x)
    vad.reset()
    again = np.concatenate([vad(x), vad.flush()])
    assert np.abs(again - offline(model, x)).max() <= TOL


def test_empty_stream_and_close(model):
    bank = StreamBank(model, capacity=4)
    a = bank.open()
    assert bank.advance([a], [np.zeros(0, np.float32)], [True])[0].probs.size == 0
    bank.close(a)
    assert len(bank) == 0
    with pytest.raises(InvalidInputError, match="not open"):
        bank.advance([a], [np.zeros(10, np.float32)])


def test_a_slot_reused_after_close_starts_from_zeros(model):
    """close() then open() hands out the same slot: the old stream's rings must not leak."""
    rng = np.random.default_rng(11)
    loud = rng.standard_normal(30_000).astype(np.float32)
    x = (rng.standard_normal(20_000) * 0.1).astype(np.float32)
    bank = StreamBank(model, capacity=1)
    old = bank.open()
    bank.advance([old], [loud])
    bank.close(old)
    new = bank.open()
    assert new == old
    got = [bank.advance([new], [c])[0].probs for c in np.array_split(x, 7)]
    got.append(bank.advance([new], [np.zeros(0, np.float32)], [True])[0].probs)
    assert np.abs(np.concatenate(got) - offline(model, x)).max() <= TOL


def test_a_stream_appears_once_per_call(model):
    bank = StreamBank(model)
    a = bank.open()
    with pytest.raises(InvalidInputError, match="once"):
        bank.advance([a, a], [np.zeros(10, np.float32)] * 2)


def test_state_size_is_small_and_stated(model):
    bank = StreamBank(model)
    cfg = model.cfg
    floats = (
        cfg.a_kernel - cfg.a_stride + cfg.b_channels * (cfg.b_kernel - 1) * sum(cfg.b_dilations)
    )
    assert bank.bytes_per_stream() == 4 * floats + 4 * (model.hop_samples - 1)
    assert bank.bytes_per_stream() < 20_000


@pytest.mark.parametrize("b_kernel", [1, 2, 3, 5])
def test_tiny_config_streams_exactly_too(b_kernel):
    """Other kernels give B's rings other lengths ((kernel - 1) * dilation; none for 1),
    and chunks of 1-3 frames are shorter than most rings, 40-frame ones longer."""
    torch.manual_seed(1)
    m = VadNet(
        ModelConfig(
            a_channels=8,
            a_kernel=128,
            a_stride=32,
            pool=2,
            b_channels=8,
            b_kernel=b_kernel,
            b_dilations=(1, 3, 7),
            lookahead_frames=0,
        )
    ).eval()
    x = (np.random.default_rng(5).standard_normal(12_000) * 0.1).astype(np.float32)
    for pieces in (13, 150):
        vad = StreamingVAD(m)
        got = np.concatenate([vad(c) for c in np.array_split(x, pieces)] + [vad.flush()])
        assert np.abs(got - offline(m, x)).max() <= TOL


def test_bank_shrinks_when_streams_close_and_moved_streams_stay_exact(model):
    """1,000 streams open then close: the bank grows to hold them and gives the memory back;
    the streams still open when it shrinks move rows and must not notice."""
    rng = np.random.default_rng(8)
    x = (rng.standard_normal(30_000) * 0.1).astype(np.float32)
    bank = StreamBank(model, capacity=4)
    small = bank.state_bytes()
    storm = [bank.open() for _ in range(1000)]
    keep = [storm[3], storm[997]]  # one from the first rows, one from the last
    bank.advance(keep, [x[:10_000]] * 2)
    assert bank.capacity == 1024
    for s in storm:
        if s not in keep:
            bank.close(s)
    assert bank.capacity == 4 and bank.state_bytes() == small  # shrank, moved rows
    got = bank.advance(keep, [x[10_000:]] * 2, [True, True])
    for r in got:
        assert np.abs(r.probs - offline(model, x)[r.first_frame :]).max() <= TOL
    for s in keep:
        bank.close(s)
    assert bank.capacity == 4 and len(bank) == 0
    again = bank.open()  # ids are reused and the bank still works after shrinking
    assert again in storm
