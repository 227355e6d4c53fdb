"""The ``vadnet.v1.VoiceActivity`` handlers.

A StreamingDetect call runs two coroutines: a reader task (decode -> resample -> submit
to the batcher) and the handler itself as the writer (await each chunk's future in order
-> segmenter -> response). The reader pauses when the stream holds more than
``max_buffered_audio_s`` of audio not yet answered, so gRPC flow control pushes back on
a client that sends faster than the server computes: nothing buffers without bound.

Idle, too-long and drained streams are found by one sweep a second over all streams
rather than a timer per message, which keeps the per-message path short.

A drained stream ends with UNAVAILABLE, never OK. A resumable one (config.resumable)
gets checkpoints and can continue on another replica (service/resume.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import grpc
import numpy as np

from vadnet.model.audio import MODEL_RATE_HZ, Resampler, decode_pcm
from vadnet.model.errors import InvalidInputError, ResourceExhaustedError, VadnetError
from vadnet.model.segmenter import StreamingSegmenter
from vadnet.v1 import vad_pb2 as pb
from vadnet.v1 import vad_pb2_grpc as pb_grpc

from .admission import Admission
from .batcher import Batcher, Stream
from .config import ServerConfig
from .detect_worker import DetectWorker
from .errors import StreamTimeoutError, UnavailableError, abort, status_code
from .messages import encoding_name, segmenter_options
from .metrics import Metrics
from .resume import ReplayGrid, checkpoint, restore

logger = logging.getLogger("vadnet")

_KIND = {"start": pb.SpeechEvent.SPEECH_START, "end": pb.SpeechEvent.SPEECH_END}
# A resumable stream gets a checkpoint at least this often (input audio), so that the
# client's replay buffer stays near the receptive field (8.3 s) plus this.
_CHECKPOINT_EVERY_S = 1.0


def peer_address(peer: str) -> str:
    """The client's address without its port: ``ipv4:1.2.3.4:5678`` -> ``1.2.3.4``,
    ``ipv6:[::1]:5678`` -> ``[::1]``; anything else as is."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return rest.rsplit(":", 1)[0]
    return peer


@dataclass(eq=False)
class _Session:
    """One StreamingDetect call's state."""

    peer: str
    peer_ip: str = ""
    counted: bool = False  # counted in the per-peer streams
    slow_detail: str = ""
    rate: int = 0
    encoding: str = ""
    want_probs: bool = False
    resampler: Resampler | None = None
    segmenter: StreamingSegmenter | None = None
    stream: Stream | None = None
    input_samples: int = 0
    max_input_samples: int = 0
    frames: int = 0
    buffered: int = 0  # 16 kHz samples submitted but not yet answered
    resume: asyncio.Future | None = None  # set while the reader waits (backpressure)
    waiting: asyncio.Future | None = None  # set while the writer waits for a result
    outbox: deque = field(default_factory=deque)  # (future, input end, n16), _END or error
    started: float = field(default_factory=time.monotonic)
    last_read: float = field(default_factory=time.monotonic)
    reader: asyncio.Task | None = None
    stop_reason: str | None = None  # "idle", "too_long", "slow", "drain": set by the sweep
    window: tuple[float, int] | None = None  # (time, input samples) at the rate window's start
    grid: ReplayGrid | None = None  # set if resumable
    frame_offset: int = 0  # global frame of this call's first model frame (resumed streams)
    resumed_at: int = 0  # frames the segmenter had seen when this call resumed
    received: int = 0  # input samples received in this call
    last_checkpoint: int = 0  # input samples when the last checkpoint went out

    def wake_writer(self, _fut: object = None) -> None:
        w = self.waiting
        if w is not None and not w.done():
            w.set_result(None)

    def stop(self, reason: str) -> None:
        if self.stop_reason is None and self.reader is not None and not self.reader.done():
            self.stop_reason = reason
            self.reader.cancel()


_END = object()  # outbox marker: the reader is done
_DRAIN = object()  # outbox marker: the reader was stopped by a drain


class VoiceActivityServicer(pb_grpc.VoiceActivityServicer):
    """StreamingDetect, Detect and GetModelInfo on one shared :class:`Batcher`."""

    def __init__(
        self,
        batcher: Batcher,
        config: ServerConfig,
        metrics: Metrics,
        model_info: pb.ModelInfo,
        detector: DetectWorker,
    ) -> None:
        self.batcher = batcher
        self.detector = detector  # Detect's work, in a low-priority child process
        self.config = config
        self.metrics = metrics
        self.model_info = model_info
        self.ready = False  # set once the model is warm
        self.draining = False
        self.sessions: set[_Session] = set()
        self._detects = 0  # Detect calls in progress
        self.admission = Admission(config)
        self._idle = asyncio.Event()
        self._idle.set()
        self._max_buffered = int(config.max_buffered_audio_s * MODEL_RATE_HZ)
        self._sweeper: asyncio.Task | None = None
        self._hop = int(model_info.hop_samples)
        self._per_peer: Counter[str] = Counter()  # open streams per client address

    # --- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep(), name="vadnet-sweep")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await asyncio.to_thread(self.detector.stop)

    def end_all_streams(self) -> None:
        """Drain: stop reading every stream; each gets the results of what it sent (and a
        checkpoint if resumable), then UNAVAILABLE."""
        for s in list(self.sessions):
            s.stop("drain")

    def _calls_changed(self) -> None:
        if self.sessions or self._detects:
            self._idle.clear()
        else:
            self._idle.set()

    async def wait_calls_done(self, timeout: float) -> bool:
        """Wait until no stream or Detect call is open; False on timeout."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def _sweep(self) -> None:
        cfg = self.config
        while True:
            await asyncio.sleep(min(1.0, cfg.idle_timeout_s / 4))
            now = time.monotonic()
            for s in list(self.sessions):
                if s.resume is None and now - s.last_read > cfg.idle_timeout_s:
                    s.stop("idle")
                elif now - s.started > cfg.max_stream_duration_s:
                    s.stop("too_long")
                elif cfg.min_audio_rate > 0 and s.rate:
                    self._check_rate(s, now)

    def _check_rate(self, s: _Session, now: float) -> None:
        """Tumbling windows of min_audio_rate_window_s: a stream that sent less than
        min_audio_rate of real time in one is stopped. A window restarts while the server
        holds the reads (backpressure): the client is not slow then, the server is."""
        cfg = self.config
        if s.window is None or s.resume is not None:
            s.window = (now, s.input_samples)
            return
        t0, n0 = s.window
        if now - t0 < cfg.min_audio_rate_window_s:
            return
        sent_s = (s.input_samples - n0) / s.rate
        if sent_s < cfg.min_audio_rate * (now - t0):
            s.slow_detail = f"{sent_s:.2f} s of audio in {now - t0:.0f} s"
            s.stop("slow")
        else:
            s.window = (now, s.input_samples)

    def _admit_peer(self, s: _Session) -> None:
        """One client address may hold at most max_streams_per_peer streams. (Behind an L7
        proxy every stream has the proxy's address: leave it off there, docs/service.md.)"""
        limit = self.config.max_streams_per_peer
        if limit and self._per_peer[s.peer_ip] >= limit:
            raise ResourceExhaustedError(
                f"client {s.peer_ip} already has {limit} open streams, this server's limit"
                " per client: close one, or retry later"
            )
        self._per_peer[s.peer_ip] += 1
        s.counted = True

    def _check_admission(self) -> None:
        if self.draining:
            raise UnavailableError("server is shutting down: retry on another replica")
        if not self.ready:
            raise UnavailableError("model is still loading: retry shortly")

    # --- StreamingDetect -------------------------------------------------------------
    async def StreamingDetect(self, request_iterator, context: grpc.aio.ServicerContext) -> None:  # noqa: N802
        session = _Session(peer=context.peer(), peer_ip=peer_address(context.peer()))
        try:
            self._check_admission()
            self.admission.check_stream(len(self.sessions), self._detects)
            self._admit_peer(session)
            self.sessions.add(session)
            self._calls_changed()
            self.metrics.active_streams.inc()
            self.metrics.streams.inc()
            await self._open(session, context)
            await self._write_loop(session, context)
        except asyncio.CancelledError:
            logger.info("stream from %s cancelled by the client", session.peer)
            raise
        except Exception as e:
            self.metrics.errors.labels(status_code(e).name).inc()
            if isinstance(e, VadnetError):
                logger.info("stream from %s ended: %s", session.peer, e)
            await abort(context, e)
        finally:
            self._close(session)

    def _close(self, session: _Session) -> None:
        if session.reader is not None and not session.reader.done():
            session.reader.cancel()
        if session.stream is not None:
            self.batcher.close(session.stream)  # frees the model state at once
        if session.counted:
            session.counted = False
            self._per_peer[session.peer_ip] -= 1
            if not self._per_peer[session.peer_ip]:
                del self._per_peer[session.peer_ip]
        if session in self.sessions:
            self.sessions.discard(session)
            self.metrics.active_streams.dec()
            self._calls_changed()

    async def _open(self, s: _Session, context: grpc.aio.ServicerContext) -> None:
        try:
            async with asyncio.timeout(self.config.idle_timeout_s):
                first = await context.read()
        except TimeoutError as e:
            raise StreamTimeoutError(
                f"no config within {self.config.idle_timeout_s:g} s: send the config first"
            ) from e
        if first is grpc.aio.EOF:
            raise InvalidInputError("empty stream: send a config message, then audio")
        kind = first.WhichOneof("request")
        if kind != "config":
            raise InvalidInputError(
                "the first message must carry a config (sample_rate_hz, encoding), not "
                + ("audio" if kind == "audio" else "nothing (an empty message)")
            )
        cfg = first.config
        s.encoding = encoding_name(cfg.encoding)
        s.rate = int(cfg.sample_rate_hz)
        s.max_input_samples = int(self.config.max_stream_duration_s * s.rate)
        s.resampler = Resampler(s.rate)  # checks the rate
        opts = segmenter_options(cfg.segmenter)
        s.segmenter = StreamingSegmenter(
            opts, hop_s=self._hop / MODEL_RATE_HZ, input_rate_hz=s.rate
        )
        s.want_probs = cfg.return_probabilities
        if cfg.resumable or cfg.HasField("resume"):
            info = self.model_info
            s.grid = ReplayGrid(
                s.rate,
                self._hop,
                int(info.lookahead_frames) * self._hop,
                round(info.receptive_field_s * MODEL_RATE_HZ),
            )
        if cfg.HasField("resume"):
            restore(s.segmenter, cfg.resume, s.grid)
            start = cfg.resume.replay_from_sample
            s.input_samples = s.last_checkpoint = start
            s.frames = s.resumed_at = s.segmenter.frames_pushed
            s.frame_offset = s.grid.to_model(start) // self._hop
            # Operators follow a deploy's failovers in the log (the metric counts streams).
            logger.info(
                "stream from %s resumed from its checkpoint at %.2f s", s.peer, start / s.rate
            )
        s.stream = self.batcher.open()
        s.last_read = time.monotonic()
        s.reader = asyncio.create_task(self._read_loop(s, context))

    async def _read_loop(self, s: _Session, context: grpc.aio.ServicerContext) -> None:
        """Reader task: request messages -> batcher; ends by queueing _END (or an error)."""
        end: object = _END
        try:
            while True:
                msg = await context.read()
                s.last_read = time.monotonic()
                if msg is grpc.aio.EOF:
                    break
                self._ingest(s, msg)
                del msg  # an idle stream must not pin its last message while it waits
                if s.buffered > self._max_buffered:
                    # Backpressure: stop reading; gRPC flow control stalls the client.
                    s.resume = asyncio.get_running_loop().create_future()
                    await s.resume
                    s.resume = None
                    s.last_read = time.monotonic()
        except asyncio.CancelledError:
            if s.stop_reason is None:
                raise  # the whole call is going away
            end = self._stop_error(s)
        except Exception as e:
            end = e
        s.outbox.append(end)
        s.wake_writer()

    def _ingest(self, s: _Session, msg: pb.StreamingDetectRequest) -> None:
        """One audio message: decode -> resample -> submit (its arrays die on return)."""
        kind = msg.WhichOneof("request")
        if kind != "audio":
            raise InvalidInputError(
                "a second config arrived: send the config once, then only audio"
                if kind == "config"
                else "an empty message arrived: every message after the config carries audio"
            )
        x = decode_pcm(msg.audio, s.encoding, s.rate)
        s.input_samples += x.size
        s.received += x.size
        if s.input_samples > s.max_input_samples:
            raise ResourceExhaustedError(
                f"stream exceeds {self.config.max_stream_duration_s:g} s of audio:"
                " open a new stream to continue"
            )
        y = s.resampler(x)
        s.buffered += y.size
        fut = self.batcher.submit(s.stream, y)
        s.outbox.append((fut, s.input_samples, y.size, time.perf_counter()))
        if s.waiting and len(s.outbox) == 1:
            # The writer sleeps until this result is ready, not until it is queued:
            # one wake-up per chunk instead of two.
            fut.add_done_callback(s.wake_writer)

    def _stop_error(self, s: _Session) -> object:
        if s.stop_reason == "idle":
            return StreamTimeoutError(
                f"no audio for {self.config.idle_timeout_s:g} s: the stream was closed;"
                " send audio continuously or half-close when done"
            )
        if s.stop_reason == "slow":
            return StreamTimeoutError(
                f"stream too slow: {s.slow_detail}, under this server's minimum of"
                f" {self.config.min_audio_rate:.0%} of real time; send audio continuously"
                " (or half-close when done)"
            )
        if s.stop_reason == "too_long":
            return ResourceExhaustedError(
                f"stream open longer than {self.config.max_stream_duration_s:g} s:"
                " open a new stream to continue"
            )
        return _DRAIN

    async def _write_loop(self, s: _Session, context: grpc.aio.ServicerContext) -> None:
        """The handler: results in order -> responses; then the final message."""
        outbox, seg, loop = s.outbox, s.segmenter, asyncio.get_running_loop()
        latency = self.metrics.chunk_latency
        unanswered_since = None  # arrival of the oldest chunk not yet answered
        while True:
            if not outbox or (
                type(outbox[0]) is tuple and not outbox[0][0].done()  # noqa: E721
            ):
                s.waiting = loop.create_future()
                if outbox:
                    outbox[0][0].add_done_callback(s.wake_writer)
                await s.waiting
                s.waiting = None
                continue
            item = outbox.popleft()
            if item is _END:
                break
            if item is _DRAIN:
                await self._cut(s, context)
            if isinstance(item, BaseException):
                raise item
            fut, input_done, n16, arrived = item
            unanswered_since = unanswered_since or arrived
            result = fut.result()
            s.buffered -= n16
            if s.resume is not None and s.buffered <= self._max_buffered and not s.resume.done():
                s.resume.set_result(None)
            if result is None:
                continue  # merged into a later chunk of the same batch
            result = self._skip_replayed(s, result)
            probs = result.probs
            s.frames += probs.size
            events = seg.push(probs) if probs.size else ()
            due = (
                s.grid is not None
                and input_done - s.last_checkpoint >= s.rate * _CHECKPOINT_EVERY_S
            )
            if s.resumed_at and s.frames == s.resumed_at:
                unanswered_since = None
                continue  # a resumed stream says nothing while it re-runs answered frames
            if events or due or s.want_probs:
                await context.write(self._response(s, events, result, input_done))
                latency.observe(time.perf_counter() - unanswered_since)
            unanswered_since = None
        await self._finish(s, context)

    def _skip_replayed(self, s: _Session, result):
        """``result`` on the global frame grid, less the frames the segmenter has seen
        (a resumed stream re-runs them only to fill the net's context)."""
        if s.frame_offset == 0 and s.grid is None:
            return result
        first = result.first_frame + s.frame_offset
        drop = min(max(0, s.frames - first), result.probs.size)
        return type(result)(first + drop, result.probs[drop:])

    async def _cut(self, s: _Session, context: grpc.aio.ServicerContext) -> None:
        """Drain: the last checkpoint (if resumable), then UNAVAILABLE: never OK."""
        at = s.input_samples / s.rate
        if s.grid is not None:
            await context.write(self._response(s, (), None, s.input_samples))
            raise UnavailableError(
                f"server is draining: resume this stream on another replica from its last"
                f" checkpoint (cut at {at:.2f} s)"
            )
        raise UnavailableError(
            f"server is draining: the stream was cut at {at:.2f} s of audio, its results are"
            " incomplete; open a new stream on another replica (set resumable to continue it)"
        )

    async def _finish(self, s: _Session, context: grpc.aio.ServicerContext) -> None:
        if s.received == 0 and s.stop_reason is None:
            raise InvalidInputError("the stream ended without audio: send audio after the config")
        tail = s.resampler(np.zeros(0, np.float32), last=True)
        result = await self.batcher.submit(s.stream, tail, final=True)
        if result is not None:
            result = self._skip_replayed(s, result)
        probs = result.probs if result is not None else np.zeros(0, np.float32)
        s.frames += probs.size
        events = s.segmenter.push(probs) + s.segmenter.finish(s.input_samples)
        resp = self._response(s, events, result, s.input_samples)
        resp.is_final = True
        resp.summary.audio_s = s.input_samples / s.rate if s.rate else 0.0
        resp.summary.input_samples = s.input_samples
        resp.summary.frames = s.frames
        resp.summary.segments = s.segmenter.segment_count
        await context.write(resp)
        self.metrics.audio_seconds.labels("StreamingDetect").inc(resp.summary.audio_s)
        self.metrics.frames.labels("StreamingDetect").inc(s.frames)
        logger.info(
            "stream from %s done: %.2f s audio, %s frames, %s segments",
            s.peer,
            resp.summary.audio_s,
            s.frames,
            resp.summary.segments,
        )

    def _response(self, s: _Session, events, result, input_done: int) -> pb.StreamingDetectResponse:
        resp = pb.StreamingDetectResponse(input_samples_processed=input_done)
        for e in events:
            resp.events.add(kind=_KIND[e.kind], time_s=e.time_s, sample=e.sample)
        if s.want_probs and result is not None:
            resp.probabilities.first_frame = result.first_frame
            resp.probabilities.values.extend(result.probs.tolist())
        if s.grid is not None:
            resp.checkpoint.CopyFrom(checkpoint(s.segmenter, s.grid))
            s.last_checkpoint = input_done
        return resp

    # --- Detect ----------------------------------------------------------------------
    async def Detect(self, request: bytes, context: grpc.aio.ServicerContext) -> pb.DetectResponse:  # noqa: N802
        """``request`` is the serialized DetectRequest: the Detect worker process parses it
        (server.add_servicer), so the server's event loop never copies the upload."""
        try:
            self._check_admission()
            # Admitted before decoding: the cap bounds the decoded audio held at once.
            self.admission.check_detect(
                len(self.sessions), self._detects, self.detector.backlog_s()
            )
            self._detects += 1
            self._calls_changed()
            started = time.monotonic()
            try:
                result = await self.detector.run(request)
            finally:
                self._detects -= 1
                self._calls_changed()
                self.admission.detect_done(time.monotonic() - started)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.metrics.errors.labels(status_code(e).name).inc()
            await abort(context, e)
        resp = pb.DetectResponse(
            audio_s=result.audio_s, frames=result.frames, input_sample_rate_hz=result.input_rate_hz
        )
        for seg in result.segments:
            resp.segments.add(
                start_s=seg.start_s,
                end_s=seg.end_s,
                start_sample=seg.start_sample,
                end_sample=seg.end_sample,
            )
        if result.probabilities is not None:
            resp.probabilities.extend(result.probabilities.tolist())
        self.metrics.audio_seconds.labels("Detect").inc(result.audio_s)
        self.metrics.frames.labels("Detect").inc(result.frames)
        return resp

    # --- GetModelInfo ----------------------------------------------------------------
    async def GetModelInfo(
        self, request: pb.GetModelInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:  # noqa: N802
        return self.model_info
