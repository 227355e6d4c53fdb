"""The fuzz harnesses of bench/fuzz.py, a few seconds each (``make test``'s bounded run,
under 60 s in all), and the findings of the long runs as plain regression tests."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np

from vadnet.model.segmenter import StreamingSegmenter, segment_probs

REPO = Path(__file__).resolve().parents[1]
SECONDS_EACH = 6  # 4 harnesses x (6 s + start-up): ~40 s


def test_fuzz_harnesses_find_nothing(tmp_path):
    cmd = [sys.executable, str(REPO / "bench" / "fuzz.py"), "--seconds", str(SECONDS_EACH)]
    cmd += ["--artifacts", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 4, proc.stdout
    for line in lines:  # "<target>: N executions in S s, coverage C, finding: none"
        assert line.endswith("finding: none"), line
        assert int(line.split(": ")[1].split()[0]) > 0, line  # it really ran
    assert not list(tmp_path.iterdir())


def test_huge_max_speech_duration_is_unlimited():
    """Fuzz finding: max_speech_duration_s = 1.7e308 overflowed math.floor (INTERNAL on
    the server); a limit no float can count never splits, like no limit."""
    probs = (np.sin(np.arange(3000) / 40) > 0).astype(np.float32)
    big = segment_probs(probs, {"max_speech_duration_s": 1.7e308})
    assert big == segment_probs(probs, {})
    seg = StreamingSegmenter({"max_speech_duration_s": 1.7e308})
    assert seg.push(probs) is not None and math.isinf(seg.options.max_speech_duration_s) is False
