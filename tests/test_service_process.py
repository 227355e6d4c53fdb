"""Process safety of `vadnet serve` (real processes): --workers refuses a port in use and
its workers die with it; SIGHUP drains; shutdown keeps to its grace during a decode."""

from __future__ import annotations

import io
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import soundfile as sf
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vadnet.service.client import VadClient

SERVE = [sys.executable, "-m", "vadnet.service.cli", "serve", "--metrics-port", "-1"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serving(proc: subprocess.Popen) -> int:
    line = proc.stdout.readline()
    m = re.search(r"serving on .*:(\d+)", line)
    assert m, f"no port in {line!r}"
    return int(m.group(1))


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def _gone(pid: int, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True  # exited, not yet reaped (its parent is gone)
        except FileNotFoundError:
            return True
        time.sleep(0.1)
    return False


def _refused_workers(port: int) -> str:
    """`serve --workers 2 --port PORT` must fail at once; its last stderr line."""
    r = subprocess.run(
        [*SERVE, "--workers", "2", "--port", str(port)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode != 0
    return r.stderr.strip().splitlines()[-1]


def test_workers_refuse_a_port_in_use():
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        line = _refused_workers(port)
    assert f"port {port} on 127.0.0.1 is already in use" in line


def test_second_workers_instance_is_refused_and_workers_die_with_their_parent():
    port = _free_port()
    first = subprocess.Popen(
        [*SERVE, "--workers", "2", "--port", str(port), "--drain-grace-s", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(2):
            _serving(first)
        line = _refused_workers(port)
        assert "already in use" in line or "holds port" in line
        workers = _children(first.pid)
        assert len(workers) >= 2
        first.kill()  # SIGKILL: no chance to forward anything
        first.wait()
        assert all(_gone(w, 15) for w in workers), "workers outlived their parent"
        with socket.socket() as s:  # and the port is free again
            s.bind(("127.0.0.1", port))
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_sighup_drains_and_exits_0():
    proc = subprocess.Popen(
        [*SERVE, "--port", "0", "--drain-grace-s", "2"], stdout=subprocess.PIPE, text=True
    )
    try:
        port = _serving(proc)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
            watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest())
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            proc.send_signal(signal.SIGHUP)
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_shutdown_keeps_to_its_grace_during_a_long_decode():
    """A Detect of 2 h of silence as FLAC (1.1 MB) decodes for ~12 s here; a SIGTERM with a
    1 s grace must not wait for it (it did: 11.7 s with a 4 s grace, issue 17)."""
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", 48000, 1, format="FLAC", subtype="PCM_16") as f:
        minute = np.zeros(48000 * 60, np.int16)
        for _ in range(120):
            f.write(minute)
    data = buf.getvalue()
    proc = subprocess.Popen(
        [*SERVE, "--port", "0", "--drain-grace-s", "1"], stdout=subprocess.PIPE, text=True
    )
    try:
        port = _serving(proc)
        errors = []

        def call() -> None:
            with VadClient(f"127.0.0.1:{port}") as c:
                try:
                    c.detect(data)
                except grpc.RpcError as e:
                    errors.append(e.code())

        t = threading.Thread(target=call)
        t.start()
        time.sleep(1.0)  # the upload is in, the decode runs
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert time.monotonic() - start < 1.0 + 1.5
        t.join(30)
        assert errors  # the call did not succeed silently
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
