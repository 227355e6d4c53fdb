"""Prometheus metrics of one server process, in their own registry.

A registry per server (not the global one) lets tests run several servers in one
process. ``vadnet serve`` exposes it on ``--metrics-port`` at ``/metrics``.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .batcher import BatchStats
from .detect_worker import DetectResult

logger = logging.getLogger("vadnet")

# Latency buckets in seconds: the interesting range is 1 ms .. 100 ms.
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The service's counters; attribute names match the exported metric names."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active_streams = Gauge(
            "vadnet_active_streams", "Open StreamingDetect calls", registry=r
        )
        self.streams = Counter("vadnet_streams", "StreamingDetect calls started", registry=r)
        self.audio_seconds = Counter(
            "vadnet_audio_seconds", "Audio received, seconds", ["rpc"], registry=r
        )
        self.frames = Counter("vadnet_frames", "16 ms frames processed", ["rpc"], registry=r)
        self.batch_size = Histogram(
            "vadnet_batch_size", "Streams per forward pass", buckets=_BATCH_BUCKETS, registry=r
        )
        self.queue_delay = Histogram(
            "vadnet_queue_delay_seconds",
            "Time the oldest stream of a batch waited before the pass",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_latency = Histogram(
            "vadnet_inference_seconds",
            "Wall time of one batched forward pass",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.detect_model = Histogram(
            "vadnet_detect_model_seconds",
            "Model wall time of one Detect call (in the low-priority Detect process)",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # What a live stream's client waits for, less the network: from the moment the
        # handler reads a chunk to the moment its answer is handed to gRPC. It splits a
        # latency tail between the server and the transport (bench/detect_priority.py).
        self.chunk_latency = Histogram(
            "vadnet_chunk_latency_seconds",
            "Server time from reading a stream chunk to writing its answer",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "vadnet_errors", "RPCs ended with an error, by status code", ["code"], registry=r
        )

    def on_batch(self, stats: BatchStats) -> None:
        """Batcher callback: one call per forward pass."""
        self.batch_size.observe(stats.size)
        self.queue_delay.observe(stats.queue_delay_s)
        self.inference_latency.observe(stats.inference_s)

    def on_detect(self, result: DetectResult) -> None:
        """Detect worker callback: one call per finished Detect call."""
        self.detect_model.observe(result.model_s)

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Expose ``/metrics`` over HTTP in a daemon thread; returns the bound port."""
        httpd, _ = start_http_server(port, addr=host, registry=self.registry)
        bound = httpd.server_address[1]
        logger.info("metrics on http://%s:%s/metrics", host, bound)
        self._httpd = httpd
        return bound

    def close(self) -> None:
        httpd = getattr(self, "_httpd", None)
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
            self._httpd = None
