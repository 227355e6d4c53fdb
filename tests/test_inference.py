"""model/inference.py: whole-input inference equals one offline pass and the streaming bank
(within 1e-5, identical segments), at any length and slicing, without growing memory."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest
import torch

from vadnet.model.audio import load_audio
from vadnet.model.inference import WholeInputVAD, frame_probs
from vadnet.model.segmenter import SegmenterOptions, segment_probs
from vadnet.model.streaming import StreamBank

TOL = 1e-5


@pytest.fixture(scope="module")
def long_signal(data_dir) -> np.ndarray:
    """~70 s of real speech and noise: longer than one 60 s slice."""
    parts = [load_audio(data_dir / n).samples for n in ("speech_en.wav", "noise.wav", "speech.ogg")]
    x = np.concatenate(parts * 8)
    return x[: 16000 * 70 + 123]


def _offline(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)[None])[0].numpy()


def _streamed(model, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    bank = StreamBank(model, capacity=1)
    slot = bank.open()
    out, pos = [], 0
    while pos < x.size:
        n = int(rng.integers(1, 4000))
        out.append(bank.advance([slot], [x[pos : pos + n]])[0].probs)
        pos += n
    out.append(bank.advance([slot], [x[:0]], [True])[0].probs)
    return np.concatenate(out)


def _segments(model, probs: np.ndarray, n: int):
    return segment_probs(probs, SegmenterOptions(), model.hop_s, 16000, n)


def test_random_lengths_equal_the_offline_pass(model, long_signal):
    rng = np.random.default_rng(0)
    vad = WholeInputVAD(model, chunk_s=0.7)  # many slices even on short inputs
    for n in [0, 1, 255, 256, 257, *rng.integers(300, 16000 * 5, size=6)]:
        x = long_signal[: int(n)]
        got = vad.probs(x)
        ref = _offline(model, x) if n else np.zeros(0, np.float32)
        assert got.shape == ref.shape == (model.num_frames(int(n)),)
        if n:
            assert np.abs(got - ref).max() <= TOL, n


def test_lengths_around_slice_edges(model, long_signal):
    vad = WholeInputVAD(model, chunk_s=2.0)
    edge = vad.chunk_frames * model.hop_samples  # samples in one slice's frames
    for n in (edge - 1, edge, edge + 1, 2 * edge - 257, 2 * edge, 2 * edge + 256, 3 * edge + 5):
        x = long_signal[:n]
        assert np.abs(vad.probs(x) - _offline(model, x)).max() <= TOL, n


def test_longer_than_a_slice_equals_streaming_with_identical_segments(model, long_signal):
    """The default 60 s slices on 70 s: the second slice reaches back a receptive field."""
    got = frame_probs(model, long_signal)
    streamed = _streamed(model, long_signal, np.random.default_rng(1))
    assert got.shape == streamed.shape
    assert np.abs(got - streamed).max() <= TOL
    n = long_signal.size
    assert _segments(model, got, n) == _segments(model, streamed, n)


def test_batched_slices_of_different_inputs(model, long_signal):
    """The server's path: slices of several inputs in one padded batch."""
    vad = WholeInputVAD(model, chunk_s=3.0)
    signals = [long_signal[:50_000], long_signal[7_000:200_000], long_signal[:700]]
    jobs = [(sig, s) for sig in signals for s in vad.plan(sig.size)]
    probs = vad.run([j[0] for j in jobs], [j[1] for j in jobs])
    for sig in signals:
        mine = [p for (s, _), p in zip(jobs, probs, strict=True) if s is sig]
        assert np.abs(np.concatenate(mine) - vad.probs(sig)).max() <= TOL


def test_plan_covers_every_frame_once(model):
    vad = WholeInputVAD(model, chunk_s=1.0)
    for n in (1, 16000, 16001, 160_000):
        slices = vad.plan(n)
        frames = [f for s in slices for f in range(s.first_frame, s.first_frame + s.num_frames)]
        assert frames == list(range(model.num_frames(n)))
        assert all(s.start_sample >= 0 for s in slices)
        assert all(
            s.stop_sample - s.start_sample
            <= vad.model.hop_samples
            * (vad.chunk_frames + vad.context_frames + vad.lookahead_frames)
            for s in slices
        )


def test_bad_chunk_size_is_refused(model):
    from vadnet.model.errors import InvalidInputError

    for bad in (0, -1.0, float("nan"), "60"):
        with pytest.raises(InvalidInputError, match="chunk_s"):
            WholeInputVAD(model, chunk_s=bad)


def test_weights_changed_in_place_are_seen(model, long_signal):
    """frame_probs caches the folded model; an in-place change (a training step) must
    invalidate it."""
    import copy

    m = copy.deepcopy(model)
    x = long_signal[:16000]
    before = frame_probs(m, x)
    with torch.no_grad():
        m.F.out.bias.add_(3.0)
    after = frame_probs(m, x)
    assert np.abs(after - _offline(m, x)).max() <= TOL
    assert (after >= before).all() and after.mean() > before.mean() + 0.1


def _rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


RSS_BOUND_MB = 40  # 500 calls used to add ~36 MB *each* (a traced bank per call)


def test_500_calls_keep_rss_bounded(model, long_signal):
    x = long_signal[: 16000 * 5]
    for _ in range(20):  # warm: allocator pools, the cached folded model
        frame_probs(model, x)
    gc.collect()
    start = _rss_bytes()
    for _ in range(500):
        frame_probs(model, x)
    gc.collect()
    grown_mb = (_rss_bytes() - start) / 2**20
    assert grown_mb < RSS_BOUND_MB, f"RSS grew {grown_mb:.1f} MB over 500 calls"
