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
