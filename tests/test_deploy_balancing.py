"""Client-side balancing, as docs/deploy.md recommends for many replicas: three real
`vadnet serve` processes on 127.0.0.1, one client channel with grpc's ``round_robin`` policy
over all three (what a client gets from a headless Service's DNS name), and its streams
spread evenly over the servers, as each server's own /metrics shows. The same client with
grpc's default ``pick_first`` sends every stream down one connection to one server: the
reason plain L4 balancing of long-lived HTTP/2 streams is uneven."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vadnet.service.client import file_chunks, streaming_config
from vadnet.v1 import vad_pb2 as pb
from vadnet.v1 import vad_pb2_grpc as pb_grpc

AUDIO = Path(__file__).parent / "data" / "speech_en.wav"
N_SERVERS = 3
STREAMS_PER_SERVER = 3
STARTUP_S = 300  # three torch imports on a busy 2-core machine; a bound, not a measurement


def _start(log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vadnet.service.cli", "serve", "--host", "127.0.0.1"]
    cmd += ["--port", "0", "--metrics-port", "0", "--device", "cpu", "--torch-threads", "1"]
    cmd += ["--drain-grace-s", "1"]
    env = {**os.environ, "VADNET_LOG_LEVEL": "INFO"}
    with log.open("w") as err:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env)


def _ports(proc: subprocess.Popen, log: Path) -> tuple[int, int]:
    """(gRPC port, metrics port) of a server started with port 0 for both."""
    line = proc.stdout.readline()  # one line once it listens (see cmd_serve.py)
    m = re.search(r"serving on .*:(\d+)", line)
    assert m, f"server did not start: {line!r}\n{log.read_text()}"
    mm = re.search(r"metrics on http://[^:]+:(\d+)/metrics", log.read_text())
    assert mm, log.read_text()
    return int(m.group(1)), int(mm.group(1))


def _wait_serving(port: int) -> None:
    deadline = time.monotonic() + STARTUP_S
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            assert time.monotonic() < deadline, f"127.0.0.1:{port} never became SERVING"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> list[tuple[int, int]]:
    """Three `vadnet serve` processes: [(gRPC port, metrics port)]; SIGTERM on teardown."""
    tmp = tmp_path_factory.mktemp("replicas")
    procs, logs = [], []
    try:
        for i in range(N_SERVERS):
            logs.append(tmp / f"serve{i}.log")
            procs.append(_start(logs[-1]))
        ports = [_ports(p, log) for p, log in zip(procs, logs, strict=True)]
        for grpc_port, _ in ports:
            _wait_serving(grpc_port)
        yield ports
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                assert p.wait(timeout=60) == 0
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                raise


def _streams_total(metrics_port: int) -> int:
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    m = re.search(r"^vadnet_streams_total (\S+)$", text, re.M)
    assert m, text
    return int(float(m.group(1)))


def _counts(servers: list[tuple[int, int]]) -> list[int]:
    return [_streams_total(mp) for _, mp in servers]


def _stream(stub: pb_grpc.VoiceActivityStub) -> pb.StreamingDetectResponse:
    """Stream the whole test file; returns the final response (events + summary)."""
    rate, chunks = file_chunks(AUDIO, chunk_ms=100)

    def requests():
        yield pb.StreamingDetectRequest(config=streaming_config(rate, "FLOAT32"))
        for chunk in chunks:
            yield pb.StreamingDetectRequest(audio=chunk)

    responses = list(stub.StreamingDetect(requests(), timeout=120))
    assert responses[-1].is_final
    return responses[-1]


def _run_streams(channel: grpc.Channel, n: int) -> list[pb.StreamingDetectResponse]:
    """n concurrent streams, each a new RPC on the one channel (as a busy client does)."""
    stub = pb_grpc.VoiceActivityStub(channel)
    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(lambda _: _stream(stub), range(n)))


def _target(servers: list[tuple[int, int]]) -> str:
    # grpc's ipv4 resolver takes a comma-separated address list, as DNS gives for a
    # headless Service: one address per ready pod.
    return "ipv4:" + ",".join(f"127.0.0.1:{p}" for p, _ in servers)


def test_round_robin_spreads_streams_over_all_replicas(servers):
    options = [("grpc.lb_policy_name", "round_robin")]
    with grpc.insecure_channel(_target(servers), options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        # round_robin connects to every address at once, and picks among the READY ones:
        # stream until every server has had one, so that all three connections are up.
        stub = pb_grpc.VoiceActivityStub(channel)
        for _ in range(10 * N_SERVERS):
            if min(_counts(servers)) > 0:
                break
            _stream(stub)
        before = _counts(servers)
        assert min(before) > 0, f"some replica never got a stream: {before}"

        n = N_SERVERS * STREAMS_PER_SERVER
        finals = _run_streams(channel, n)
        after = _counts(servers)

    per_server = [a - b for a, b in zip(after, before, strict=True)]
    assert per_server == [STREAMS_PER_SERVER] * N_SERVERS, per_server
    # Every replica gave the same (exact) answer for the same audio.
    summaries = {(f.summary.input_samples, f.summary.segments) for f in finals}
    assert len(summaries) == 1, summaries


def test_pick_first_pins_every_stream_to_one_replica(servers):
    """The default policy: one connection, every stream on it, the other replicas idle."""
    with grpc.insecure_channel(_target(servers)) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
        before = _counts(servers)
        _run_streams(channel, N_SERVERS * STREAMS_PER_SERVER)
        after = _counts(servers)
    per_server = sorted(a - b for a, b in zip(after, before, strict=True))
    assert per_server == [0] * (N_SERVERS - 1) + [N_SERVERS * STREAMS_PER_SERVER], per_server
