"""The in-process Python API (``import vadnet``): load_model, detect, probabilities and
VADIterator, on the real test audio and the bundled model.

The reference for whole inputs is the offline forward ``VadNet.forward`` on the whole signal
(tests/test_service_helpers.offline), a different code path from the sliced one the API
runs; the reference for VADIterator is ``vadnet.detect`` on the same samples.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_service_helpers import DATA, PROB_TOL, offline

import vadnet
from vadnet.model.audio import read_samples, resample_to_model_rate
from vadnet.model.checkpoint import bundled_path
from vadnet.model.network import VadNet


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread, as ``vadnet detect`` uses: on this shared 2-core machine, two
    threads per tiny streaming step spin against other processes (100x slower calls)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


FILES = ["speech_en.wav", "speech_8k_mulaw.wav", "stereo_44k.flac", "speech.ogg", "noise.wav"]


def test_import_vadnet_is_light_and_exports_the_api():
    """``import vadnet`` loads neither torch nor grpc; a client does not load torch."""
    probe = (
        "import json, sys, vadnet\n"
        "light = sorted({'torch', 'grpc'} & set(sys.modules))\n"
        "vadnet.Client\n"
        "client = sorted({'torch', 'grpc'} & set(sys.modules))\n"
        "vadnet.detect\n"
        "print(json.dumps([light, client, 'torch' in sys.modules, sorted(vadnet.__all__)]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    light, client, local, names = json.loads(out.stdout.strip().splitlines()[-1])
    assert light == [] and client == ["grpc"] and local
    for name in ("load_model", "detect", "probabilities", "VADIterator", "Client", "AsyncClient"):
        assert name in names and name in dir(vadnet)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = vadnet.nope


def test_load_model_is_the_bundled_model(model):
    m = vadnet.load_model()
    assert isinstance(m, VadNet) and not m.training
    assert next(m.parameters()).device.type == "cpu"
    same = vadnet.load_model(bundled_path(), device="cpu")
    for (k, a), (_, b) in zip(m.state_dict().items(), same.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    with pytest.raises(vadnet.ModelError, match="not found"):
        vadnet.load_model(DATA / "missing.pt")


@pytest.mark.parametrize("name", FILES)
def test_detect_a_path_equals_the_offline_forward(model, name):
    x, rate = read_samples(DATA / name)
    _, expected = offline(model, x, rate)
    got = vadnet.detect(DATA / name)
    assert got == expected
    assert vadnet.detect(str(DATA / name), model=model) == expected
    # sample indices are at the file's own rate
    for s in got:
        assert s.start_sample == round(s.start_s * rate) and s.end_sample == round(s.end_s * rate)
    if name != "noise.wav":
        assert got, "speech files have speech"


def test_detect_takes_bytes_numpy_torch_and_int16(model):
    path = DATA / "speech_8k_mulaw.wav"
    x, rate = read_samples(path)
    expected = vadnet.detect(path)
    assert len(expected) == 3
    assert vadnet.detect(path.read_bytes()) == expected
    assert vadnet.detect(x, sample_rate=rate) == expected
    assert vadnet.detect(torch.from_numpy(x), sample_rate=rate) == expected
    assert vadnet.detect(x[None, :], sample_rate=rate) == expected  # (1, n)
    assert vadnet.detect(x.astype(np.float64), sample_rate=rate) == expected
    # int16 is scaled by 1/32768: the 16-bit file's own samples
    y, rate16 = read_samples(DATA / "speech_en.wav")
    pcm = np.round(y * 32768).astype(np.int16)
    assert vadnet.detect(pcm) == vadnet.detect(DATA / "speech_en.wav")  # 16 kHz by default
    assert rate16 == 16000


def test_probabilities_match_the_offline_forward(model):
    x, rate = read_samples(DATA / "stereo_44k.flac")
    expected, _ = offline(model, x, rate)
    probs = vadnet.probabilities(DATA / "stereo_44k.flac")
    assert probs.dtype == np.float32
    assert probs.shape == (-(-resample_to_model_rate(x, rate).size // 256),)
    np.testing.assert_allclose(probs, expected, atol=PROB_TOL)
    np.testing.assert_allclose(vadnet.probabilities(x, rate), probs, atol=0)


def test_knobs_as_keywords_dict_or_options():
    path = DATA / "speech_en.wav"
    default = vadnet.detect(path)
    # a long min_silence bridges the 1.5 s gaps: one segment instead of three
    merged = vadnet.detect(path, min_silence_duration_ms=2000)
    assert len(default) == 3 and len(merged) == 1
    assert vadnet.detect(path, options={"min_silence_duration_ms": 2000}) == merged
    opts = vadnet.SegmenterOptions(min_silence_duration_ms=2000)
    assert vadnet.detect(path, options=opts) == merged
    # keywords override the options
    assert vadnet.detect(path, options=opts, min_silence_duration_ms=100) == default
    padded = vadnet.detect(path, speech_pad_ms=100)
    assert padded[0].start_s == pytest.approx(default[0].start_s - 0.07)


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda: vadnet.detect(DATA / "speech_en.wav", thresold=0.5), "unknown segmenter option"),
        (lambda: vadnet.detect(DATA / "speech_en.wav", threshold=1.5), "threshold"),
        (lambda: vadnet.detect(DATA / "speech_en.wav", sample_rate=16000), "file or its bytes"),
        (lambda: vadnet.detect(np.zeros(1600, np.float32), sample_rate=96000), "16 kHz unless"),
        (lambda: vadnet.detect(np.zeros(1600, np.float32), sample_rate=16000.0), "integer rate"),
        (lambda: vadnet.detect(np.zeros((2, 1600), np.float32)), "mono samples"),
        (lambda: vadnet.detect(np.zeros(1600, np.int32)), "dtype int32"),
        (lambda: vadnet.detect(np.full(1600, np.nan, np.float32)), "NaN"),
        (lambda: vadnet.detect(np.zeros(0, np.float32)), "no audio samples"),
        (lambda: vadnet.detect(DATA / "missing.wav"), "not found"),
        (lambda: vadnet.detect(DATA / "garbage.wav"), "cannot decode"),
        (lambda: vadnet.detect(b""), "empty"),
        (lambda: vadnet.detect(["not", "audio"]), "numpy array"),
        (lambda: vadnet.probabilities(np.zeros((3, 3)), 16000), "mono samples"),
        (lambda: vadnet.VADIterator(sample_rate=4000), "not supported"),
        (lambda: vadnet.VADIterator(min_speech_duration_ms=-1), "min_speech_duration_ms"),
    ],
)
def test_bad_input_is_one_clear_error(call, needle):
    with pytest.raises(vadnet.InvalidInputError) as e:
        call()
    assert needle.lower() in str(e.value).lower()
    assert "\n" not in str(e.value)


def _feed(it: vadnet.VADIterator, x: np.ndarray, rng: np.random.Generator, hi: int, as_torch: bool):
    events, pos = [], 0
    while pos < x.size:
        n = int(rng.integers(0, hi + 1))  # empty chunks too
        chunk = x[pos : pos + n]
        events += it(torch.from_numpy(chunk) if as_torch else chunk)
        pos += n
    return events + it.finish()


def _pairs(events) -> list[tuple[float, float, int, int]]:
    kinds = [e.kind for e in events]
    assert kinds == ["start", "end"] * (len(kinds) // 2), kinds  # alternate, start first
    times = [e.time_s for e in events]
    assert times == sorted(times)
    return [
        (a.time_s, b.time_s, a.sample, b.sample)
        for a, b in zip(events[::2], events[1::2], strict=True)
    ]


@pytest.mark.parametrize("name", FILES)
def test_vad_iterator_events_equal_detect_for_random_chunks(model, name):
    x, rate = read_samples(DATA / name)
    expected = vadnet.detect(x, sample_rate=rate, model=model)
    rng = np.random.default_rng(len(name))
    for hi, as_torch in ((7, False), (3000, True), (40000, False)):
        it = vadnet.VADIterator(model, sample_rate=rate)
        if hi == 7:  # 0-7 sample chunks: only the first 0.6 s (~2,700 calls at 16 kHz)
            head = x[: rate * 6 // 10]
            _feed(it, head, rng, hi, as_torch)
            assert it.segments == vadnet.detect(head, sample_rate=rate, model=model)
            continue
        events = _feed(it, x, rng, hi, as_torch)
        got = _pairs(events)
        assert got == [(s.start_s, s.end_s, s.start_sample, s.end_sample) for s in expected]
        assert it.segments == expected
        assert all(e.frame == int(e.time_s / 0.016 + 1e-9) for e in events)
        it.close()


def test_vad_iterator_knobs_reset_finish_and_close(model):
    x, rate = read_samples(DATA / "speech_8k_mulaw.wav")
    knobs = {"min_silence_duration_ms": 2000, "speech_pad_ms": 10}
    expected = vadnet.detect(x, sample_rate=rate, **knobs)
    assert len(expected) == 1
    it = vadnet.VADIterator(sample_rate=rate, options={"speech_pad_ms": 10}, **knobs)
    rng = np.random.default_rng(0)
    assert _pairs(_feed(it, x, rng, 2000, False)) == [
        (s.start_s, s.end_s, s.start_sample, s.end_sample) for s in expected
    ]
    with pytest.raises(vadnet.InvalidInputError, match="finished"):
        it(x[:100])
    with pytest.raises(vadnet.InvalidInputError, match="finished"):
        it.finish()
    # reset mid-stream: the next stream starts at 0 and gives the same events again
    it.reset()
    it(x[: x.size // 2])
    it.reset()
    assert it.num_samples == 0 and it.segments == []
    assert _pairs(_feed(it, x, rng, 5000, True)) == [
        (s.start_s, s.end_s, s.start_sample, s.end_sample) for s in expected
    ]
    it.close()
    it.close()  # idempotent
    for call in (lambda: it(x[:10]), it.finish, it.reset):
        with pytest.raises(vadnet.InvalidInputError, match="closed"):
            call()
    with pytest.raises(vadnet.InvalidInputError, match="mono samples"):
        vadnet.VADIterator()(np.zeros((2, 10), np.float32))


def test_vad_iterators_share_one_bank_and_free_their_slots(model):
    """Iterators of one model are slots of one stream bank: interleaved streams do not
    disturb each other, and a closed or collected iterator gives its slot back."""
    from vadnet.model.api import _bank_for

    x, rate = read_samples(DATA / "speech_en.wav")
    y, rate8 = read_samples(DATA / "speech_8k_mulaw.wav")
    bank = _bank_for(model)
    before = len(bank)
    a = vadnet.VADIterator(model, sample_rate=rate)
    b = vadnet.VADIterator(model, sample_rate=rate8)
    assert len(bank) == before + 2
    step_a, step_b = 1234, 617
    for i in range(0, max(x.size // step_a, y.size // step_b) + 1):
        a(x[i * step_a : (i + 1) * step_a])
        b(y[i * step_b : (i + 1) * step_b])
    a.finish()
    b.finish()
    assert a.segments == vadnet.detect(x, sample_rate=rate)
    assert b.segments == vadnet.detect(y, sample_rate=rate8)
    a.close()
    del b
    import gc

    gc.collect()
    assert len(bank) == before
