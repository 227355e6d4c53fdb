"""`bench/gpu/run.sh --device cpu --quick` runs end to end here, so that the GPU check is
ready the day a GPU is lent (issue 18). Everything in it is CPU: the parity tests compare
the traced CPU path with the eager one, and the report says that no GPU ran. The figures
of a real run come from the device (docs/deploy.md), never from here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_quick_cpu_run_writes_report_and_json(tmp_path):
    out = tmp_path / "gpu"
    cmd = ["nice", "-n", "10", str(REPO / "bench" / "gpu" / "run.sh"), "--device", "cpu",
           "--quick", "--python", sys.executable, str(out)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    r = json.loads((out / "results.json").read_text())
    report = (out / "report.md").read_text()
    assert "No GPU in this run" in report
    assert (out / "run.log").read_text().count("== setup") == 1

    # Setup: the project ran from the temporary prefix, not from this checkout.
    assert r["device"] == "cpu" and r["quick"] is True
    assert "/vadnet-gpu." in r["environment"]["vadnet_from"]
    assert r["environment"]["versions"]["torch"]

    # Parity: streams and frame_probs within 1e-4 of the CPU references, the same segments.
    parity = r["parity"]
    assert parity["passed"], parity
    outcomes = {t["test"]: t["outcome"] for t in parity["runs"]["model"]["tests"]}
    assert outcomes["test_stream_bank_random_chunkings_match_cpu"] == "passed"
    assert outcomes["test_offline_matches_cpu[frame_probs]"] == "passed"
    assert outcomes["test_half_precision_difference[float16]"] == "skipped"
    bank = parity["figures"]["stream_bank"]
    assert bank["streams"] == 8 and bank["boundaries_moved"] == 0
    assert bank["max_abs_diff_vs_offline"] <= 1e-4

    # Model throughput: each batch size timed, or skipped when the section's time ran out
    # (on a loaded 2-core machine); the smallest always runs; offline speed measured.
    rows = r["model"]["bank"]
    assert [row["streams"] for row in rows] == [1, 16, 64]
    timed = [row for row in rows if row.get("skipped") != "time"]
    assert timed and timed[0]["streams"] == 1
    assert all(row["us_per_chunk"] > 0 and row["step_us_per_chunk"] > 0 for row in timed)
    assert all(row["state_bytes_per_stream"] > 0 for row in timed)
    assert r["model"]["offline"][0]["path"] == "frame_probs"
    assert all(row["x_realtime"] > 0 for row in r["model"]["offline"])

    # The server ramp: real levels with latency, CPU on both sides and batch sizes.
    (setup,) = r["server"]["setups"]
    assert setup["label"] == "cpu x1 proc" and setup["levels"]
    for level in setup["levels"]:
        assert "error" not in level, level
        assert level["chunks"] > 0 and level["p99_ms"] > 0
        assert level["server_cpu_cores"] > 0 and level["client_cpu_cores"] > 0
        assert level["mean_batch"] >= 1 and level["batches_per_s"] > 0
    assert setup["held"] == max([lv["streams"] for lv in setup["levels"] if lv["ok"]] or [0])
    assert "| cpu x1 proc |" in report


def test_ramp_doubles_until_a_level_fails_then_halves_the_gap():
    sys.path.insert(0, str(REPO / "bench" / "gpu"))
    from server_ramp import Plan, _next_level

    plan = Plan(start=250, max_streams=16384, duration_s=8)

    def ramp(capacity: int, start: int) -> list[int]:
        good, bad, tried, n = 0, None, [], start
        while n:
            tried.append(n)
            if n <= capacity:
                good = max(good, n)
            else:
                bad = n if bad is None else min(bad, n)
            n = _next_level(good, bad, tried, start, plan)
        return tried

    assert ramp(3000, 2000) == [2000, 4000, 3000, 3500, 3200]  # stops within an eighth
    assert ramp(1600, 2000) == [2000, 500, 1200, 1600, 1800]  # the start failed: a quarter
    assert ramp(10**6, 2000) == [2000, 4000, 8000, 16000]  # up to max_streams
    assert ramp(3, 250) == [250, 62]  # nothing held
