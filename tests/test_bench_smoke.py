"""bench/compare.py and bench/stream_step.py run end to end on tiny inputs (a cache built
from tests/data), so they cannot rot.

The numbers themselves come from the full runs (see bench/README.md), never from here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from vadnet.model.training.sources import build_cache

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = {"vadnet", "silero-onnx", "silero-jit", "webrtc-0", "webrtc-1", "webrtc-2", "webrtc-3"}


def tiny_cache(root: Path, data_dir: Path) -> Path:
    """Speech (one train, one dev copy), a dev pink-noise clip and a dev 'music' clip."""
    t = np.arange(4 * 16000) / 16000
    notes = 220 * 2 ** (np.floor(t * 4) % 8 / 12)  # a scale, 250 ms per note
    chords = sum(np.sin(2 * np.pi * h * notes * t) / h for h in (1, 2, 3, 5))
    sf.write(root / "music.wav", (0.1 * chords).astype(np.float32), 16000)
    speech = {"kind": "speech", "source": "espeak-test", "lang": "en"}
    items = [
        {**speech, "path": str(data_dir / "speech_en.wav"), "speaker": "a", "split": "train"},
        {**speech, "path": str(data_dir / "speech.ogg"), "speaker": "b", "split": "dev"},
        {
            "kind": "noise",
            "source": "pink",
            "path": str(data_dir / "noise.wav"),
            "split": "dev",
            "noise_kind": "ambient",
        },
        {
            "kind": "noise",
            "source": "tones",
            "path": str(root / "music.wav"),
            "split": "dev",
            "noise_kind": "music",
        },
    ]
    return build_cache(root / "cache", synth_utterances=0, workers=1, items=items)


def run_bench(
    script: str, cache: Path | None, out: Path, *args: str
) -> subprocess.CompletedProcess:
    """Run ``bench/SCRIPT [--cache-dir CACHE] ARGS --out OUT`` as a user would; must exit 0."""
    cache_args = ["--cache-dir", str(cache)] if cache else []
    cmd = [sys.executable, f"bench/{script}", *cache_args, *args, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_compare_quick_run_reports_every_system(tmp_path, data_dir):
    cache = tiny_cache(tmp_path, data_dir)
    out = tmp_path / "compare.json"
    proc = run_bench("compare.py", cache, out, "--quick")
    for name in SYSTEMS:
        assert f"| {name}" in proc.stdout
    assert proc.stdout.count("PASS") + proc.stdout.count("FAIL") + proc.stdout.count("N/A:") >= 3
    res = json.loads(out.read_text())
    assert set(res["systems"]) == SYSTEMS
    assert res["data"]["dev_frames"] == 4 * 375
    assert (res["data"]["music_clips"], res["data"]["noise_clips"]) == (1, 1)
    for name, r in res["systems"].items():
        assert 0.0 <= r["fa_music"] <= 1.0 and 0.0 <= r["fa_noise"] <= 1.0, name
        assert 0.0 <= r["dev_f1"] <= 1.0 and r["xrt_offline"] > 0, name
        for group in ("music", "noise"):
            seg = r[f"segments_{group}"]
            assert seg["per_min"] >= 0 and 0.0 <= seg["share"] <= 1.0, (name, group)
    # Silero's per-stream state as measured: (2, 1, 128) + (1, 64) float32.
    assert res["systems"]["silero-onnx"]["state_bytes_per_stream"] == 4 * (256 + 64)
    # The streaming pass reproduces the offline one (StreamBank is exact).
    assert res["vadnet_streaming"]["max_abs_diff_vs_offline"] < 1e-4
    assert res["vadnet_streaming"]["state_bytes_per_stream"] > 0
    # The paths users run, each beside Silero's, with their ratios.
    user = res["user_paths"]
    assert {r["path"] for r in user["rows"]} == {"file", "stream", "onnx"}
    assert all(r["xrt"] > 0 for r in user["rows"]) and len(user["rows"]) == 8
    assert all(res["ratios"][k] > 0 for k in user["ratios"])
    assert "| file | vadnet.detect(path) |" in proc.stdout
    # the Markdown report beside the JSON is the printed one
    assert (tmp_path / "compare.md").read_text() == proc.stdout


def test_grid_mappings():
    sys.path.insert(0, str(REPO / "bench"))
    from _systems import silero_to_grid, webrtc_to_grid

    # 1000 samples: 4 frames; Silero chunk j -> frames 2j, 2j+1 (2 chunks)
    np.testing.assert_allclose(silero_to_grid(np.array([0.1, 0.9]), 1000), [0.1, 0.1, 0.9, 0.9])
    # frame centres 128, 384, 640, 896 -> 30 ms windows 0, 0, 1, 1
    assert webrtc_to_grid(np.array([1.0, 0.0, 1.0]), 480, 1000).tolist() == [1, 1, 0, 0]


def test_false_segments_count_what_the_segmenter_emits():
    sys.path.insert(0, str(REPO / "bench"))
    from compare import false_segments

    quiet, blip = np.zeros(3750), np.zeros(3750)  # two 60 s clips of 16 ms frames
    blip[100:110] = 0.9  # 160 ms: under min_speech_duration_ms 250, no segment
    talk = blip.copy()
    talk[1000:1100] = 0.9  # 1.6 s: one segment, padded 30 ms each side
    assert false_segments([quiet, blip]) == {"per_min": 0.0, "share": 0.0}
    got = false_segments([quiet, talk])
    assert got["per_min"] == 0.5  # one segment in two minutes
    assert abs(got["share"] - (1.6 + 0.06) / 120) < 1e-6


def test_stream_step_costs_each_model_side_by_side(tmp_path):
    """The bundled model against a copy grown a 2 s layer: two rows, ratios to the first."""
    from vadnet.model.checkpoint import bundled_path, load_model, save_checkpoint
    from vadnet.model.training.grow import append_b_layers

    grown = tmp_path / "grown.pt"
    save_checkpoint(grown, append_b_layers(load_model(), (128,)))
    out = tmp_path / "step.json"
    args = ("--model", str(bundled_path()), "--model", str(grown))
    proc = run_bench("stream_step.py", None, out, *args, "--streams", "3", "--rounds", "2")
    small, big = json.loads(out.read_text())["rows"]
    assert big["context_s"] - small["context_s"] == 2 * 128 * 256 / 16000
    assert big["state_bytes"] - small["state_bytes"] == 4 * 64 * 2 * 128
    assert small["us_per_chunk"] > 0 and big["us_per_chunk"] > 0
    assert "| 1.00 |" in proc.stdout and "µs per chunk" in proc.stdout


def test_detect_priority_runs_both_phases_and_sees_the_detect_process(tmp_path):
    out = tmp_path / "detect_priority.json"
    args = ["--streams", "2", "--detects", "1", "--detect-s", "20", "--duration-s", "4"]
    args += ["--server-cpus", "0,1", "--client-cpus", "0,1"]
    proc = run_bench("detect_priority.py", None, out, *args)
    alone, mixed = json.loads(out.read_text())["phases"]
    assert alone["chunks"] > 0 and mixed["chunks"] > 0 and mixed["failed_streams"] == 0
    assert mixed["detect_done"] >= 1 and not mixed["detect_errors"]
    # The Detect work shows up in the worker process's threads, not the server's.
    assert "vadnet-detect" in mixed["server_threads"]
    assert "vadnet-detect" not in alone["server_threads"]
    assert "p99 with Detects / alone" in proc.stdout


def test_compare_scores_repeated_models_side_by_side(tmp_path, data_dir):
    """A repeated --model: each checkpoint is scored, timed and streamed in the same run,
    named after its folder, with its ratios against the first."""
    from vadnet.model.checkpoint import bundled_path

    cache = tiny_cache(tmp_path, data_dir)
    out = tmp_path / "two.json"
    first = str(bundled_path())
    again = tmp_path / "again" / "vadnet.pt"
    again.parent.mkdir()
    again.write_bytes(Path(first).read_bytes())
    proc = run_bench("compare.py", cache, out, "--quick", "--model", first, "--model", str(again))
    res = json.loads(out.read_text())
    assert set(res["systems"]) == SYSTEMS | {"vadnet[again]"}
    assert [m["name"] for m in res["models"]] == ["vadnet", "vadnet[again]"]
    # the same weights score the same; only the timings may differ
    assert res["systems"]["vadnet[again]"]["dev_auc"] == res["systems"]["vadnet"]["dev_auc"]
    assert res["ratios"]["auc_vadnet[again]_minus_vadnet"] == 0.0
    assert res["ratios"]["xrt_vadnet[again]_over_vadnet"] > 0
    assert res["streaming"]["vadnet[again]"]["max_abs_diff_vs_offline"] < 1e-4
    assert "| vadnet[again] streaming (" in proc.stdout
    assert f"Model vadnet[again]: {again}" in proc.stdout
