"""Limits: streams, message size, stream length, idle time, Detect length, backpressure,
and state freed when a client goes away."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import soundfile as sf
from test_service_helpers import (
    DATA,
    expect_error,
    expect_stream_error,
    offline,
    run_stream,
    running_server,
    stub_for,
    sync_stream,
    wait_until,
)

from vadnet.v1 import vad_pb2 as pb

EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def _config(rate: int = 16000, encoding: int = pb.LINEAR16) -> pb.StreamingDetectRequest:
    return pb.StreamingDetectRequest(
        config=pb.StreamingConfig(sample_rate_hz=rate, encoding=encoding, return_probabilities=True)
    )


def _pcm(seconds: float) -> bytes:
    rng = np.random.default_rng(0)
    return (rng.standard_normal(int(16000 * seconds)) * 1000).astype("<i2").tobytes()


class OpenStream:
    """A stream kept open by the test: send() messages, then close() to half-close."""

    def __init__(self, stub) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.call = stub.StreamingDetect(self._gen())

    async def _gen(self):
        while (msg := await self.queue.get()) is not None:
            yield msg

    def send(self, msg) -> None:
        self.queue.put_nowait(msg)

    def close(self) -> None:
        self.queue.put_nowait(None)

    async def responses(self) -> list:
        """The remaining responses (read(): tests may have read some already)."""
        out = []
        while (r := await self.call.read()) is not grpc.aio.EOF:
            out.append(r)
        return out

    async def responses_until_error(self) -> list:
        """The remaining responses of a call that ends with an error status (read it from
        ``call.code()``)."""
        out = []
        try:
            while (r := await self.call.read()) is not grpc.aio.EOF:
                out.append(r)
        except grpc.RpcError:
            pass
        return out


async def hold_streams(server, stub, n: int) -> list[OpenStream]:
    """``n`` streams opened (config + 100 ms) and held until the server has them all."""
    held = [OpenStream(stub) for _ in range(n)]
    for s in held:
        s.send(_config())
        s.send(pb.StreamingDetectRequest(audio=_pcm(0.1)))
    await wait_until(lambda: len(server.servicer.sessions) == n)
    return held


async def test_max_streams(model):
    async with running_server(model, max_streams=2) as (server, port), stub_for(port) as stub:
        held = await hold_streams(server, stub, 2)
        await expect_error(
            asyncio.to_thread(
                sync_stream, port, [_config(), pb.StreamingDetectRequest(audio=_pcm(0.1))]
            ),
            EXHAUSTED,
            "limit of 2 concurrent streams",
        )
        for s in held:
            s.close()
        for s in held:
            assert (await s.responses())[-1].is_final
        # room again
        got = await run_stream(stub, [_config(), pb.StreamingDetectRequest(audio=_pcm(0.1))])
        assert got.final.summary.input_samples == 1600


async def test_max_message_size(model):
    async with running_server(model, max_message_bytes=8000) as (_, port), stub_for(port) as stub:
        big = [_config(), pb.StreamingDetectRequest(audio=_pcm(0.5))]  # 16000 bytes
        await expect_stream_error(port, big, EXHAUSTED)
        small = [_config()] + [pb.StreamingDetectRequest(audio=_pcm(0.1))] * 5
        assert (await run_stream(stub, small)).final.summary.input_samples == 8000


async def test_max_stream_duration_and_detect_length(model):
    async with (
        running_server(model, max_stream_duration_s=1.0, max_detect_audio_s=1.0) as (
            _,
            port,
        ),
        stub_for(port) as stub,
    ):
        reqs = [_config()] + [pb.StreamingDetectRequest(audio=_pcm(0.2))] * 6
        await expect_stream_error(port, reqs, EXHAUSTED, "1 s of audio", "new stream")
        reqs = [_config()] + [pb.StreamingDetectRequest(audio=_pcm(0.2))] * 5  # exactly 1 s
        assert (await run_stream(stub, reqs)).final.is_final
        long_file = pb.DetectRequest(file=(DATA / "speech_en.wav").read_bytes())
        await expect_error(stub.Detect(long_file), EXHAUSTED, "over this server's 1 s limit")


async def test_idle_timeout(model):
    async with running_server(model, idle_timeout_s=0.3) as (server, port), stub_for(port) as stub:
        s = OpenStream(stub)
        s.send(_config())
        s.send(pb.StreamingDetectRequest(audio=_pcm(0.1)))
        await expect_error(s.responses(), grpc.StatusCode.DEADLINE_EXCEEDED, "no audio for 0.3 s")
        await wait_until(lambda: not server.servicer.sessions and len(server.batcher.bank) == 0)
        # a stream that never sends its config is closed too
        s = OpenStream(stub)
        await expect_error(s.responses(), grpc.StatusCode.DEADLINE_EXCEEDED, "config")


async def test_backpressure_bounds_buffered_audio_and_loses_nothing(model):
    """Stall the model thread, stream 6 s as fast as possible: the server stops reading at
    max_buffered_audio_s, resumes when the model catches up, and every sample counts."""
    x, rate = sf.read(DATA / "speech_en.wav", dtype="float32")
    x = x[: 6 * rate]
    probs, segments = offline(model, x, rate)
    limit_s, chunk = 0.5, 800
    async with (
        running_server(model, max_buffered_audio_s=limit_s) as (server, port),
        stub_for(port) as stub,
    ):
        peak = 0

        async def watch():
            nonlocal peak
            while True:
                for s in server.servicer.sessions:
                    peak = max(peak, s.buffered)
                await asyncio.sleep(0.005)

        watcher = asyncio.create_task(watch())
        stall = asyncio.create_task(server.batcher.run_in_worker(time.sleep, 1.0))
        reqs = [_config(rate, pb.FLOAT32)] + [
            pb.StreamingDetectRequest(audio=x[i : i + chunk].tobytes())
            for i in range(0, x.size, chunk)
        ]
        got = await run_stream(stub, reqs)
        await stall
        watcher.cancel()
    assert peak <= limit_s * 16000 + chunk
    assert peak > (limit_s * 16000) // 2  # the stall did fill the buffer
    assert got.final.summary.input_samples == x.size
    assert np.abs(got.probs - probs).max() <= 1e-5
    assert got.segments == segments


async def test_disconnect_frees_state_at_once(model):
    async with running_server(model) as (server, port), stub_for(port) as stub:
        s = OpenStream(stub)
        s.send(_config())
        for _ in range(5):
            s.send(pb.StreamingDetectRequest(audio=_pcm(0.1)))
        await wait_until(lambda: len(server.batcher.bank) == 1)
        s.call.cancel()
        await wait_until(lambda: not server.servicer.sessions and len(server.batcher.bank) == 0)
        assert server.metrics.registry.get_sample_value("vadnet_active_streams") == 0


async def test_min_audio_rate_stops_a_trickling_stream_not_a_live_one(model):
    """10 % of real time over a 2 s window: 20 ms every 0.5 s (4 %) is stopped with
    DEADLINE_EXCEEDED; a real-time stream beside it runs on, exact."""

    def trickle():
        yield _config()
        for _ in range(40):  # 20 s if never stopped
            yield pb.StreamingDetectRequest(audio=_pcm(0.02))
            time.sleep(0.5)

    cfg = {"min_audio_rate": 0.1, "min_audio_rate_window_s": 2.0}
    async with running_server(model, **cfg) as (_, port), stub_for(port) as stub:
        start = time.monotonic()
        # the sync client: grpc.aio may report INTERNAL for a call still sending (#36066)
        slow = asyncio.create_task(
            expect_error(
                asyncio.to_thread(sync_stream, port, trickle()),
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "too slow",
                "10% of real time",
            )
        )
        live = OpenStream(stub)
        live.send(_config())
        for _ in range(50):  # 5 s
            live.send(pb.StreamingDetectRequest(audio=_pcm(0.1)))
            await asyncio.sleep(0.1)
        live.close()
        got = await live.responses()
        assert got[-1].is_final and got[-1].summary.input_samples == 50 * 1600
        await slow
        assert time.monotonic() - start < 10


async def test_stream_limit_per_client_address(model):
    async with (
        running_server(model, max_streams_per_peer=2) as (server, port),
        stub_for(port) as stub,
    ):
        held = [OpenStream(stub), OpenStream(stub)]
        for s in held:
            s.send(_config())
            s.send(pb.StreamingDetectRequest(audio=_pcm(0.1)))
        await wait_until(lambda: len(server.servicer.sessions) == 2)
        third = [_config(), pb.StreamingDetectRequest(audio=_pcm(0.1))]
        await expect_stream_error(port, third, EXHAUSTED, "127.0.0.1 already has 2 open streams")
        held[0].close()
        assert (await held[0].responses())[-1].is_final
        await wait_until(lambda: len(server.servicer.sessions) == 1)
        assert (await asyncio.to_thread(sync_stream, port, third))[-1].is_final
        held[1].close()
        await held[1].responses()
