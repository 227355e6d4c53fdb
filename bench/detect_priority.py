"""Real-time streams beside heavy Detect calls (issue 17 §1): do the streams keep p99?

    python bench/detect_priority.py --server-cpus 0 --client-cpus 1 \\
        --streams 20 --detects 10 --detect-s 590 --duration-s 30

Spawns ``vadnet serve`` pinned to ``--server-cpus`` and runs two phases against it, side
by side in one run: (1) ``--streams`` real-time streams alone (``vadnet loadtest``'s
streams: real speech at ``--chunk-ms``, latency from sending a chunk to its answer);
(2) the same streams while ``--detects`` clients each send Detect calls of
``--detect-s`` seconds of real speech (FLAC) back to back, honouring the server's retry
hint when refused. Prints one line per phase and the p99 ratio, and writes both phases to
``--out`` (bench/results/detect_priority.json). docs/service.md has the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import multiprocessing
import os
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf

from vadnet.service import cmd_loadtest as lt
from vadnet.service.errors import RETRY_AFTER_KEY
from vadnet.v1 import vad_pb2 as pb
from vadnet.v1 import vad_pb2_grpc as pb_grpc


def _flac(path: str, seconds: float) -> bytes:
    """Real speech from ``path`` repeated to ``seconds``, as FLAC at its own rate."""
    x, rate = sf.read(path, dtype="float32")
    x = np.tile(x, int(np.ceil(seconds * rate / x.size)))[: int(seconds * rate)]

    buf = io.BytesIO()
    sf.write(buf, x, rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


async def _detect_client(stub, data: bytes, until: float, out: dict) -> None:
    """Detect calls back to back until ``until``; retries after the server's hint."""
    req = pb.DetectRequest(file=data)
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        try:
            resp = await stub.Detect(req, timeout=600)
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                out["errors"].append(f"{e.code().name}: {e.details()}")
                return
            out["refused"] += 1
            hint = dict(e.trailing_metadata() or ()).get(RETRY_AFTER_KEY, "1000")
            out["hints_ms"].append(int(hint))
            await asyncio.sleep(int(hint) / 1000)
            continue
        out["latency_s"].append(time.perf_counter() - t0)
        out["audio_s"] += resp.audio_s


def _detect_proc(target: str, n: int, data: bytes, seconds: float, cpus) -> dict:
    """The Detect clients' process: on the client CPUs, at the lowest priority."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    # It stands in for clients on other machines: it must not take the CPU of the stream
    # client that measures the latency (SCHED_IDLE: it runs only when that one waits).
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    return asyncio.run(_detects(target, n, data, seconds))


async def _detects(target: str, n: int, data: bytes, seconds: float) -> dict:
    out = {"refused": 0, "hints_ms": [], "latency_s": [], "audio_s": 0.0, "errors": []}
    opts = [("grpc.max_send_message_length", 256 << 20), lt._OWN_CONNECTION]
    async with grpc.aio.insecure_channel(target, options=opts) as channel:
        stub = pb_grpc.VoiceActivityStub(channel)
        until = time.perf_counter() + seconds
        t0 = time.perf_counter()
        await asyncio.gather(*(_detect_client(stub, data, until, out) for _ in range(n)))
        out["wall_s"] = time.perf_counter() - t0
    return out


def _histogram(url: str, name: str) -> dict:
    """count, sum and the +Inf-less buckets of one /metrics histogram."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    out = {"count": 0.0, "sum": 0.0, "buckets": {}}
    for line in text.splitlines():
        if line.startswith(name + "_count"):
            out["count"] = float(line.split()[-1])
        elif line.startswith(name + "_sum"):
            out["sum"] = float(line.split()[-1])
        elif line.startswith(name + "_bucket"):
            le = line.split('le="')[1].split('"')[0]
            out["buckets"][le] = float(line.split()[-1])
    return out


def _bucket_quantile(before: dict, after: dict, q: float) -> float | None:
    """The upper edge (ms) of the histogram bucket holding quantile ``q`` of what was
    observed between two reads."""
    total = after["count"] - before["count"]
    if total <= 0:
        return None
    for le, n in sorted(after["buckets"].items(), key=lambda kv: float(kv[0])):
        if n - before["buckets"].get(le, 0) >= q * total:
            return float(le) * 1000
    return None


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the server's threads and of its child processes' (the Detect worker),
    summed by thread name (/proc/PID/task)."""
    out: dict[str, float] = {}
    tasks = [t for p in lt._family(pid) for t in Path(f"/proc/{p}/task").iterdir()]
    for task in tasks:
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = comm.rstrip("0123456789_-")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / 100
    return out


def _phase(name: str, args, conn: dict, pid: int, url: str, data: bytes | None) -> dict:
    """One phase: the streams in a child process, the Detect clients (if any) here."""
    ctx = multiprocessing.get_context("spawn")
    cpus = lt._cpu_list(args.client_cpus)
    cpu0 = lt._cpu_seconds(pid)
    threads0 = _thread_cpu(pid)
    t0 = time.perf_counter()
    q0 = _histogram(url, "vadnet_queue_delay_seconds")
    c0 = _histogram(url, "vadnet_chunk_latency_seconds")
    i0 = _histogram(url, "vadnet_inference_seconds")
    with ctx.Pool(2) as pool:
        streams = pool.apply_async(lt._proc_main, (conn, args.streams, args, 0, cpus))
        det = None
        if data is not None:
            det = pool.apply_async(
                _detect_proc, (conn["target"], args.detects, data, args.duration_s, cpus)
            ).get()
        results = streams.get()
    wall = time.perf_counter() - t0
    lat = np.array([v for r in results for v in r[0]]) * 1000
    p50, p99 = np.percentile(lat, [50, 99])
    row = {
        "phase": name,
        "streams": args.streams,
        "chunk_ms": args.chunk_ms,
        "chunks": int(lat.size),
        "p50_ms": round(float(p50), 1),
        "p99_ms": round(float(p99), 1),
        "max_ms": round(float(lat.max()), 1),
        "lost_samples": int(sum(sent - counted for _, sent, counted, _ in results)),
        "failed_streams": sum(1 for r in results if r[3]),
        "server_cpu_cores": round((lt._cpu_seconds(pid) - cpu0) / wall, 2),
        "server_rss_mb": round(lt._rss_mb(pid)),
        # Where the server's CPU went, by thread name: cores over the phase.
        "server_threads": {
            k: round((v - threads0.get(k, 0.0)) / wall, 3)
            for k, v in _thread_cpu(pid).items()
            if v - threads0.get(k, 0.0) > 0.005 * wall
        },
    }
    q1 = _histogram(url, "vadnet_queue_delay_seconds")
    row["server_queue_delay_buckets"] = {
        le: int(q1["buckets"][le] - q0["buckets"].get(le, 0)) for le in q1["buckets"]
    }
    # The server's share of the streams' latency (chunk read -> answer written): a tail
    # here is the server's; a tail only in p99_ms is the transport's or the client's.
    c1 = _histogram(url, "vadnet_chunk_latency_seconds")
    row["server_chunk_p99_ms_at_most"] = _bucket_quantile(c0, c1, 0.99)
    row["server_chunk_over_50ms"] = int(
        c1["count"] - c0["count"] - (c1["buckets"].get("0.05", 0) - c0["buckets"].get("0.05", 0))
    )
    h = _histogram(url, "vadnet_detect_model_seconds")
    if h["count"]:
        row["detect_model_s_mean"] = round(h["sum"] / h["count"], 2)
    h = _histogram(url, "vadnet_inference_seconds")
    row["stream_batch_ms_mean"] = round(1000 * h["sum"] / max(h["count"], 1), 2)
    row["stream_batch_p99_ms_at_most"] = _bucket_quantile(i0, h, 0.99)
    if det is not None:
        lats = det["latency_s"]
        row.update(
            detects=args.detects,
            detect_s=args.detect_s,
            detect_done=len(lats),
            detect_audio_s_per_s=round(det["audio_s"] / det["wall_s"], 1),
            detect_latency_p50_s=round(float(np.median(lats)), 2) if lats else None,
            detect_refused=det["refused"],
            retry_hint_ms_median=int(np.median(det["hints_ms"])) if det["hints_ms"] else None,
            detect_errors=det["errors"][:3],
        )
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--chunk-ms", type=float, default=100.0)
    ap.add_argument("--detects", type=int, default=10, help="concurrent Detect clients")
    ap.add_argument("--detect-s", type=float, default=590.0, help="seconds of audio per Detect")
    ap.add_argument("--duration-s", type=float, default=30.0, help="length of each phase")
    ap.add_argument("--audio", default=str(lt.DEFAULT_AUDIO), help="speech file")
    ap.add_argument("--server-cpus", default="0")
    ap.add_argument("--client-cpus", default="1")
    ap.add_argument(
        "--server-args",
        default="--max-detect-calls 10 --max-message-bytes 67108864",
        help="extra `vadnet serve` flags (default: admit all 10 Detects at once)",
    )
    ap.add_argument("--out", default="bench/results/detect_priority.json", help="'' to skip")
    args = ap.parse_args()
    data = _flac(args.audio, args.detect_s)
    sys.stderr.write(f"Detect payload: {args.detect_s:g} s FLAC, {len(data) / 1e6:.1f} MB\n")
    proc, target, url = lt._spawn(argparse.Namespace(**vars(args)))
    conn = {"target": target, "tls": None, "token": None}
    # One short Detect first: the server starts its Detect worker process on the first
    # call (~3 s), a one-off that is not what this bench measures.
    with grpc.insecure_channel(target) as channel:
        short = _flac(args.audio, 1.0)
        pb_grpc.VoiceActivityStub(channel).Detect(pb.DetectRequest(file=short), timeout=60)
    try:
        rows = [
            _phase("streams alone", args, conn, proc.pid, url, None),
            _phase("streams + Detects", args, conn, proc.pid, url, data),
        ]
    finally:
        proc.terminate()
        proc.wait(30)
    for row in rows:
        print(json.dumps(row))
    if args.out:
        cmd = "python bench/detect_priority.py " + " ".join(sys.argv[1:])
        Path(args.out).write_text(json.dumps({"command": cmd.strip(), "phases": rows}, indent=1))
    print(f"p99 with Detects / alone: {rows[1]['p99_ms'] / rows[0]['p99_ms']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
