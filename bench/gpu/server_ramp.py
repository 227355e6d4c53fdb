"""`vadnet serve` under a rising load: how many real-time streams one machine holds.

For one server setup (device, worker processes, flags), :func:`run_setup` starts
``vadnet serve --workers N`` pinned to the server CPUs, then runs ``vadnet loadtest`` (the
same load generator as the README's CPU figures: real speech at real-time pace, 100 ms
chunks, as several processes pinned to the other CPUs) once per level. Levels double from
``start`` until p99 added latency passes ``p99_ms`` or audio is lost (or a stream fails),
then one level halfway between the last good and the first bad one. Beside each level:
the load generator's CPU (``getrusage`` of its processes: is the client the limit?),
nvidia-smi's GPU utilisation and memory (sampled every 250 ms), and the batches every
worker's ``/metrics`` counted (size, forward-pass time, queue delay).
"""

from __future__ import annotations

import json
import os
import queue
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Real speech from the checkout (the installed package has no tests/data).
AUDIO = Path(__file__).resolve().parents[2] / "tests" / "data" / "speech_en.wav"


@dataclass
class Setup:
    """One server configuration to ramp."""

    device: str  # cpu or cuda
    workers: int  # server processes sharing the port (SO_REUSEPORT)
    half: bool = False
    # 1,024 streams per forward pass on a GPU: its passes cost little more for more streams
    # (model_speed's table); the CPU keeps the server's default, its tested setting.
    max_batch_size: int = 256
    extra: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.device}{' half' if self.half else ''} x{self.workers} proc"


@dataclass
class Plan:
    """How to ramp. Why doubling: the first GPU run cannot guess where the limit is, and
    each level costs ``duration_s`` plus a few seconds of set-up, so a few levels must
    span 100 to 10,000 streams."""

    start: int  # streams per server process at the first level
    max_streams: int
    duration_s: float
    p99_ms: float = 50.0
    chunk_ms: float = 100.0
    server_cpus: str = "0"
    client_cpus: str = "1"
    client_procs: int = 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_set(cpus: str) -> set[int]:
    """``0-3,8`` -> {0, 1, 2, 3, 8}."""
    out: set[int] = set()
    for part in cpus.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out


# --- samplers --------------------------------------------------------------------------
class GpuSampler:
    """nvidia-smi utilisation and memory every 250 ms, while a level runs."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                 "--format=csv,noheader,nounits", "-lms", "250"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()

    def result(self) -> dict:
        if self.proc is None:
            return {}
        out, _ = self.proc.communicate(timeout=10)
        util, mem = [], []
        for line in out.splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and all(p.replace(".", "").isdigit() for p in parts):
                util.append(float(parts[0]))
                mem.append(float(parts[1]))
        if not util:
            return {}
        return {
            "gpu_util_mean_pct": sum(util) / len(util),
            "gpu_util_max_pct": max(util),
            "gpu_mem_max_mb": max(mem),
            "gpu_samples": len(util),
        }


_METRIC = re.compile(r'^(vadnet_\w+?)(?:\{le="([^"]+)"\})?\s+(\S+)$')


def scrape(ports: list[int]) -> dict[str, float]:
    """Batch counters summed over every worker's /metrics (a worker that does not answer
    counts nothing: the figures then say so by their count)."""
    total: dict[str, float] = {}
    for port in ports:
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            text = urllib.request.urlopen(url, timeout=5).read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            m = _METRIC.match(line)
            if not m or not m.group(1).startswith(
                ("vadnet_batch_size", "vadnet_inference_seconds", "vadnet_queue_delay_seconds")
            ):
                continue
            key = m.group(1) + (f"@{m.group(2)}" if m.group(2) else "")
            total[key] = total.get(key, 0.0) + float(m.group(3))
    return total


def batch_stats(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict:
    """Mean, median and p99 streams per forward pass (from the histogram's buckets: an
    upper bound), passes per second, mean pass and queue-delay times, over one level."""

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    count = delta("vadnet_batch_size_count")
    if count <= 0:
        return {}
    buckets = sorted(
        (float(k.split("@")[1]), delta(k))
        for k in after
        if k.startswith("vadnet_batch_size_bucket@") and k.split("@")[1] != "+Inf"
    )

    def quantile(q: float) -> float | None:
        for upper, cum in buckets:
            if cum >= q * count:
                return upper
        return None  # above the largest bucket

    return {
        "batches_per_s": count / wall_s,
        "mean_batch": delta("vadnet_batch_size_sum") / count,
        "batch_p50_le": quantile(0.5),
        "batch_p99_le": quantile(0.99),
        "mean_pass_ms": 1e3 * delta("vadnet_inference_seconds_sum") / count,
        "mean_queue_delay_ms": 1e3 * delta("vadnet_queue_delay_seconds_sum") / count,
    }


# --- one server --------------------------------------------------------------------------
def start_server(setup: Setup, plan: Plan, log: Path) -> tuple[subprocess.Popen, int, list[int]]:
    """``vadnet serve`` pinned to the server CPUs; returns it, its port and its workers' metrics ports,
    once every worker has printed its ``serving on`` line (model loaded and warm)."""
    port, metrics = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "vadnet.service.cli", "serve", "--host", "127.0.0.1",
           "--port", str(port), "--metrics-port", str(metrics), "--device", setup.device,
           "--workers", str(setup.workers), "--max-batch-size", str(setup.max_batch_size),
           "--max-streams", "100000", "--drain-grace-s", "2", *setup.extra]  # fmt: skip
    if setup.half:
        cmd.append("--half")
    env = {**os.environ, "VADNET_LOG_LEVEL": "WARNING"}
    with log.open("a") as f:
        f.write(f"\n=== {setup.label}: {' '.join(cmd)}\n")
    cpus = cpu_set(plan.server_cpus)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=log.open("a"), text=True, env=env,
        preexec_fn=lambda: os.sched_setaffinity(0, cpus),  # taskset, without needing it
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    ready, deadline = 0, time.monotonic() + 180
    while ready < setup.workers:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            stop_server(proc)
            raise RuntimeError(
                f"{setup.label}: {ready} of {setup.workers} workers started (see {log.name})"
            )
        ready += "serving on" in line
    return proc, port, [metrics + i for i in range(setup.workers)]


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def run_level(
    streams: int, plan: Plan, port: int, pid: int, metrics: list[int], timeout_s: float
) -> dict:
    """One `vadnet loadtest` level against the running server, with the samplers beside it.
    Client CPU is its processes' ``getrusage``, start-up (imports) included."""

    cmd = [sys.executable, "-m", "vadnet.service.cli", "loadtest", "--server",
           f"127.0.0.1:{port}", "--streams", str(streams), "--chunk-ms", str(plan.chunk_ms),
           "--duration-s", str(plan.duration_s), "--audio", str(AUDIO),
           "--procs", str(plan.client_procs), "--client-cpus", plan.client_cpus,
           "--server-pid", str(pid), "--json"]  # fmt: skip
    before = scrape(metrics)
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    # Its own session, so that a level that hangs is killed with its worker processes.
    load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    with GpuSampler() as gpu:
        try:
            stdout, stderr = load.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(load.pid, signal.SIGKILL)
            load.communicate()
            return {"streams": streams, "ok": False, "error": f"no result in {timeout_s:.0f} s"}
    wall = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = scrape(metrics)
    found = [json.loads(x) for x in stdout.splitlines() if x.startswith("{")]
    if load.returncode or not found:
        return {"streams": streams, "ok": False, "error": stderr[-1500:]}
    level = found[-1]
    client_cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    level.update(gpu.result())
    level.update(batch_stats(before, after, level["seconds"]))
    level["client_cpu_cores"] = client_cpu / wall
    level["client_us_per_chunk"] = 1e6 * client_cpu / max(1, level["chunks"])
    level["ok"] = (
        level["p99_ms"] <= plan.p99_ms
        and level["lost_samples"] == 0
        and level["failed_streams"] == 0
    )
    return level


def run_setup(setup: Setup, plan: Plan, deadline: float, log: Path) -> dict:
    """Ramp one setup until it fails or ``deadline`` (perf_counter) is near; see the module
    docstring. ``held`` is the most streams of a level that passed (0: none did)."""
    result: dict = {"setup": asdict(setup), "label": setup.label, "levels": []}
    level_cost = plan.duration_s + 6  # the load generator's processes start each level
    try:
        proc, port, metrics = start_server(setup, plan, log)
    except RuntimeError as e:
        result.update(error=str(e), held=0)
        return result
    start = min(plan.max_streams, plan.start * setup.workers)  # start: per process
    good, bad, n = 0, None, start
    try:
        # At least one level, however late: a setup that was started is measured.
        while n and (not result["levels"] or time.perf_counter() + level_cost < deadline):
            # A level that hangs may run 10 s past the deadline, never more than 2 levels' time.
            timeout = max(level_cost, min(2 * level_cost, deadline + 10 - time.perf_counter()))
            level = run_level(n, plan, port, proc.pid, metrics, timeout)
            result["levels"].append(level)
            if level["ok"]:
                good = max(good, n)
            else:
                bad = n if bad is None else min(bad, n)
            n = _next_level(good, bad, [lv["streams"] for lv in result["levels"]], start, plan)
        result["stopped_by"] = "time budget" if n else ("limit found" if bad else "max streams")
    finally:
        stop_server(proc)
    result["held"] = good
    result["first_failed"] = bad
    return result


def _next_level(good: int, bad: int | None, tried: list[int], start: int, plan: Plan) -> int:
    """Double while levels pass; after the first failure, halve the gap between the best
    level that passed and the smallest that failed (to a round number under a quarter of ``start``), or, when
    ``start`` itself failed, try a quarter of it. 0: stop."""
    n = tried[-1]
    if bad is None:
        return 2 * n if 2 * n <= plan.max_streams else 0
    if good == 0:
        return start // 4 if n == start and start >= 4 else 0
    step = 10 ** max(0, len(str(start // 4)) - 1)  # a round number under start / 4
    if bad - good <= max(step, good // 8):  # within an eighth: time is better spent elsewhere
        return 0
    mid = (good + bad) // 2 // step * step
    return mid if good < mid < bad and mid not in tried else 0
