"""Client-side failover of StreamingDetect: resume a cut stream on another replica.

The client asks for checkpoints (``StreamingConfig.resumable``) and keeps the audio it
sent from the last checkpoint's ``replay_from_sample`` on: the model's receptive field
plus lookahead plus up to a second (~9.3 s; the server computes the figure from the model
it runs, so the client needs no model knowledge). When a call fails with UNAVAILABLE (a
draining replica, a dead one, a lost connection) or stalls (a frozen replica: nothing
answered for ``stall_timeout_s`` while audio waits), it opens a new call on the same
channel (a multi-address or DNS target with round_robin reaches the other replicas), sends
the checkpoint in ``config.resume`` and the kept audio, then the rest of the source. The
server emits nothing before the checkpoint, so the caller sees one unbroken stream.

It gives up with :class:`StreamFailedError` after ``retries`` failed calls in a row, or
when the stream has made no progress for ``3 * stall_timeout_s``.

The pieces here do no I/O: :class:`AudioLog` (the source and the kept audio) and
:class:`Failover` (checkpoints, progress, the retry decision); client.py drives them with
grpc's sync or asyncio API.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass

import grpc

from vadnet.model.errors import InvalidInputError
from vadnet.v1 import vad_pb2 as pb

# Codes a new call on another replica can fix. Anything else (INVALID_ARGUMENT,
# UNAUTHENTICATED, RESOURCE_EXHAUSTED...) would fail the same way again.
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


def _status_lost(error: grpc.RpcError) -> bool:
    """grpc.aio reports a call that the server ended while the client was still writing
    as INTERNAL "Internal error from Core" (failed SendMessageOperation), whatever status
    the server sent (grpc/grpc#36066). A live stream is always writing, so a drain's
    UNAVAILABLE arrives like this: retry it (a real INTERNAL would fail the retries too)."""
    if error.code() != grpc.StatusCode.INTERNAL:
        return False
    debug = getattr(error, "debug_error_string", lambda: "")() or ""
    return "SendMessageOperation" in debug


# Audio the server may hold without answering: it sends a checkpoint each 1 s of audio.
_UNANSWERED_S = 1.5


@dataclass
class RetryPolicy:
    """How hard a stream tries before it gives up."""

    # Failed calls in a row (no response between them) before giving up: a draining
    # replica can answer UNAVAILABLE to a retry or two while round_robin still picks it.
    retries: int = 5
    # First pause between calls, doubled each time up to max_backoff_s.
    backoff_s: float = 0.2
    max_backoff_s: float = 2.0
    # A call that answers nothing this long while audio waits is abandoned: a frozen
    # server. The server answers at least once per second of audio it processes.
    stall_timeout_s: float = 8.0

    def __post_init__(self) -> None:
        if self.retries < 0 or not self.stall_timeout_s > 0 or not self.backoff_s >= 0:
            raise InvalidInputError(
                f"retries must be >= 0 and stall_timeout_s > 0, got {self.retries} and"
                f" {self.stall_timeout_s}"
            )


class StreamFailedError(grpc.RpcError):
    """The stream could not be finished on any replica; ``code()``/``details()`` as grpc's."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class AudioLog:
    """The source of audio chunks (read once) and the chunks kept for a replay.

    A call reads with a cursor (input samples): chunks the log holds come from the log,
    later ones are pulled from the source and kept. Thread-safe, because grpc's sync API
    reads requests on its own thread, and an abandoned call's reader may still be pulling.
    """

    def __init__(self, sample_bytes: int) -> None:
        self.sample_bytes = sample_bytes
        self._kept: deque[tuple[int, bytes]] = deque()  # (first sample, bytes)
        self.end = 0  # samples pulled from the source
        self.exhausted = False
        self.lock = threading.Lock()  # guards the kept chunks
        self.pull_lock = threading.Lock()  # one puller of the source at a time

    def drop_before(self, sample: int) -> None:
        """Forget chunks that end at or before ``sample`` (the replay start)."""
        with self.lock:
            kept = self._kept
            while kept and kept[0][0] + len(kept[0][1]) // self.sample_bytes <= sample:
                kept.popleft()

    def kept(self, cursor: int) -> bytes | None:
        """Kept audio from ``cursor`` to the end of its chunk, or None if not kept."""
        with self.lock:
            for first, data in self._kept:
                n = len(data) // self.sample_bytes
                if first <= cursor < first + n:
                    return data[(cursor - first) * self.sample_bytes :]
            if self._kept and cursor < self._kept[0][0]:
                raise AssertionError("replay start dropped from the log")  # a bug, not input
            return None

    def keep(self, before: int, chunk: bytes | None) -> bool:
        """Keep a chunk pulled when the log ended at ``before``, unless another call's
        reader kept it first; False when the source has ended."""
        if self.end != before:
            return True  # the shared pull: the first reader to get it kept it
        if chunk is None:
            self.exhausted = True
            return False
        self.add(chunk)
        return True

    def add(self, chunk: bytes) -> int:
        """Keep a chunk pulled from the source; returns its first sample."""
        if len(chunk) % self.sample_bytes:
            raise ValueError(f"audio chunks must hold whole samples of {self.sample_bytes} bytes")
        with self.lock:
            first = self.end
            self._kept.append((first, chunk))
            self.end += len(chunk) // self.sample_bytes
            return first

    @property
    def kept_samples(self) -> int:
        with self.lock:
            return self.end - (self._kept[0][0] if self._kept else self.end)


class Failover:
    """One resumable stream's bookkeeping across its calls."""

    def __init__(
        self,
        config: pb.StreamingConfig,
        log: AudioLog,
        policy: RetryPolicy,
        realtime: bool,
        deadline: float | None,
    ) -> None:
        self.config = config
        self.log = log
        self.policy = policy
        self.realtime = realtime
        self.deadline = deadline  # time.monotonic() by which all must be done, or None
        self.rate = int(config.sample_rate_hz)
        self.checkpoint: pb.ResumePoint | None = None
        self.processed = 0  # input samples the server has answered for
        self.failures = 0  # failed calls since the last response
        self.calls = 0
        self.last_progress = self.call_started = time.monotonic()
        self.t0 = time.monotonic()  # realtime pacing of source audio

    # --- one call --------------------------------------------------------------------
    def first_message(self) -> tuple[pb.StreamingDetectRequest, int]:
        """The config of a new call and the sample its audio starts at."""
        self.calls += 1
        self.call_started = time.monotonic()
        cfg = pb.StreamingConfig()
        cfg.CopyFrom(self.config)
        cfg.resumable = True
        start = 0
        if self.checkpoint is not None:
            cfg.resume.CopyFrom(self.checkpoint)
            start = self.checkpoint.replay_from_sample
        return pb.StreamingDetectRequest(config=cfg), start

    def pace_delay(self, first_sample: int) -> float:
        """Seconds to wait before sending source audio that starts at ``first_sample``."""
        if not self.realtime:
            return 0.0
        return self.t0 + first_sample / self.rate - time.monotonic()

    def on_response(self, resp: pb.StreamingDetectResponse) -> bool:
        """Note a response; True if the caller should see it (it has more than a checkpoint)."""
        self.last_progress = time.monotonic()
        self.failures = 0
        self.processed = max(self.processed, resp.input_samples_processed)
        if resp.HasField("checkpoint"):
            self.checkpoint = resp.checkpoint
            self.log.drop_before(resp.checkpoint.replay_from_sample)
        return bool(resp.events or resp.probabilities.values or resp.is_final)

    def stalled(self) -> bool:
        """The server has answered nothing for stall_timeout_s although audio waits."""
        waiting = self.log.exhausted or self.log.end - self.processed > _UNANSWERED_S * self.rate
        since = max(self.last_progress, self.call_started)
        return waiting and time.monotonic() - since > self.policy.stall_timeout_s

    def remaining(self) -> float | None:
        """Seconds left of the caller's deadline (None: no deadline)."""
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    # --- between calls ---------------------------------------------------------------
    def retry_delay(self, error: grpc.RpcError, stalled: bool) -> float:
        """Seconds to wait before the next call; raises StreamFailedError to give up."""
        code = grpc.StatusCode.UNAVAILABLE if stalled else error.code()
        what = (
            f"no answer for {self.policy.stall_timeout_s:g} s (server frozen or unreachable)"
            if stalled
            else f"{code.name}: {error.details()}"
        )
        if code not in _RETRYABLE and not _status_lost(error):
            raise error
        self.failures += 1
        idle = time.monotonic() - self.last_progress
        if self.failures > self.policy.retries or idle > 3 * self.policy.stall_timeout_s:
            raise StreamFailedError(
                code,
                f"stream failed after {self.failures} attempts without progress"
                f" ({idle:.1f} s): {what}",
            ) from error
        delay = min(self.policy.backoff_s * 2 ** (self.failures - 1), self.policy.max_backoff_s)
        left = self.remaining()
        if left is not None and left <= delay:
            raise StreamFailedError(
                grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline reached while retrying: {what}"
            ) from error
        return delay


# --- request generators: the sync one runs on grpc's thread -----------------------------
def sync_requests(
    fo: Failover, source: Iterator[bytes], stop: threading.Event
) -> Iterator[pb.StreamingDetectRequest]:
    """One call's requests: its config, the kept audio from the replay start, then new
    audio from ``source`` (kept too). ``stop`` ends an abandoned call's generator."""
    first, cursor = fo.first_message()
    yield first
    log = fo.log
    while not stop.is_set():
        data = log.kept(cursor)
        if data is None:
            with log.pull_lock:  # one puller at a time: an abandoned call may still be here
                before = log.end
                if before > cursor or stop.is_set():
                    continue  # another call's generator pulled it meanwhile
                if not log.keep(before, next(source, None)):
                    return
            time.sleep(max(0.0, fo.pace_delay(cursor)))
            continue
        yield pb.StreamingDetectRequest(audio=data)
        cursor += len(data) // log.sample_bytes


class AsyncSource:
    """An async or sync iterable of chunks, pulled once. A pull in progress is shared and
    never cancelled with the call that started it (a cancelled anext would end the source)."""

    def __init__(self, chunks: Iterable[bytes] | AsyncIterable[bytes]) -> None:
        self._it = chunks.__aiter__() if isinstance(chunks, AsyncIterable) else iter(chunks)
        self._pull: asyncio.Future | None = None

    async def next(self) -> bytes | None:
        if not isinstance(self._it, AsyncIterator):
            return next(self._it, None)
        if self._pull is None:
            self._pull = asyncio.ensure_future(anext(self._it, None))
        pull = self._pull
        chunk = await asyncio.shield(pull)
        if self._pull is pull:
            self._pull = None
        return chunk


async def async_requests(
    fo: Failover, source: AsyncSource
) -> AsyncIterator[pb.StreamingDetectRequest]:
    """See :func:`sync_requests`."""
    first, cursor = fo.first_message()
    yield first
    log = fo.log
    while True:
        data = log.kept(cursor)
        if data is None:
            before = log.end
            if log.exhausted or not log.keep(before, await source.next()):
                return
            await asyncio.sleep(max(0.0, fo.pace_delay(cursor)))
            continue
        yield pb.StreamingDetectRequest(audio=data)
        cursor += len(data) // log.sample_bytes
