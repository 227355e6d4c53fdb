"""The batcher on a real StreamBank: merged chunks, shared batches, ordering, closing."""

from __future__ import annotations

import asyncio

import numpy as np
import torch

from vadnet.model.streaming import StreamBank
from vadnet.service.batcher import Batcher


def _offline(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)[None])[0].numpy()


async def test_streams_share_batches_and_get_exact_results(model):
    rng = np.random.default_rng(0)
    signals = [
        (rng.standard_normal(int(rng.integers(300, 9000))) * 0.1).astype(np.float32)
        for _ in range(12)
    ]
    stats = []
    batcher = Batcher(
        StreamBank(model),
        max_batch_size=5,
        max_queue_delay_ms=1.0,
        max_entry_samples=1024,
        on_batch=stats.append,
    )
    await batcher.start()
    try:

        async def one(x: np.ndarray) -> np.ndarray:
            stream = batcher.open()
            cuts = np.sort(rng.choice(np.arange(1, x.size), size=6, replace=False))
            pieces = np.split(x, cuts)
            # submit everything at once: chunks merge, and the entry cap splits them again
            futs = [batcher.submit(stream, p) for p in pieces[:-1]]
            futs.append(batcher.submit(stream, pieces[-1], final=True))
            results = await asyncio.gather(*futs)
            batcher.close(stream)
            firsts = [r.first_frame for r in results if r is not None and r.probs.size]
            assert firsts == sorted(firsts)
            return np.concatenate([r.probs for r in results if r is not None])

        got = await asyncio.gather(*(one(x) for x in signals))
    finally:
        await batcher.stop()
    for x, probs in zip(signals, got, strict=True):
        ref = _offline(model, x)
        assert probs.shape == ref.shape
        assert np.abs(probs - ref).max() <= 1e-5
    assert max(s.size for s in stats) == 5  # batches filled up to max_batch_size
    assert len(batcher.bank) == 0  # every slot was freed


async def test_close_while_queued_cancels_and_frees(model):
    batcher = Batcher(StreamBank(model), max_batch_size=4, max_queue_delay_ms=50.0)
    await batcher.start()
    try:
        keep, drop = batcher.open(), batcher.open()
        f_keep = batcher.submit(keep, np.zeros(2560, np.float32))
        f_drop = batcher.submit(drop, np.zeros(2560, np.float32))
        batcher.close(drop)
        assert f_drop.cancelled()
        result = await f_keep
        assert result.probs.size == 10 - 4  # 10 hops in, 4 held back as lookahead
        batcher.close(keep)
        await batcher.run_in_worker(lambda: None)  # the close ran on the worker
        assert len(batcher.bank) == 0
    finally:
        await batcher.stop()


async def test_whole_clips_are_exact_and_yield_to_streams(model):
    import os
    import threading

    from vadnet.model.inference import WholeInputVAD

    class Recording(WholeInputVAD):
        """Notes which thread ran each slice batch, and at what nice value."""

        ran_on: set[tuple[int, int]] = set()

        def run(self, signals, slices):
            tid = threading.get_native_id()
            self.ran_on.add((tid, os.getpriority(os.PRIO_PROCESS, tid)))
            return super().run(signals, slices)

    rng = np.random.default_rng(1)
    clips = [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in (700_001, 3_000, 40_000)]
    stats = []
    hop = model.hop_samples
    whole = Recording(model, chunk_s=1.0)  # many slices, so streams can cut in
    batcher = Batcher(
        StreamBank(model),
        max_batch_size=8,
        max_queue_delay_ms=0.0,
        on_batch=stats.append,
        whole=whole,
        whole_batch_samples=16000 + model.receptive_field_samples,
    )
    await batcher.start()
    try:
        detects = [asyncio.ensure_future(batcher.probabilities(x)) for x in clips]
        while not any(s.kind == "whole" for s in stats):
            await asyncio.sleep(0.001)
        stream = batcher.open()
        x = (rng.standard_normal(hop * 50) * 0.1).astype(np.float32)
        result = await batcher.submit(stream, x, final=True)
        stream_thread = await batcher.run_in_worker(threading.get_native_id)
        batcher.close(stream)
        # The stream did not wait for the queued Detect work (44 s of audio in 1 s slices).
        assert not detects[0].done()
        got = await asyncio.gather(*detects)
    finally:
        await batcher.stop()
    assert np.abs(result.probs - _offline(model, x)).max() <= 1e-5
    for clip, probs in zip(clips, got, strict=True):
        ref = _offline(model, clip)
        assert probs.shape == ref.shape
        assert np.abs(probs - ref).max() <= 1e-5
    # Slices of different clips shared batches (round-robin), each within the budget.
    whole_batches = [s for s in stats if s.kind == "whole"]
    assert max(s.size for s in whole_batches) > 1
    assert not batcher._jobs
    # Detect slices ran on their own thread at nice 19, never on the streams' thread.
    assert len(whole.ran_on) == 1
    ((tid, nice),) = whole.ran_on
    assert tid != stream_thread and nice == 19
