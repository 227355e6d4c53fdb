"""Bad input gets INVALID_ARGUMENT with a message that says what to fix, never UNKNOWN,
and never disturbs the other streams on the server."""

from __future__ import annotations

import asyncio

import grpc
import numpy as np
import pytest
import soundfile as sf
from test_service_helpers import (
    DATA,
    expect_error,
    offline,
    random_cuts,
    requests,
    run_stream,
    running_server,
    stub_for,
    wait_until,
)

from vadnet.v1 import vad_pb2 as pb
from vadnet.v1 import vad_pb2_grpc as pb_grpc

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def cfg(rate=16000, encoding=pb.LINEAR16, **seg) -> pb.StreamingDetectRequest:
    c = pb.StreamingConfig(sample_rate_hz=rate, encoding=encoding)
    for k, v in seg.items():
        setattr(c.segmenter, k, v)
    return pb.StreamingDetectRequest(config=c)


def audio(data: bytes) -> pb.StreamingDetectRequest:
    return pb.StreamingDetectRequest(audio=data)


PCM = np.zeros(1600, "<i2").tobytes()
NAN = np.array([0.1, np.nan, 0.2], "<f4").tobytes()
INF = np.array([0.1, np.inf], "<f4").tobytes()

# (case, requests, words the message must contain). The bad message is always the last:
# a grpc-python aio client still writing when the server aborts may see INTERNAL instead
# of the server's status (grpc/grpc#36066), a client-side bug.
STREAM_CASES = [
    ("audio_before_config", [audio(PCM)], ["first message", "config"]),
    ("second_config", [cfg(), audio(PCM), cfg()], ["second config"]),
    ("empty_first_message", [pb.StreamingDetectRequest()], ["first message", "empty message"]),
    ("empty_later_message", [cfg(), audio(PCM), pb.StreamingDetectRequest()], ["empty message"]),
    ("rate_too_low", [cfg(rate=7999)], ["8000", "48000"]),
    ("rate_too_high", [cfg(rate=48001)], ["8000", "48000"]),
    ("rate_missing", [cfg(rate=0)], ["8000"]),
    ("encoding_unset", [cfg(encoding=0)], ["LINEAR16", "FLOAT32"]),
    ("encoding_unknown", [cfg(encoding=99)], ["encoding", "LINEAR16"]),
    ("odd_bytes_linear16", [cfg(), audio(PCM), audio(b"\x00\x01\x02")], ["odd byte count"]),
    ("odd_bytes_float32", [cfg(encoding=pb.FLOAT32), audio(b"\x00" * 6)], ["whole number"]),
    ("nan", [cfg(encoding=pb.FLOAT32), audio(NAN)], ["NaN"]),
    ("inf", [cfg(encoding=pb.FLOAT32), audio(INF)], ["Inf"]),
    ("empty_stream", [], ["empty stream", "config"]),
    ("config_only", [cfg()], ["without audio"]),
    ("config_and_empty_audio", [cfg(), audio(b"")], ["without audio"]),
    ("bad_threshold", [cfg(threshold=1.5)], ["threshold"]),
    ("bad_neg_threshold", [cfg(threshold=0.3, neg_threshold=0.6)], ["neg_threshold"]),
    ("bad_max_speech", [cfg(max_speech_duration_s=0.1)], ["max_speech_duration_s"]),
]


async def test_bad_streams_fail_cleanly_while_a_good_stream_runs(model):
    x, rate = sf.read(DATA / "speech_en.wav", dtype="float32")
    probs, segments = offline(model, x, rate)
    cuts = [4 * c for c in random_cuts(x.size, np.random.default_rng(0), 200, 2000)]
    good_reqs = requests(x.tobytes(), rate, pb.FLOAT32, cuts)
    async with running_server(model, max_batch_size=8) as (server, port), stub_for(port) as stub:
        good = asyncio.create_task(run_stream(stub, good_reqs))
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            # The sync stub: it always reports the server's status (see STREAM_CASES).
            sync_stub = pb_grpc.VoiceActivityStub(channel)
            for name, reqs, needles in STREAM_CASES:
                call = asyncio.to_thread(lambda r=reqs: list(sync_stub.StreamingDetect(iter(r))))
                with pytest.raises(grpc.RpcError) as e:
                    await call
                assert e.value.code() == INVALID, (name, e.value.details())
                for needle in needles:
                    assert needle.lower() in e.value.details().lower(), (name, e.value.details())
        got = await good
        assert got.segments == segments
        assert np.abs(got.probs - probs).max() <= 1e-5
        # Nothing leaked: every failed stream was closed and its slot freed. The client can
        # see the last stream's status before the server's handler has run its `finally`,
        # so wait for it (a leak still fails, after wait_until's bound).
        await wait_until(lambda: not server.servicer.sessions)
        # Slots are freed on the batcher's worker thread, right after the call ends.
        await wait_until(lambda: len(server.batcher.bank) == 0)
        errors = server.metrics.registry.get_sample_value(
            "vadnet_errors_total", {"code": "INVALID_ARGUMENT"}
        )
        assert errors == len(STREAM_CASES)


@pytest.mark.parametrize(
    "request_, needles",
    [
        (pb.DetectRequest(file=(DATA / "garbage.wav").read_bytes()), ["cannot decode"]),
        (pb.DetectRequest(file=(DATA / "empty.wav").read_bytes()), ["no audio"]),
        (pb.DetectRequest(file=b""), ["empty"]),
        (pb.DetectRequest(), ["file", "raw"]),
        (
            pb.DetectRequest(raw=pb.RawAudio(data=b"\x00" * 5, sample_rate_hz=16000, encoding=1)),
            ["odd byte count"],
        ),
        (
            pb.DetectRequest(raw=pb.RawAudio(data=PCM, sample_rate_hz=96000, encoding=1)),
            ["48000"],
        ),
        (
            pb.DetectRequest(raw=pb.RawAudio(data=PCM, sample_rate_hz=16000, encoding=0)),
            ["encoding"],
        ),
        (pb.DetectRequest(raw=pb.RawAudio(data=NAN, sample_rate_hz=16000, encoding=2)), ["NaN"]),
        (
            pb.DetectRequest(
                raw=pb.RawAudio(data=PCM, sample_rate_hz=16000, encoding=1),
                segmenter=pb.SegmenterConfig(threshold=0.0),
            ),
            ["threshold"],
        ),
    ],
    ids=["garbage", "empty_wav", "zero_bytes", "no_source", "odd", "rate", "enc", "nan", "thr"],
)
async def test_bad_detect_requests(model, request_, needles):
    async with running_server(model) as (_, port), stub_for(port) as stub:
        await expect_error(stub.Detect(request_), INVALID, *needles)
        # the server is fine afterwards
        ok = await stub.Detect(
            pb.DetectRequest(raw=pb.RawAudio(data=PCM, sample_rate_hz=16000, encoding=1))
        )
        assert ok.frames == 7
