"""Seamless failover with real `vadnet serve` processes and the real `vadnet stream` CLI:
a replica drained (SIGTERM), killed (SIGKILL) or frozen (SIGSTOP) mid-stream. With a
second replica the stream resumes there and prints exactly what `vadnet detect` prints
on the whole file; with none, the CLI exits non-zero within a bounded time."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
import soundfile as sf
from test_service_helpers import DATA

from vadnet.service.client import VadClient

CLI = [sys.executable, "-m", "vadnet.service.cli"]


class Replica:
    """A `vadnet serve` subprocess on free ports, with its metrics endpoint."""

    def __init__(self, grace_s: float = 3.0) -> None:
        cmd = [*CLI, "serve", "--port", "0", "--metrics-port", "0", "--device", "cpu"]
        cmd += ["--drain-grace-s", str(grace_s)]
        env = {**os.environ, "VADNET_LOG_LEVEL": "INFO"}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        while True:
            line = self.proc.stderr.readline()
            assert line, "server exited before serving"
            if m := re.search(r"serving on port (\d+) metrics (\d+)", line):
                self.port, self.metrics_port = int(m.group(1)), int(m.group(2))
                break
        self.proc.stderr.close()  # the rest of the log is not needed (and must not block)

    def active_streams(self) -> float:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=5).read().decode()
        m = re.search(r"^vadnet_active_streams (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a frozen one must die too
            self.proc.kill()
        self.proc.wait()


@pytest.fixture(scope="module")
def long_file(tmp_path_factory) -> Path:
    """speech_en.wav twice (19.3 s): long enough to cut past the receptive field (8.2 s)."""
    x, rate = sf.read(DATA / "speech_en.wav", dtype="float32")
    path = tmp_path_factory.mktemp("failover") / "long.wav"
    sf.write(path, np.tile(x, 2), rate, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def detect_json(long_file) -> str:
    r = subprocess.run(
        [*CLI, "detect", str(long_file), "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return r.stdout


@pytest.fixture
def replicas():
    started: list[Replica] = []

    def start(n: int, grace_s: float = 3.0) -> list[Replica]:
        started.extend(Replica(grace_s) for _ in range(n))
        return started[-n:]

    yield start
    for r in started:
        r.stop()


def _stream(file: Path, replicas: list[Replica], *extra: str) -> subprocess.Popen:
    target = "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas)
    cmd = [*CLI, "stream", str(file), "--server", target, "--format", "json", "--realtime", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _holder(pool: list[Replica], after_s: float, start: float) -> Replica:
    """The replica that serves the stream, once the stream has run ``after_s``."""
    while True:
        busy = [r for r in pool if r.active_streams() >= 1]
        if busy and time.monotonic() - start >= after_s:
            assert len(busy) == 1
            return busy[0]
        time.sleep(0.1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_replica_leaves_mid_stream_output_equals_detect(replicas, long_file, detect_json, sig):
    pool = replicas(2)
    t0 = time.monotonic()
    client = _stream(long_file, pool)
    victim = _holder(pool, 10.5, t0)  # past the receptive field: a real replay
    victim.proc.send_signal(sig)
    out, err = client.communicate(timeout=90)
    assert client.returncode == 0, err
    assert out == detect_json
    if sig == signal.SIGTERM:
        assert victim.proc.wait(30) == 0  # it drained and exited cleanly
    other = next(r for r in pool if r is not victim)
    assert other.proc.poll() is None


def test_the_only_replica_dies_clear_error_after_bounded_retries(replicas, long_file):
    (only,) = replicas(1)
    t0 = time.monotonic()
    client = _stream(long_file, [only], "--retries", "3")
    _holder([only], 2.0, t0)
    only.proc.kill()
    _out, err = client.communicate(timeout=60)
    assert client.returncode == 2
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("vadnet stream: error: UNAVAILABLE: stream failed after 4 attempts")
    )
    assert time.monotonic() - t0 < 30


def test_a_frozen_server_fails_within_30_s_by_default(replicas, long_file):
    (only,) = replicas(1)
    t0 = time.monotonic()
    client = _stream(long_file, [only])
    _holder([only], 2.0, t0)
    os.kill(only.proc.pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        _out, err = client.communicate(timeout=60)
        assert client.returncode == 2, err
        assert time.monotonic() - stopped < 30
        assert "no answer" in err.strip().splitlines()[-1]
        # unary calls have a default deadline too (GetModelInfo: 10 s)
        start = time.monotonic()
        with VadClient(f"127.0.0.1:{only.port}") as c, pytest.raises(grpc.RpcError) as e:
            c.model_info()
        assert e.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE)
        assert time.monotonic() - start < 15
    finally:
        os.kill(only.proc.pid, signal.SIGCONT)
