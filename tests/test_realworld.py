"""bench/realworld.py: its scoring rules, its scene builder and an end-to-end run on a tiny
cache from tests/data (the real figures come from the full run, bench/results/realworld.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from sklearn.metrics import roc_auc_score

from vadnet.model.training.sources import build_cache

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from _scenes import SceneConfig, audio_fingerprint, fingerprint, load_or_build  # noqa: E402
from _scoring import (  # noqa: E402
    Frames,
    at_false_alarm,
    bootstrap_auc,
    scored_mask,
    threshold_for_false_alarm,
    to_grid,
)


def test_collar_drops_the_two_frames_each_side_of_an_edge():
    truth = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0], np.uint8)
    keep = scored_mask(truth)
    # edges between frames 4|5 and 11|12: frames 3-6 and 10-13 are within 20 ms
    assert np.flatnonzero(~keep).tolist() == [3, 4, 5, 6, 10, 11, 12, 13]


def test_scores_go_to_the_10ms_grid_by_centre_sample():
    silero_like = np.array([0.1, 0.9, 0.3])  # frames of 512 samples
    grid = to_grid(silero_like, 512, 10)  # centres 80, 240, ..., 1520
    assert grid.tolist() == pytest.approx([0.1] * 3 + [0.9] * 3 + [0.3] * 4)


def test_equal_false_alarm_threshold_calls_at_most_that_share_speech():
    free = np.array([0.9, 0.8, 0.8, 0.3, 0.2, 0.1, 0.1, 0.05, 0.0, 0.0])
    th = threshold_for_false_alarm(free, 0.1)  # one of ten frames may fire
    assert (free >= th).sum() == 1 and 0.8 < th <= 0.9
    # a tie at the cut stays out rather than going over the share
    assert (free >= threshold_for_false_alarm(free, 0.2)).sum() == 1
    assert (free >= threshold_for_false_alarm(free, 0.3)).sum() == 3
    assert threshold_for_false_alarm(free, 1.0) == 0.0
    truth = np.array([1, 1, 1, 1, 0, 0])
    scores = np.array([0.95, 0.85, 0.5, 0.1, 0.9, 0.0])
    res = at_false_alarm(truth, scores, free, 0.1)
    assert res["miss"] == pytest.approx(0.5)  # 0.95 and 0.85 clear the threshold (just over 0.8)
    assert res["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))  # plus one false alarm (0.9)


def test_binned_bootstrap_matches_the_exact_auc_without_resampling():
    rng = np.random.default_rng(0)
    truth = [rng.integers(0, 2, 500) for _ in range(6)]
    scores = [t * 0.3 + rng.random(t.size) for t in truth]
    frames = Frames(truth, {"a": scores})
    boots = bootstrap_auc(frames, ["a"], reps=200)["a"]
    exact = roc_auc_score(np.concatenate(truth), np.concatenate(scores))
    assert abs(np.median(boots) - exact) < 0.02
    assert boots.std() > 0  # scenes differ, so resampling them moves the AUC


def tiny_cache(root: Path, data_dir: Path) -> Path:
    """Dev speech of a 'tuxpaint' talker and of 'asterisk', dev music and ambient."""
    t = np.arange(8 * 16000) / 16000
    notes = 220 * 2 ** (np.floor(t * 4) % 8 / 12)
    chords = sum(np.sin(2 * np.pi * h * notes * t) / h for h in (1, 2, 3, 5))
    sf.write(root / "music.wav", (0.1 * chords).astype(np.float32), 16000)
    rows = [  # kind, source, speaker or noise kind, file
        ("speech", "tuxpaint", "tuxpaint:ca", data_dir / "speech_en.wav"),
        ("speech", "asterisk", "asterisk:ru", data_dir / "speech_8k_mulaw.wav"),
        ("noise", "gcompris", "ambient", data_dir / "noise.wav"),
        ("noise", "colobot-music", "music", root / "music.wav"),
    ]
    items = []
    for kind, source, who, path in rows:
        item = {"kind": kind, "source": source, "path": str(path), "split": "dev", "lang": "en"}
        item["speaker" if kind == "speech" else "noise_kind"] = who
        items.append(item)
    return build_cache(root / "cache", synth_utterances=0, workers=1, items=items)


def test_scene_set_is_deterministic_and_built_once(tmp_path, data_dir):
    cfg = SceneConfig(minutes=1.0, min_scene_s=14.0, max_scene_s=18.0)
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    a, fp_a, built_a = load_or_build(tiny_cache(tmp_path / "a", data_dir), cfg)
    _, fp_again, built_again = load_or_build(tmp_path / "a" / "cache", cfg)
    _, fp_b, _ = load_or_build(tiny_cache(tmp_path / "b", data_dir), cfg)
    assert built_a and not built_again
    assert fp_a == fp_again == fp_b
    # the set's fingerprint names the scenes and truth, not the last bit of the samples
    nudged = [replace(x, audio=x.audio + np.float32(1 / 32767)) for x in a]
    assert fingerprint(nudged) == fp_a
    assert audio_fingerprint(nudged) != audio_fingerprint(a)
    truth = [replace(x, truth=x.truth.copy()) for x in a]
    truth[-1].truth[0] ^= 1
    assert fingerprint(truth) != fp_a
    assert sum(s.audio.size for s in a) >= 60 * 16000
    assert {s.band for s in a} <= {"wideband", "telephone"}
    free = [s for s in a if not s.group]
    assert free and all(s.truth.sum() == 0 for s in free)
    speech = [s for s in a if s.group]
    assert speech and all(s.truth.sum() > 0 for s in speech)
    assert all(s.band == "telephone" for s in speech if s.group == "asterisk")
    other = SceneConfig(seed=1, minutes=1.0, min_scene_s=14.0, max_scene_s=18.0)
    _, fp_other, _ = load_or_build(tmp_path / "a" / "cache", other)
    assert fp_other != fp_a


def test_realworld_runs_end_to_end_on_a_tiny_cache(tmp_path, data_dir):
    cache = tiny_cache(tmp_path, data_dir)
    out = tmp_path / "rw.json"
    cmd = [sys.executable, "bench/realworld.py", "--cache-dir", str(cache), "--minutes", "0.6"]
    cmd += ["--min-scene-s", "14", "--max-scene-s", "16", "--bootstrap", "50", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "scene set fingerprint" in proc.stdout
    res = json.loads(out.read_text())
    assert {"vadnet", "silero-onnx"} <= set(res["systems"])
    for name, s in res["systems"].items():
        assert 0.5 <= s["auc"] <= 1.0, name
        assert s["auc_interval"][0] <= s["auc"] + 1e-3 and s["auc"] - 1e-3 <= s["auc_interval"][1]
    lo, hi = res["vadnet_minus_silero"]["interval"]
    assert lo <= hi
    for name, s in res["systems"].items():  # the tiny cache has wideband talkers at clean/20 dB
        assert 0.0 <= s["miss_wideband_speech"] <= 1.0, name
        assert 0.0 <= s["miss_through_phone_line"] <= 1.0, name
        equal = s["at_equal_false_alarm"]  # the tiny cache has speech-free scenes
        assert equal["false_alarm"] == 0.003 and 0.0 <= equal["miss"] <= 1.0, name
    md = (tmp_path / "rw.md").read_text()
    assert md.startswith("# Real-use scenes")
    assert "through a 300-3400 Hz phone line" in md
    assert "F1 / miss at 0.3 % speech-free false alarms" in md


def test_phone_line_takes_the_wideband_talkers_and_cuts_what_a_line_cannot_carry():
    from _scenes import Scene
    from realworld import phone_line_scenes, through_phone_line

    n = 16_000 * 2
    t = np.arange(n) / 16_000
    tones = (0.2 * np.sin(2 * np.pi * 120 * t) + 0.2 * np.sin(2 * np.pi * 1000 * t)).astype(
        np.float32
    )
    truth = np.ones(n // 160, np.uint8)

    def scene(group, band, snr):
        return Scene(f"{group}-{band}-{snr}", tones, truth, group, "none", snr, band, "")

    scenes = [scene("a", "wideband", "clean"), scene("a", "telephone", "clean"),
              scene("a", "wideband", "10"), scene("", "wideband", "-"), scene("b", "wideband", "20")]  # fmt: skip
    assert phone_line_scenes(scenes) == [0, 4]
    (out,) = through_phone_line([scenes[0]])
    assert out.truth is truth and out.audio.shape == tones.shape and out.band == "telephone"
    spec = np.abs(np.fft.rfft(out.audio[4000:-4000]))
    freqs = np.fft.rfftfreq(n - 8000, 1 / 16_000)
    at = {f: spec[np.argmin(np.abs(freqs - f))] for f in (120, 1000)}
    assert at[120] < at[1000] * 10 ** (-30 / 20)  # the line's 300 Hz skirt: 120 Hz is >= 30 dB down


def test_training_never_reads_the_benchmark_scenes():
    """Calibration and model selection read the dev mixer only: no training module may
    open the scene folders that bench/realworld.py writes into the cache."""
    training = REPO / "model" / "training"
    for path in training.glob("*.py"):
        assert "realworld" not in path.read_text(), path


def test_talkers_runs_on_a_tiny_cache(tmp_path, data_dir):
    """bench/talkers.py: each dev talker alone, wideband and through the phone channel."""
    cache = tiny_cache(tmp_path, data_dir)
    out = tmp_path / "talkers.json"
    cmd = [sys.executable, "bench/talkers.py", "--cache-dir", str(cache), "--seconds", "20"]
    proc = subprocess.run(cmd + ["--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert [r["talker"] for r in res["talkers"]] == ["asterisk", "tuxpaint:ca"]
    for r in res["talkers"]:
        assert r["speech_s"] > 2
        for system in ("vadnet", "silero-onnx"):
            assert set(r["miss"][system]) == {"wideband", "8k", "8k-mulaw"}
            assert all(0.0 <= v <= 1.0 for v in r["miss"][system].values())
    # clean read English, wideband: both systems hear most of it
    tux = res["talkers"][1]["miss"]
    assert tux["vadnet"]["wideband"] < 0.5 and tux["silero-onnx"]["wideband"] < 0.5
    assert (tmp_path / "talkers.md").read_text().startswith("# Clean speech per dev talker")
