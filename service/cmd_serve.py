"""``vadnet serve``: the gRPC streaming server (see docs/service.md for every flag).

SIGTERM or SIGINT drains: health goes NOT_SERVING, new calls are refused, open streams
get ``--drain-grace-s`` to finish (and their final events), then the process exits 0.
With ``--workers N`` the parent starts N server processes on one port (SO_REUSEPORT),
each with its own model and batcher, forwards signals to them and exits when they do.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import logging
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable

from vadnet.model.errors import InvalidInputError

from . import config as config_mod

logger = logging.getLogger("vadnet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from .logs import setup_logging

    cfg = config_mod.from_args(args)
    setup_logging(cfg.log_format, "DEBUG" if getattr(args, "verbose", False) else None)
    if cfg.workers > 1:
        return _supervise(cfg)
    return serve(cfg)


def serve(cfg: config_mod.ServerConfig) -> int:
    """Run one server process until SIGTERM/SIGINT; returns the exit status (0)."""
    if cfg.sched_batch:  # first, so that every thread started from here inherits it
        sched_batch()
    # oneDNN caches 1,024 conv primitives by shape; the server's batches come in every size
    # (1..max_batch_size streams x a few lengths x 9 convs), which overflows that and
    # rebuilds primitives all the time: the model thread spent ~10 % more CPU per chunk
    # (bench/server_cost.py). Set before torch loads oneDNN; an explicit value wins.
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16384")
    import torch

    if cfg.effective_torch_threads:
        torch.set_num_threads(cfg.effective_torch_threads)
    with asyncio.Runner(loop_factory=loop_factory(cfg.event_loop)) as runner:
        return runner.run(_serve(cfg))


def sched_batch() -> bool:
    """Put this thread, and the threads it starts from now on (gRPC's, the metrics
    server's), under SCHED_BATCH; the batcher's model thread sets itself back to
    SCHED_OTHER. Why: on a busy core every network wake-up of the event loop preempted the
    model thread mid-batch (~10 involuntary switches per batch at 250 streams), and each
    switch costs the batch its caches and keeps all its streams waiting. SCHED_BATCH
    threads do not preempt on wake-up; they run when the batch is done or its time slice
    ends. At 300 streams per core the server spent ~10 % less CPU per chunk and p99 fell
    (README, "The server under load"). Needs no privileges; False where unsupported."""
    if not hasattr(os, "SCHED_BATCH"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except OSError as e:
        logger.warning("SCHED_BATCH unavailable (%s): I/O threads keep the default policy", e)
        return False
    return True


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop to serve on. uvloop's scheduling and futures cost less per message
    than asyncio's, and a stream is several wake-ups per chunk (see the README's load
    figures); grpc.aio runs on either. None: asyncio's default loop."""
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as e:
        if name == "uvloop":
            raise InvalidInputError("--event-loop uvloop: uvloop is not installed") from e
        return None
    return uvloop.new_event_loop


async def _serve(cfg: config_mod.ServerConfig) -> int:
    from .server import create_server

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server, port = await create_server(cfg)
    # torch, grpc and the model leave ~190k objects that live as long as the process; one
    # full collection over them took 87 ms here, a stall of every stream (the p99 tail of
    # `vadnet loadtest`). Freezing them keeps later collections to the objects calls make.
    gc.freeze()
    # One parseable line for scripts and tests that start us with --port 0.
    logger.info("vadnet serving on port %s metrics %s", port, server.metrics_port)
    sys.stdout.write(f"vadnet serving on {cfg.host}:{port}\n")
    sys.stdout.flush()
    await stop.wait()
    logger.info("signal received: draining for up to %.1f s", cfg.drain_grace_s)
    await server.stop(cfg.drain_grace_s)
    return 0


def _worker(cfg_dict: dict, index: int) -> None:
    from .logs import setup_logging

    cfg = config_mod.ServerConfig(**cfg_dict)
    if cfg.metrics_port > 0:
        cfg.metrics_port += index  # each process exports its own registry
    setup_logging(cfg.log_format)
    sys.exit(serve(cfg))


def _supervise(cfg: config_mod.ServerConfig) -> int:
    ctx = multiprocessing.get_context("spawn")  # no forked torch/grpc state
    procs = [
        ctx.Process(target=_worker, args=(dataclasses.asdict(cfg), i), name=f"vadnet-worker-{i}")
        for i in range(cfg.workers)
    ]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: each worker drains on its own

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for p in procs:
        p.join()
    codes = [p.exitcode for p in procs]
    logger.info("workers exited with %s", codes)
    return 0 if all(c == 0 for c in codes) else 1
