"""Health transitions, reflection, metrics scrape, model info, in-process drain."""

from __future__ import annotations

import asyncio
import urllib.request

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from test_service_helpers import (
    DATA,
    expect_stream_error,
    run_stream,
    running_server,
    stub_for,
)
from test_service_limits import OpenStream, _config, _pcm

from vadnet.v1 import vad_pb2 as pb

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def _health(channel, service: str = "") -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service))).status


async def test_health_transitions(model):
    async with running_server(model, warm=False) as (server, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            assert await _health(ch) == NOT_SERVING
            assert await _health(ch, "vadnet.v1.VoiceActivity") == NOT_SERVING
            async with stub_for(port) as vad:
                # not warm yet: calls are refused with UNAVAILABLE, not queued
                await expect_stream_error(port, [_config()], grpc.StatusCode.UNAVAILABLE, "loading")
                await server.warm_up()
                assert await _health(ch) == SERVING
                assert await _health(ch, "vadnet.v1.VoiceActivity") == SERVING
                # drain: NOT_SERVING, new streams refused, open ones finish with final events
                held = OpenStream(vad)
                held.send(_config())
                held.send(pb.StreamingDetectRequest(audio=_pcm(0.3)))
                while not server.servicer.sessions:
                    await asyncio.sleep(0.01)
                await server.begin_drain()
                assert await _health(ch) == NOT_SERVING
                await expect_stream_error(
                    port, [_config()], grpc.StatusCode.UNAVAILABLE, "shutting down"
                )
                held.send(pb.StreamingDetectRequest(audio=_pcm(0.3)))
                held.close()
                responses = await held.responses()
                assert responses[-1].is_final
                assert responses[-1].summary.input_samples == 9600


async def test_reflection_lists_the_service(model):
    async with running_server(model) as (_, port):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = reflection_pb2_grpc.ServerReflectionStub(ch)

            async def ask(**kw):
                async def one():
                    yield reflection_pb2.ServerReflectionRequest(**kw)

                return [r async for r in stub.ServerReflectionInfo(one())][0]

            listed = await ask(list_services="")
            names = {s.name for s in listed.list_services_response.service}
            assert {"vadnet.v1.VoiceActivity", "grpc.health.v1.Health"} <= names
            desc = await ask(file_containing_symbol="vadnet.v1.VoiceActivity")
            assert desc.file_descriptor_response.file_descriptor_proto


async def test_metrics_scrape(model):
    async with running_server(model, metrics_port=0) as (server, port), stub_for(port) as stub:
        x = (np.random.default_rng(0).standard_normal(16000) * 0.1).astype("<f4")
        reqs = [_config(16000, pb.FLOAT32)] + [
            pb.StreamingDetectRequest(audio=x[i : i + 1600].tobytes())
            for i in range(0, 16000, 1600)
        ]
        await run_stream(stub, reqs)
        await expect_stream_error(port, reqs[1:2], grpc.StatusCode.INVALID_ARGUMENT)
        await stub.Detect(pb.DetectRequest(file=(DATA / "noise.wav").read_bytes()))
        url = f"http://127.0.0.1:{server.metrics_port}/metrics"
        text = await asyncio.to_thread(
            lambda: urllib.request.urlopen(url, timeout=5).read().decode()
        )
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            values[key] = float(value)
    assert values["vadnet_active_streams"] == 0
    assert values['vadnet_audio_seconds_total{rpc="StreamingDetect"}'] == 1.0
    assert values['vadnet_audio_seconds_total{rpc="Detect"}'] == 2.0
    assert values['vadnet_frames_total{rpc="StreamingDetect"}'] == 63
    assert values['vadnet_errors_total{code="INVALID_ARGUMENT"}'] == 1
    assert values["vadnet_batch_size_count"] >= 1
    assert values["vadnet_queue_delay_seconds_count"] == values["vadnet_batch_size_count"]
    assert values["vadnet_inference_seconds_count"] == values["vadnet_batch_size_count"]
    # Probabilities asked for: every chunk's answer was timed (merged chunks share one).
    assert 1 <= values["vadnet_chunk_latency_seconds_count"] <= 10
    assert 0 < values["vadnet_chunk_latency_seconds_sum"] < 10


async def test_model_info(model):
    async with running_server(model, max_batch_size=32) as (_, port), stub_for(port) as stub:
        info = await stub.GetModelInfo(pb.GetModelInfoRequest())
    assert info.hop_samples == 256 and abs(info.hop_s - 0.016) < 1e-12
    assert info.lookahead_frames == 4 and abs(info.latency_s - 0.08) < 1e-12
    assert info.parameters == model.num_parameters()
    assert info.device == "cpu"
    assert info.max_batch_size == 32
    assert info.sample_rate_hz == 16000


async def test_vadnet_health_command(model, capsys):
    from vadnet.service.cli import main

    async with running_server(model) as (server, port):
        assert await asyncio.to_thread(main, ["health", "--server", f"127.0.0.1:{port}"]) == 0
        assert capsys.readouterr().out == "SERVING\n"
        await server.begin_drain()
        assert await asyncio.to_thread(main, ["health", "--server", f"127.0.0.1:{port}"]) == 1
        assert capsys.readouterr().out == "NOT_SERVING\n"
