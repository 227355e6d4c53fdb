"""`vadnet loadtest --spawn` runs end to end (server subprocess, real streams), so it
cannot rot. The figures in the README come from the full ramp, never from here."""

from __future__ import annotations

import json
import subprocess
import sys


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
