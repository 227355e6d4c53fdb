"""model/audio.py on the real files in tests/data: decoding, errors, exact streaming resampling."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf
import torch

from vadnet.model.audio import (
    ENCODINGS,
    Resampler,
    check_finite,
    check_rate,
    decode_audio,
    decode_pcm,
    load_audio,
    load_audio_bytes,
    resample_to_model_rate,
    resampled_length,
)
from vadnet.model.errors import InvalidInputError
from vadnet.model.streaming import StreamBank

RATES = (8000, 11025, 22050, 44100, 48000)


def _wav_data_chunk(raw: bytes) -> bytes:
    """The payload of a RIFF/WAVE file's "data" chunk (walks the chunk list)."""
    pos = 12
    while pos + 8 <= len(raw):
        cid, size = raw[pos : pos + 4], int.from_bytes(raw[pos + 4 : pos + 8], "little")
        if cid == b"data":
            return raw[pos + 8 : pos + 8 + size]
        pos += 8 + size + (size & 1)
    raise AssertionError("no data chunk")


def _random_chunks(x: np.ndarray, rng: np.random.Generator, max_len: int) -> list[np.ndarray]:
    out, i = [], 0
    while i < len(x):
        n = int(rng.integers(0, max_len + 1))  # 0-sample chunks included
        out.append(x[i : i + n])
        i += n
    return out


# --- decode_pcm ------------------------------------------------------------------------
def test_linear16_and_float32_values():
    ints = np.array([0, 1, -1, 32767, -32768, 16384], "<i2")
    x = decode_pcm(ints.tobytes(), "LINEAR16", 16000)
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x, ints / 32768.0)
    f = np.array([0.0, 0.5, -0.25, 1.5, -2.0], "<f4")
    y = decode_pcm(f.tobytes(), "float32", 8000)  # case-insensitive
    np.testing.assert_array_equal(y, [0.0, 0.5, -0.25, 1.0, -1.0])  # clipped to [-1, 1]


def test_mulaw_matches_libsndfile_on_real_file(data_dir):
    path = data_dir / "speech_8k_mulaw.wav"
    expected, rate = sf.read(path, dtype="float32")
    payload = _wav_data_chunk(path.read_bytes())
    assert rate == 8000 and len(payload) == len(expected)
    np.testing.assert_array_equal(decode_pcm(payload, "MULAW", rate), expected)


def test_alaw_matches_libsndfile():
    # every A-law byte, decoded by libsndfile from a WAV it wrote itself
    x = np.linspace(-1, 1, 4000, dtype=np.float32)
    buf = io.BytesIO()
    sf.write(buf, x, 8000, format="WAV", subtype="ALAW")
    expected, _ = sf.read(io.BytesIO(buf.getvalue()), dtype="float32")
    payload = _wav_data_chunk(buf.getvalue())
    assert len(set(payload)) > 200
    np.testing.assert_array_equal(decode_pcm(payload, "ALAW", 8000), expected)


@pytest.mark.parametrize("enc", ENCODINGS)
def test_empty_bytes_give_empty_array(enc):
    x = decode_pcm(b"", enc, 16000)
    assert x.shape == (0,) and x.dtype == np.float32


@pytest.mark.parametrize(
    "data, enc, rate, words",
    [
        (b"\x00\x01\x02", "LINEAR16", 16000, ["odd byte count", "3 bytes"]),
        (b"\x00" * 6, "FLOAT32", 16000, ["odd byte count"]),
        (b"\x00\x00", "OPUS", 16000, ["OPUS", "LINEAR16, FLOAT32, MULAW, ALAW"]),
        (b"\x00\x00", "LINEAR16", 96000, ["96000", "8000", "48000"]),
        (b"\x00\x00", "LINEAR16", 4000, ["4000", "8000 to 48000"]),
        (np.array([0.0, np.nan], "<f4").tobytes(), "FLOAT32", 16000, ["NaN"]),
        (np.array([np.inf], "<f4").tobytes(), "FLOAT32", 16000, ["NaN/Inf"]),
    ],
)
def test_decode_pcm_errors(data, enc, rate, words):
    with pytest.raises(InvalidInputError) as info:
        decode_pcm(data, enc, rate)
    msg = str(info.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg


def test_check_rate_and_finite():
    for ok in (8000, 16000, 48000, np.int64(44100)):
        check_rate(ok)
    for bad in (7999, 48001, 16000.0, True, "16000", None):
        with pytest.raises(InvalidInputError):
            check_rate(bad)
    check_finite(np.zeros(3, np.float32))
    with pytest.raises(InvalidInputError):
        check_finite(np.array([1.0, np.inf]))


def test_decode_audio_matches_load_audio(data_dir):
    path = data_dir / "speech_en.wav"
    audio = decode_audio(_wav_data_chunk(path.read_bytes()), "LINEAR16", 16000)
    ref = load_audio(path)
    assert audio.num_input_samples == ref.num_input_samples
    np.testing.assert_array_equal(audio.samples, ref.samples)
    with pytest.raises(InvalidInputError, match="no samples"):
        decode_audio(b"", "LINEAR16", 16000)


# --- resampling ------------------------------------------------------------------------
@pytest.mark.parametrize("rate", RATES)
def test_resampler_chunking_is_exact(rate):
    rng = np.random.default_rng(rate)
    x = (0.3 * rng.standard_normal(rate // 2 + 37)).astype(np.float32)  # ~0.5 s, odd length
    offline = resample_to_model_rate(x, rate)
    assert len(offline) == resampled_length(len(x), rate)
    r = Resampler(rate)
    for max_len in (1, 7, 3000):
        r.reset()
        chunks = [x[:200]] + _random_chunks(x[200:], rng, max_len)
        if max_len == 1:  # every sample alone for a stretch
            chunks = [x[i : i + 1] for i in range(1500)] + [x[1500:]]
        out = [r(c) for c in chunks] + [r(np.zeros(0, np.float32), last=True)]
        y = np.concatenate(out)
        assert len(y) == len(offline)
        np.testing.assert_allclose(y, offline, rtol=0, atol=1e-6)


@pytest.mark.parametrize("rate", RATES)
def test_resampled_length_rule(rate):
    for n in (0, 1, 2, 3, 5, 99, 441, 1000, 4411, 12345):
        x = np.zeros(n, np.float32)
        assert len(resample_to_model_rate(x, rate)) == resampled_length(n, rate), n
        assert resampled_length(n, rate) == int(np.floor(n * 16000 / rate + 0.5))


def test_16k_is_identity():
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    r = Resampler(16000)
    y = r(x)
    assert y is x or np.shares_memory(y, x)
    np.testing.assert_array_equal(resample_to_model_rate(x, 16000), x)


def test_resampler_flush_then_reset():
    r = Resampler(8000)
    a = r(np.ones(800, np.float32), last=True)
    with pytest.raises(InvalidInputError, match="reset"):
        r(np.ones(10, np.float32))
    r.reset()
    b = r(np.ones(800, np.float32), last=True)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(InvalidInputError):
        Resampler(96000)
    with pytest.raises(InvalidInputError, match="1-D"):
        Resampler(8000)(np.zeros((2, 2), np.float32))


def test_streamed_probs_equal_offline(model, data_dir):
    """The server path (Resampler + StreamBank, arbitrary chunks) equals the offline path."""
    audio = load_audio(data_dir / "speech_8k_mulaw.wav")
    raw, rate = sf.read(data_dir / "speech_8k_mulaw.wav", dtype="float32")
    raw = raw[: rate * 3]
    with torch.no_grad():
        offline = model(torch.from_numpy(resample_to_model_rate(raw, rate))[None])[0].numpy()
    rng = np.random.default_rng(5)
    r, bank = Resampler(rate), StreamBank(model, capacity=1)
    slot = bank.open()
    probs = []
    for chunk in _random_chunks(raw, rng, 900):
        probs.append(bank.advance([slot], [r(chunk)])[0].probs)
    tail = r(np.zeros(0, np.float32), last=True)
    probs.append(bank.advance([slot], [tail], [True])[0].probs)
    streamed = np.concatenate(probs)
    assert streamed.shape == offline.shape == (-(-resampled_length(len(raw), rate) // 256),)
    assert np.abs(streamed - offline).max() <= 1e-5
    assert len(audio.samples) == resampled_length(audio.num_input_samples, 8000)


# --- files -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, rate, n_in",
    [
        ("speech_en.wav", 16000, 154039),
        ("speech_8k_mulaw.wav", 8000, 77020),
        ("stereo_44k.flac", 44100, 141120),
        ("speech.ogg", 16000, 154039),
        ("noise.wav", 16000, 32000),
    ],
)
def test_load_real_files(data_dir, name, rate, n_in):
    audio = load_audio(data_dir / name)
    assert audio.input_rate_hz == rate and audio.num_input_samples == n_in
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert len(audio.samples) == resampled_length(n_in, rate)
    assert audio.duration_s == pytest.approx(n_in / rate)
    assert 0.01 < np.abs(audio.samples).max() <= 1.0


def test_stereo_is_mean_downmix(data_dir):
    path = data_dir / "stereo_44k.flac"
    both, rate = sf.read(path, dtype="float32")
    assert both.shape[1] == 2 and not np.allclose(both[:, 0], both[:, 1])
    expected = resample_to_model_rate(both.mean(axis=1).astype(np.float32), rate)
    np.testing.assert_allclose(load_audio(path).samples, expected, atol=1e-6)


def test_ogg_and_telephone_versions_resemble_the_original(data_dir):
    ref = load_audio(data_dir / "speech_en.wav").samples
    for name in ("speech.ogg", "speech_8k_mulaw.wav"):
        x = load_audio(data_dir / name).samples[: len(ref)]
        # energy envelopes in 16 ms frames agree even through lossy coding
        env = [np.sqrt((v[: len(x) // 256 * 256].reshape(-1, 256) ** 2).mean(1)) for v in (ref, x)]
        assert np.corrcoef(env[0], env[1])[0, 1] > 0.9, name


@pytest.mark.parametrize("name", ["speech_en.wav", "stereo_44k.flac", "speech.ogg"])
def test_load_audio_bytes_equals_load_audio(data_dir, name):
    a = load_audio_bytes((data_dir / name).read_bytes())
    b = load_audio(data_dir / name)
    assert a.input_rate_hz == b.input_rate_hz and a.num_input_samples == b.num_input_samples
    np.testing.assert_array_equal(a.samples, b.samples)


def _one_line_invalid(fn, *args) -> str:
    with pytest.raises(InvalidInputError) as info:
        fn(*args)
    msg = str(info.value)
    assert msg and "\n" not in msg and "Traceback" not in msg
    return msg


def test_file_errors(data_dir, tmp_path):
    assert "not found" in _one_line_invalid(load_audio, data_dir / "missing.wav")
    assert "not a regular file" in _one_line_invalid(load_audio, data_dir)
    msg = _one_line_invalid(load_audio, data_dir / "garbage.wav")
    assert msg == f"cannot decode audio from {data_dir / 'garbage.wav'}: not a supported audio file"
    assert "no audio samples" in _one_line_invalid(load_audio, data_dir / "empty.wav")

    nan = tmp_path / "nan.wav"
    sf.write(nan, np.array([0.0, np.nan, 0.5], np.float32), 16000, subtype="FLOAT")
    assert "NaN" in _one_line_invalid(load_audio, nan)

    fast = tmp_path / "96k.wav"
    sf.write(fast, np.zeros(960, np.float32), 96000)
    msg = _one_line_invalid(load_audio, fast)
    assert "96000" in msg and "8000" in msg and "48000" in msg


def test_bytes_errors(data_dir):
    _one_line_invalid(load_audio_bytes, b"")
    _one_line_invalid(load_audio_bytes, (data_dir / "garbage.wav").read_bytes())
    _one_line_invalid(load_audio_bytes, (data_dir / "empty.wav").read_bytes())
    # a truncated header is garbage too, never a non-vadnet error
    _one_line_invalid(load_audio_bytes, (data_dir / "speech_en.wav").read_bytes()[:30])
