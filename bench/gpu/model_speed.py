"""The model alone on one device: streams per batch against cost, and offline speed.

Two measurements, both on the bundled model and real speech (tests/data tiled):

- :func:`bank_rows`: ``B`` streams in one ``StreamBank``, each given a 100 ms chunk per
  ``advance`` call, as the server's batcher calls it. Per batch size: wall µs per chunk of
  the whole call (host staging + transfer + step + copy back: what the server pays), the
  device step alone (the traced step on staged tensors, synchronised), the state a stream
  keeps, and on CUDA the peak GPU memory of a call per stream.
- :func:`offline_rows`: ``frame_probs`` on one long file (what ``vadnet detect`` runs) and
  ``model(x)`` on batches of 60 s files, as audio seconds per wall second (x real time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vadnet.model.audio import load_audio
from vadnet.model.checkpoint import load_model
from vadnet.model.inference import frame_probs
from vadnet.model.streaming import StreamBank

DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
CHUNK = 1600  # 100 ms at 16 kHz: the chunk the server benchmark streams


def speech(seconds: float, seed: int = 0) -> np.ndarray:
    """``seconds`` of real speech: tests/data/speech_en.wav tiled at random gains, with
    its pink noise under it, so that no two stretches are the same samples."""
    rng = np.random.default_rng(seed)
    base = load_audio(DATA / "speech_en.wav").samples
    noise = load_audio(DATA / "noise.wav").samples
    n = int(seconds * 16000)
    reps = -(-n // base.size)
    x = np.concatenate([base * rng.uniform(0.3, 1.5) for _ in range(reps)])[:n]
    return (x + 0.05 * np.resize(noise, n)).astype(np.float32)


def model_for(device: str, dtype: str) -> torch.nn.Module:
    return load_model(device=device).to(getattr(torch, dtype))


def _sync(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def time_per_call(fn: Callable[[], object], sync: Callable[[], None], min_s: float) -> float:
    """Seconds per call of ``fn``: 3 untimed calls, then at least 5 calls and ``min_s``."""
    for _ in range(3):
        fn()
    sync()
    calls, start = 0, time.perf_counter()
    while calls < 5 or (time.perf_counter() - start < min_s and calls < 500):
        fn()
        calls += 1
    sync()
    return (time.perf_counter() - start) / calls


def bank_row(device: str, dtype: str, streams: int, audio: np.ndarray, min_s: float) -> dict:
    """One batch size: see the module docstring."""
    cuda = device.startswith("cuda")
    sync = _sync(device)
    model = model_for(device, dtype)
    if cuda:
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
    bank = StreamBank(model, device, capacity=streams)
    slots = [bank.open() for _ in range(streams)]
    rng = np.random.default_rng(streams)
    offsets = rng.integers(0, audio.size - CHUNK * 8, size=streams)
    turns = [[audio[o + k * CHUNK : o + (k + 1) * CHUNK] for o in offsets] for k in range(8)]
    turn = iter(range(1 << 30))
    if cuda:
        state_bytes = torch.cuda.memory_allocated() - base
        torch.cuda.reset_peak_memory_stats()
    wall = time_per_call(lambda: bank.advance(slots, turns[next(turn) % 8]), sync, min_s)
    row = {
        "device": device,
        "dtype": dtype,
        "streams": streams,
        "us_per_chunk": 1e6 * wall / streams,
        "ms_per_call": 1e3 * wall,
        "state_bytes_per_stream": bank.bytes_per_stream(),
    }
    # The step alone, on tensors already on the device: what the host adds is the rest.
    # (StreamBank's traced step and state are private; this bench reads them on purpose.)
    hops = CHUNK // model.hop_samples
    args = (
        torch.arange(streams, device=device),
        torch.from_numpy(np.ascontiguousarray(np.stack(turns[0])[:, : hops * model.hop_samples]))
        .to(device)
        .to(getattr(torch, dtype)),
        torch.full((streams,), hops, device=device),
        torch.full((streams,), 1000, device=device),
        *bank._state.tensors(),
    )

    def step() -> None:
        with torch.inference_mode():
            bank._step(*args)

    row["step_us_per_chunk"] = 1e6 * time_per_call(step, sync, min_s / 2) / streams
    if cuda:
        row["gpu_state_mb"] = state_bytes / 2**20
        row["gpu_peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
        row["gpu_peak_bytes_per_stream"] = (torch.cuda.max_memory_allocated() - base) / streams
    return row


def bank_rows(
    device: str, dtypes: list[str], batch_sizes: list[int], min_s: float, deadline: float
) -> list[dict]:
    """:func:`bank_row` for each dtype and batch size, until ``deadline`` (perf_counter);
    the first always runs."""
    audio = speech(60.0)
    rows = []
    for dtype in dtypes:
        last = 0.0  # the previous batch size's seconds: the next one costs up to ~2x more
        for b in batch_sizes:
            first = not rows  # always one row, however late: the report is never empty
            if not first and time.perf_counter() + 2 * last > deadline:
                rows.append({"device": device, "dtype": dtype, "streams": b, "skipped": "time"})
                continue
            start = time.perf_counter()
            rows.append(bank_row(device, dtype, b, audio, min_s))
            last = time.perf_counter() - start
    return rows


def offline_rows(
    device: str, dtypes: list[str], long_s: float, batches: list[int], deadline: float
) -> list[dict]:
    """x real time of ``frame_probs`` on one ``long_s`` file, and of ``model(x)`` on
    batches of 60 s files, per dtype, until ``deadline``; the first always runs."""
    sync = _sync(device)
    long = speech(long_s, seed=1)
    rows = []
    for dtype in dtypes:
        if rows and time.perf_counter() > deadline:  # the first row runs however late
            break
        model = model_for(device, dtype)
        start = time.perf_counter()
        frame_probs(model, long)
        wall = time.perf_counter() - start
        rows.append(
            {"path": "frame_probs", "device": device, "dtype": dtype, "files": 1,
             "audio_s": long_s, "wall_s": wall, "x_realtime": long_s / wall}
        )  # fmt: skip
        for b in batches:
            if time.perf_counter() > deadline:
                break
            x = torch.from_numpy(np.stack([speech(60.0, seed=10 + i) for i in range(b)]))
            x = x.to(device).to(getattr(torch, dtype))

            def forward(model=model, x=x) -> None:
                with torch.inference_mode():
                    model(x)

            wall = time_per_call(forward, sync, 0.5)
            rows.append(
                {"path": "forward", "device": device, "dtype": dtype, "files": b,
                 "audio_s": 60.0 * b, "wall_s": wall, "x_realtime": 60.0 * b / wall}
            )  # fmt: skip
    return rows
