"""``vadnet.Client`` and ``vadnet.AsyncClient``: the gRPC service through the same types as
the in-process API (``vadnet.detect`` -> list[Segment], ``VADIterator`` -> SpeechEvent).

>>> with vadnet.Client("localhost:50051") as client:
...     client.detect("speech.wav")                          # list[Segment]
...     for event in client.stream(chunks, sample_rate=8000):  # SpeechEvent, as decided
...         ...
>>> async with vadnet.AsyncClient("localhost:50051") as client:
...     segments = await client.detect(samples, sample_rate=8000)
...     async for event in client.stream(mic_chunks(), sample_rate=16000):
...         ...

Both wrap :class:`~vadnet.service.client.VadClient` / ``AsyncVadClient`` (TLS, token,
channel options and whatever else they take pass through), so the wire behaviour is
theirs. Inputs follow the local API's rules (model/inputs.py): a path or an encoded
file's bytes, or mono samples at ``sample_rate`` (16 kHz by default); knobs are Silero's.

Errors: what the server rejects as the caller's fault comes back as vadnet's own
exceptions, chained to the ``grpc.RpcError`` (INVALID_ARGUMENT -> InvalidInputError,
UNAUTHENTICATED -> UnauthenticatedError, RESOURCE_EXHAUSTED -> ResourceExhaustedError,
FAILED_PRECONDITION -> ModelError); transport and server states (UNAVAILABLE,
DEADLINE_EXCEEDED, ...) stay ``grpc.RpcError``.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import numpy as np
import soundfile as sf
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vadnet.model.errors import (
    InvalidInputError,
    ModelError,
    ResourceExhaustedError,
    UnauthenticatedError,
    VadnetError,
)
from vadnet.model.inputs import (
    AudioInput,
    Samples,
    is_encoded_file,
    is_samples,
    mono_samples,
    reject_rate_for_file,
    samples_rate,
    segmenter_options,
)
from vadnet.model.segmenter import Segment, SegmenterOptions, SpeechEvent
from vadnet.v1 import vad_pb2 as pb

from .client import AsyncVadClient, TlsOptions, VadClient

__all__ = ["AsyncClient", "Client"]

_ERRORS: dict[grpc.StatusCode, type[VadnetError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInputError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: ModelError,
}
_KIND = {pb.SpeechEvent.SPEECH_START: "start", pb.SpeechEvent.SPEECH_END: "end"}
#: One chunk of a stream: samples, or raw bytes in the stream's encoding.
Chunk: TypeAlias = "Samples | bytes"


@contextlib.contextmanager
def _vadnet_errors() -> Iterator[None]:
    """grpc.RpcError with a caller's-fault code -> the matching VadnetError (chained)."""
    try:
        yield
    except grpc.RpcError as e:
        code = e.code() if callable(getattr(e, "code", None)) else None
        error = _ERRORS.get(code)
        if error is None:
            raise
        raise error(e.details() or code.name) from e


def _segmenter_dict(options: SegmenterOptions | dict | None, knobs: dict) -> dict:
    """Checked here, so a bad knob fails before any RPC; unset fields stay off the wire."""
    opts = segmenter_options(options, **knobs)
    return {
        k: v
        for k, v in asdict(opts).items()
        if v is not None and not (isinstance(v, float) and math.isinf(v))
    }


def _file_bytes(audio: AudioInput, sample_rate: int | None) -> bytes:
    """What a Detect request carries: a file's bytes, or samples as a float WAV (exact)."""
    if is_encoded_file(audio):
        reject_rate_for_file(sample_rate)
        if isinstance(audio, bytes | bytearray | memoryview):
            return bytes(audio)
        path = Path(audio)  # type: ignore[arg-type]
        try:
            return path.read_bytes()
        except OSError as e:
            raise InvalidInputError(f"cannot read audio file {path}: {e.strerror or e}") from e
    x, rate = mono_samples(audio), samples_rate(sample_rate)
    buf = io.BytesIO()
    sf.write(buf, x, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def _segments(resp: pb.DetectResponse) -> list[Segment]:
    return [Segment(s.start_s, s.end_s, s.start_sample, s.end_sample) for s in resp.segments]


def _events(resp: pb.StreamingDetectResponse, hop_s: float) -> list[SpeechEvent]:
    # the wire carries time and sample; the frame index follows from the model's hop
    return [
        SpeechEvent(_KIND[e.kind], e.time_s, e.sample, math.floor(e.time_s / hop_s + 1e-9))
        for e in resp.events
    ]


def _chunk_converter(first: Chunk, encoding: str | None) -> tuple[str, Callable[[Chunk], bytes]]:
    """The stream's encoding and how to turn each chunk into its bytes, from the first one:
    raw bytes go as they are (in ``encoding``), samples as FLOAT32."""
    if isinstance(first, bytes | bytearray | memoryview):
        if encoding is None:
            raise InvalidInputError(
                "raw byte chunks need encoding= (LINEAR16, FLOAT32, MULAW or ALAW);"
                " numpy/torch chunks need none"
            )
        return encoding, bytes
    if encoding not in (None, "FLOAT32"):
        raise InvalidInputError(
            f"encoding={encoding!r} is for raw byte chunks; sample chunks are sent as FLOAT32"
        )
    return "FLOAT32", lambda c: mono_samples(c, "a chunk").astype("<f4").tobytes()


def _whole_input(
    audio: Any, sample_rate: int | None, chunk_ms: float
) -> tuple[Iterable[Chunk] | AsyncIterable[Chunk] | str | Path, int | None]:
    """A path stays a path (VadClient reads and sends it); whole samples are cut into
    ``chunk_ms`` chunks; anything else must be an iterable of chunks."""
    if isinstance(audio, str | Path):
        reject_rate_for_file(sample_rate)
        return audio, None
    if isinstance(audio, bytes | bytearray | memoryview):
        raise InvalidInputError(
            "stream() takes a path, samples, or an iterable of chunks, not a whole file's"
            " bytes: use detect() for those, or pass raw chunks with encoding="
        )
    rate = samples_rate(sample_rate)
    if is_samples(audio):
        x = mono_samples(audio)
        n = max(1, round(rate * chunk_ms / 1000))
        return [x[i : i + n] for i in range(0, x.size, n)], rate
    if not isinstance(audio, Iterable | AsyncIterable):
        raise InvalidInputError(
            f"stream() takes a path, samples, or an iterable of chunks, got {type(audio).__name__}"
        )
    return audio, rate


class _Connection:
    """What both clients hold: the wrapped VadClient/AsyncVadClient and the model's hop."""

    _client_class: Any = VadClient

    def __init__(
        self,
        target: str = "localhost:50051",
        *,
        tls: TlsOptions | None = None,
        token: str | None = None,
        options: Iterable[tuple[str, Any]] = (),
        **client_options: Any,
    ) -> None:
        self.client = self._client_class(
            target, tls=tls, token=token, options=tuple(options), **client_options
        )
        self._hop_s: float | None = None  # from model_info, on the first stream


class Client(_Connection):
    """Blocking client of a vadnet server (``host:port``); a context manager.

    Args:
        target: ``host:port``, or e.g. ``dns:///vadnet-headless:50051``.
        tls: TLS (and mTLS) settings; plaintext when None.
        token: bearer token, when the server asks for one.
        options: grpc channel options, e.g. ``[("grpc.lb_policy_name", "round_robin")]``.
        **client_options: passed on to :class:`~vadnet.service.client.VadClient`.
    """

    client: VadClient

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def detect(
        self,
        audio: AudioInput,
        sample_rate: int | None = None,
        *,
        options: SegmenterOptions | dict | None = None,
        timeout: float | None = None,
        **knobs: Any,
    ) -> list[Segment]:
        """Speech segments of a whole input, by the Detect RPC; the arguments and result are
        :func:`vadnet.detect`'s (the server runs the same computation)."""
        seg = _segmenter_dict(options, knobs)
        data = _file_bytes(audio, sample_rate)
        with _vadnet_errors():
            return _segments(self.client.detect(data, segmenter=seg, timeout=timeout))

    def probabilities(
        self, audio: AudioInput, sample_rate: int | None = None, *, timeout: float | None = None
    ) -> np.ndarray:
        """P(speech) per 16 ms frame, by the Detect RPC; see :func:`vadnet.probabilities`."""
        data = _file_bytes(audio, sample_rate)
        with _vadnet_errors():
            resp = self.client.detect(data, return_probabilities=True, timeout=timeout)
        return np.asarray(resp.probabilities, dtype=np.float32)

    def stream(
        self,
        audio: str | Path | Samples | Iterable[Chunk],
        sample_rate: int | None = None,
        *,
        encoding: str | None = None,
        chunk_ms: float = 20.0,
        options: SegmenterOptions | dict | None = None,
        realtime: bool = False,
        timeout: float | None = None,
        **knobs: Any,
    ) -> Iterator[SpeechEvent]:
        """Speech events by the StreamingDetect RPC, yielded as the server decides them.

        Args:
            audio: a path (sent at its own rate in ``chunk_ms`` chunks); whole samples at
                ``sample_rate`` (cut into ``chunk_ms`` chunks); or an iterable of chunks,
                all samples (numpy/torch) or all raw bytes in ``encoding``.
            sample_rate: the rate of samples or raw chunks (16 kHz by default).
            encoding: for raw byte chunks only: LINEAR16, FLOAT32, MULAW or ALAW.
            realtime: pace the sending at the audio's own speed (a live source).
            **knobs: Silero's segmenter knobs, as :func:`vadnet.detect`.

        The events pair up into the segments :meth:`detect` gives for the same audio.
        """
        seg = _segmenter_dict(options, knobs)
        hop_s = self._hop()
        source, rate = _whole_input(audio, sample_rate, chunk_ms)
        if isinstance(source, str | Path):
            responses = self.client.stream(
                source, chunk_ms=chunk_ms, segmenter=seg, realtime=realtime, timeout=timeout
            )
        else:
            enc, chunks = _chunk_bytes(source, encoding)  # type: ignore[arg-type]
            responses = self.client.stream(
                chunks, rate, enc, segmenter=seg, realtime=realtime, timeout=timeout
            )
        with _vadnet_errors():
            for resp in responses:
                yield from _events(resp, hop_s)

    def health(self, service: str = "", timeout: float | None = None) -> str:
        """The gRPC health status of ``service`` (the whole server by default): "SERVING",
        "NOT_SERVING" (loading or draining), ..."""
        stub = health_pb2_grpc.HealthStub(self.client.channel)
        with _vadnet_errors():
            resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    def model_info(self, timeout: float | None = None) -> pb.ModelInfo:
        """What the server runs: version, hop, lookahead, latency, device, batching."""
        with _vadnet_errors():
            return self.client.model_info(timeout=timeout)

    def _hop(self) -> float:
        if self._hop_s is None:
            self._hop_s = self.model_info().hop_s
        return self._hop_s


class AsyncClient(_Connection):
    """asyncio client with :class:`Client`'s methods (``await`` / ``async for``); an async
    context manager. Chunks to :meth:`stream` may also come from an async iterable."""

    _client_class = AsyncVadClient
    client: AsyncVadClient

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.client.close()

    async def detect(
        self,
        audio: AudioInput,
        sample_rate: int | None = None,
        *,
        options: SegmenterOptions | dict | None = None,
        timeout: float | None = None,
        **knobs: Any,
    ) -> list[Segment]:
        """See :meth:`Client.detect`."""
        seg = _segmenter_dict(options, knobs)
        data = _file_bytes(audio, sample_rate)
        with _vadnet_errors():
            return _segments(await self.client.detect(data, segmenter=seg, timeout=timeout))

    async def probabilities(
        self, audio: AudioInput, sample_rate: int | None = None, *, timeout: float | None = None
    ) -> np.ndarray:
        """See :meth:`Client.probabilities`."""
        data = _file_bytes(audio, sample_rate)
        with _vadnet_errors():
            resp = await self.client.detect(data, return_probabilities=True, timeout=timeout)
        return np.asarray(resp.probabilities, dtype=np.float32)

    async def stream(
        self,
        audio: str | Path | Samples | Iterable[Chunk] | AsyncIterable[Chunk],
        sample_rate: int | None = None,
        *,
        encoding: str | None = None,
        chunk_ms: float = 20.0,
        options: SegmenterOptions | dict | None = None,
        realtime: bool = False,
        timeout: float | None = None,
        **knobs: Any,
    ) -> AsyncIterator[SpeechEvent]:
        """See :meth:`Client.stream`; ``audio`` may also be an async iterable of chunks."""
        seg = _segmenter_dict(options, knobs)
        hop_s = await self._hop()
        source, rate = _whole_input(audio, sample_rate, chunk_ms)
        if isinstance(source, str | Path):
            responses = self.client.stream(
                source, chunk_ms=chunk_ms, segmenter=seg, realtime=realtime, timeout=timeout
            )
        else:
            chunks = _aiter_chunks(source, encoding)
            enc = await anext(chunks)  # the first item is the encoding, checked eagerly
            responses = self.client.stream(
                chunks, rate, enc, segmenter=seg, realtime=realtime, timeout=timeout
            )
        with _vadnet_errors():
            async for resp in responses:
                for event in _events(resp, hop_s):
                    yield event

    async def health(self, service: str = "", timeout: float | None = None) -> str:
        """See :meth:`Client.health`."""
        stub = health_pb2_grpc.HealthStub(self.client.channel)
        with _vadnet_errors():
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)

    async def model_info(self, timeout: float | None = None) -> pb.ModelInfo:
        """See :meth:`Client.model_info`."""
        with _vadnet_errors():
            return await self.client.model_info(timeout=timeout)

    async def _hop(self) -> float:
        if self._hop_s is None:
            self._hop_s = (await self.model_info()).hop_s
        return self._hop_s


def _chunk_bytes(source: Iterable[Chunk], encoding: str | None) -> tuple[str, Iterator[bytes]]:
    """The stream's encoding (checked on the first chunk, before any RPC) and its bytes."""
    it = iter(source)
    first = next(it, None)
    if first is None:
        return encoding or "FLOAT32", iter(())
    enc, convert = _chunk_converter(first, encoding)
    return enc, map(convert, itertools.chain([first], it))


async def _aiter_chunks(
    source: Iterable[Chunk] | AsyncIterable[Chunk], encoding: str | None
) -> AsyncIterator[Any]:
    """Yields the stream's encoding first, then each chunk's bytes."""
    if isinstance(source, AsyncIterable):
        it: AsyncIterator[Chunk] = aiter(source)
    else:
        it = _as_async(source)
    first = await anext(it, None)
    if first is None:
        yield encoding or "FLOAT32"
        return
    enc, convert = _chunk_converter(first, encoding)
    yield enc
    yield convert(first)
    async for chunk in it:
        yield convert(chunk)


async def _as_async(chunks: Iterable[Chunk]) -> AsyncIterator[Chunk]:
    for chunk in chunks:
        yield chunk
