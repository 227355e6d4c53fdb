"""``vadnet.Client`` and ``vadnet.AsyncClient`` against a real server on loopback (port 0)
running the bundled model; the reference is the in-process ``vadnet.detect``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import torch
from test_service_helpers import DATA, PROB_TOL, running_server

import vadnet
from vadnet.model.audio import read_samples


@pytest.fixture(scope="module")
def port(model) -> Iterator[int]:
    """A real server in a thread of its own (its own event loop), so that the blocking
    Client can call it from the test's thread."""
    ready, box = threading.Event(), {}

    async def serve() -> None:
        async with running_server(model) as (_, bound):
            box["stop"] = asyncio.Event()
            box["loop"] = asyncio.get_running_loop()
            box["port"] = bound
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(120), "server did not start"
    yield box["port"]
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(30)


def _pairs(events: list[vadnet.SpeechEvent]) -> list[vadnet.Segment]:
    kinds = [e.kind for e in events]
    assert kinds == ["start", "end"] * (len(kinds) // 2), kinds
    return [
        vadnet.Segment(a.time_s, b.time_s, a.sample, b.sample)
        for a, b in zip(events[::2], events[1::2], strict=True)
    ]


def test_client_detect_equals_local_detect(port):
    path = DATA / "speech_8k_mulaw.wav"
    x, rate = read_samples(path)
    expected = vadnet.detect(path)
    assert len(expected) == 3
    with vadnet.Client(f"127.0.0.1:{port}") as client:
        assert client.detect(path) == expected
        assert client.detect(str(path)) == expected
        assert client.detect(path.read_bytes()) == expected
        assert client.detect(x, sample_rate=rate) == expected  # sent as a float WAV
        assert client.detect(torch.from_numpy(x), rate) == expected
        knobs = {"min_silence_duration_ms": 2000, "speech_pad_ms": 10}
        merged = vadnet.detect(path, **knobs)
        assert len(merged) == 1
        assert client.detect(path, **knobs) == merged
        assert client.detect(path, options=vadnet.SegmenterOptions(**knobs)) == merged
        probs = client.probabilities(DATA / "stereo_44k.flac")
        np.testing.assert_allclose(
            probs, vadnet.probabilities(DATA / "stereo_44k.flac"), atol=PROB_TOL
        )


def test_client_stream_events_pair_into_local_segments(port):
    x, rate = read_samples(DATA / "speech_en.wav")
    expected = vadnet.detect(x, rate)
    rng = np.random.default_rng(3)
    cuts = np.cumsum(rng.integers(1, 4000, size=x.size // 100))
    chunks = [c for c in np.split(x, cuts[cuts < x.size]) if c.size]
    pcm = (np.clip(np.round(x * 32768), -32768, 32767)).astype("<i2")
    with vadnet.Client(f"127.0.0.1:{port}") as client:
        assert _pairs(list(client.stream(DATA / "speech_en.wav"))) == expected
        assert _pairs(list(client.stream(iter(chunks), rate))) == expected  # random sizes
        assert _pairs(list(client.stream(x, rate, chunk_ms=100))) == expected  # whole array
        raw = [pcm[i : i + 1600].tobytes() for i in range(0, pcm.size, 1600)]
        assert _pairs(list(client.stream(raw, rate, encoding="LINEAR16"))) == vadnet.detect(
            pcm, rate
        )
        events = list(client.stream(DATA / "speech_en.wav", min_silence_duration_ms=2000))
        assert len(_pairs(events)) == 1
        assert all(e.frame == int(e.time_s / 0.016 + 1e-9) for e in events)


def test_client_health_model_info_and_errors(port):
    with vadnet.Client(f"127.0.0.1:{port}") as client:
        assert client.health() == "SERVING"
        info = client.model_info()
        assert info.sample_rate_hz == 16000 and info.hop_s == pytest.approx(0.016)
        # the server's INVALID_ARGUMENT comes back as vadnet's own error, chained
        with pytest.raises(vadnet.InvalidInputError, match="cannot decode") as e:
            client.detect(DATA / "garbage.wav")
        assert isinstance(e.value.__cause__, grpc.RpcError)
        # checked here, before any RPC
        with pytest.raises(vadnet.InvalidInputError, match="unknown segmenter option"):
            client.detect(DATA / "speech_en.wav", threshhold=0.4)
        with pytest.raises(vadnet.InvalidInputError, match="encoding="):
            list(client.stream([b"\x00\x00" * 160], 16000))
        with pytest.raises(vadnet.InvalidInputError, match="not a whole file"):
            list(client.stream(b"RIFF....", None))
        with pytest.raises(vadnet.InvalidInputError, match="cannot read audio file"):
            client.detect(DATA / "missing.wav")
        with pytest.raises(vadnet.InvalidInputError, match="file or its bytes"):
            client.detect(DATA / "speech_en.wav", sample_rate=8000)
    # a server that is not there: a transport error stays grpc's
    with vadnet.Client("127.0.0.1:1") as client, pytest.raises(grpc.RpcError) as e:
        client.health(timeout=2)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_async_client(model):
    x, rate = read_samples(DATA / "stereo_44k.flac")
    expected = vadnet.detect(DATA / "stereo_44k.flac")
    assert expected

    async def chunks():
        for i in range(0, x.size, 3001):
            yield x[i : i + 3001]
            await asyncio.sleep(0)

    async with running_server(model) as (_, port):
        async with vadnet.AsyncClient(f"127.0.0.1:{port}") as client:
            assert await client.health() == "SERVING"
            assert (await client.model_info()).hop_samples == 256
            assert await client.detect(DATA / "stereo_44k.flac") == expected
            assert await client.detect(x, sample_rate=rate) == expected
            probs = await client.probabilities(x, rate)
            np.testing.assert_allclose(
                probs, vadnet.probabilities(x, sample_rate=rate), atol=PROB_TOL
            )
            got = [e async for e in client.stream(chunks(), rate)]
            assert _pairs(got) == expected
            got = [e async for e in client.stream(DATA / "stereo_44k.flac")]
            assert _pairs(got) == expected
            with pytest.raises(vadnet.InvalidInputError, match="cannot decode"):
                await client.detect(b"not audio at all" * 100)
            with pytest.raises(vadnet.InvalidInputError, match="encoding="):
                [e async for e in client.stream([b"\x00\x00"], 16000)]
