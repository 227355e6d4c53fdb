"""Server settings: defaults < VADNET_* environment < flags; bad values say what to fix."""

from __future__ import annotations

import argparse
import json
import logging

import pytest

from vadnet.model.errors import InvalidInputError
from vadnet.service import config
from vadnet.service.logs import JsonFormatter


def _parse(argv: list[str], env: dict[str, str]) -> config.ServerConfig:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, env)
    return config.from_args(parser.parse_args(argv))


def test_env_then_flags():
    env = {"VADNET_PORT": "6000", "VADNET_MAX_BATCH_SIZE": "32", "VADNET_HALF": "true"}
    cfg = _parse([], env)
    assert (cfg.port, cfg.max_batch_size, cfg.half) == (6000, 32, True)
    cfg = _parse(["--port", "7000", "--no-half", "--max-queue-delay-ms", "2.5"], env)
    assert (cfg.port, cfg.max_batch_size, cfg.half, cfg.max_queue_delay_ms) == (
        7000,
        32,
        False,
        2.5,
    )
    assert _parse([], {}) == config.ServerConfig()


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"max_batch_size": 0}, "--max-batch-size"),
        ({"tls_cert": "a.pem"}, "--tls-key"),
        ({"tls_client_ca": "ca.pem"}, "--tls-cert"),
        ({"workers": 2, "port": 0}, "fixed --port"),
        ({"device": "tpu"}, "--device"),
        ({"log_format": "xml"}, "--log-format"),
        ({"event_loop": "trio"}, "--event-loop"),
        ({"nonsense": 1}, "unknown server options"),
    ],
)
def test_bad_config(overrides, needle):
    with pytest.raises(InvalidInputError, match=needle):
        config.ServerConfig.from_dict(overrides)


def test_bad_env_value():
    with pytest.raises(InvalidInputError, match="VADNET_PORT"):
        _parse([], {"VADNET_PORT": "fifty"})


def test_workers_get_one_torch_thread_each():
    assert config.ServerConfig(workers=3, port=5000).effective_torch_threads == 1
    assert config.ServerConfig(torch_threads=4).effective_torch_threads == 4
    assert config.ServerConfig().effective_torch_threads == 0  # torch's own default


def test_event_loop_choice():
    import asyncio

    import uvloop

    from vadnet.service.cmd_serve import loop_factory

    assert loop_factory("asyncio") is None  # asyncio.Runner's default loop
    for name in ("auto", "uvloop"):  # uvloop is a dependency, so auto finds it
        loop = loop_factory(name)()
        try:
            assert isinstance(loop, uvloop.Loop) and isinstance(loop, asyncio.AbstractEventLoop)
        finally:
            loop.close()


def test_json_logs_are_one_object_per_line():
    record = logging.LogRecord("vadnet", logging.INFO, __file__, 1, "stream %s done", ("x",), None)
    doc = json.loads(JsonFormatter().format(record))
    assert doc["msg"] == "stream x done" and doc["level"] == "INFO" and doc["logger"] == "vadnet"
