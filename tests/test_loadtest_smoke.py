"""`vadnet loadtest --spawn` runs end to end (server subprocess, real streams), so it
cannot rot. The figures in the README come from full runs (bench/results/loadtest.md), never
from here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_loadtest_spawns_a_server_and_reports_a_level():
    cmd = [sys.executable, "-m", "vadnet.service.cli", "loadtest", "--spawn", "--streams", "3",
           "--chunk-ms", "100", "--duration-s", "2", "--json"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    levels = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(levels) == 1, out.stdout
    level = levels[0]
    assert level["streams"] == 3 and level["failed_streams"] == 0
    assert level["lost_samples"] == 0
    assert level["chunks"] >= 3 * 15  # 2 s of 100 ms chunks per stream, less start-up slack
    assert 0 < level["p50_ms"] <= level["p99_ms"] <= level["max_ms"]
    assert level["server_cpu_cores"] > 0 and level["server_us_per_chunk"] > 0


def test_server_cost_bench_runs_floor_and_vadnet(tmp_path):
    out = tmp_path / "cost.json"
    cmd = [sys.executable, str(REPO / "bench" / "server_cost.py"), "--streams", "2",
           "--duration-s", "2", "--out", str(out)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(out.read_text())
    floor, vadnet = result["runs"]
    assert (floor["name"], vadnet["name"]) == ("floor", "vadnet")
    for r in result["runs"]:
        assert r["level"]["lost_samples"] == 0 and r["level"]["failed_streams"] == 0
        assert r["level"]["server_us_per_chunk"] > 0
    # The split found vadnet's named model thread (it ran the batches).
    assert "model" in vadnet["cores_by_thread"] and "model" not in floor["cores_by_thread"]
    assert "vadnet / floor" in result["table"]
