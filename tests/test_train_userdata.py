"""Fine-tuning on users' folders as a user runs it (issue 15 §6): files at any rate or
broken do not stop the run and are listed, epoch 0 scores the starting model, user data is
mixed with the bundled recipe's sources when their cache is there, and the report says
what calibration did and what happened on the shipped general reference set."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import soundfile as sf
import soxr

from vadnet.model.errors import InvalidInputError
from vadnet.model.training import reference
from vadnet.model.training.data import Mixer, ShareMixer
from vadnet.model.training.train import TrainConfig, load_data
from vadnet.model.training.userdata import folder_clips


@pytest.fixture(scope="module")
def folders(tmp_path_factory, data_dir):
    """speech/<speaker>/ and noise/ from the real test recordings, with what users' folders
    hold too: a 5 kHz speech file and a 5 kHz background, a broken file, an empty one."""
    root = tmp_path_factory.mktemp("user")
    speech, noise = root / "speech", root / "noise"
    for spk, names in {"ann": ["speech_en.wav", "speech_8k_mulaw.wav"],
                       "ben": ["speech.ogg", "stereo_44k.flac"]}.items():  # fmt: skip
        (speech / spk).mkdir(parents=True)
        for name in names:
            shutil.copy(data_dir / name, speech / spk / name)
    (speech / "cy").mkdir()
    x, sr = sf.read(data_dir / "speech_en.wav", dtype="float32")
    sf.write(speech / "cy" / "low.wav", soxr.resample(x, sr, 5000), 5000)
    noise.mkdir()
    shutil.copy(data_dir / "noise.wav", noise / "pink.wav")
    x, sr = sf.read(data_dir / "noise.wav", dtype="float32")
    sf.write(noise / "pink_5k.wav", soxr.resample(x, sr, 5000), 5000)
    shutil.copy(data_dir / "garbage.wav", noise / "broken.wav")
    shutil.copy(data_dir / "empty.wav", noise / "empty.wav")
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory, data_dir):
    """A tiny source cache (what `vadnet train --prepare` builds) from the test recordings."""
    from vadnet.model.training.sources import build_cache

    items = [
        dict(kind="speech", source="srcA", path=str(data_dir / "speech_en.wav"), speaker="A"),
        dict(kind="speech", source="srcA", path=str(data_dir / "speech.ogg"), speaker="B",
             split="dev"),
        dict(kind="noise", source="nA", path=str(data_dir / "noise.wav"), noise_kind="ambient"),
        dict(kind="noise", source="nB", path=str(data_dir / "noise.wav"), noise_kind="sfx",
             split="dev"),
    ]  # fmt: skip
    out = tmp_path_factory.mktemp("cache") / "c"
    build_cache(out, synth_utterances=0, workers=1, items=items)
    return out


def test_any_rate_is_resampled_and_unreadable_files_are_listed(folders):
    noise = folder_clips(folders / "noise", "noise")
    paths = [c["path"] for c in noise.clips]
    assert [p.rsplit("/", 1)[1] for p in paths] == ["pink.wav", "pink_5k.wav"]
    assert noise.audio[1].size == 2 * 16000  # 2 s at 5 kHz -> 2 s at 16 kHz
    assert [c["rate_hz"] for c in noise.clips] == [16000, 5000]
    skipped = {s["path"].rsplit("/", 1)[1]: s["reason"] for s in noise.skipped}
    assert set(skipped) == {"broken.wav", "empty.wav"}
    assert "not a supported audio file" in skipped["broken.wav"]
    assert "no audio samples" in skipped["empty.wav"]
    speech = folder_clips(folders / "speech", "speech")
    low = speech.clips.index(next(c for c in speech.clips if c["path"].endswith("low.wav")))
    assert abs(speech.audio[low].size - 154039) <= 4 and speech.labels[low].any()


def test_a_folder_of_nothing_usable_is_one_clear_error(tmp_path, data_dir):
    shutil.copy(data_dir / "garbage.wav", tmp_path / "a.wav")
    shutil.copy(data_dir / "empty.wav", tmp_path / "b.wav")
    with pytest.raises(InvalidInputError, match="all 2 files were skipped"):
        folder_clips(tmp_path, "noise")


def test_cli_b_channels_sets_a_new_networks_width(tmp_path, folders):
    """`--b-channels` reaches the network of a run from scratch, and its checkpoint."""
    from vadnet.model.checkpoint import load_model
    from vadnet.service.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--init", "scratch", "--b-channels", "8", "--speech-dir",
               str(folders / "speech"), "--noise-dir", str(folders / "noise"), "--out", str(out),
               "--cache", str(tmp_path / "none"), "--epochs", "1", "--steps-per-epoch", "1",
               "--batch-size", "2", "--workers", "0", "--dev-examples", "4",
               "--calibration-examples", "4"])  # fmt: skip
    assert rc == 0
    assert load_model(out / "vadnet.pt").cfg.b_channels == 8


def test_cli_fine_tune_goes_on_past_bad_files_and_reports(tmp_path, folders, caplog):
    """`vadnet train --speech-dir --noise-dir` from the bundled model, with no cache."""
    from vadnet.service.cli import main

    caplog.set_level(logging.INFO, logger="vadnet")
    out = tmp_path / "run"
    rc = main(["train", "--speech-dir", str(folders / "speech"), "--noise-dir",
               str(folders / "noise"), "--out", str(out), "--cache", str(tmp_path / "none"),
               "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--workers", "0",
               "--dev-examples", "6", "--calibration-examples", "12"])  # fmt: skip
    assert rc == 0 and (out / "vadnet.pt").exists()
    text = [r.getMessage() for r in caplog.records]
    assert any("no source cache at" in t and "your data alone" in t for t in text)
    # the skipped files are listed again at the end, after the reports on the results
    end = next(i for i, t in enumerate(text) if "file(s) were skipped" in t)
    assert end > next(i for i, t in enumerate(text) if t.startswith("calibration: over 12 dev"))
    assert "broken.wav" in text[end] and "empty.wav" in text[end]

    metrics = json.loads((out / "metrics.json").read_text())
    h0, h1 = metrics["history"]
    assert (h0["epoch"], h0["step"], h0["train_loss"]) == (0, 0, None)
    assert h1["epoch"] == 1 and h0["dev"]["frames"] == h1["dev"]["frames"]
    assert h0["dev"] != h1["dev"]  # the starting model, not the trained one
    assert sorted(s["path"].rsplit("/", 1)[1] for s in metrics["skipped"]) == [
        "broken.wav",
        "empty.wav",
    ]
    assert metrics["data"] == [f"100 % your recordings ({folders / 'speech'} over"
                               f" {folders / 'noise'}) (no source cache at {tmp_path / 'none'}"
                               " to mix in)"]  # fmt: skip
    cal = metrics["calibration"]
    assert 0.01 <= cal["dev_f1_threshold_before"] <= 0.99
    assert cal["examples"] == 12 and 0 <= cal["speech_free_false_alarm"] <= 1
    assert {"f1", "miss_rate", "false_alarm_rate"} <= set(metrics["dev"])
    ref = metrics["reference"]
    assert ref["mixtures"] == 48 and ref["start"]["auc"] > 0.9  # the bundled model
    assert set(ref["paired_errors"]) == set(reference.MARGINS)

    report = (out / "report.md").read_text()
    assert "| 0 (start) | n/a |" in report and "| 1 |" in report
    assert f"was {cal['dev_f1_threshold_before']:.3f}; it is now 0.5" in report
    dev = metrics["dev"]  # at the new 0.5
    assert f"dev at the new 0.5: F1 {dev['f1']:.3f}, miss {100 * dev['miss_rate']:.1f} %" in report
    assert "Skipped files: 2:" in report and "broken.wav" in report
    assert f"| start | {ref['start']['auc']:.3f} |" in report
    assert f"| final (vadnet.pt) | {ref['final']['auc']:.3f} |" in report
    d_auc = ref["final"]["auc"] - ref["start"]["auc"]
    assert (
        f"| change ± 2 paired SE | {d_auc:+.3f} ± {2 * ref['paired_errors']['auc']:.3f} |" in report
    )
    for w in metrics["warnings"]:
        assert w in report
    assert bool(ref["worse"]) == any("general reference set" in w for w in metrics["warnings"])


def test_user_data_is_mixed_with_the_recipe_when_the_cache_is_there(tmp_path, folders, cache):
    cfg = dict(out_dir=str(tmp_path), speech_dir=str(folders / "speech"),
               noise_dir=str(folders / "noise"), cache_dir=str(cache), mix={"example_s": 2.0})  # fmt: skip
    data = load_data(TrainConfig(**cfg, user_share=0.25))
    assert isinstance(data.train, ShareMixer) and data.train.share == 0.25
    assert data.notes[1] == f"75 % the bundled recipe's sources ({cache})"
    recipe = data.train.second
    assert {c["source"] for c in recipe.speech.clips} == {"srcA"}  # the cache's train split
    assert recipe.cfg.p_melody == 0.5  # the bundled model's own recipe
    # one draw picks the side, the rest of the stream makes that side's example
    sides = []
    for k in range(16):
        rng = np.random.default_rng(k)
        first = rng.random() < 0.25
        want = (data.train.first if first else recipe).example(rng)
        got = data.train.example(np.random.default_rng(k))
        assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))
        sides.append(first)
    assert 0 < sum(sides) < len(sides)
    # the dev set stays the user's dev split
    assert {c["source"] for c in data.dev.speech.clips} == {"user-speech"}
    alone = load_data(TrainConfig(**cfg, user_share=1.0))
    assert isinstance(alone.train, Mixer) and alone.notes[0].startswith("100 % your")
    with pytest.raises(InvalidInputError, match="user_share"):
        TrainConfig(**cfg, user_share=0.0)


def test_warnings_on_the_runs_own_dev_set():
    from vadnet.model.training.train import _dev_warnings

    def dev(auc, miss):
        return {"auc": auc, "miss_rate": miss}

    history = [{"epoch": e, "dev": dev(a, 0.1)} for e, a in ((0, 0.98), (1, 0.97), (2, 0.975))]
    cal = {"dev_f1_threshold_before": 0.6, "max_false_alarm": 0.005}
    assert _dev_warnings(history[:1] + [{"epoch": 1, "dev": dev(0.99, 0.1)}], cal,
                         dev(0.99, 0.1), dev(0.99, 0.15)) == []  # fmt: skip
    (no_gain,) = _dev_warnings(history, cal, dev(0.97, 0.1), dev(0.97, 0.15))
    assert "did not beat the starting model" in no_gain and "0.9800" in no_gain
    # the demo2_mixed case: the cap put 0.5 at P = 0.989, dev miss 11.8 % -> 43.6 %
    costly = _dev_warnings(history, {**cal, "dev_f1_threshold_before": 0.989},
                           dev(0.98, 0.118), dev(0.98, 0.436))[1]  # fmt: skip
    assert "from 11.8 % to 43.6 %" in costly and "--calibration-max-fa" in costly
    capped = _dev_warnings(history, {**cal, "dev_f1_threshold_before": 0.99},
                           dev(0.98, 0.1), dev(0.98, 0.9))[1]  # fmt: skip
    assert "no threshold that meets the false-alarm cap" in capped


def test_reference_set_is_shipped_and_built_deterministically(tmp_path, cache, model):
    ref = reference.load()
    assert ref.audio.shape == (48, 96000) and ref.audio.dtype == np.int16
    assert ref.labels.shape == (48, 375) and set(np.unique(ref.labels)) == {0, 1}
    assert ref.meta["seed"] == reference.SEED and ref.meta["speech_free_examples"] > 0
    probs = reference.predict_set(model, ref)
    m = reference.score(probs, ref)
    assert m["auc"] > 0.9 and m["f1"] > 0.7  # the bundled model: 0.964 and 0.840
    same = reference.paired_errors(probs, probs, ref.labels)
    assert all(v == 0 for v in same.values())
    assert reference.compare(m, m, same) == []
    # halving every P: many more misses, fewer false alarms; only the misses are flagged
    half = probs / 2
    worse = reference.compare(
        m, reference.score(half, ref), reference.paired_errors(probs, half, ref.labels)
    )
    assert len(worse) == 1 and worse[0].startswith("miss ")

    before = sorted(p.name for p in cache.iterdir())
    a = reference.build(cache, tmp_path / "a.npz", examples=4)
    b = reference.build(cache, tmp_path / "b.npz", examples=4)
    assert sorted(p.name for p in cache.iterdir()) == before  # the cache is only read
    ra, rb = reference.load(a), reference.load(b)
    assert np.array_equal(ra.audio, rb.audio) and np.array_equal(ra.labels, rb.labels)
    assert ra.audio.shape == (4, 96000)


def test_package_data_declares_the_reference_set():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pyproject = tomllib.loads((root / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["vadnet.model.training"]
    assert "assets/*.npz" in globs
    assert reference.default_path() == root / "model" / "training" / "assets" / "reference.npz"
