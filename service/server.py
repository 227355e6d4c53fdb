"""The gRPC server: model + batcher + servicer + health + reflection + metrics + TLS/auth.

:func:`create_server` builds and starts one on ``config.port`` (0 picks a free port) and
returns it with the bound port, so tests run real servers side by side. Health says
NOT_SERVING until the model is loaded and warm, and again from the start of a drain.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import ssl
from pathlib import Path

import grpc
import numpy as np
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from vadnet.model.checkpoint import load_model, model_version
from vadnet.model.errors import InvalidInputError
from vadnet.model.network import VadNet
from vadnet.model.streaming import StreamBank
from vadnet.v1 import vad_pb2 as pb

from .auth import BearerTokenInterceptor, TokenFile
from .batcher import Batcher
from .config import ServerConfig
from .detect_worker import DetectWorker
from .metrics import Metrics
from .servicer import VoiceActivityServicer

logger = logging.getLogger("vadnet")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["VoiceActivity"].full_name
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; a cuda request without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("--device cuda asked for, but torch sees no CUDA device")
    return dev


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise InvalidInputError(f"cannot read {what} {path}: {e}") from e


def _check_pair(cert: str, key: str) -> None:
    """gRPC reports a certificate that does not match its key only as "Failed to bind";
    Python's ssl module says what is wrong."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except ssl.SSLError as e:
        raise InvalidInputError(
            f"--tls-cert {cert} and --tls-key {key} do not make a pair ({e.reason or e}):"
            " give the key the certificate was issued for"
        ) from e


def server_credentials(cfg: ServerConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from the config, or None for plaintext."""
    if not cfg.tls_cert:
        return None
    pair = (_read(cfg.tls_key, "--tls-key"), _read(cfg.tls_cert, "--tls-cert"))
    _check_pair(cfg.tls_cert, cfg.tls_key)
    ca = _read(cfg.tls_client_ca, "--tls-client-ca") if cfg.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [pair], root_certificates=ca, require_client_auth=ca is not None
    )


def keepalive_options(cfg: ServerConfig) -> list[tuple[str, int]]:
    """Keepalive and connection age. Clients ping every 10 s (service/client.py) to find a
    frozen server; gRPC's default lets a client ping only every 5 min and answers more with
    GOAWAY, so permit one every 5 s. The server pings idle clients each minute, so a dead
    peer's streams are freed. A connection older than max_connection_age_s gets GOAWAY:
    its client reconnects, through the balancer or a fresh DNS lookup, so new replicas get
    streams over time; streams open on it keep going for the grace (by default the
    longest stream), so nothing is cut."""
    opts = [
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
    ]
    if cfg.max_connection_age_s > 0:
        opts.append(("grpc.max_connection_age_ms", int(cfg.max_connection_age_s * 1000)))
        opts.append(
            ("grpc.max_connection_age_grace_ms", int(cfg.max_connection_age_grace_s * 1000))
        )
    return opts


def add_servicer(servicer: VoiceActivityServicer, server: grpc.aio.Server) -> None:
    """``pb_grpc.add_VoiceActivityServicer_to_server``, except that Detect gets its request
    serialized: the Detect worker process parses it, so an upload of megabytes is never
    copied out of its message on the event loop (two copies, ~1-10 ms each with the GIL
    held, most of it page faults on fresh memory)."""
    handlers = {
        "StreamingDetect": grpc.stream_stream_rpc_method_handler(
            servicer.StreamingDetect,
            request_deserializer=pb.StreamingDetectRequest.FromString,
            response_serializer=pb.StreamingDetectResponse.SerializeToString,
        ),
        "Detect": grpc.unary_unary_rpc_method_handler(
            servicer.Detect,
            request_deserializer=None,  # bytes as they came
            response_serializer=pb.DetectResponse.SerializeToString,
        ),
        "GetModelInfo": grpc.unary_unary_rpc_method_handler(
            servicer.GetModelInfo,
            request_deserializer=pb.GetModelInfoRequest.FromString,
            response_serializer=pb.ModelInfo.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)


class VadServer:
    """One server process's parts. Build with :func:`create_server`."""

    def __init__(self, config: ServerConfig, model: VadNet | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.health = HealthServicer()
        self.device = resolve_device(config.device)
        self._model = model
        self.batcher: Batcher | None = None
        self.servicer: VoiceActivityServicer | None = None
        self.port = 0
        self.metrics_port: int | None = None
        interceptors = []
        if config.auth_token_file:
            token = TokenFile(config.auth_token_file)
            interceptors.append(
                BearerTokenInterceptor(
                    token, lambda: self.metrics.errors.labels("UNAUTHENTICATED").inc()
                )
            )
        self.grpc = grpc.aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", max(config.max_message_bytes, 64 << 20)),
                # Only share the port when asked to: a stray second server must fail to bind.
                ("grpc.so_reuseport", 1 if config.workers > 1 else 0),
                *keepalive_options(config),
            ],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)

    async def start(self) -> int:
        """Bind, start serving (health NOT_SERVING), start metrics; returns the port."""
        cfg = self.config
        model = self._model
        if model is None:
            model = await asyncio.to_thread(load_model, cfg.model, "cpu")
        elif next(model.parameters()).device != self.device or cfg.half:
            model = copy.deepcopy(model)  # .to()/.half() work in place: spare the caller's
        model = model.to(self.device)
        if cfg.half and self.device.type == "cuda":
            model = model.half()
        bank = StreamBank(model, self.device, capacity=64)
        self.batcher = Batcher(
            bank, cfg.max_batch_size, cfg.max_queue_delay_ms, on_batch=self.metrics.on_batch
        )
        # Detect runs in its own low-priority process (service/detect_worker.py), started
        # by the first Detect call. One torch thread there unless --torch-threads says
        # otherwise: its calls run side by side already, and intra-op threads that share
        # a core spin-wait for each other.
        detector = DetectWorker(
            model, str(self.device), cfg.detect_slice_s, cfg.torch_threads or 1,
            cfg.max_detect_calls, cfg.max_detect_audio_s,
        )  # fmt: skip
        detector.on_result = self.metrics.on_detect
        self.servicer = VoiceActivityServicer(
            self.batcher, cfg, self.metrics, self._info(model), detector
        )
        add_servicer(self.servicer, self.grpc)
        reflection.enable_server_reflection(
            (SERVICE_NAME, "grpc.health.v1.Health", reflection.SERVICE_NAME), self.grpc
        )
        address = f"{cfg.host}:{cfg.port}"
        creds = server_credentials(cfg)
        try:
            if creds is None:
                self.port = self.grpc.add_insecure_port(address)
            else:
                self.port = self.grpc.add_secure_port(address, creds)
        except RuntimeError as e:
            raise InvalidInputError(f"cannot listen on {address}: {e}") from e
        await self._set_health(_NOT_SERVING)
        await self.batcher.start()
        self.servicer.start()
        await self.grpc.start()
        if cfg.metrics_port >= 0:
            self.metrics_port = self.metrics.serve(cfg.metrics_port, cfg.host)
        logger.info(
            "listening on %s:%s (%s, device %s)",
            cfg.host,
            self.port,
            "TLS" if creds else "plaintext",
            self.device,
        )
        return self.port

    def _info(self, model: VadNet) -> pb.ModelInfo:
        try:
            version = model_version(self.config.model)
        except Exception:  # a model handed in by a test has no file
            version = "in-memory"
        return pb.ModelInfo(
            version=version,
            sample_rate_hz=model.sample_rate,
            hop_s=model.hop_s,
            hop_samples=model.hop_samples,
            lookahead_s=model.lookahead_s,
            lookahead_frames=model.cfg.lookahead_frames,
            latency_s=model.cfg.latency_s,
            receptive_field_s=model.receptive_field_s,
            parameters=model.num_parameters(),
            device=str(self.device),
            max_batch_size=self.config.max_batch_size,
            max_queue_delay_ms=self.config.max_queue_delay_ms,
        )

    async def warm_up(self) -> None:
        """Run a few batches of every shape class once (allocations, kernels), then SERVING."""
        bank = self.batcher.bank
        rng = np.random.default_rng(0)

        def work() -> None:
            slots = [bank.open() for _ in range(8)]
            try:
                for n in (320, 1600, 8000):
                    chunks = [rng.standard_normal(n).astype(np.float32) * 0.1 for _ in slots]
                    bank.advance(slots, chunks)
                bank.advance(slots, [np.zeros(0, np.float32)] * len(slots), [True] * len(slots))
            finally:
                for s in slots:
                    bank.close(s)

        await self.batcher.run_in_worker(work)
        self.servicer.ready = True
        await self._set_health(_SERVING)
        logger.info("model warm: SERVING")

    async def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def begin_drain(self) -> None:
        """Health NOT_SERVING and refuse new calls; open streams keep going."""
        if self.servicer is not None:
            self.servicer.draining = True
        await self.health.enter_graceful_shutdown()
        logger.info("draining: NOT_SERVING, no new streams")

    async def stop(self, grace: float | None = None) -> None:
        """Drain (see :meth:`begin_drain`), let streams finish for ``grace`` seconds, stop.

        At three quarters of the grace period the server cuts the streams still open:
        each gets the results of the audio it sent (and a checkpoint if resumable), then
        UNAVAILABLE, so that no client takes a cut stream for a finished one.
        """
        grace = self.config.drain_grace_s if grace is None else grace
        await self.begin_drain()
        # The transport stays up while calls finish: health answers NOT_SERVING and new
        # calls get UNAVAILABLE from the servicer (retryable), not a bare CANCELLED.
        if self.servicer is not None:
            if not await self.servicer.wait_calls_done(0.75 * grace):
                self.servicer.end_all_streams()
                await self.servicer.wait_calls_done(0.2 * grace)
        await self.grpc.stop(max(0.05 * grace, 0.1))  # what is left now is cancelled
        if self.servicer is not None:
            await self.servicer.stop()
        if self.batcher is not None:
            await self.batcher.stop()
        self.metrics.close()
        logger.info("stopped")


async def create_server(
    config: ServerConfig | dict | None = None, model: VadNet | None = None, warm: bool = True
) -> tuple[VadServer, int]:
    """Build, start and (with ``warm``) warm up a server; returns it and its bound port.

    ``config`` may be a dict of :class:`ServerConfig` fields. ``model`` skips loading a
    checkpoint. With ``warm=False`` health stays NOT_SERVING until :meth:`VadServer.warm_up`.
    """
    if config is None:
        config = ServerConfig()
    elif isinstance(config, dict):
        config = ServerConfig.from_dict(config)
    else:
        config.validate()
    server = VadServer(config, model)
    try:
        port = await server.start()
        if warm:
            await server.warm_up()
    except BaseException:
        await server.stop(0)  # a half-started server must not hold its port or threads
        raise
    return server, port
