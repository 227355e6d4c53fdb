"""The dynamic batcher: one forward pass for the ready audio of many streams.

Servicers call :meth:`Batcher.submit` with a stream's next chunk (16 kHz float32) and
await the future it returns. The batcher gathers ready streams until ``max_batch_size``
streams wait or the oldest has waited ``max_queue_delay_ms`` (PyTriton's dynamic
batching), then runs ONE ``StreamBank.advance`` call for them in its worker thread, so
the event loop keeps serving I/O while the model runs. A stream with several chunks
queued goes in as one concatenated entry: a stream may appear once per ``advance``
call, and one long entry is cheaper than several short ones.

Every ``StreamBank`` call (open, advance, close) runs on the one worker thread: the bank
holds a lock during ``advance``, and taking it on the event loop would stall all I/O.

Whole clips (the Detect RPC) do not come here: they run in their own low-priority
process (service/detect_worker.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from vadnet.model.streaming import StepResult, StreamBank

from .priority import name_thread

logger = logging.getLogger("vadnet")

_EMPTY = np.zeros(0, np.float32)
MODEL_THREAD_NAME = b"vadnet-model"


def _init_model_thread() -> None:
    """Name the model thread for the OS too, so ``top -H`` and bench/server_cost.py can
    tell its CPU from the event loop's (Python's thread names stay inside Python), and run
    it under the default policy even when the I/O threads are SCHED_BATCH (``vadnet serve
    --sched-batch``), so that their wake-ups do not preempt it."""
    if hasattr(os, "SCHED_OTHER"):
        try:
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
        except OSError as e:
            logger.debug("model thread keeps its scheduling policy: %s", e)
    name_thread(MODEL_THREAD_NAME)


@dataclass
class BatchStats:
    """What one batch looked like, for metrics."""

    size: int
    queue_delay_s: float
    inference_s: float
    samples: int


@dataclass(eq=False)
class Stream:
    """One stream's place in the batcher. Created by :meth:`Batcher.open`."""

    slot: int | None = None  # bank slot, opened lazily on the worker thread
    chunks: list[np.ndarray] = field(default_factory=list)
    futures: list[asyncio.Future] = field(default_factory=list)
    final: bool = False
    enqueued_at: float = 0.0
    in_flight: bool = False
    closed: bool = False


class Batcher:
    """Batches the chunks of many streams into shared ``StreamBank.advance`` calls."""

    def __init__(
        self,
        bank: StreamBank,
        max_batch_size: int = 256,
        max_queue_delay_ms: float = 10.0,
        max_entry_samples: int = 8192,
        on_batch: Callable[[BatchStats], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue_delay_ms < 0:
            raise ValueError("max_batch_size must be >= 1 and max_queue_delay_ms >= 0")
        self.bank = bank
        self.max_batch_size = max_batch_size
        self.max_queue_delay_s = max_queue_delay_ms / 1000.0
        self.max_entry_samples = max_entry_samples
        self._on_batch = on_batch
        # One thread: batches run in order, and the bank is only touched from here.
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix="vadnet-batcher", initializer=_init_model_thread
        )
        self._ready: deque[Stream] = deque()
        self._wake: asyncio.Future | None = None
        self._full: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="vadnet-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._task = None
        self._executor.shutdown(wait=True)

    async def run_in_worker(self, fn: Callable, *args: object) -> object:
        """Run ``fn(*args)`` on the streams' model thread (warm-up, tests)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- streams ---------------------------------------------------------------------
    def open(self) -> Stream:
        """A new stream. Its bank slot is opened by the worker with its first batch."""
        return Stream()

    def close(self, stream: Stream) -> None:
        """Forget ``stream`` now: queued chunks are dropped and its slot freed."""
        if stream.closed:
            return
        stream.closed = True
        for fut in stream.futures:
            fut.cancel()
        stream.chunks.clear()
        stream.futures.clear()
        if not stream.in_flight:
            self._free(stream)  # else _finish frees it when its batch returns

    def _free(self, stream: Stream) -> None:
        if stream.slot is not None:
            self._executor.submit(self.bank.close, stream.slot)
            stream.slot = None

    def submit(
        self, stream: Stream, samples: np.ndarray, final: bool = False
    ) -> asyncio.Future[StepResult | None]:
        """Queue ``samples`` ((n,) float32 at 16 kHz) for ``stream``.

        The future resolves, in submission order, to the stream's new probabilities, or to
        None when the chunk was merged into a later one of the same batch (whose result
        then covers both). ``final`` ends the stream: its lookahead is flushed.
        """
        if stream.closed or stream.final:
            raise RuntimeError("submit() on a closed or finished stream")
        fut = self._loop.create_future()
        stream.chunks.append(samples)
        stream.futures.append(fut)
        stream.final = final
        if len(stream.chunks) == 1:
            # The queue delay counts from the oldest chunk waiting; a backlog left over
            # from a split batch keeps its older time, so it goes in the next pass.
            stream.enqueued_at = time.perf_counter()
            if not stream.in_flight:
                self._enqueue(stream)
        return fut

    def _enqueue(self, stream: Stream) -> None:
        self._ready.append(stream)
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)
        if (
            len(self._ready) >= self.max_batch_size
            and self._full is not None
            and not self._full.done()
        ):
            self._full.set_result(None)

    # --- the loop --------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._ready:
                self._wake = loop.create_future()
                await self._wake
                self._wake = None
                continue
            # Wait for the batch to fill, but never hold the oldest stream past the delay.
            wait = self._ready[0].enqueued_at + self.max_queue_delay_s - time.perf_counter()
            if wait > 0 and len(self._ready) < self.max_batch_size:
                self._full = loop.create_future()
                try:
                    await asyncio.wait_for(self._full, wait)
                except TimeoutError:
                    pass
                self._full = None
            batch = self._take()
            if not batch:
                continue
            try:
                await self._process(loop, batch)
            except Exception as e:  # a model failure fails this batch, not the server
                logger.exception("batch of %s streams failed", len(batch))
                for stream, futures in batch:
                    # The stream's model state is unknown now: fail all it has queued;
                    # its servicer ends the call and closes it.
                    stream.in_flight = False
                    for fut in futures + stream.futures:
                        if not fut.done():
                            fut.set_exception(e)
                    stream.chunks, stream.futures = [], []
                    if stream.closed:
                        self._free(stream)

    def _take(self) -> list[tuple[Stream, list[asyncio.Future]]]:
        batch = []
        while self._ready and len(batch) < self.max_batch_size:
            stream = self._ready.popleft()
            if stream.closed or not stream.chunks:
                continue
            batch.append((stream, stream.futures))
            stream.in_flight = True
        return batch

    def _split(self, stream: Stream) -> tuple[np.ndarray, list[asyncio.Future], bool]:
        """Take the stream's queued chunks up to ``max_entry_samples`` (at least one).

        Every row of a batch is padded to its longest row, so one stream that sent
        seconds ahead must not make a batch of 100 ms rows pay for seconds each."""
        parts, total, k = stream.chunks, 0, 0
        while k < len(parts) and (k == 0 or total + parts[k].size <= self.max_entry_samples):
            total += parts[k].size
            k += 1
        futures = stream.futures[:k]
        chunk = parts[0] if k == 1 else np.concatenate(parts[:k])
        stream.chunks, stream.futures = parts[k:], stream.futures[k:]
        return chunk, futures, stream.final and not stream.chunks

    async def _process(
        self, loop: asyncio.AbstractEventLoop, batch: list[tuple[Stream, list[asyncio.Future]]]
    ) -> None:
        now = time.perf_counter()
        queue_delay = now - min(s.enqueued_at for s, _ in batch)
        streams, chunks, finals = [], [], []
        for i, (stream, _) in enumerate(batch):
            chunk, futures, final = self._split(stream)
            batch[i] = (stream, futures)
            chunks.append(chunk)
            finals.append(final)
            streams.append(stream)
        results = await loop.run_in_executor(self._executor, self._advance, streams, chunks, finals)
        inference = time.perf_counter() - now
        for (stream, futures), result in zip(batch, results, strict=True):
            stream.in_flight = False
            for fut in futures[:-1]:
                if not fut.done():
                    fut.set_result(None)
            if not futures[-1].done():
                futures[-1].set_result(result)
            self._requeue_or_free(stream)
        if self._on_batch is not None:
            self._on_batch(
                BatchStats(len(batch), queue_delay, inference, sum(c.size for c in chunks))
            )

    def _requeue_or_free(self, stream: Stream) -> None:
        if stream.closed:
            self._free(stream)
        elif stream.chunks:  # more arrived while the batch ran
            self._enqueue(stream)

    def _advance(
        self, streams: list[Stream], chunks: list[np.ndarray], finals: list[bool]
    ) -> list[StepResult]:
        """Worker thread: open new slots, then one batched step."""
        for stream in streams:
            if stream.slot is None:
                stream.slot = self.bank.open()
        slots = [s.slot for s in streams]
        return self.bank.advance(slots, [c if c.size else _EMPTY for c in chunks], finals)
