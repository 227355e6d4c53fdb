"""Helpers shared by the tests/test_service_*.py files (this file holds no tests).

Servers are real (127.0.0.1, port 0) and so are channels; the reference for every
stream is the offline path of ``vadnet detect``: decode -> resample -> VadNet.forward ->
segment_probs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import torch

from vadnet.model.audio import resample_to_model_rate
from vadnet.model.network import VadNet
from vadnet.model.segmenter import Segment, segment_probs
from vadnet.service.client import segments_from_events
from vadnet.service.server import VadServer, create_server
from vadnet.v1 import vad_pb2 as pb
from vadnet.v1 import vad_pb2_grpc as pb_grpc

DATA = Path(__file__).parent / "data"
PROB_TOL = 1e-5


@contextlib.asynccontextmanager
async def running_server(
    model: VadNet | None = None, warm: bool = True, **overrides: object
) -> AsyncIterator[tuple[VadServer, int]]:
    """A real server on 127.0.0.1:0 without metrics unless asked; stopped on exit."""
    cfg = {"host": "127.0.0.1", "port": 0, "metrics_port": -1, "drain_grace_s": 1.0}
    cfg.update(overrides)
    server, port = await create_server(cfg, model=model, warm=warm)
    try:
        yield server, port
    finally:
        await server.stop(0.5)


@contextlib.asynccontextmanager
async def stub_for(port: int) -> AsyncIterator[pb_grpc.VoiceActivityStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.VoiceActivityStub(channel)


def offline(
    model: VadNet, x: np.ndarray, rate: int, options: dict | None = None
) -> tuple[np.ndarray, list[Segment]]:
    """What ``vadnet detect`` computes for (n,) float32 samples at ``rate``."""
    y = resample_to_model_rate(x, rate)
    with torch.no_grad():
        probs = model(torch.from_numpy(y)[None])[0].numpy()
    return probs, segment_probs(probs, options, model.hop_s, rate, int(x.size))


def random_cuts(n: int, rng: np.random.Generator, lo: int = 1, hi: int = 6000) -> list[int]:
    """Random chunk boundaries 0 = c0 < c1 < ... < n (chunk sizes in [lo, hi])."""
    cuts, pos = [0], 0
    while pos < n:
        pos = min(n, pos + int(rng.integers(lo, hi + 1)))
        cuts.append(pos)
    return cuts


def requests(
    data: bytes,
    rate: int,
    encoding: int,
    cuts_bytes: Sequence[int],
    probs: bool = True,
    segmenter: dict | None = None,
) -> list[pb.StreamingDetectRequest]:
    cfg = pb.StreamingConfig(sample_rate_hz=rate, encoding=encoding, return_probabilities=probs)
    for k, v in (segmenter or {}).items():
        setattr(cfg.segmenter, k, v)
    reqs = [pb.StreamingDetectRequest(config=cfg)]
    for a, b in zip(cuts_bytes[:-1], cuts_bytes[1:], strict=True):
        reqs.append(pb.StreamingDetectRequest(audio=data[a:b]))
    return reqs


class StreamResult:
    """Everything one stream got back."""

    def __init__(self, responses: list[pb.StreamingDetectResponse]) -> None:
        self.responses = responses
        self.events = [e for r in responses for e in r.events]
        self.segments = segments_from_events(self.events)
        blocks = [r.probabilities for r in responses if r.HasField("probabilities")]
        frames = [b.first_frame for b in blocks if b.values]
        self.probs = np.array([v for b in blocks for v in b.values], np.float32)
        self.contiguous = all(
            b.first_frame == sum(len(c.values) for c in blocks[:i])
            for i, b in enumerate(blocks)
            if b.values
        ) and frames == sorted(frames)
        self.final = responses[-1] if responses else None


async def run_stream(
    stub: pb_grpc.VoiceActivityStub, reqs: list[pb.StreamingDetectRequest], **kw: object
) -> StreamResult:
    async def gen():
        for r in reqs:
            yield r

    return StreamResult([r async for r in stub.StreamingDetect(gen(), **kw)])


def sync_stream(
    target: int | str, reqs: list[pb.StreamingDetectRequest], metadata: tuple = ()
) -> list:
    """One StreamingDetect call with grpc's sync client (run it in a thread); ``target`` is
    a port on 127.0.0.1 or HOST:PORT. For calls the server rejects early: grpc.aio's client
    can report such a call as INTERNAL instead of its real status when it is still sending
    (grpc/grpc#36066); the sync client cannot."""
    target = f"127.0.0.1:{target}" if isinstance(target, int) else target
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.VoiceActivityStub(channel)
        return list(stub.StreamingDetect(iter(reqs), metadata=metadata))


async def expect_stream_error(
    target: int | str, reqs: list, code: grpc.StatusCode, *needles: str, metadata: tuple = ()
) -> str:
    """A StreamingDetect call that the server must reject with ``code`` (sync client)."""
    return await expect_error(
        asyncio.to_thread(sync_stream, target, reqs, metadata), code, *needles
    )


async def expect_error(awaitable, code: grpc.StatusCode, *needles: str) -> str:
    """Await ``awaitable``; it must fail with ``code`` and a message containing ``needles``."""
    try:
        await awaitable
    except grpc.RpcError as e:
        assert e.code() == code, (e.code(), e.details())
        for needle in needles:
            assert needle.lower() in e.details().lower(), e.details()
        return e.details()
    raise AssertionError(f"expected {code.name}, the call succeeded")


async def wait_until(cond, timeout: float = 10.0) -> None:
    """Poll a condition (no timing assertion: only a generous upper bound)."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition not reached"
        await asyncio.sleep(0.02)
