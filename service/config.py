"""Server settings: one dataclass, filled from defaults < ``VADNET_*`` environment < flags.

Every field ``foo_bar`` has the flag ``--foo-bar`` and the variable ``VADNET_FOO_BAR``.
``docs/service.md`` has the table; keep the ``help`` strings below in step with it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from vadnet.model.errors import InvalidInputError

ENV_PREFIX = "VADNET_"


def _opt(default: Any, help_: str) -> Any:
    return field(default=default, metadata={"help": help_})


@dataclass
class ServerConfig:
    """Everything ``vadnet serve`` can be told. Sizes carry their unit in the name."""

    host: str = _opt("127.0.0.1", "address to bind; 0.0.0.0 or [::] for all interfaces")
    port: int = _opt(50051, "gRPC port; 0 picks a free one")
    metrics_port: int = _opt(9090, "Prometheus /metrics HTTP port; 0 picks one, -1 disables")
    model: str | None = _opt(None, "checkpoint path (default: the bundled model)")
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N")
    half: bool = _opt(False, "float16 weights and state on CUDA (parity bound 1e-2)")
    workers: int = _opt(1, "server processes sharing the port (SO_REUSEPORT)")
    torch_threads: int = _opt(0, "torch intra-op threads per process; 0: 1 if workers > 1")
    max_batch_size: int = _opt(256, "most streams in one forward pass")
    max_queue_delay_ms: float = _opt(10.0, "longest wait for a batch to fill")
    max_streams: int = _opt(
        2000, "concurrent calls per process, streams and Detect (RESOURCE_EXHAUSTED beyond)"
    )
    # 4: each admitted Detect may hold its upload plus up to 600 s of decoded 16 kHz audio
    # (~40 MB); Detect runs only in the model's idle time, so more at once are not faster.
    max_detect_calls: int = _opt(
        4, "concurrent Detect calls per process (RESOURCE_EXHAUSTED with a retry hint beyond)"
    )
    # 20 s: a slice costs a stream chunk that arrives meanwhile its compute (~10-20 ms on
    # one core); longer slices recompute the 8 s receptive field less often.
    detect_slice_s: float = _opt(
        20.0, "Detect runs in exact slices this long, between stream batches"
    )
    max_message_bytes: int = _opt(4 << 20, "largest request message")
    max_stream_duration_s: float = _opt(3600.0, "longest stream, in audio and in wall time")
    idle_timeout_s: float = _opt(30.0, "a stream silent this long is ended (DEADLINE_EXCEEDED)")
    min_audio_rate: float = _opt(
        0.1,
        "a stream must send at least this fraction of real time (0.1: 3 s of audio in each"
        " 30 s window), else DEADLINE_EXCEEDED; 0 disables",
    )
    min_audio_rate_window_s: float = _opt(30.0, "window over which --min-audio-rate is averaged")
    max_streams_per_peer: int = _opt(
        0, "concurrent streams per client IP (RESOURCE_EXHAUSTED beyond); 0: no limit"
    )
    max_detect_audio_s: float = _opt(600.0, "longest clip one Detect call accepts")
    max_buffered_audio_s: float = _opt(2.0, "unprocessed audio per stream before reads pause")
    tls_cert: str | None = _opt(None, "PEM certificate chain: serve TLS")
    tls_key: str | None = _opt(None, "PEM private key of --tls-cert")
    tls_client_ca: str | None = _opt(None, "PEM CA bundle: require client certificates (mTLS)")
    auth_token_file: str | None = _opt(None, "file with the bearer token clients must send")
    drain_grace_s: float = _opt(10.0, "on SIGTERM, time open streams get to finish")
    max_connection_age_s: float = _opt(
        300.0, "close connections after this long (GOAWAY) so clients re-spread; 0: never"
    )
    max_connection_age_grace_s: float = _opt(
        3600.0, "streams on an aged connection get this long to end (default: the longest)"
    )
    log_format: str = _opt("text", "text or json (one JSON object per line)")
    event_loop: str = _opt("auto", "asyncio or uvloop; auto: uvloop when it is installed")
    sched_batch: bool = _opt(
        True, "Linux: I/O threads under SCHED_BATCH, so they do not preempt a running batch"
    )

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ServerConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise InvalidInputError(
                f"unknown server options {sorted(unknown)}; known: {sorted(names)}"
            )
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raise InvalidInputError naming the option to fix."""
        positive = (
            "max_batch_size",
            "max_streams",
            "max_message_bytes",
            "max_stream_duration_s",
            "idle_timeout_s",
            "max_detect_audio_s",
            "max_detect_calls",
            "detect_slice_s",
            "max_buffered_audio_s",
            "min_audio_rate_window_s",
            "workers",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise InvalidInputError(f"--{_flag(name)} must be > 0, got {getattr(self, name)}")
        nonneg = (
            "min_audio_rate",
            "max_streams_per_peer",
            "max_queue_delay_ms",
            "drain_grace_s",
            "torch_threads",
            "max_connection_age_s",
            "max_connection_age_grace_s",
        )
        for name in nonneg:
            if not getattr(self, name) >= 0:
                raise InvalidInputError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if self.min_audio_rate >= 1:
            raise InvalidInputError(
                f"--min-audio-rate is a fraction of real time below 1, got {self.min_audio_rate}"
            )
        if not 0 <= self.port < 65536 or not -1 <= self.metrics_port < 65536:
            raise InvalidInputError("--port must be 0..65535 and --metrics-port -1..65535")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise InvalidInputError("--tls-cert and --tls-key go together: give both or neither")
        if self.tls_client_ca and not self.tls_cert:
            raise InvalidInputError("--tls-client-ca (mTLS) needs --tls-cert and --tls-key")
        if self.workers > 1 and self.port == 0:
            raise InvalidInputError("--workers > 1 needs a fixed --port for the processes to share")
        if self.log_format not in ("text", "json"):
            raise InvalidInputError(f"--log-format must be text or json, got {self.log_format!r}")
        if self.event_loop not in ("auto", "asyncio", "uvloop"):
            raise InvalidInputError(
                f"--event-loop must be auto, asyncio or uvloop, got {self.event_loop!r}"
            )
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise InvalidInputError(
                f"--device must be auto, cpu, cuda or cuda:N, got {self.device!r}"
            )

    @property
    def effective_torch_threads(self) -> int:
        """0 means leave torch's default, except one thread per process when forking workers."""
        if self.torch_threads:
            return self.torch_threads
        return 1 if self.workers > 1 else 0


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise InvalidInputError(f"expected a boolean (true/false), got {text!r}")


def _env_default(f: Any, env: Mapping[str, str]) -> Any:
    raw = env.get(ENV_PREFIX + f.name.upper())
    if raw is None:
        return f.default if f.default is not MISSING else None
    kind = _kind(f)
    try:
        return _parse_bool(raw) if kind is bool else kind(raw)
    except ValueError as e:
        raise InvalidInputError(f"{ENV_PREFIX}{f.name.upper()}={raw!r}: {e}") from e


def _kind(f: Any) -> type:
    t = str(f.type)
    for name, kind in (("bool", bool), ("int", int), ("float", float)):
        if t.startswith(name):
            return kind
    return str


def add_arguments(parser: argparse.ArgumentParser, env: Mapping[str, str] | None = None) -> None:
    """One flag per field; defaults come from ``VADNET_*`` variables when set."""
    env = os.environ if env is None else env
    for f in fields(ServerConfig):
        default = _env_default(f, env)
        kind = _kind(f)
        help_ = f"{f.metadata['help']} [env {ENV_PREFIX}{f.name.upper()}; default %(default)s]"
        if kind is bool:
            parser.add_argument(
                f"--{_flag(f.name)}",
                action=argparse.BooleanOptionalAction,
                default=default,
                help=help_,
            )
        else:
            parser.add_argument(f"--{_flag(f.name)}", type=kind, default=default, help=help_)


def from_args(args: argparse.Namespace) -> ServerConfig:
    """The validated config of parsed ``add_arguments`` flags."""
    return ServerConfig.from_dict({f.name: getattr(args, f.name) for f in fields(ServerConfig)})
