"""Soak: `vadnet serve` under steady streams, disconnect storms and Detect calls for minutes.

    nice -n 10 .venv/bin/python bench/soak.py --minutes 10

One real server process (CPU, bundled model) and one client process:

- ``--streams`` resumable real-time streams of tests/data/speech_en.wav (9.6 s) run all
  the time, each reopened when it ends; every finished stream's segments are checked
  against `vadnet detect` on the same file (they must be identical);
- every ``--storm-every-s`` seconds a storm opens ``--storm-streams`` more streams, sends
  0.5 s of audio on each as fast as it can and then drops them all at once (cancelled
  calls, half of them mid-message), as clients that crash or lose their network do;
- a Detect call of the same file every ``--detect-every-s`` seconds (segments checked too).

Every ``--sample-every-s`` seconds it samples the server's RSS (/proc) and its open-stream
gauge (/metrics). At the end it stops the load, waits for the gauge to settle, and reports
RSS over the run (first and last sample after warm-up, the slope of a least-squares line
in MB per minute), open streams at the end (must equal 0) and what failed. Figures go
in docs/service.md ("Soak"); ``--out`` writes them as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FILE = REPO / "tests" / "data" / "speech_en.wav"


def rss_mb(pid: int) -> float:
    """RSS of the server and of its child processes (the Detect worker), MB."""
    from vadnet.service.cmd_loadtest import _rss_mb

    return _rss_mb(pid)


def active_streams(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    m = re.search(r"^vadnet_active_streams (\S+)$", text.decode(), re.M)
    return float(m.group(1)) if m else 0.0


def start_server() -> tuple[subprocess.Popen, int, int]:
    cmd = [sys.executable, "-m", "vadnet.service.cli", "serve", "--port", "0"]
    cmd += ["--metrics-port", "0", "--device", "cpu", "--drain-grace-s", "5"]
    env = {**os.environ, "VADNET_LOG_LEVEL": "INFO"}
    proc = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    while True:
        line = proc.stderr.readline()
        if not line:
            raise RuntimeError("server exited before serving")
        if m := re.search(r"serving on port (\d+) metrics (\d+)", line):
            break
    # keep draining its log so that it never blocks on a full pipe
    threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
    return proc, int(m.group(1)), int(m.group(2))


class Load:
    def __init__(self, target: str, args: argparse.Namespace) -> None:
        from vadnet.service.client import AsyncVadClient, file_chunks, segments_from_events

        self.client = AsyncVadClient(target)
        self.segments_from_events = segments_from_events
        self.rate, chunks = file_chunks(FILE, 20)
        self.chunks = list(chunks)
        self.args = args
        self.stop = asyncio.Event()
        self.counts = {"streams": 0, "stream_mismatch": 0, "stream_errors": 0, "storm_streams": 0}
        self.counts |= {"detects": 0, "detect_mismatch": 0, "detect_errors": 0}
        self.errors: list[str] = []
        self.expected = None

    async def reference(self) -> None:
        from vadnet.model.segmenter import Segment

        resp = await self.client.detect(FILE)
        self.expected = [
            Segment(s.start_s, s.end_s, s.start_sample, s.end_sample) for s in resp.segments
        ]

    def _error(self, kind: str, e: BaseException) -> None:
        self.counts[kind] += 1
        if len(self.errors) < 20:
            self.errors.append(f"{kind}: {type(e).__name__}: {e}")

    async def steady(self, i: int) -> None:
        await asyncio.sleep(i * 9.6 / self.args.streams)  # spread the starts
        while not self.stop.is_set():
            try:
                events = []
                async for r in self.client.stream(
                    self.chunks, sample_rate_hz=self.rate, encoding="FLOAT32", realtime=True
                ):
                    events.extend(r.events)
                self.counts["streams"] += 1
                if self.segments_from_events(events) != self.expected:
                    self.counts["stream_mismatch"] += 1
            except Exception as e:  # noqa: BLE001 - a soak counts failures, it does not stop
                self._error("stream_errors", e)

    async def _dropped(self, k: int) -> None:
        from vadnet.v1 import vad_pb2 as pb

        cfg = pb.StreamingConfig(sample_rate_hz=self.rate, encoding=pb.FLOAT32)

        async def gen():
            yield pb.StreamingDetectRequest(config=cfg)
            for c in self.chunks[:25]:
                yield pb.StreamingDetectRequest(audio=c)
            await asyncio.sleep(3600)

        call = self.client.stub.StreamingDetect(gen())
        try:
            await asyncio.wait_for(call.read(), 2 + (k % 2))
        except (TimeoutError, Exception):  # noqa: BLE001 - dropped either way
            pass
        call.cancel()
        self.counts["storm_streams"] += 1

    async def storms(self) -> None:
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), self.args.storm_every_s)
            except TimeoutError:
                await asyncio.gather(*(self._dropped(k) for k in range(self.args.storm_streams)))

    async def detects(self) -> None:
        data = FILE.read_bytes()
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), self.args.detect_every_s)
            except TimeoutError:
                try:
                    resp = await self.client.detect(data)
                    self.counts["detects"] += 1
                    got = [(s.start_s, s.end_s) for s in resp.segments]
                    if got != [(s.start_s, s.end_s) for s in self.expected]:
                        self.counts["detect_mismatch"] += 1
                except Exception as e:  # noqa: BLE001
                    self._error("detect_errors", e)


async def main(args: argparse.Namespace) -> dict:
    proc, port, mport = start_server()
    samples: list[tuple[float, float, float]] = []  # (minutes, RSS MB, open streams)
    try:
        load = Load(f"127.0.0.1:{port}", args)
        await load.reference()
        tasks = [asyncio.create_task(load.steady(i)) for i in range(args.streams)]
        tasks += [asyncio.create_task(load.storms()), asyncio.create_task(load.detects())]
        t0 = time.monotonic()
        while (el := time.monotonic() - t0) < args.minutes * 60:
            samples.append((el / 60, rss_mb(proc.pid), active_streams(mport)))
            print(
                f"{el / 60:5.1f} min  RSS {samples[-1][1]:7.1f} MB  open {samples[-1][2]:4.0f}",
                flush=True,
            )
            await asyncio.sleep(args.sample_every_s)
        load.stop.set()
        await asyncio.wait(tasks, timeout=30)
        for t in tasks:
            t.cancel()
        await load.client.close()
        for _ in range(20):  # the server sees the last cancels within a sweep
            if active_streams(mport) == 0:
                break
            await asyncio.sleep(0.5)
        end_open, end_rss = active_streams(mport), rss_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
    warm = [s for s in samples if s[0] >= args.warmup_min] or samples
    t, rss = np.array([s[0] for s in warm]), np.array([s[1] for s in warm])
    slope = float(np.polyfit(t, rss, 1)[0]) if len(t) > 2 else float("nan")
    return {
        "command": " ".join(sys.argv),
        "minutes": args.minutes,
        "load": {
            k: getattr(args, k)
            for k in ("streams", "storm_streams", "storm_every_s", "detect_every_s")
        },
        "counts": load.counts,
        "errors": load.errors,
        "rss_mb_first_after_warmup": round(float(rss[0]), 1),
        "rss_mb_last": round(float(rss[-1]), 1),
        "rss_mb_max": round(float(rss.max()), 1),
        "rss_slope_mb_per_min": round(slope, 2),
        "rss_mb_after_load": round(end_rss, 1),
        "open_streams_peak": max(s[2] for s in samples),
        "open_streams_after_load": end_open,
        "samples": samples,
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--streams", type=int, default=20, help="steady real-time streams")
    p.add_argument("--storm-streams", type=int, default=100, help="streams dropped per storm")
    p.add_argument("--storm-every-s", type=float, default=30.0)
    p.add_argument("--detect-every-s", type=float, default=5.0)
    p.add_argument("--sample-every-s", type=float, default=10.0)
    p.add_argument("--warmup-min", type=float, default=1.0, help="RSS trend ignores this start")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak.json")
    a = p.parse_args()
    result = asyncio.run(main(a))
    a.out.write_text(json.dumps(result, indent=1))
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=1))
