"""SIGTERM drain of a real `vadnet serve` subprocess: health NOT_SERVING, new streams
refused, open streams finish with their final events (or are cut by the server at the
grace deadline with UNAVAILABLE, never OK), exit status 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys

import grpc
import numpy as np
import soundfile as sf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_service_helpers import DATA, expect_stream_error, offline, stub_for
from test_service_limits import OpenStream

from vadnet.v1 import vad_pb2 as pb


async def _start_server(grace_s: float) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "vadnet.service.cli", "serve", "--port", "0"]
    cmd += ["--metrics-port", "-1", "--drain-grace-s", str(grace_s), "--device", "cpu"]
    env = {**os.environ, "VADNET_LOG_LEVEL": "INFO"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    line = await asyncio.to_thread(proc.stdout.readline)
    m = re.search(r"serving on .*:(\d+)", line)
    assert m, f"no port in {line!r}"
    return proc, int(m.group(1))


async def _sigterm_exits_0(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(proc.wait, 30) == 0


def _kill(proc: subprocess.Popen) -> None:
    """Whatever failed, leave no server behind."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()


async def test_sigterm_drains_and_exits_0(model):
    x, rate = sf.read(DATA / "speech_en.wav", dtype="float32")
    probs, segments = offline(model, x, rate)
    half = x.size // 2
    proc, port = await _start_server(grace_s=4.0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch, stub_for(port) as stub:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest())
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
            config = pb.StreamingDetectRequest(
                config=pb.StreamingConfig(
                    sample_rate_hz=rate, encoding=pb.FLOAT32, return_probabilities=True
                )
            )
            finisher, abandoned = OpenStream(stub), OpenStream(stub)
            for s in (finisher, abandoned):
                s.send(config)
                s.send(pb.StreamingDetectRequest(audio=x[:half].tobytes()))
            # both streams are open and have results before the signal
            first = [await s.call.read() for s in (finisher, abandoned)]
            assert all(r.input_samples_processed > 0 for r in first)

            proc.send_signal(signal.SIGTERM)
            assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
            await expect_stream_error(port, [config], grpc.StatusCode.UNAVAILABLE)

            # one client finishes its audio within the grace period: exact results
            finisher.send(pb.StreamingDetectRequest(audio=x[half:].tobytes()))
            finisher.close()
            rest = [first[0]] + await finisher.responses()
            got = np.array([v for r in rest for v in r.probabilities.values], np.float32)
            assert np.abs(got - probs).max() <= 1e-5
            final = rest[-1]
            assert final.is_final
            assert final.summary.input_samples == x.size
            assert final.summary.segments == len(segments)

            # the other never half-closes: the server cuts it with UNAVAILABLE, never OK
            rest = await abandoned.responses_until_error()
            assert not any(r.is_final for r in rest)
            assert await abandoned.call.code() == grpc.StatusCode.UNAVAILABLE
            assert "draining" in await abandoned.call.details()
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        _kill(proc)


async def test_io_threads_run_sched_batch_and_the_model_thread_does_not():
    """--sched-batch (the default): the event loop and gRPC's threads are SCHED_BATCH, the
    batcher's model thread is not, so network wake-ups do not preempt a running batch."""
    proc, _port = await _start_server(grace_s=1.0)
    try:
        policies = {}
        for task in os.listdir(f"/proc/{proc.pid}/task"):
            with open(f"/proc/{proc.pid}/task/{task}/comm") as f:
                name = "main" if int(task) == proc.pid else f.read().strip()
            policies.setdefault(name, set()).add(os.sched_getscheduler(int(task)))
        # the model thread exists: warm-up ran on it before the server said it is serving
        assert policies["vadnet-model"] == {os.SCHED_OTHER}, policies
        # the event loop and gRPC's threads (the ones numpy's BLAS started at import, before
        # `serve` runs, keep the default; they sleep while serving)
        for name in ("main", "event_engine", "grpc_global_tim"):
            assert policies[name] == {os.SCHED_BATCH}, policies
        await _sigterm_exits_0(proc)
    finally:
        _kill(proc)


async def test_workers_share_one_port_and_drain(tmp_path):
    """--workers 2: two processes on one port (SO_REUSEPORT); SIGTERM drains both; exit 0."""
    import socket

    from vadnet.service.client import AsyncVadClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "vadnet.service.cli", "serve", "--workers", "2"]
    cmd += ["--port", str(port), "--metrics-port", "-1", "--drain-grace-s", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        lines = [await asyncio.to_thread(proc.stdout.readline) for _ in range(2)]
        assert all(f":{port}" in line for line in lines), lines
        # every new connection lands on one of the workers; all of them answer exactly
        results = set()
        for _ in range(6):
            async with AsyncVadClient(f"127.0.0.1:{port}") as client:
                finals = [r async for r in client.stream(DATA / "noise.wav", chunk_ms=250)]
                results.add(finals[-1].summary.frames)
        assert results == {125}
        await _sigterm_exits_0(proc)
    finally:
        _kill(proc)
