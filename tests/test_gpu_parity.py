"""A CUDA device computes what the CPU computes: offline, streamed, and in half precision.

Marked ``cuda``: they skip on a machine without a GPU. ``bench/gpu/run.sh`` runs them on a
lent GPU, and with ``VADNET_PARITY_DEVICE=cpu`` (its ``--device cpu`` rehearsal) on the
CPU, where the device side is the traced CPU path checked against the eager CPU path, so
that the script and these tests keep working where no GPU is. Figures (max differences,
boundaries moved) go to the JSON file named by ``VADNET_PARITY_JSON`` for the report.

The reference is always float32 on the CPU: the offline forward ``model(x)`` (what
``vadnet detect`` computes) and, for streams, the eager (untraced) ``StreamBank``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from vadnet.model.audio import load_audio
from vadnet.model.checkpoint import load_model
from vadnet.model.inference import frame_probs
from vadnet.model.segmenter import Segment, segment_probs
from vadnet.model.streaming import StreamBank

DEVICE = os.environ.get("VADNET_PARITY_DEVICE", "cuda")
STREAMS = int(os.environ.get("VADNET_PARITY_STREAMS", "48"))
TOL = 1e-4  # float32 on two devices: the same ops, in another order
DATA = Path(__file__).parent / "data"
FILES = ["speech_en.wav", "speech.ogg", "speech_8k_mulaw.wav", "stereo_44k.flac", "noise.wav"]
# Defaults, and knobs that cut many short segments, so that boundaries are really compared.
OPTIONS = {
    "default": {},
    "rich": {
        "threshold": 0.52,
        "neg_threshold": 0.5,
        "min_speech_duration_ms": 50,
        "min_silence_duration_ms": 50,
        "speech_pad_ms": 20,
    },
}

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        DEVICE.startswith("cuda") and not torch.cuda.is_available(),
        reason="no CUDA device: bench/gpu/run.sh runs these on a lent GPU",
    ),
]


@pytest.fixture(scope="session")
def record():
    """Figures per test, written to $VADNET_PARITY_JSON at the end of the session."""
    figures: dict = {"device": DEVICE}
    yield figures
    path = os.environ.get("VADNET_PARITY_JSON")
    if path:
        Path(path).write_text(json.dumps(figures, indent=1))


@pytest.fixture(scope="module")
def signals() -> dict[str, np.ndarray]:
    """The test files at 16 kHz, and a 60 s mixture of all of them with pink noise under it."""
    out = {name: load_audio(DATA / name).samples for name in FILES}
    rng = np.random.default_rng(0)
    parts, total = [], 0
    while total < 60 * 16000:
        x = out[FILES[int(rng.integers(len(FILES)))]] * float(rng.uniform(0.3, 1.5))
        parts.append(x)
        total += x.size
    mix = np.concatenate(parts)[: 60 * 16000]
    noise = np.tile(out["noise.wav"], -(-mix.size // out["noise.wav"].size))[: mix.size]
    out["mixture_60s"] = (mix + 0.05 * noise).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def cpu_model():
    return load_model()


def cpu_offline(model, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(x)[None])[0].numpy()


def boundaries(segments: list[Segment]) -> set[tuple[str, int]]:
    return {("start", s.start_sample) for s in segments} | {("end", s.end_sample) for s in segments}


def compare_segments(ref: np.ndarray, got: np.ndarray, n_samples: int) -> dict[str, int]:
    """Boundaries of ``got``'s segments that are not in ``ref``'s (or the reverse), per
    segmenter option set: 0 everywhere means identical segments."""
    moved = {}
    for name, opts in OPTIONS.items():
        a = boundaries(segment_probs(ref, opts, num_input_samples=n_samples))
        b = boundaries(segment_probs(got, opts, num_input_samples=n_samples))
        moved[name] = max(len(a - b), len(b - a))
    return moved


def _device_probs(path: str, model, x: np.ndarray) -> np.ndarray:
    if path == "forward":
        with torch.inference_mode():
            return model(torch.from_numpy(x)[None].to(DEVICE))[0].cpu().numpy()
    return frame_probs(model, x)


@pytest.mark.parametrize("path", ["forward", "frame_probs"])
def test_offline_matches_cpu(path, signals, cpu_model, record):
    """``model(x)`` on the device, and ``frame_probs`` (the exact streaming bank run 60 s at a
    time: `vadnet detect`), against the CPU's offline forward, on every test file.

    On CUDA, torch lets cuDNN run float32 convolutions in TF32 by default (A's filterbank is
    one), which may cost parity: the figures also give the difference with TF32 off, so that
    one run on a lent GPU says whether the server should turn it off."""
    if path == "forward" and DEVICE == "cpu":
        pytest.skip("on the CPU this is the reference itself")
    model = load_model(device=DEVICE)
    cuda = DEVICE.startswith("cuda")
    worst, worst_no_tf32, moved = 0.0, None, {}
    for name, x in signals.items():
        ref = cpu_offline(cpu_model, x)
        got = _device_probs(path, model, x)
        assert got.shape == ref.shape, name
        worst = max(worst, float(np.abs(got - ref).max()))
        moved[name] = compare_segments(ref, got, x.size)
        if cuda:
            with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
                strict = _device_probs(path, model, x)
            worst_no_tf32 = max(worst_no_tf32 or 0.0, float(np.abs(strict - ref).max()))
    record[f"offline_{path}"] = {
        "compared_with": "cpu float32 offline forward",
        "files": list(signals),
        "max_abs_diff": worst,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32 if cuda else None,
        "max_abs_diff_tf32_off": worst_no_tf32,
        "boundaries_moved": moved,
    }
    assert worst <= TOL, record[f"offline_{path}"]
    assert not any(any(m.values()) for m in moved.values()), record[f"offline_{path}"]


def _schedule(rng: np.random.Generator, lengths: list[int]) -> list[list[tuple[int, int, int]]]:
    """Random chunkings of ``len(lengths)`` streams that run side by side: per step, a random
    subset of the unfinished streams, each with a chunk of 0..4,800 samples (a partial hop,
    many hops, or nothing), as (stream, start, stop) rows; a stream's last row ends it."""
    pos = [0] * len(lengths)
    steps = []
    while any(p < n for p, n in zip(pos, lengths, strict=True)):
        step = []
        for i, n in enumerate(lengths):
            if pos[i] >= n or rng.random() < 0.3:
                continue
            stop = min(n, pos[i] + int(rng.integers(0, 4801)))
            step.append((i, pos[i], stop))
            pos[i] = stop
        if step:
            steps.append(step)
    return steps


def _run_bank(bank: StreamBank, xs: list[np.ndarray], steps) -> list[np.ndarray]:
    slots = [bank.open() for _ in xs]
    out: list[list[np.ndarray]] = [[] for _ in xs]
    frames = [0] * len(xs)
    for step in steps:
        ids = [i for i, _, _ in step]
        chunks = [xs[i][a:b] for i, a, b in step]
        final = [b == xs[i].size for i, _, b in step]
        results = bank.advance([slots[i] for i in ids], chunks, final)
        for i, r in zip(ids, results, strict=True):
            assert r.first_frame == frames[i], "frames must come out contiguous"
            frames[i] += r.probs.size
            out[i].append(r.probs)
    for s in slots:
        bank.close(s)
    return [np.concatenate(p) for p in out]


def test_stream_bank_random_chunkings_match_cpu(signals, cpu_model, record):
    """Many streams of random lengths, random chunkings and random batch mates: the device's
    traced bank against the CPU's eager bank on the same schedule, and against offline."""
    rng = np.random.default_rng(1)
    mix = signals["mixture_60s"]
    xs = []
    for _ in range(STREAMS):
        n = int(rng.integers(16000, 20 * 16000))
        start = int(rng.integers(0, mix.size - n))
        xs.append(mix[start : start + n])
    steps = _schedule(rng, [x.size for x in xs])
    got = _run_bank(StreamBank(load_model(device=DEVICE), DEVICE, capacity=8), xs, steps)
    ref = _run_bank(StreamBank(cpu_model, "cpu", capacity=8, trace=False), xs, steps)
    worst_bank = worst_offline = 0.0
    moved = 0
    for x, g, r in zip(xs, got, ref, strict=True):
        off = cpu_offline(cpu_model, x)
        assert g.shape == r.shape == off.shape
        worst_bank = max(worst_bank, float(np.abs(g - r).max()))
        worst_offline = max(worst_offline, float(np.abs(g - off).max()))
        moved += sum(compare_segments(off, g, x.size).values())
    record["stream_bank"] = {
        "compared_with": "cpu float32 eager StreamBank on the same schedule, and offline",
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32 if DEVICE.startswith("cuda") else None,
        "streams": len(xs),
        "audio_s": round(sum(x.size for x in xs) / 16000, 1),
        "advance_calls": len(steps),
        "mean_batch": round(float(np.mean([len(s) for s in steps])), 1),
        "max_abs_diff_vs_cpu_bank": worst_bank,
        "max_abs_diff_vs_offline": worst_offline,
        "boundaries_moved": moved,
    }
    assert worst_bank <= TOL and worst_offline <= TOL, record["stream_bank"]
    assert moved == 0, record["stream_bank"]


# fp16 is what `vadnet serve --half` runs, and the server documents 1e-2 for it; bfloat16
# (8 bits of mantissa against fp16's 11) is measured for the record, with a looser bound.
HALF_BOUND = {"float16": 1e-2, "bfloat16": 5e-2}


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_difference(dtype, signals, cpu_model, record):
    """The server's path in half precision: every file streamed in 100 ms chunks through one
    bank (all files batched together), against the CPU's float32 offline forward."""
    if not DEVICE.startswith("cuda"):
        pytest.skip("--half is CUDA-only in the server")
    model = load_model(device=DEVICE).to(getattr(torch, dtype))
    bank = StreamBank(model, DEVICE, capacity=len(signals))
    names = list(signals)
    xs = [signals[n] for n in names]
    chunk = 1600
    steps = []
    for k in range(-(-max(x.size for x in xs) // chunk)):
        rows = [(i, k * chunk, min(x.size, (k + 1) * chunk)) for i, x in enumerate(xs)]
        steps.append([r for r in rows if r[1] < xs[r[0]].size])
    got = _run_bank(bank, xs, steps)
    figures = {}
    for name, x, g in zip(names, xs, got, strict=True):
        ref = cpu_offline(cpu_model, x)
        figures[name] = {
            "max_abs_diff": float(np.abs(g - ref).max()),
            "boundaries_moved": compare_segments(ref, g, x.size),
        }
    worst = max(f["max_abs_diff"] for f in figures.values())
    record[f"half_{dtype}"] = {
        "compared_with": "cpu float32 offline forward",
        "max_abs_diff": worst,
        "files": figures,
        "boundaries_moved_total": sum(
            sum(f["boundaries_moved"].values()) for f in figures.values()
        ),
    }
    assert np.isfinite(worst) and worst <= HALF_BOUND[dtype], record[f"half_{dtype}"]
