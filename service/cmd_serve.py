"""``vadnet serve``: the gRPC streaming server (see docs/service.md for every flag).

SIGTERM, SIGINT or SIGHUP drains: health goes NOT_SERVING, new calls are refused, open
streams get ``--drain-grace-s`` to finish, the rest are cut with UNAVAILABLE (resumable
clients go on elsewhere), then the process exits 0 within the grace, even while a Detect
is still decoding (that work is abandoned). SIGHUP drains rather than reloads: a new
config or model means a new process, which is how a rolling deploy replaces pods anyway.

With ``--workers N`` the parent starts N server processes on one port (SO_REUSEPORT),
each with its own model and batcher, forwards signals to them and exits when they do.
It refuses to start when something already listens on the port (a second instance would
silently take half the traffic), and the workers die with it, even when it is SIGKILLed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

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


class _Executor(ThreadPoolExecutor):
    """The loop's default executor (decodes of Detect run here), counting its busy work:
    a decode cannot be interrupted, and a drained server must not wait for one."""

    def __init__(self) -> None:
        super().__init__(thread_name_prefix="vadnet-io")
        self.busy = 0
        self._lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN201
        with self._lock:
            self.busy += 1
        fut = super().submit(fn, *args, **kwargs)
        fut.add_done_callback(self._done)
        return fut

    def _done(self, _fut: object) -> None:
        with self._lock:
            self.busy -= 1


def sched_batch() -> bool:
    """Put this thread, and the threads it starts from now on (gRPC's, the metrics
    server's), under SCHED_BATCH; the batcher's model thread sets itself back to
    SCHED_OTHER. Why: on a busy core every network wake-up of the event loop preempted the
    model thread mid-batch (~10 involuntary switches per batch at 250 streams), and each
    switch costs the batch its caches and keeps all its streams waiting. SCHED_BATCH
    threads do not preempt on wake-up; they run when the batch is done or its time slice
    ends. At 300 streams per core the server spent ~10 % less CPU per chunk and p99 fell
    (docs/experiments.md, "Server"). Needs no privileges; False where unsupported."""
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
    executor = _Executor()
    loop.set_default_executor(executor)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
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
    if executor.busy:
        # asyncio and the interpreter would both join the executor's threads at exit,
        # past the grace; their work belongs to calls that are gone.
        logger.warning(
            "exiting with %s decode(s) unfinished (their calls were cancelled)", executor.busy
        )
        logging.shutdown()
        sys.stdout.flush()
        os._exit(0)
    return 0


_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Linux: SIGTERM this process when its parent dies (it then drains like any SIGTERM).
    Why: a SIGKILLed supervisor cannot forward signals, and orphaned workers would go on
    serving the port on their own."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    except (OSError, AttributeError) as e:
        logger.warning("workers will not die with their parent: %s", e)
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def check_port_free(host: str, port: int) -> None:
    """Raise InvalidInputError if something listens on ``host:port``. A plain bind (no
    SO_REUSEPORT) fails on any listener, SO_REUSEPORT ones included; SO_REUSEADDR lets
    it pass over connections of a previous run still in TIME_WAIT."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise InvalidInputError(
                    f"port {port} on {host} is already in use (another server?): stop it or"
                    " choose another --port; --workers shares a port only among its own"
                ) from e
            raise InvalidInputError(f"cannot listen on {host}:{port}: {e}") from e


@contextlib.contextmanager
def port_lock(port: int) -> Iterator[None]:
    """Hold a lock on ``port`` for this supervisor's life: closes the gap between the probe
    and the workers' binds, where a second supervisor could pass the same probe."""
    path = os.path.join(tempfile.gettempdir(), f"vadnet-port-{port}.lock")
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            raise InvalidInputError(
                f"another vadnet serve --workers holds port {port} ({path}): stop it first"
            ) from e
        yield


def _worker(cfg_dict: dict, index: int, parent_pid: int) -> None:
    from .logs import setup_logging

    die_with_parent(parent_pid)
    cfg = config_mod.ServerConfig(**cfg_dict)
    if cfg.metrics_port > 0:
        cfg.metrics_port += index  # each process exports its own registry
    setup_logging(cfg.log_format)
    sys.exit(serve(cfg))


def _supervise(cfg: config_mod.ServerConfig) -> int:
    with port_lock(cfg.port):
        check_port_free(cfg.host, cfg.port)
        return _run_workers(cfg)


def _run_workers(cfg: config_mod.ServerConfig) -> int:
    ctx = multiprocessing.get_context("spawn")  # no forked torch/grpc state
    args = (dataclasses.asdict(cfg), os.getpid())
    procs = [
        ctx.Process(target=_worker, args=(args[0], i, args[1]), name=f"vadnet-worker-{i}")
        for i in range(cfg.workers)
    ]
    for p in procs:
        p.start()

    def forward(signum: int, _frame: object) -> None:
        for p in procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: each worker drains on its own

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    for p in procs:
        p.join()
    codes = [p.exitcode for p in procs]
    logger.info("workers exited with %s", codes)
    return 0 if all(c == 0 for c in codes) else 1
