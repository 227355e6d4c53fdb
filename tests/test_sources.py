"""The training-data cache: a tiny cache from generated wav files, built and read back."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import soundfile as sf

from vadnet.model.errors import InvalidInputError
from vadnet.model.training.labels import HOP, frame_labels
from vadnet.model.training.sources import build_cache, load_cache, trim_edge_silence

SR = 16_000


def word(sr: int, seconds: float, hz: float, level: float, lead_s: float, tail_s: float):
    """A tone "word" at ``sr`` Hz with silence before and after, plus faint noise."""
    rng = np.random.default_rng(int(hz))
    t = np.arange(int(seconds * sr)) / sr
    burst = level * np.sin(2 * np.pi * hz * t) * np.hanning(t.size) ** 0.2
    x = np.concatenate([np.zeros(int(lead_s * sr)), burst, np.zeros(int(tail_s * sr))])
    return (x + 1e-4 * rng.standard_normal(x.size)).astype(np.float32)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    items = []
    # speech: two speakers at 8 kHz (train) and 44.1 kHz stereo (dev), one inside a zip
    for i in range(3):
        p = root / f"a{i}.wav"
        sf.write(p, word(8000, 0.4 + 0.1 * i, 300 + 50 * i, 0.3, 0.2, 0.3), 8000)
        items.append(dict(kind="speech", source="srcA", path=str(p), speaker="A", lang="en"))
    zpath = root / "pack.zip"
    with zipfile.ZipFile(zpath, "w") as z:
        for i in range(2):
            x = word(44100, 0.5, 200 + 40 * i, 0.05, 0.1, 0.1)
            p = root / f"b{i}.wav"
            sf.write(p, np.stack([x, x], axis=1), 44100)
            z.write(p, f"voice/b{i}.wav")
            items.append(
                dict(
                    kind="speech",
                    source="srcB",
                    path=f"{zpath}::voice/b{i}.wav",
                    speaker="B",
                    lang="la",
                    split="dev",
                )
            )
    # a silent file is vetted out
    sf.write(root / "mute.wav", np.zeros(8000, np.float32), 16000)
    items.append(dict(kind="speech", source="srcA", path=str(root / "mute.wav"), speaker="A"))
    # noise: music in train, sfx in dev, 2 s of leading digital silence to trim
    rng = np.random.default_rng(0)
    music = np.concatenate([np.zeros(2 * 22050), 0.1 * rng.standard_normal(22050)])
    sf.write(root / "music.wav", music.astype(np.float32), 22050)
    sf.write(root / "boom.wav", (0.2 * rng.standard_normal(SR // 2)).astype(np.float32), SR)
    items.append(dict(kind="noise", source="nA", path=str(root / "music.wav"), noise_kind="music"))
    items.append(
        dict(kind="noise", source="nB", path=str(root / "boom.wav"), noise_kind="sfx", split="dev")
    )
    out = tmp_path_factory.mktemp("cache") / "c"
    build_cache(out, synth_utterances=0, workers=1, items=items)
    return out


def test_layout(cache):
    for name in ("speech.pcm16", "speech.json", "speech_labels.u8", "noise.pcm16", "noise.json"):
        assert (cache / name).exists(), name
    assert (cache / "DONE").exists()
    clips = json.loads((cache / "speech.json").read_text())["clips"]
    assert len(clips) == 5  # the silent file was dropped
    keys = {"offset", "length", "source", "speaker", "lang", "wideband", "split", "path"}
    assert all(keys | {"labels_offset", "labels_length"} <= set(c) for c in clips)
    total = sum(c["length"] for c in clips)
    assert (cache / "speech.pcm16").stat().st_size == 2 * total
    assert (cache / "speech_labels.u8").stat().st_size == sum(c["labels_length"] for c in clips)
    noise = json.loads((cache / "noise.json").read_text())["clips"]
    assert [c["kind"] for c in noise] == ["music", "sfx"]
    assert all("labels_offset" not in c for c in noise)
    report = json.loads((cache / "report.json").read_text())["items"]
    assert [r["dropped"] for r in report if r["path"].endswith("mute.wav")] == ["silent"]


def test_round_trip_resampled_levels_kept(cache):
    speech, noise = load_cache(cache)
    assert len(speech) == 5 and len(noise) == 2
    assert isinstance(speech.audio, np.memmap)
    c0 = speech.clips[0]
    assert c0["path"].endswith("a0.wav") and c0["wideband"] is False
    # 8 kHz, 0.2 + 0.4 + 0.3 s -> 16 kHz samples; level kept (no normalisation)
    assert c0["length"] == pytest.approx(0.9 * SR, abs=2)
    x = speech.clip(0)
    assert x.dtype == np.float32 and abs(float(np.abs(x).max()) - 0.3) < 0.03
    b = [i for i, c in enumerate(speech.clips) if c["speaker"] == "B"]
    assert speech.clips[b[0]]["wideband"] is True
    assert speech.clips[b[0]]["path"].endswith("pack.zip::voice/b0.wav")
    assert abs(float(np.abs(speech.clip(b[0])).max()) - 0.05) < 0.01
    # leading 2 s of digital silence cut down to 0.25 s
    assert noise.clips[0]["length"] == pytest.approx(1.25 * SR, abs=SR // 50)


def test_labels_align(cache):
    speech, _ = load_cache(cache)
    for i, c in enumerate(speech.clips):
        lab = speech.clip_labels(i)
        assert lab.shape == (-(-c["length"] // HOP),)
        np.testing.assert_array_equal(lab, frame_labels(speech.clip(i)))
        assert 0 < lab.mean() < 1
    # the first clip's word starts at 0.2 s = frame 12.5 (16 kHz)
    lab = speech.clip_labels(0)
    assert lab[: int(0.2 * SR) // HOP - 1].sum() == 0 and lab[int(0.3 * SR) // HOP] == 1


def test_splits(cache):
    speech, noise = load_cache(cache)
    train, dev = speech.select("train"), speech.select("dev")
    assert {c["speaker"] for c in train.clips} == {"A"}
    assert {c["speaker"] for c in dev.clips} == {"B"}
    assert len(train) + len(dev) == len(speech)
    np.testing.assert_array_equal(dev.clip(0), speech.clip(3))
    assert dev.clip_labels(0).shape == speech.clip_labels(3).shape
    assert [c["source"] for c in noise.select("dev").clips] == ["nB"]
    with pytest.raises(InvalidInputError):
        speech.select("test")
    with pytest.raises(InvalidInputError):
        noise.clip_labels(0)


def test_idempotent_and_incomplete(cache, tmp_path):
    before = (cache / "speech.pcm16").stat().st_mtime_ns
    assert build_cache(cache, synth_utterances=0, items=[]) == cache
    assert (cache / "speech.pcm16").stat().st_mtime_ns == before
    with pytest.raises(InvalidInputError):
        load_cache(tmp_path)
    with pytest.raises(InvalidInputError):
        build_cache(
            tmp_path / "x", synth_utterances=0, items=[dict(kind="video", source="s", path="p")]
        )


def test_trim_keeps_short_edges():
    q = np.concatenate([np.zeros(4000), np.full(100, 1000), np.zeros(12000)]).astype(np.int16)
    out = trim_edge_silence(q)
    assert out.shape[0] == 4000 + 100 + 4000  # 0.25 s kept on the long side only
    assert trim_edge_silence(np.zeros(100, np.int16)).shape == (0,)
