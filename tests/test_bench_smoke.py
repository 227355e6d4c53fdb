"""bench/compare.py runs end to end on a tiny cache built from tests/data, so it cannot rot.

The numbers themselves come from the full run (see bench/README.md), never from here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from vadnet.model.training.sources import build_cache

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = {"vadnet", "silero-onnx", "silero-jit", "webrtc-0", "webrtc-1", "webrtc-2", "webrtc-3"}


def tiny_cache(root: Path, data_dir: Path) -> Path:
    """Speech (one train, one dev copy), a dev pink-noise clip, a dev 'music' clip and a
    training one (the same chords an octave down)."""
    t = np.arange(4 * 16000) / 16000
    notes = 220 * 2 ** (np.floor(t * 4) % 8 / 12)  # a scale, 250 ms per note
    chords = sum(np.sin(2 * np.pi * h * notes * t) / h for h in (1, 2, 3, 5))
    sf.write(root / "music.wav", (0.1 * chords).astype(np.float32), 16000)
    sf.write(root / "music_train.wav", (0.1 * chords[::2]).astype(np.float32), 8000)
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
        {
            "kind": "noise",
            "source": "tones-train",
            "path": str(root / "music_train.wav"),
            "split": "train",
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


def test_music_fa_maps_false_alarms_by_recording_and_by_synthetic_kind(tmp_path, data_dir):
    cache = tiny_cache(tmp_path, data_dir)
    out = tmp_path / "music_fa.json"
    proc = run_bench("music_fa.py", cache, out, "--clips", "2", "--training-music")
    (counts,) = json.loads(out.read_text())["results"].values()
    assert set(counts) == {
        "held-out music.wav",
        "synthetic lead",
        "synthetic notes",
        "synthetic melody",
        "training music (fit only) tones-train",  # the training split's, and only there
    }
    assert counts["training music (fit only) tones-train"][1] == 4 * 16000 // 256
    assert counts["held-out music.wav"][1] == 4 * 16000 // 256  # the whole 4 s clip
    for kind in ("lead", "notes", "melody"):
        hits, frames = counts[f"synthetic {kind}"]
        assert frames == 2 * 375 and 0 <= hits <= frames
    assert "| synthetic lead | 12 |" in proc.stdout


def test_threshold_sweep_trades_dev_recall_for_false_alarms(tmp_path, data_dir):
    cache = tiny_cache(tmp_path, data_dir)
    out = tmp_path / "sweep.json"
    caps = ("--cap", "0.02", "--cap", "0.5")
    proc = run_bench("threshold_sweep.py", cache, out, "--dev-examples", "3", *caps)
    (result,) = json.loads(out.read_text())["results"].values()
    rows = result["rows"]
    assert [r["threshold"] for r in rows] == sorted(r["threshold"] for r in rows)
    assert rows[0]["threshold"] == 0.5 and 0.0 < result["music_max"] < 1.0
    # a higher threshold never calls more frames speech
    # (late ms: the 3 dev mixtures hold speech ends, so it is defined)
    assert all(math.isfinite(r["dev_late_ms"]) for r in rows)
    for key in ("dev_recall", "dev_late_ms", "fa_music", "fa_noise"):
        assert all(a[key] >= b[key] for a, b in zip(rows, rows[1:], strict=False)), key
    # at matched recall, each model sits at the threshold that gives the asked dev recall
    assert [round(r["dev_recall"], 2) for r in result["matched"]] == [0.75, 0.8]
    assert "| 0.500 |" in proc.stdout and "At matched dev recall" in proc.stdout
    # exact calibration's threshold, one per --cap: within its range, and under its cap
    # when it can judge (NaN: no speech-free example); a looser cap never sits higher
    tight, loose = result["calibrated"]
    assert (tight["cap"], loose["cap"]) == (0.02, 0.5) and "exact calibration picks" in proc.stdout
    for cal in (tight, loose):
        assert 0.01 <= cal["threshold"] <= 0.99 and not cal["dev_free_fa"] > cal["cap"]
    assert loose["threshold"] <= tight["threshold"]


def test_fa_neighbours_votes_for_the_training_speech_sources(tmp_path, data_dir):
    cache = tiny_cache(tmp_path, data_dir)
    out = tmp_path / "nn.json"
    args = ("--clips", "1", "--threshold", "0", "--k", "3")
    proc = run_bench("fa_neighbours.py", cache, out, *args)
    (result,) = json.loads(out.read_text())["results"].values()
    # threshold 0: every frame of the 4 s music clip is a "false alarm" with neighbours
    assert result["false_alarms"] == 4 * 16000 // 256 and result["speech_frames"] > 0
    (source,) = result["sources"].values()  # one training speech source: all the votes
    assert source["votes"] == 1.0 and source["ratio"] == 1.0
    assert "| espeak-test |" in proc.stdout
    folders = run_bench("fa_neighbours.py", cache, out, *args, "--by", "folder")
    assert "| espeak-test:data |" in folders.stdout  # the source, then the file's folder


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


def test_long_streams_scores_the_same_frames_alone_and_joined(tmp_path, data_dir):
    cache = tiny_cache(tmp_path, data_dir)
    out = tmp_path / "long.json"
    args = ("--dev-examples", "4", "--join", "2", "--long-examples", "1", "--long-s", "12")
    proc = run_bench("long_streams.py", cache, out, *args)
    (result,) = json.loads(out.read_text())["results"].values()
    assert set(result) == {"context_s", "6 s", "joined", "long"}
    for view in ("6 s", "joined", "long"):
        assert set(result[view]) == {"auc", "f1", "precision", "recall"}
    # a 12 s mixture of this cache holds speech, so recall is defined
    assert 0.0 <= result["long"]["recall"] <= 1.0
    assert "| model | context | ROC-AUC 6 s | joined | long |" in proc.stdout


def test_calibration_draws_scores_each_size_and_draw_on_the_same_dev_set(tmp_path, data_dir):
    cache = tiny_cache(tmp_path, data_dir)
    out = tmp_path / "draws.json"
    args = ("--examples", "3", "--examples", "6", "--draws", "2", "--dev-examples", "4")
    proc = run_bench("calibration_draws.py", cache, out, *args)
    rows = json.loads(out.read_text())["rows"]
    assert sorted((r["examples"], r["draw"]) for r in rows) == [(3, 0), (3, 1), (6, 0), (6, 1)]
    from vadnet.model.training.train import CALIBRATION_RANGE

    for r in rows:
        assert CALIBRATION_RANGE[0] <= r["threshold"] <= CALIBRATION_RANGE[1]
        assert 0.0 <= r["f1"] <= 1.0 and 0.0 <= r["recall"] <= 1.0
        assert 0.0 <= r["fa_music"] <= 1.0 and 0.0 <= r["fa_noise"] <= 1.0
    # one model, one music set: a draw whose threshold is higher never calls more speech
    by_t = sorted(rows, key=lambda r: r["threshold"])
    assert all(a["fa_music"] >= b["fa_music"] for a, b in zip(by_t, by_t[1:], strict=False))
    assert proc.stdout.count("\n| ") == 1 + 4  # header and one line per row
