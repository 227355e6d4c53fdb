"""Admission: one budget of concurrent calls shared by streams and Detect.

Every open StreamingDetect call and every Detect call takes one of ``--max-streams``
slots; Detect calls also have their own cap, ``--max-detect-calls``, taken BEFORE the
upload is decoded, so a burst of long clips cannot hold unbounded decoded audio (each is
at most ``--max-detect-audio-s``). A refusal is RESOURCE_EXHAUSTED with a retry hint in
the trailing metadata (``grpc-retry-pushback-ms``, which gRPC retry policies honour, and
``retry-after-ms`` for everyone else).
"""

from __future__ import annotations

from .config import ServerConfig
from .errors import OverloadedError

# A stream slot frees when some stream ends: nothing predicts when, so a fixed pause.
STREAM_RETRY_MS = 1000
# Bounds of the Detect hint: not a busy loop, and not so long that a client gives up.
_MIN_RETRY_MS, _MAX_RETRY_MS = 100, 60_000


class Admission:
    """Counts nothing itself: the servicer passes its counts, this decides and explains."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._detect_s = 0.0  # running mean wall time of a Detect call, for the hint

    def detect_done(self, wall_s: float) -> None:
        """Record one finished Detect call's wall time."""
        m = self._detect_s
        self._detect_s = wall_s if m == 0 else 0.8 * m + 0.2 * wall_s

    def check_stream(self, streams: int, detects: int) -> None:
        """Raise OverloadedError unless a new stream fits."""
        self._check_budget(streams, detects, "streams", STREAM_RETRY_MS)

    def _check_budget(self, streams: int, detects: int, what: str, retry_ms: int) -> None:
        """The --max-streams budget that streams and Detect calls share."""
        limit = self.config.max_streams
        if streams + detects >= limit:
            raise OverloadedError(
                f"server is at its limit of {limit} concurrent {what}"
                f" ({streams} streams, {detects} Detect calls): retry later or on another replica",
                retry_ms,
            )

    def check_detect(self, streams: int, detects: int, backlog_s: float) -> None:
        """Raise OverloadedError unless a new Detect call fits. The hint: the model time
        the batcher expects its queued Detect work to need, or, when longer, a typical
        call's wall time over the slots (calls still decoding are not queued yet)."""
        cap = self.config.max_detect_calls
        wait_s = max(backlog_s, self._detect_s / cap)
        retry_ms = int(min(max(wait_s * 1000, _MIN_RETRY_MS), _MAX_RETRY_MS))
        if detects >= cap:
            raise OverloadedError(
                f"server is at its limit of {cap} concurrent Detect calls:"
                f" retry in {retry_ms} ms or on another replica",
                retry_ms,
            )
        self._check_budget(streams, detects, "calls", max(retry_ms, STREAM_RETRY_MS))
