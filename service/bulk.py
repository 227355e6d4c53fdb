"""Detect's bulk CPU work (decoding uploads) on lowest-priority threads (``nice_thread``),
beside the real-time
path: on a busy core the kernel runs them only when the event loop and the model thread
leave it time. The decoders spend their time in C with the GIL released (libsndfile via
a memfd, numpy, soxr); Python-heavy work (segmenting) stays at normal priority, since a
low-priority thread preempted while holding the GIL would stall the event loop.

Measured (bench/detect_priority.py, docs/service.md): with decodes on default-priority
threads, 20 streams beside 10 x 590 s Detects had p99 ~1.1 s; on nice-19 threads
~0.13-0.25 s; on nice-19 worker processes (pickling uploads and results) ~0.3-1 s and
+500 MB of RSS, so threads it is.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

logger = logging.getLogger("vadnet")

BULK_NICE = 19  # the kernel's lowest priority short of SCHED_IDLE


def name_thread(name: bytes) -> None:
    """Name this thread for the OS too, so ``top -H`` and bench/server_cost.py can tell
    its CPU apart (Python's thread names stay inside Python)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name)  # PR_SET_NAME; Linux only
    except (OSError, AttributeError):
        pass


def nice_thread() -> None:
    """This thread alone (Linux takes a thread id) at the lowest priority: SCHED_IDLE
    where allowed, on top of nice 19. A woken stream thread preempts a SCHED_IDLE one at
    once, where a nice-19 one may first run out its slice. Measured (bench/detect_priority.py,
    beside 10 x 590 s Detects): the server's p99 per chunk fell from the <= 100 ms bucket to
    the <= 50 ms one in some runs, not all; the streams' p99 at the client did not
    measurably move (docs/service.md)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICE)
    except (OSError, AttributeError) as e:
        logger.debug("bulk thread keeps its priority: %s", e)
    if hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as e:
            logger.debug("bulk thread stays at nice %s: %s", BULK_NICE, e)


def _init_thread() -> None:
    nice_thread()
    name_thread(b"vadnet-bulk")


class BulkPool:
    """Up to ``workers`` low-priority threads (one per admitted Detect call)."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, "vadnet-bulk", initializer=_init_thread)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on a bulk thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
