"""Resumable streams at the protocol level (real server, real audio): a stream cut at any
point and resumed from its last checkpoint, with the audio from replay_from_sample on,
gives the events and probabilities of the uninterrupted stream and of `vadnet detect`."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
import soundfile as sf
from test_service_helpers import (
    DATA,
    PROB_TOL,
    expect_error,
    expect_stream_error,
    offline,
    running_server,
    stub_for,
    wait_until,
)

from vadnet.service.client import segments_from_events
from vadnet.v1 import vad_pb2 as pb


def _long(name: str, times: int = 3) -> tuple[np.ndarray, int]:
    """A file repeated: long enough to cut well past the receptive field (8.2 s)."""
    x, rate = sf.read(DATA / name, dtype="float32", always_2d=True)
    return np.tile(x.mean(axis=1), times).astype(np.float32), rate


def _requests(x, rate, start, stop, chunk, resume=None):
    cfg = pb.StreamingConfig(
        sample_rate_hz=rate, encoding=pb.FLOAT32, return_probabilities=True, resumable=True
    )
    if resume is not None:
        cfg.resume.CopyFrom(resume)
    yield pb.StreamingDetectRequest(config=cfg)
    for i in range(start, stop, chunk):
        yield pb.StreamingDetectRequest(audio=x[i : min(i + chunk, stop)].tobytes())


async def _until(stub, x, rate, cut, chunk):
    """A stream that stops reading at ``cut`` samples and is abandoned: its checkpoint."""
    call = stub.StreamingDetect(_requests(x, rate, 0, x.size, chunk))
    got, last = [], None
    async for resp in call:
        if resp.HasField("checkpoint"):
            last = resp.checkpoint
        got.append(resp)
        if resp.input_samples_processed >= cut:
            break
    call.cancel()
    return got, last


@pytest.mark.parametrize(
    ("name", "cut_s"),
    [
        ("speech_en.wav", 12.0),
        ("speech_en.wav", 17.3),
        ("speech_8k_mulaw.wav", 14.1),
        ("stereo_44k.flac", 11.0),
    ],
)
async def test_resumed_stream_equals_offline(model, name, cut_s):
    x, rate = _long(name, 3 if "44k" not in name else 4)
    probs, segments = offline(model, x, rate)
    async with running_server(model) as (_, port), stub_for(port) as stub:
        first, point = await _until(stub, x, rate, int(cut_s * rate), int(0.02 * rate))
        assert point is not None and point.segmenter.frames > 0
        # Every response carries a checkpoint: the last one covers all events received.
        assert all(r.HasField("checkpoint") for r in first)
        start = point.replay_from_sample
        assert 0 < start < int(cut_s * rate)
        assert int(cut_s * rate) - start < 9.0 * rate  # about the receptive field
        second = [
            r async for r in stub.StreamingDetect(_requests(x, rate, start, x.size, 777, point))
        ]
    events = [e for r in first for e in r.events] + [e for r in second for e in r.events]
    # nothing before the resume point: the first probability is the checkpoint's frame
    blocks = [r.probabilities for r in second if r.probabilities.values]
    assert blocks[0].first_frame == point.segmenter.frames
    got = np.array([v for b in blocks for v in b.values], np.float32)
    np.testing.assert_allclose(got, probs[point.segmenter.frames :], atol=PROB_TOL)
    assert segments_from_events(events) == segments
    final = second[-1]
    assert final.is_final and final.summary.input_samples == x.size
    assert final.summary.segments == len(segments)
    assert final.summary.frames == probs.size


async def test_resume_rejects_a_late_replay(model):
    x, rate = _long("speech_en.wav")
    async with running_server(model) as (_, port), stub_for(port) as stub:
        _, point = await _until(stub, x, rate, 15 * rate, 320)
        late = pb.ResumePoint()
        late.CopyFrom(point)
        late.replay_from_sample = point.replay_from_sample + 256 * 40
        reqs = list(_requests(x, rate, late.replay_from_sample, x.size, 320, late))
        await expect_stream_error(port, reqs, grpc.StatusCode.INVALID_ARGUMENT, "too late")
        odd = pb.ResumePoint()
        odd.CopyFrom(point)
        odd.replay_from_sample += 1
        reqs = list(_requests(x, rate, odd.replay_from_sample, x.size, 320, odd))
        await expect_stream_error(port, reqs, grpc.StatusCode.INVALID_ARGUMENT, "replay point")


async def test_async_client_resumes_on_the_other_replica_when_one_drains(model):
    """AsyncVadClient on a two-address target, an async source at ~5x real time; the
    replica holding the stream drains mid-way: the events equal offline detect."""
    from vadnet.service.client import AsyncVadClient

    x, rate = _long("speech_en.wav")
    _, segments = offline(model, x, rate)
    chunk = rate // 10
    async with running_server(model) as (a, pa), running_server(model) as (b, pb_port):
        sent = 0

        async def source():
            nonlocal sent
            for i in range(0, x.size, chunk):
                await asyncio.sleep(0.02)
                sent = i
                yield x[i : i + chunk].tobytes()

        async def drain_holder():
            while sent < 12 * rate:
                await asyncio.sleep(0.05)
            holder = a if a.servicer.sessions else b
            assert holder.servicer.sessions
            await holder.stop(1.0)
            return holder

        target = f"ipv4:127.0.0.1:{pa},127.0.0.1:{pb_port}"
        async with AsyncVadClient(target) as client:
            drained = asyncio.create_task(drain_holder())
            got = [
                r async for r in client.stream(source(), sample_rate_hz=rate, encoding="FLOAT32")
            ]
            holder = await drained
        other = b if holder is a else a
        assert other.servicer.metrics.streams._value.get() == 1  # it took the stream over
    events = [e for r in got for e in r.events]
    assert segments_from_events(events) == segments
    assert got[-1].is_final and got[-1].summary.input_samples == x.size
    assert not any(r.HasField("checkpoint") and not r.events and not r.is_final for r in got)


async def test_a_non_resumable_stream_cut_by_a_drain_ends_unavailable(model):
    from vadnet.service.client import VadClient

    x, rate = _long("speech_en.wav")
    async with running_server(model) as (server, port):

        def run():
            def slow():
                for i in range(0, x.size, 1600):
                    time.sleep(0.01)
                    yield x[i : i + 1600].tobytes()

            with VadClient(f"127.0.0.1:{port}") as client:
                return list(
                    client.stream(slow(), sample_rate_hz=rate, encoding="FLOAT32", resume=False)
                )

        call = asyncio.create_task(asyncio.to_thread(run))
        await wait_until(lambda: server.servicer.sessions)
        await server.stop(0.4)
        await expect_error(call, grpc.StatusCode.UNAVAILABLE, "draining", "incomplete")


async def test_streams_outlive_connection_age_by_resuming(model):
    """max_connection_age with a short grace cuts streams (UNAVAILABLE 'max connection
    age'); the client resumes each on a new connection and the result is still exact. (With
    the default grace of an hour nothing is cut: GOAWAY only stops new calls.)"""
    from vadnet.service.client import VadClient

    x, rate = _long("speech_en.wav")
    _, segments = offline(model, x, rate)
    cfg = {"max_connection_age_s": 2.0, "max_connection_age_grace_s": 0.5}
    async with running_server(model, **cfg) as (server, port):

        def run():
            def source():  # about 5x real time
                for i in range(0, x.size, 1600):
                    time.sleep(0.02)
                    yield x[i : i + 1600].tobytes()

            with VadClient(f"127.0.0.1:{port}") as client:
                return list(client.stream(source(), sample_rate_hz=rate, encoding="FLOAT32"))

        got = await asyncio.to_thread(run)
        calls = server.metrics.streams._value.get()
    assert calls >= 2  # it was cut at least once
    assert segments_from_events([e for r in got for e in r.events]) == segments
    assert got[-1].summary.input_samples == x.size


def test_replay_grid_points_are_whole_hops_and_pass_their_own_check():
    from vadnet.service.resume import ReplayGrid

    periods = {16000: 256, 8000: 128, 44100: 3528, 22050: 1764, 48000: 768, 11025: 882}
    for rate, period in periods.items():
        grid = ReplayGrid(rate, hop=256, lookahead=1024, field=131072)
        assert grid.period == period
        assert grid.to_model(period) % 256 == 0
        last = 0
        for frames in range(0, 3000, 37):
            start = grid.replay_from(frames)
            assert start >= last  # the client's log only ever drops from the front
            grid.check(start, frames)  # what the server hands out, it accepts
            last = start


def test_peer_address_drops_the_port():
    from vadnet.service.servicer import peer_address

    assert peer_address("ipv4:10.1.2.3:5555") == "10.1.2.3"
    assert peer_address("ipv6:[::1]:5555") == "[::1]"
    assert peer_address("unix:/tmp/s") == "unix:/tmp/s"
