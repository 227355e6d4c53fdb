"""``vadnet loadtest``: N concurrent real-time streams of real speech against a server.

Each stream sends ``--chunk-ms`` chunks of a speech file (from a random offset, looping)
at real-time pace and asks for probabilities, so every processed chunk is answered.
Latency is measured from the moment a chunk is sent to the first response whose
``input_samples_processed`` covers it: the latency the service adds on top of the
model's own lookahead. Audio lost is what was sent minus what the final summary
counted (it must be 0).

``--spawn`` starts ``vadnet serve`` itself, pinned with ``--server-cpus`` (and pins the
load generator to ``--client-cpus``), and reads the server's CPU time and RSS from /proc.
``--ramp`` raises the stream count level by level and reports the most streams held at
p99 <= ``--p99-ms`` with no loss.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

_OWN_CONNECTION = ("grpc.use_local_subchannel_pool", 1)
DEFAULT_AUDIO = Path(__file__).resolve().parent.parent / "tests" / "data" / "speech_en.wav"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .client import add_connection_arguments

    add_connection_arguments(parser)
    parser.add_argument("--streams", type=int, default=100, help="concurrent streams")
    parser.add_argument("--chunk-ms", type=float, default=100.0, help="chunk length")
    parser.add_argument("--duration-s", type=float, default=20.0, help="length of each level")
    parser.add_argument("--audio", default=str(DEFAULT_AUDIO), help="speech file to send")
    parser.add_argument("--procs", type=int, default=1, help="load-generator processes")
    parser.add_argument("--ramp", metavar="START:STEP:MAX", help="raise streams level by level")
    parser.add_argument("--p99-ms", type=float, default=50.0, help="ramp latency bound")
    parser.add_argument("--spawn", action="store_true", help="start `vadnet serve` here")
    parser.add_argument("--server-cpus", default="0", help="taskset list for --spawn")
    parser.add_argument("--client-cpus", default=None, help="CPUs for the load generator")
    parser.add_argument("--server-args", default="", help="extra `vadnet serve` flags")
    parser.add_argument("--server-pid", type=int, help="pid of a running server to measure")
    parser.add_argument("--metrics-url", help="server /metrics URL for batch statistics")
    parser.add_argument("--json", action="store_true", help="print results as JSON lines")
    parser.add_argument(
        "--idle", type=int, metavar="N", help="instead: hold N idle streams, report server RSS"
    )


@dataclass
class Level:
    """Results of one load level."""

    streams: int
    chunk_ms: float
    seconds: float
    chunks: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    lost_samples: int
    failed_streams: int
    server_cpu_cores: float | None
    server_rss_mb: float | None
    mean_batch: float | None
    batches_per_s: float | None
    # Server CPU per answered chunk: the cost that sets how many streams a core holds.
    server_us_per_chunk: float | None = None

    def line(self) -> str:
        cpu = f"{self.server_cpu_cores:.2f}" if self.server_cpu_cores is not None else "?"
        per = f"{self.server_us_per_chunk:.0f}" if self.server_us_per_chunk is not None else "?"
        rss = f"{self.server_rss_mb:.0f}" if self.server_rss_mb is not None else "?"
        batch = f"{self.mean_batch:.1f}" if self.mean_batch is not None else "?"
        return (
            f"streams={self.streams} chunk={self.chunk_ms:g}ms p50={self.p50_ms:.1f}ms"
            f" p95={self.p95_ms:.1f}ms p99={self.p99_ms:.1f}ms max={self.max_ms:.1f}ms"
            f" lost={self.lost_samples} failed={self.failed_streams} server_cpu={cpu}"
            f" us_per_chunk={per} rss={rss}MB mean_batch={batch} chunks={self.chunks}"
        )


# --- one stream ------------------------------------------------------------------------
async def _one_stream(stub, audio, rate: int, chunk: int, seconds: float, seed: int, meta):
    """Returns (latencies in s, samples sent, samples the server counted, error or None)."""
    import numpy as np

    from vadnet.v1 import vad_pb2 as pb

    rng = np.random.default_rng(seed)
    offset = int(rng.integers(0, audio.size))
    n_chunks = max(1, int(seconds * rate / chunk))
    sent_at: dict[int, float] = {}  # end sample of a chunk -> send time
    pending: list[int] = []
    latencies: list[float] = []
    cfg = pb.StreamingConfig(sample_rate_hz=rate, encoding=pb.LINEAR16, return_probabilities=True)

    async def requests():
        yield pb.StreamingDetectRequest(config=cfg)
        # a random phase so that the streams' chunks do not all arrive together
        await asyncio.sleep(float(rng.uniform(0, chunk / rate)))
        t0 = time.perf_counter()
        for i in range(n_chunks):
            delay = t0 + i * chunk / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            start = (offset + i * chunk) % (audio.size - chunk)
            data = audio[start : start + chunk].tobytes()
            end = (i + 1) * chunk
            sent_at[end] = time.perf_counter()
            pending.append(end)
            yield pb.StreamingDetectRequest(audio=data)

    counted, err = 0, None
    try:
        k = 0
        async for resp in stub.StreamingDetect(requests(), metadata=meta):
            now = time.perf_counter()
            done = resp.input_samples_processed
            while k < len(pending) and pending[k] <= done:
                latencies.append(now - sent_at.pop(pending[k]))
                k += 1
            if resp.is_final:
                counted = resp.summary.input_samples
    except Exception as e:  # a failed stream is reported, not fatal to the run
        err = repr(e)
    return latencies, n_chunks * chunk, counted, err


async def _run_streams(target: str, tls, token, streams: int, args, seed0: int) -> list:
    import grpc
    import numpy as np

    from vadnet.v1 import vad_pb2_grpc as pb_grpc

    from .client import open_channel, read_file

    x, rate = read_file(args.audio)
    audio = (np.clip(x, -1, 1) * 32767).astype("<i2")
    chunk = max(1, round(rate * args.chunk_ms / 1000))
    meta = (("authorization", f"Bearer {token}"),) if token else ()
    # Several HTTP/2 connections: one connection's single reader would serialize everything.
    channels = [
        open_channel(grpc.aio, target, tls, [_OWN_CONNECTION]) for i in range(max(1, streams // 64))
    ]
    stubs = [pb_grpc.VoiceActivityStub(c) for c in channels]
    try:
        return await asyncio.gather(
            *(
                _one_stream(
                    stubs[i % len(stubs)], audio, rate, chunk, args.duration_s, seed0 + i, meta
                )
                for i in range(streams)
            )
        )
    finally:
        for c in channels:
            await c.close()


def _proc_main(conn_kwargs: dict, streams: int, args: argparse.Namespace, seed0: int, cpus):
    if cpus:
        os.sched_setaffinity(0, cpus)
    tls, token = conn_kwargs["tls"], conn_kwargs["token"]
    return asyncio.run(_run_streams(conn_kwargs["target"], tls, token, streams, args, seed0))


# --- server measurements -----------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its children processes (workers), seconds."""
    total = 0.0
    for p in _family(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def _rss_mb(pid: int) -> float:
    total = 0
    for p in _family(pid):
        try:
            m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text())
            total += int(m.group(1)) if m else 0
        except OSError:
            pass
    return total / 1024


def _family(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in (
            Path(f"/proc/{p}/task").glob("*/children") if Path(f"/proc/{p}").exists() else []
        ):
            try:
                todo.extend(int(c) for c in task.read_text().split())
            except OSError:
                pass
    return out


def _batch_totals(url: str | None) -> tuple[float, float] | None:
    if not url:
        return None
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return None
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("vadnet_batch_size_sum"):
            total += float(line.split()[-1])
        elif line.startswith("vadnet_batch_size_count"):
            count += float(line.split()[-1])
    return total, count


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn_pinned(cmd: list[str], cpus: str) -> tuple[subprocess.Popen, int]:
    """Start a server command under ``taskset -c cpus``; returns it and the port from its
    first line (``... serving on HOST:PORT``)."""
    env = {**os.environ, "VADNET_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        ["taskset", "-c", cpus, *cmd], stdout=subprocess.PIPE, text=True, env=env
    )
    line = proc.stdout.readline()
    m = re.search(r"serving on .*:(\d+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, int(m.group(1))


def _spawn(args: argparse.Namespace) -> tuple[subprocess.Popen, str, str]:
    """`vadnet serve` under taskset; returns it, its target and its metrics URL."""
    metrics_port = _free_port()
    cmd = [sys.executable, "-m", "vadnet.service.cli", "serve", "--port", "0"]
    cmd += ["--metrics-port", str(metrics_port), *args.server_args.split()]
    proc, port = spawn_pinned(cmd, args.server_cpus)
    return proc, f"127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}/metrics"


# --- idle streams: memory ---------------------------------------------------------------
async def _idle_streams(conn: dict, n: int, pid: int) -> dict:
    """Open ``n`` streams (config + 100 ms of audio each), hold them, measure server RSS."""
    import grpc
    import numpy as np

    from vadnet.v1 import vad_pb2 as pb
    from vadnet.v1 import vad_pb2_grpc as pb_grpc

    from .client import open_channel

    meta = (("authorization", f"Bearer {conn['token']}"),) if conn["token"] else ()
    channel = open_channel(grpc.aio, conn["target"], conn["tls"], ())
    stub = pb_grpc.VoiceActivityStub(channel)
    cfg = pb.StreamingConfig(sample_rate_hz=16000, encoding=pb.LINEAR16, return_probabilities=True)
    chunk = (np.random.default_rng(0).standard_normal(1600) * 1000).astype("<i2").tobytes()
    gates: list[asyncio.Event] = []

    async def one(gate: asyncio.Event):
        async def reqs():
            yield pb.StreamingDetectRequest(config=cfg)
            yield pb.StreamingDetectRequest(audio=chunk)
            await gate.wait()

        return [r async for r in stub.StreamingDetect(reqs(), metadata=meta)]

    await asyncio.sleep(1.0)
    before = _rss_mb(pid)
    gates = [asyncio.Event() for _ in range(n)]
    tasks = [asyncio.create_task(one(g)) for g in gates]
    await asyncio.sleep(max(3.0, n / 500))  # all opened and answered
    held = _rss_mb(pid)
    for g in gates:
        g.set()
    finals = await asyncio.gather(*tasks, return_exceptions=True)
    await channel.close()
    await asyncio.sleep(1.0)
    after = _rss_mb(pid)
    ok = sum(1 for f in finals if isinstance(f, list) and f and f[-1].is_final)
    return {
        "streams": n,
        "completed": ok,
        "rss_before_mb": round(before, 1),
        "rss_held_mb": round(held, 1),
        "rss_after_close_mb": round(after, 1),
        "delta_mb": round(held - before, 1),
        "kb_per_stream": round((held - before) * 1024 / n, 1),
    }


# --- levels --------------------------------------------------------------------------------
def run_level(streams: int, args: argparse.Namespace, conn: dict, pid: int | None, url) -> Level:
    import numpy as np

    client_cpus = _cpu_list(args.client_cpus)
    procs = max(1, min(args.procs, streams))
    shares = [streams // procs + (i < streams % procs) for i in range(procs)]
    cpu0 = _cpu_seconds(pid) if pid else None
    batch0 = _batch_totals(url)
    t0 = time.perf_counter()
    if procs == 1:
        if client_cpus:
            os.sched_setaffinity(0, client_cpus)
        results = asyncio.run(
            _run_streams(conn["target"], conn["tls"], conn["token"], streams, args, 0)
        )
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(procs) as pool:
            parts = pool.starmap(
                _proc_main,
                [(conn, n, args, 100_000 * i, client_cpus) for i, n in enumerate(shares)],
            )
        results = [r for part in parts for r in part]
    wall = time.perf_counter() - t0
    rss = _rss_mb(pid) if pid else None
    cpu = (_cpu_seconds(pid) - cpu0) / wall if pid else None
    batch1 = _batch_totals(url)
    lat = np.array([v for r in results for v in r[0]]) * 1000
    lost = sum(sent - counted for _, sent, counted, _ in results)
    failed = [r[3] for r in results if r[3]]
    for err in failed[:3]:
        sys.stderr.write(f"stream failed: {err}\n")
    mean_batch = bps = None
    if batch0 and batch1 and batch1[1] > batch0[1]:
        mean_batch = (batch1[0] - batch0[0]) / (batch1[1] - batch0[1])
        bps = (batch1[1] - batch0[1]) / wall
    pct = np.percentile(lat, [50, 95, 99]) if lat.size else [float("nan")] * 3
    return Level(
        streams=streams,
        chunk_ms=args.chunk_ms,
        seconds=round(wall, 2),
        chunks=int(lat.size),
        p50_ms=float(pct[0]),
        p95_ms=float(pct[1]),
        p99_ms=float(pct[2]),
        max_ms=float(lat.max()) if lat.size else float("nan"),
        lost_samples=int(lost),
        failed_streams=len(failed),
        server_cpu_cores=cpu,
        server_rss_mb=rss,
        mean_batch=mean_batch,
        batches_per_s=bps,
        server_us_per_chunk=cpu * wall / lat.size * 1e6 if cpu is not None and lat.size else None,
    )


def _cpu_list(text: str | None) -> set[int] | None:
    if not text:
        return None
    cpus: set[int] = set()
    for part in text.split(","):
        a, _, b = part.partition("-")
        cpus.update(range(int(a), int(b or a) + 1))
    return cpus


def run(args: argparse.Namespace) -> int:
    from vadnet.model.errors import InvalidInputError

    from .client import connection_from_args

    conn = connection_from_args(args)
    proc = None
    pid, url = args.server_pid, args.metrics_url
    if args.spawn:
        proc, conn["target"], url = _spawn(args)
        pid = proc.pid
    try:
        if args.idle:
            if not pid:
                raise InvalidInputError("--idle measures a server: give --spawn or --server-pid")
            result = asyncio.run(_idle_streams(conn, args.idle, pid))
            sys.stdout.write(json.dumps(result) + "\n")
            return 0
        if args.ramp:
            try:
                start, step, top = (int(v) for v in args.ramp.split(":"))
            except ValueError as e:
                raise InvalidInputError("--ramp takes START:STEP:MAX, e.g. 100:100:1000") from e
            levels = range(start, top + 1, step)
        else:
            levels = [args.streams]
        best = None
        for n in levels:
            level = run_level(n, args, conn, pid, url)
            out = json.dumps(asdict(level)) if args.json else level.line()
            sys.stdout.write(out + "\n")
            sys.stdout.flush()
            ok = (
                level.p99_ms <= args.p99_ms and level.lost_samples == 0 and not level.failed_streams
            )
            if not ok and args.ramp:
                break
            best = n if ok else best
        if args.ramp:
            sys.stdout.write(f"max streams held at p99 <= {args.p99_ms:g} ms, no loss: {best}\n")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    return 0
