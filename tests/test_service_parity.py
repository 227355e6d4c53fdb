"""Streamed results equal offline detection, whatever the chunking and batch mates."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import soundfile as sf
import torch
from test_service_helpers import (
    DATA,
    PROB_TOL,
    offline,
    random_cuts,
    requests,
    run_stream,
    running_server,
    stub_for,
)

from vadnet.model.formats import format_segments
from vadnet.v1 import vad_pb2 as pb

# Defaults, and knobs that cut many short segments even from the untrained placeholder
# model (its probabilities hover around 0.5), so segment boundaries are really compared.
RICH = {
    "threshold": 0.52,
    "neg_threshold": 0.5,
    "min_speech_duration_ms": 50,
    "min_silence_duration_ms": 50,
    "speech_pad_ms": 20,
}
OPTIONS = ({}, RICH)


def _read(name: str) -> tuple[np.ndarray, int]:
    x, rate = sf.read(DATA / name, dtype="float32", always_2d=True)
    x = x.mean(axis=1, dtype=np.float64).astype(np.float32) if x.shape[1] > 1 else x[:, 0]
    return x, rate


def _assert_same(got, probs, segments, x, rate) -> None:
    assert got.contiguous
    assert got.probs.shape == probs.shape
    assert np.abs(got.probs - probs).max() <= PROB_TOL
    assert got.segments == segments
    for fmt in ("text", "json", "rttm"):
        assert format_segments(got.segments, fmt, "f") == format_segments(segments, fmt, "f")
    final = got.final
    assert final.is_final
    assert final.summary.input_samples == x.size
    assert final.summary.frames == probs.size
    assert final.summary.audio_s == pytest.approx(x.size / rate)
    assert final.summary.segments == len(segments)


@pytest.mark.parametrize("name", ["speech_en.wav", "stereo_44k.flac", "speech_8k_mulaw.wav"])
@pytest.mark.parametrize("opt_index", [0, 1])
async def test_random_chunks_match_offline(model, name, opt_index):
    x, rate = _read(name)
    options = OPTIONS[opt_index]
    probs, segments = offline(model, x, rate, options)
    if opt_index == 1 and name == "speech_en.wav":
        assert len(segments) >= 3, "RICH is meant to give several segments"
    data = x.tobytes()
    rng = np.random.default_rng(hash((name, opt_index)) % 2**32)
    async with running_server(model) as (_, port), stub_for(port) as stub:
        for _ in range(2):
            cuts = [4 * c for c in random_cuts(x.size, rng, 1, 5000)]
            got = await run_stream(stub, requests(data, rate, pb.FLOAT32, cuts, True, options))
            _assert_same(got, probs, segments, x, rate)


async def test_linear16_and_detect_rpc_match_offline(model):
    pcm, rate = sf.read(DATA / "speech_en.wav", dtype="int16")
    x = pcm.astype(np.float32) / 32768.0
    probs, segments = offline(model, x, rate, OPTIONS[1])
    rng = np.random.default_rng(3)
    async with running_server(model) as (_, port), stub_for(port) as stub:
        cuts = [2 * c for c in random_cuts(x.size, rng, 1, 3000)]
        got = await run_stream(
            stub, requests(pcm.tobytes(), rate, pb.LINEAR16, cuts, True, OPTIONS[1])
        )
        _assert_same(got, probs, segments, x, rate)
        req = pb.DetectRequest(
            file=(DATA / "speech_en.wav").read_bytes(), return_probabilities=True
        )
        for k, v in OPTIONS[1].items():
            setattr(req.segmenter, k, v)
        resp = await stub.Detect(req)
        assert resp.frames == probs.size
        assert np.abs(np.array(resp.probabilities, np.float32) - probs).max() <= PROB_TOL
        assert [(s.start_s, s.end_s, s.start_sample, s.end_sample) for s in resp.segments] == [
            (s.start_s, s.end_s, s.start_sample, s.end_sample) for s in segments
        ]


async def test_probabilities_off_still_gives_events_and_final(model):
    x, rate = _read("speech_en.wav")
    _, segments = offline(model, x, rate, OPTIONS[1])
    async with running_server(model) as (_, port), stub_for(port) as stub:
        cuts = [4 * c for c in random_cuts(x.size, np.random.default_rng(5), 100, 4000)]
        got = await run_stream(
            stub, requests(x.tobytes(), rate, pb.FLOAT32, cuts, False, OPTIONS[1])
        )
    assert got.segments == segments
    assert got.probs.size == 0
    assert all(r.events or r.is_final for r in got.responses)


def _clip(seed: int) -> tuple[np.ndarray, int, str]:
    """A different clip per seed: a file, a random offset and length, a gain."""
    names = ["speech_en.wav", "stereo_44k.flac", "speech_8k_mulaw.wav", "noise.wav"]
    name = names[seed % len(names)]
    x, rate = _read(name)
    rng = np.random.default_rng(seed)
    start = int(rng.integers(0, x.size // 2))
    length = int(rng.integers(rate // 4, rate * 6 // 5))
    gain = float(rng.uniform(0.3, 1.0))
    return (x[start : start + length] * gain).astype(np.float32), rate, name


async def test_104_concurrent_streams_each_get_their_own_results(model):
    """Small batches and a queue delay force every batch to mix streams at random points."""
    clips = [_clip(seed) for seed in range(104)]
    refs = [offline(model, x, rate, OPTIONS[1]) for x, rate, _ in clips]
    async with (
        running_server(model, max_batch_size=16, max_queue_delay_ms=3) as (
            server,
            port,
        ),
        stub_for(port) as stub,
    ):

        async def one(i: int):
            x, rate, _ = clips[i]
            cuts = [4 * c for c in random_cuts(x.size, np.random.default_rng(1000 + i), 50, 4000)]
            return await run_stream(
                stub, requests(x.tobytes(), rate, pb.FLOAT32, cuts, True, OPTIONS[1])
            )

        results = await asyncio.gather(*(one(i) for i in range(104)))
        reg = server.metrics.registry
        # Batches really were shared: more streams than passes.
        assert reg.get_sample_value("vadnet_batch_size_sum") > reg.get_sample_value(
            "vadnet_batch_size_count"
        )
    for (x, rate, _), (probs, segments), got in zip(clips, refs, results, strict=True):
        _assert_same(got, probs, segments, x, rate)


@pytest.mark.parametrize(
    "name, fmt, chunk_ms",
    [
        ("speech_en.wav", "text", "20"),
        ("speech_en.wav", "json", "37.5"),
        ("stereo_44k.flac", "rttm", "100"),
        ("speech_8k_mulaw.wav", "json", "13"),
        ("speech.ogg", "text", "250"),
    ],
)
async def test_vadnet_stream_prints_what_vadnet_detect_prints(model, capsys, name, fmt, chunk_ms):
    from vadnet.service.cli import main

    path = str(DATA / name)
    knobs = [a for k, v in RICH.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    assert main(["detect", path, "--format", fmt, *knobs]) == 0
    detected = capsys.readouterr().out
    async with running_server(model) as (_, port):
        argv = ["stream", path, "--server", f"127.0.0.1:{port}", "--format", fmt]
        argv += ["--chunk-ms", chunk_ms, "--probs", *knobs]
        assert await asyncio.to_thread(main, argv) == 0
    streamed = capsys.readouterr()
    assert streamed.out == detected
    assert "final\t" in streamed.err  # events and the summary went to stderr
    if name == "speech_en.wav" and fmt == "text":
        assert detected.count("\n") >= 3 and "start\t" in streamed.err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("half, tol", [(False, 1e-5), (True, 1e-2)])
async def test_cuda_matches_cpu_offline(model, half, tol):
    """--device cuda (and --half): the same streams, the same results within ``tol``."""
    clips = [_clip(seed) for seed in range(24)]
    refs = [offline(model, x, rate, OPTIONS[1]) for x, rate, _ in clips]
    async with (
        running_server(model, device="cuda", half=half) as (server, port),
        stub_for(port) as stub,
    ):
        assert (await stub.GetModelInfo(pb.GetModelInfoRequest())).device.startswith("cuda")

        async def one(i: int):
            x, rate, _ = clips[i]
            cuts = [4 * c for c in random_cuts(x.size, np.random.default_rng(i), 50, 4000)]
            return await run_stream(
                stub, requests(x.tobytes(), rate, pb.FLOAT32, cuts, True, OPTIONS[1])
            )

        results = await asyncio.gather(*(one(i) for i in range(len(clips))))
    for (x, rate, _), (probs, segments), got in zip(clips, refs, results, strict=True):
        assert np.abs(got.probs - probs).max() <= tol
        if not half:
            _assert_same(got, probs, segments, x, rate)
