"""The offline commands (detect, inspect, export, eval) run as real subprocesses on the
real files, plus the pieces behind them (frame_probs, manifests, metrics) in-process.

Every command of a test module is started at once by the ``runs`` fixture (a few at a
time), because each ``vadnet`` process pays for importing torch.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from vadnet.model.audio import load_audio
from vadnet.model.errors import InvalidInputError
from vadnet.model.formats import format_segments
from vadnet.model.inference import frame_probs
from vadnet.model.segmenter import segment_probs
from vadnet.model.training.evaluate import read_manifest, segments_to_labels
from vadnet.model.training.metrics import frame_metrics
from vadnet.service.cli import main

KNOBS = ["--threshold", "0.55", "--min-speech-duration-ms", "100", "--speech-pad-ms", "10"]
KNOB_OPTIONS = {"threshold": 0.55, "min_speech_duration_ms": 100, "speech_pad_ms": 10}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _wav_payload(raw: bytes) -> bytes:
    pos = 12
    while pos + 8 <= len(raw):
        size = int.from_bytes(raw[pos + 4 : pos + 8], "little")
        if raw[pos : pos + 4] == b"data":
            return raw[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size & 1)
    raise AssertionError("no data chunk")


@pytest.fixture(scope="module")
def work(tmp_path_factory, data_dir) -> Path:
    """A folder with copies of two files, their raw PCM and a CSV manifest (relative paths)."""
    d = tmp_path_factory.mktemp("cli")
    for name in ("speech_en.wav", "noise.wav"):
        shutil.copy(data_dir / name, d / name)
    (d / "speech_en.raw").write_bytes(_wav_payload((data_dir / "speech_en.wav").read_bytes()))
    shutil.copy(data_dir / "labels.csv", d / "manifest.csv")
    (d / "bad.csv").write_text("path,start_s,end_s\nspeech_en.wav,1.0\n")
    return d


def _commands(work: Path, data: Path) -> dict[str, list[str]]:
    """What runs as real subprocesses; the rest of the bad inputs go through cli.main
    in-process (each process pays seconds of imports on a busy machine)."""
    wav = str(data / "speech_en.wav")
    return {
        "text": ["detect", wav, *KNOBS, "--plot", str(work / "det.png")],
        "json": ["detect", wav, *KNOBS, "--format", "json"],
        "rttm": ["detect", wav, *KNOBS, "--format", "rttm"],
        "probs": ["detect", str(data / "stereo_44k.flac"), "--probs", "--threads", "2"],
        "inspect": ["inspect", "--out", str(work / "filters.png")],
        "eval": ["eval", str(work / "manifest.csv"), "--format", "json"],
        # bad inputs: one stderr line each, no traceback
        "missing": ["detect", str(data / "no_such.wav")],
        "garbage": ["detect", str(data / "garbage.wav")],
        "empty": ["detect", str(data / "empty.wav")],
        "bad_format": ["detect", wav, "--format", "csv"],
        "bad_threshold": ["detect", wav, "--threshold", "2"],
    }


def _in_process(work: Path, data: Path) -> dict[str, list[str]]:
    wav = str(data / "speech_en.wav")
    raw = str(work / "speech_en.raw")
    return {
        "raw": ["detect", raw, *KNOBS, "--raw-encoding", "linear16", "--raw-rate", "16000"],
        "export": ["export", "--format", "torchscript", "--out", str(work / "m.ts")],
        "eval_text": ["eval", str(work / "manifest.csv")],
        "bad_float": ["detect", wav, "--threshold", "abc"],
        "bad_silence": ["detect", wav, "--min-silence-duration-ms", "-5"],
        "bad_neg": ["detect", wav, "--threshold", "0.3", "--neg-threshold", "0.4"],
        "raw_no_rate": ["detect", raw, "--raw-encoding", "LINEAR16"],
        "raw_bad_rate": ["detect", raw, "--raw-encoding", "LINEAR16", "--raw-rate", "96000"],
        "bad_model": ["detect", wav, "--model", str(work / "nope.pt")],
        "bad_manifest": ["eval", str(work / "bad.csv")],
        "no_manifest": ["eval", str(work / "nope.csv")],
        "no_file": ["detect"],
        "bad_gate": ["train", "--p-music-gate", "2", "--out", str(work / "t")],
        "bad_width": ["train", "--init", "m.pt", "--b-channels", "96", "--out", str(work / "t")],
        "bad_filters": ["train", "--init", "m.pt", "--a-channels", "96", "--out", str(work / "t")],
        "bad_kernel": ["train", "--a-kernel", "300", "--out", str(work / "t")],
        "bad_phone": ["train", "--telephone-orders", "4", "12", "--out", str(work / "t")],
        "bad_no_speech": ["train", "--p-no-speech", "1.5", "--out", str(work / "t")],
        "bad_band": ["train", "--band-low-hz", "500", "400", "--out", str(work / "t")],
        "bad_snr": ["train", "--snr-db", "10", "0", "--out", str(work / "t")],
        "bad_synthetic": ["train", "--p-synthetic", "-0.2", "--out", str(work / "t")],
        "bad_music": ["train", "--music-share", "1.2", "--out", str(work / "t")],
        "bad_events": ["train", "--p-events", "1.5", "--out", str(work / "t")],
        "zero_epochs": ["train", "--epochs", "0", "--out", str(work / "t")],
        "bad_lr": ["train", "--lr=-1e-3", "--out", str(work / "t")],
        "zero_width": ["train", "--b-channels", "0", "--out", str(work / "t")],
        "zero_hidden": ["train", "--f-hidden", "0", "--out", str(work / "t")],
        "bad_smooth": ["train", "--smoothness-weight", "-1", "--out", str(work / "t")],
        "bad_rank": ["train", "--rank-negative-fraction", "2", "--out", str(work / "t")],
        "bad_threads": ["detect", wav, "--threads", "0"],
    }


@pytest.fixture(scope="module")
def runs(work, data_dir) -> dict[str, subprocess.CompletedProcess]:
    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "vadnet.service.cli", *argv],
            capture_output=True,
            text=True,
            cwd=work,
            timeout=300,
        )

    cmds = _commands(work, data_dir)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip(cmds, pool.map(run, cmds.values()), strict=True))
    for name, argv in _in_process(work, data_dir).items():
        results[name] = _run_main(argv)
    return results


def _run_main(argv: list[str]) -> subprocess.CompletedProcess:
    """cli.main in this process, stdout/stderr captured like a subprocess's."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse errors exit
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def _ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def reference(model, data_dir):
    """What detect must print, computed in-process."""
    audio = load_audio(data_dir / "speech_en.wav")
    with torch.no_grad():
        probs = model(torch.from_numpy(audio.samples)[None])[0].numpy()
    segs = segment_probs(probs, KNOB_OPTIONS, 0.016, 16000, audio.num_input_samples)
    return audio, probs, segs


# --- detect -----------------------------------------------------------------------------
def test_detect_text_matches_in_process(runs, reference):
    assert _ok(runs["text"]) == format_segments(reference[2], "text")


def test_detect_formats_agree(runs, reference):
    rows = json.loads(_ok(runs["json"]))
    assert rows == json.loads(format_segments(reference[2], "json"))
    text = [float(v) for line in _ok(runs["text"]).splitlines() for v in line.split("\t")]
    assert [t for r in rows for t in (r["start_s"], r["end_s"])] == pytest.approx(text, abs=5e-4)
    rttm = [line.split() for line in _ok(runs["rttm"]).splitlines()]
    assert len(rttm) == len(rows)
    for fields, r in zip(rttm, rows, strict=True):
        assert fields[:3] == ["SPEAKER", "speech_en", "1"] and fields[7] == "speech"
        assert float(fields[3]) == pytest.approx(r["start_s"], abs=5e-4)
        assert float(fields[4]) == pytest.approx(r["end_s"] - r["start_s"], abs=1.5e-3)
    for r in rows:
        assert 0 <= r["start_sample"] < r["end_sample"] <= reference[0].num_input_samples


def test_detect_raw_equals_wav(runs):
    assert _ok(runs["raw"]) == _ok(runs["text"])


def test_detect_probs(runs, model, data_dir):
    out = _ok(runs["probs"])
    payload = json.loads(out)
    assert set(payload) == {"hop_s", "probs", "cpu_s", "threads"} and out.count("\n") == 1
    assert payload["threads"] == 2
    audio = load_audio(data_dir / "stereo_44k.flac")
    probs = np.array(payload["probs"], np.float32)
    assert probs.shape == (math.ceil(audio.samples.size / 256),)
    assert payload["hop_s"] == 0.016 and payload["cpu_s"] > 0
    with torch.no_grad():
        ref = model(torch.from_numpy(audio.samples)[None])[0].numpy()
    assert np.abs(probs - ref).max() <= 1e-5


def test_detect_plot_and_inspect_write_pngs(runs, work):
    _ok(runs["text"])
    _ok(runs["inspect"])
    for name in ("det.png", "filters.png"):
        data = (work / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000


def test_export_command(runs, work, model):
    assert "torchscript" in _ok(runs["export"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated
        ts = torch.jit.load(str(work / "m.ts"))
    x = torch.randn(2, 5000) * 0.1
    with torch.no_grad():
        assert torch.allclose(ts(x), model(x), atol=1e-4)


@pytest.mark.parametrize(
    "name, words",
    [
        ("missing", ["not found", "no_such.wav"]),
        ("garbage", ["cannot decode audio", "not a supported audio file"]),
        ("empty", ["no audio samples"]),
        ("bad_format", ["--format", "csv"]),
        ("bad_float", ["--threshold", "abc"]),
        ("bad_threshold", ["threshold", "(0, 1)"]),
        ("bad_silence", ["min_silence_duration_ms"]),
        ("bad_neg", ["neg_threshold"]),
        ("raw_no_rate", ["--raw-rate"]),
        ("raw_bad_rate", ["96000", "8000", "48000"]),
        ("bad_model", ["checkpoint not found"]),
        ("bad_manifest", ["bad.csv:2", "3 columns"]),
        ("no_manifest", ["manifest not found"]),
        ("no_file", ["required", "file"]),
        ("bad_gate", ["p_music_gate must be in [0, 1], got 2.0"]),
        ("bad_width", ["--b-channels and --f-hidden size a new network"]),
        ("bad_filters", ["--a-channels, --a-kernel", "fine-tune keeps its checkpoint's"]),
        ("bad_kernel", ["model options", "a_kernel (300) must be a multiple of a_stride (64)"]),
        ("bad_phone", ["telephone_orders must be 1 to 10", "(4, 12)"]),
        ("bad_no_speech", ["p_no_speech must be in [0, 1], got 1.5"]),
        ("bad_band", ["band_low_hz and band_high_hz must be", "(500.0, 400.0)"]),
        ("bad_snr", ["snr_db must be (low, high)", "(10.0, 0.0)"]),
        ("bad_synthetic", ["p_synthetic must be in [0, 1], got -0.2"]),
        ("bad_music", ["music_share must be in [0, 1], got 1.2"]),
        ("bad_events", ["p_events must be in [0, 1], got 1.5"]),
        ("zero_epochs", ["epochs must be an integer >= 1, got 0"]),
        ("bad_lr", ["lr must be > 0, got -0.001"]),
        ("zero_width", ["model options", "b_channels", ">= 1"]),
        ("zero_hidden", ["model options", "f_hidden", ">= 1"]),
        ("bad_smooth", ["smoothness_weight must be >= 0, got -1.0"]),
        ("bad_rank", ["rank_negative_fraction in (0, 1]", "0.0 and 2.0"]),
        ("bad_threads", ["--threads must be >= 1, got 0"]),
    ],
)
def test_bad_inputs_fail_with_one_line(runs, name, words):
    r = runs[name]
    assert r.returncode != 0
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and lines[0].startswith("vadnet ")
    for w in words:
        assert w in lines[0]


# --- eval -------------------------------------------------------------------------------
def test_eval_command(runs, model, work):
    report = json.loads(_ok(runs["eval"]))
    assert [Path(f["path"]).name for f in report["files"]] == ["speech_en.wav", "noise.wav"]
    speech, noise = report["files"]
    assert speech["frames"] == math.ceil(154039 / 256) and noise["frames"] == 125
    assert noise["speech_frames"] == 0 and noise["auc"] is None  # one class: undefined
    assert 0.4 < speech["speech_frames"] / speech["frames"] < 0.7
    assert report["overall"]["frames"] == speech["frames"] + noise["frames"]
    # the same numbers in-process
    audio = load_audio(work / "speech_en.wav")
    probs = frame_probs(model, audio.samples)
    entry = read_manifest(work / "manifest.csv")[0]
    m = frame_metrics(probs, segments_to_labels(entry.segments, probs.size), 0.5)
    for key in ("auc", "f1", "miss_rate", "false_alarm_rate"):
        assert speech[key] == pytest.approx(m[key])
    text = _ok(runs["eval_text"]).splitlines()
    assert text[0] == "threshold 0.5" and text[-1].startswith("OVERALL")
    assert len(text) == 5


def test_manifest_formats_agree(work):
    csv_entries = read_manifest(work / "manifest.csv")
    items = [{"path": e.path.name, "segments": [list(s) for s in e.segments]} for e in csv_entries]
    (work / "manifest.json").write_text(json.dumps(items))
    assert read_manifest(work / "manifest.json") == csv_entries
    assert [len(e.segments) for e in csv_entries] == [3, 0]
    assert csv_entries[0].path == work / "speech_en.wav"


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("a.csv", "x.wav,2.0,1.0\n", ["a.csv:1", "start_s < end_s"]),
        ("b.csv", "x.wav,zero,1.0\n", ["must be numbers"]),
        ("c.csv", "path,start_s,end_s\n", ["lists no files"]),
        ("d.json", '{"path": "x.wav"}', ["JSON list"]),
        ("e.json", '[{"path": "x.wav", "segments": [[1, 2, 3]]}]', ["[start_s, end_s]"]),
        ("f.json", "[{", ["not valid JSON"]),
    ],
)
def test_bad_manifests(tmp_path, name, text, words):
    (tmp_path / name).write_text(text)
    with pytest.raises(InvalidInputError) as info:
        read_manifest(tmp_path / name)
    for w in words:
        assert w in str(info.value)


# --- the pieces behind the commands -------------------------------------------------------
def test_frame_probs_chunks_exactly(model, data_dir):
    x = load_audio(data_dir / "speech_8k_mulaw.wav").samples[: 16000 * 4 + 99]
    with torch.no_grad():
        ref = model(torch.from_numpy(x)[None])[0].numpy()
    for chunk_s in (60.0, 1.0, 0.3):  # 0.3 s is not a whole number of hops
        got = frame_probs(model, x, chunk_s=chunk_s)
        assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-5
    assert frame_probs(model, x[:0]).shape == (0,)


def test_segments_to_labels_uses_frame_midpoints():
    labels = segments_to_labels([(0.016, 0.040), (0.1, 0.2)], 8, hop_s=0.016)
    # midpoints 8, 24, 40, 56, 72, 88, 104, 120 ms
    assert labels.tolist() == [0, 1, 0, 0, 0, 0, 1, 1]


def test_frame_metrics_values():
    probs = np.array([0.9, 0.8, 0.3, 0.2, 0.6, 0.1])
    labels = np.array([1, 1, 1, 0, 0, 0])
    m = frame_metrics(probs, labels, 0.5)
    # tp=2 fn=1 fp=1 tn=2
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["miss_rate"] == pytest.approx(1 / 3)
    assert m["false_alarm_rate"] == pytest.approx(1 / 3)
    assert m["auc"] == pytest.approx(8 / 9)  # 8 of 9 (speech, non-speech) pairs ordered
    assert m["frames"] == 6 and m["speech_frames"] == 3
    assert all(type(v) in (float, int) for v in m.values())  # checkpoint-safe
    assert math.isnan(frame_metrics(probs, labels, 0.5, with_auc=False)["auc"])
    assert frame_metrics(probs, labels, 0.85)["recall"] == pytest.approx(1 / 3)
    one_class = frame_metrics(probs, np.zeros(6), 0.5)
    assert math.isnan(one_class["auc"]) and math.isnan(one_class["miss_rate"])
    with pytest.raises(InvalidInputError):
        frame_metrics(probs, labels[:3])
