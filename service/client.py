"""A small client of the vadnet service, sync (:class:`VadClient`) and async
(:class:`AsyncVadClient`).

Both take a file path or an iterable of raw audio chunks and yield the server's
:class:`~vadnet.v1.vad_pb2.StreamingDetectResponse` messages (events, optional
probabilities, the final summary). :func:`segments_from_events` turns the events into
the :class:`~vadnet.model.segmenter.Segment` list that ``vadnet detect`` prints.

>>> with VadClient("localhost:50051") as c:
...     for resp in c.stream("speech.wav"):
...         for ev in resp.events:
...             print(ev.kind, ev.time_s)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from vadnet.model.audio import read_samples
from vadnet.model.errors import InvalidInputError
from vadnet.model.segmenter import Segment
from vadnet.v1 import vad_pb2 as pb
from vadnet.v1 import vad_pb2_grpc as pb_grpc

from .failover import (
    AsyncSource,
    AudioLog,
    Failover,
    RetryPolicy,
    StreamFailedError,
    async_requests,
    sync_requests,
)

__all__ = [
    "AsyncVadClient",
    "RetryPolicy",
    "StreamFailedError",
    "TlsOptions",
    "VadClient",
    "segments_from_events",
    "streaming_config",
]

_SAMPLE_BYTES = {"LINEAR16": 2, "FLOAT32": 4, "MULAW": 1, "ALAW": 1}


@dataclass
class TlsOptions:
    """PEM bytes or paths: the CA that signed the server, and a client pair for mTLS."""

    root_certs: bytes | str | Path | None = None
    client_cert: bytes | str | Path | None = None
    client_key: bytes | str | Path | None = None
    server_name: str | None = None  # override the name checked against the certificate


def _pem(value: bytes | str | Path | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def _channel_args(tls: TlsOptions | None) -> tuple[grpc.ChannelCredentials | None, list]:
    if tls is None:
        return None, []
    creds = grpc.ssl_channel_credentials(
        _pem(tls.root_certs), _pem(tls.client_key), _pem(tls.client_cert)
    )
    opts = [("grpc.ssl_target_name_override", tls.server_name)] if tls.server_name else []
    return creds, opts


# Defaults every channel gets (a caller's option of the same name wins):
# - keepalive: a ping every 10 s, answered within 10 s, else the connection is dead. A frozen
#   (SIGSTOPped) server keeps its TCP connection open and would otherwise hang a call for
#   ever; the server permits pings this often (server.py).
# - round_robin over every address of the target (a multi-address `ipv4:` target, or DNS
#   of a headless Service), and for such targets, which reach replicas directly, skipping
#   those whose health says NOT_SERVING (draining). Not for a plain host:port, which may
#   be an L7 proxy: its health answer would come from whichever replica the proxy picked,
#   and one draining replica would make the client shun the whole proxy.
# - unary deadlines: GetModelInfo 10 s; Detect 120 s (a 600 s clip takes a few seconds on
#   a CPU); both retried once elsewhere on UNAVAILABLE.
_SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "vadnet.v1.VoiceActivity", "method": method}],
            "timeout": timeout,
            "retryPolicy": {
                "maxAttempts": 2,
                "initialBackoff": "0.2s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
        for method, timeout in (("GetModelInfo", "10s"), ("Detect", "120s"))
    ],
}
_HEALTH_CHECK = {"healthCheckConfig": {"serviceName": "vadnet.v1.VoiceActivity"}}
CHANNEL_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.enable_retries", 1),
)


def service_config(target: str) -> str:
    """The default service config for ``target`` (see above)."""
    direct = target.startswith(("dns:", "ipv4:", "ipv6:")) and (
        "," in target or target.startswith("dns:")
    )
    return json.dumps({**_SERVICE_CONFIG, **(_HEALTH_CHECK if direct else {})})


def open_channel(
    api: Any, target: str, tls: TlsOptions | None, options: Sequence[tuple[str, Any]]
) -> Any:
    """A channel from ``api`` (``grpc`` or ``grpc.aio``: same factory signatures), with
    :data:`CHANNEL_DEFAULTS` under ``options``."""
    creds, opts = _channel_args(tls)
    given = {name for name, _ in [*opts, *options]}
    defaults = [*CHANNEL_DEFAULTS, ("grpc.service_config", service_config(target))]
    opts = [*opts, *options, *(o for o in defaults if o[0] not in given)]
    if creds:
        return api.secure_channel(target, creds, opts)
    return api.insecure_channel(target, opts)


def read_file(path: str | Path) -> tuple[np.ndarray, int]:
    """A file's samples at its own rate: (n,) float32 mono, and the rate; the reader of
    ``vadnet detect`` (``vadnet.model.audio.read_samples``), so the server sees exactly the
    samples that ``vadnet detect`` sees."""
    return read_samples(path)


def file_chunks(path: str | Path, chunk_ms: float = 20.0) -> tuple[int, Iterator[bytes]]:
    """The rate of ``path`` and an iterator of FLOAT32 chunks of ``chunk_ms`` each."""
    if chunk_ms <= 0:
        raise InvalidInputError(f"chunk_ms must be > 0, got {chunk_ms}")
    x, rate = read_file(path)
    n = max(1, round(rate * chunk_ms / 1000))
    return rate, (x[i : i + n].tobytes() for i in range(0, x.size, n))


def streaming_config(
    sample_rate_hz: int,
    encoding: str = "FLOAT32",
    segmenter: dict | None = None,
    return_probabilities: bool = False,
) -> pb.StreamingConfig:
    """A StreamingConfig message; ``segmenter`` is a dict of SegmenterConfig fields."""
    if encoding not in _SAMPLE_BYTES:
        raise InvalidInputError(
            f"unknown encoding {encoding!r}: use one of {', '.join(_SAMPLE_BYTES)}"
        )
    cfg = pb.StreamingConfig(
        sample_rate_hz=sample_rate_hz,
        encoding=pb.AudioEncoding.Value(encoding),
        return_probabilities=return_probabilities,
    )
    for key, value in (segmenter or {}).items():
        if value is not None:
            setattr(cfg.segmenter, key, value)
    return cfg


def segments_from_events(events: Iterable[pb.SpeechEvent]) -> list[Segment]:
    """Pair SPEECH_START/SPEECH_END events into segments (as the server's segmenter does)."""
    out, start = [], None
    for ev in events:
        if ev.kind == pb.SpeechEvent.SPEECH_START:
            start = ev
        elif ev.kind == pb.SpeechEvent.SPEECH_END and start is not None:
            out.append(Segment(start.time_s, ev.time_s, start.sample, ev.sample))
            start = None
    return out


def _requests(
    config: pb.StreamingConfig, chunks: Iterable[bytes], realtime: bool, bytes_per_s: float
) -> Iterator[pb.StreamingDetectRequest]:
    yield pb.StreamingDetectRequest(config=config)
    t0, sent = time.monotonic(), 0
    for chunk in chunks:
        if realtime:  # pace against the start, so sleeps do not drift
            delay = t0 + sent / bytes_per_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield pb.StreamingDetectRequest(audio=chunk)
        sent += len(chunk)


async def _arequests(
    config: pb.StreamingConfig,
    chunks: Iterable[bytes] | AsyncIterable[bytes],
    realtime: bool,
    bytes_per_s: float,
) -> AsyncIterator[pb.StreamingDetectRequest]:
    yield pb.StreamingDetectRequest(config=config)
    t0, sent = time.monotonic(), 0

    async def pace() -> None:
        if realtime:
            delay = t0 + sent / bytes_per_s - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            await pace()
            yield pb.StreamingDetectRequest(audio=chunk)
            sent += len(chunk)
    else:
        for chunk in chunks:
            await pace()
            yield pb.StreamingDetectRequest(audio=chunk)
            sent += len(chunk)


class _Base:
    def __init__(self, token: str | None) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def _prepare(
        self,
        audio: str | Path | Iterable[bytes],
        sample_rate_hz: int | None,
        encoding: str,
        chunk_ms: float,
        segmenter: dict | None,
        return_probabilities: bool,
    ) -> tuple[pb.StreamingConfig, Iterable[bytes], float]:
        if isinstance(audio, str | Path):
            sample_rate_hz, chunks = file_chunks(audio, chunk_ms)
            encoding = "FLOAT32"
        else:
            if sample_rate_hz is None:
                raise InvalidInputError("chunks need sample_rate_hz (and encoding)")
            chunks = audio
        cfg = streaming_config(sample_rate_hz, encoding, segmenter, return_probabilities)
        return cfg, chunks, float(sample_rate_hz * _SAMPLE_BYTES[encoding])

    def _failover(
        self,
        cfg: pb.StreamingConfig,
        realtime: bool,
        policy: RetryPolicy | None,
        timeout: float | None,
    ) -> Failover:
        log = AudioLog(_SAMPLE_BYTES[pb.AudioEncoding.Name(cfg.encoding)])
        deadline = None if timeout is None else time.monotonic() + timeout
        return Failover(cfg, log, policy or RetryPolicy(), realtime, deadline)


def _detect_request(
    audio: str | Path | bytes, segmenter: dict | None, return_probabilities: bool
) -> pb.DetectRequest:
    """A Detect request for a whole file (a path or its bytes)."""
    data = Path(audio).read_bytes() if isinstance(audio, str | Path) else audio
    req = pb.DetectRequest(file=data, return_probabilities=return_probabilities)
    for key, value in (segmenter or {}).items():
        setattr(req.segmenter, key, value)
    return req


class VadClient(_Base):
    """Blocking client. ``target`` is ``host:port``; ``tls`` switches on TLS (and mTLS)."""

    def __init__(
        self,
        target: str,
        tls: TlsOptions | None = None,
        token: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        """``options``: extra grpc channel options, e.g. ``[("grpc.lb_policy_name",
        "round_robin")]`` with a ``dns:///vadnet-headless:50051`` target to spread
        streams over replicas (docs/deploy.md)."""
        super().__init__(token)
        self.channel = open_channel(grpc, target, tls, options)
        self.stub = pb_grpc.VoiceActivityStub(self.channel)

    def __enter__(self) -> VadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def stream(
        self,
        audio: str | Path | Iterable[bytes],
        sample_rate_hz: int | None = None,
        encoding: str = "LINEAR16",
        chunk_ms: float = 20.0,
        segmenter: dict | None = None,
        return_probabilities: bool = False,
        realtime: bool = False,
        timeout: float | None = None,
        resume: bool = True,
        retry: RetryPolicy | None = None,
    ) -> Iterator[pb.StreamingDetectResponse]:
        """Stream a file (sent as FLOAT32 at its own rate in ``chunk_ms`` chunks) or raw
        ``encoding`` chunks at ``sample_rate_hz``; yields responses as they arrive.

        ``timeout`` bounds the whole stream. With ``resume`` (the default) a stream cut by
        a draining, dead or frozen replica goes on elsewhere by itself (service/failover.py)
        and responses that carry only a checkpoint are not yielded; it raises
        :class:`StreamFailedError` when ``retry`` gives up."""
        cfg, chunks, bps = self._prepare(
            audio, sample_rate_hz, encoding, chunk_ms, segmenter, return_probabilities
        )
        if not resume:
            yield from self.stub.StreamingDetect(
                _requests(cfg, chunks, realtime, bps), metadata=self.metadata, timeout=timeout
            )
            return
        fo, source = self._failover(cfg, realtime, retry, timeout), iter(chunks)
        while True:
            stop, stalled = threading.Event(), threading.Event()
            call = self.stub.StreamingDetect(
                sync_requests(fo, source, stop), metadata=self.metadata, timeout=fo.remaining()
            )
            threading.Thread(
                target=_watch, args=(fo, call, stop, stalled), name="vadnet-watch", daemon=True
            ).start()
            try:
                for resp in call:
                    if fo.on_response(resp):
                        yield resp
                return
            except grpc.RpcError as e:
                delay = fo.retry_delay(e, stalled.is_set())
            finally:
                stop.set()
                call.cancel()  # no-op when it ended; frees it when the caller stopped early
            time.sleep(delay)

    def detect(
        self,
        audio: str | Path | bytes,
        segmenter: dict | None = None,
        return_probabilities: bool = False,
        timeout: float | None = None,
    ) -> pb.DetectResponse:
        """A whole file (path or its bytes) in one call."""
        req = _detect_request(audio, segmenter, return_probabilities)
        return self.stub.Detect(req, metadata=self.metadata, timeout=timeout)

    def model_info(self, timeout: float | None = None) -> pb.ModelInfo:
        return self.stub.GetModelInfo(
            pb.GetModelInfoRequest(), metadata=self.metadata, timeout=timeout
        )


class AsyncVadClient(_Base):
    """asyncio client with the same methods as :class:`VadClient` (``async for``/``await``)."""

    def __init__(
        self,
        target: str,
        tls: TlsOptions | None = None,
        token: str | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        super().__init__(token)
        self.channel = open_channel(grpc.aio, target, tls, options)
        self.stub = pb_grpc.VoiceActivityStub(self.channel)

    async def __aenter__(self) -> AsyncVadClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    async def stream(
        self,
        audio: str | Path | Iterable[bytes] | AsyncIterable[bytes],
        sample_rate_hz: int | None = None,
        encoding: str = "LINEAR16",
        chunk_ms: float = 20.0,
        segmenter: dict | None = None,
        return_probabilities: bool = False,
        realtime: bool = False,
        timeout: float | None = None,
        resume: bool = True,
        retry: RetryPolicy | None = None,
    ) -> AsyncIterator[pb.StreamingDetectResponse]:
        """See :meth:`VadClient.stream`; ``audio`` may also be an async iterable."""
        cfg, chunks, bps = self._prepare(
            audio, sample_rate_hz, encoding, chunk_ms, segmenter, return_probabilities
        )
        if not resume:
            call = self.stub.StreamingDetect(
                _arequests(cfg, chunks, realtime, bps), metadata=self.metadata, timeout=timeout
            )
            async for resp in call:
                yield resp
            return
        fo, source = self._failover(cfg, realtime, retry, timeout), AsyncSource(chunks)
        while True:
            call = self.stub.StreamingDetect(
                async_requests(fo, source), metadata=self.metadata, timeout=fo.remaining()
            )
            watch = asyncio.ensure_future(_awatch(fo, call))
            try:
                async for resp in call:
                    if fo.on_response(resp):
                        yield resp
                return
            except grpc.RpcError as e:
                delay = fo.retry_delay(e, False)
            except asyncio.CancelledError:
                if not watch.done():
                    raise  # the caller cancelled us
                delay = fo.retry_delay(_STALLED, True)
            finally:
                watch.cancel()
                call.cancel()
            await asyncio.sleep(delay)

    async def detect(
        self,
        audio: str | Path | bytes,
        segmenter: dict | None = None,
        return_probabilities: bool = False,
        timeout: float | None = None,
    ) -> pb.DetectResponse:
        req = _detect_request(audio, segmenter, return_probabilities)
        return await self.stub.Detect(req, metadata=self.metadata, timeout=timeout)

    async def model_info(self, timeout: float | None = None) -> pb.ModelInfo:
        return await self.stub.GetModelInfo(
            pb.GetModelInfoRequest(), metadata=self.metadata, timeout=timeout
        )


_STALLED = StreamFailedError(grpc.StatusCode.UNAVAILABLE, "the server stopped answering")


def _watch(fo: Failover, call: Any, stop: threading.Event, stalled: threading.Event) -> None:
    """Cancel ``call`` when the server stops answering (a frozen replica)."""
    while not stop.wait(0.25):
        if fo.stalled():
            stalled.set()
            call.cancel()
            return


async def _awatch(fo: Failover, call: Any) -> None:
    while True:
        await asyncio.sleep(0.25)
        if fo.stalled():
            call.cancel()
            return


# --- command-line plumbing shared by `vadnet stream`, `health` and `loadtest` ---------------
def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--server, TLS and token flags."""
    parser.add_argument("--server", default="localhost:50051", help="HOST:PORT of the server")
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--ca", help="PEM CA that signed the server (default: system roots)")
    parser.add_argument("--cert", help="client certificate (PEM) for mTLS")
    parser.add_argument("--key", help="client private key (PEM) for mTLS")
    parser.add_argument("--server-name", help="name to check in the server certificate")
    parser.add_argument("--token-file", help="file holding the bearer token")


def connection_from_args(args: argparse.Namespace) -> dict:
    """Keyword arguments for VadClient/AsyncVadClient from add_connection_arguments flags."""
    tls = None
    if args.tls or args.ca or args.cert:
        if bool(args.cert) != bool(args.key):
            raise InvalidInputError("--cert and --key go together (mTLS): give both")
        tls = TlsOptions(args.ca, args.cert, args.key, args.server_name)
    token = None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as e:
            raise InvalidInputError(f"cannot read --token-file {args.token_file}: {e}") from e
    return {"target": args.server, "tls": tls, "token": token}
