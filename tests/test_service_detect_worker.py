"""The Detect worker process: exact answers, lowest priority, apart from the server's
process, and a server that outlives it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import grpc
import numpy as np
import pytest
from test_service_helpers import DATA, running_server, stub_for

import vadnet
from vadnet.model.inference import WholeInputVAD
from vadnet.service import detect_worker
from vadnet.v1 import vad_pb2 as pb

FILE = DATA / "stereo_44k.flac"


async def test_detect_runs_in_a_lowest_priority_process_and_equals_local(model):
    async with running_server(model) as (server, port), stub_for(port) as stub:
        assert server.servicer.detector.pid is None  # an idle server pays nothing for it
        req = pb.DetectRequest(file=FILE.read_bytes(), return_probabilities=True)
        resp = await stub.Detect(req)
        pid = server.servicer.detector.pid
        assert pid is not None and pid != os.getpid()
        assert os.sched_getscheduler(pid) == os.SCHED_IDLE
        assert os.getpriority(os.PRIO_PROCESS, pid) == 19
        # The server's own threads keep the default policy.
        assert os.sched_getscheduler(0) != os.SCHED_IDLE
    local = vadnet.probabilities(FILE, model=model)
    np.testing.assert_allclose(np.array(resp.probabilities, np.float32), local, atol=1e-5)
    segs = vadnet.detect(FILE, model=model)
    assert [(s.start_sample, s.end_sample) for s in resp.segments] == [
        (s.start_sample, s.end_sample) for s in segs
    ]


async def test_a_killed_worker_fails_its_calls_unavailable_and_is_replaced(model):
    x = (np.random.default_rng(0).standard_normal(16000 * 300) * 0.1).astype(np.float32)
    raw = pb.RawAudio(data=(x * 32767).astype("<i2").tobytes(), sample_rate_hz=16000,
                      encoding=pb.LINEAR16)  # fmt: skip
    async with (
        running_server(model, max_message_bytes=64 << 20, detect_slice_s=1.0) as (server, port),
        stub_for(port) as stub,
    ):
        await stub.Detect(pb.DetectRequest(file=FILE.read_bytes()))  # the worker is up
        first = server.servicer.detector.pid
        call = stub.Detect(pb.DetectRequest(raw=raw))
        await asyncio.sleep(0.3)
        os.kill(first, signal.SIGKILL)
        with pytest.raises(grpc.aio.AioRpcError) as e:
            await call
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Detect worker process exited" in e.value.details()
        # Streams never noticed, and the next call gets a new worker.
        resp = await stub.Detect(pb.DetectRequest(file=FILE.read_bytes()))
        assert resp.frames > 0 and server.servicer.detector.pid not in (None, first)


async def test_bad_requests_get_invalid_argument_from_the_worker(model):
    async with running_server(model) as (_, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            detect = channel.unary_unary("/vadnet.v1.VoiceActivity/Detect")
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await detect(b"\xff\xff\xff")  # not a DetectRequest at all
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a DetectRequest" in e.value.details()
        async with stub_for(port) as stub:
            bad = pb.DetectRequest(file=FILE.read_bytes())
            bad.segmenter.threshold = 2.0
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await stub.Detect(bad)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "threshold" in e.value.details()


def test_a_cancelled_call_skips_its_remaining_slices(model):
    whole = WholeInputVAD(model, chunk_s=1.0)
    payload = pb.DetectRequest(file=FILE.read_bytes()).SerializeToString()
    with pytest.raises(detect_worker._Cancelled):
        detect_worker._detect(whole, 600.0, payload, lambda: True)
    done = detect_worker._detect(whole, 600.0, payload, lambda: False)
    assert done.frames > 0 and done.probabilities is None


def _detect_script(tmp_path, after: str):
    """A script with no main guard that starts a server, sends FILE as one Detect call and
    then runs ``after`` (inside ``main``, with ``server`` and the response ``r``)."""
    script = tmp_path / "serve.py"
    body = textwrap.indent(textwrap.dedent(after), " " * 4)  # in main, after the channel
    script.write_text(
        textwrap.dedent(f"""
        import asyncio, grpc
        from vadnet.service.server import create_server
        from vadnet.v1 import vad_pb2 as pb, vad_pb2_grpc as pb_grpc

        async def main():
            server, port = await create_server({{"host": "127.0.0.1", "port": 0,
                                                 "metrics_port": -1}})
            async with grpc.aio.insecure_channel(f"127.0.0.1:{{port}}") as ch:
                stub = pb_grpc.VoiceActivityStub(ch)
                data = open({str(FILE)!r}, "rb").read()
                r = await stub.Detect(pb.DetectRequest(file=data), timeout=60)
        {{body}}

        asyncio.run(main())
    """).replace("{body}", body)
    )
    return script


def test_a_script_without_a_main_guard_serves_detect(tmp_path):
    """The worker is a fresh interpreter, not a multiprocessing spawn (which re-runs the
    parent's __main__ and breaks unguarded scripts)."""
    script = _detect_script(
        tmp_path,
        """
        print("frames", r.frames)
        await server.stop(1)
    """,
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "frames 200" in out.stdout


def test_the_worker_dies_with_its_server(tmp_path):
    """A SIGKILLed server leaves no Detect worker behind: the worker exits on the end of
    its socket."""
    script = _detect_script(
        tmp_path,
        """
        print(server.servicer.detector.pid, flush=True)
        await asyncio.sleep(600)
    """,
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(proc.stdout.readline())
        assert os.path.exists(f"/proc/{worker}")
    finally:
        proc.kill()
        proc.wait(10)
    for _ in range(100):
        if not os.path.exists(f"/proc/{worker}") or _zombie(worker):
            break
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{worker}") or _zombie(worker)


def _zombie(pid: int) -> bool:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
