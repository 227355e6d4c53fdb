"""Detect's bulk CPU work (decoding uploads) on threads at nice 19, beside the real-time
path: on a busy core the kernel runs them only when the event loop and the model thread
leave it time. The decoders spend their time in C with the GIL released (libsndfile via
a memfd, numpy, soxr); Python-heavy work (segmenting) stays at normal priority, since a
nice-19 thread preempted while holding the GIL would stall the event loop.

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


def _init_thread() -> None:
    """Nice 19 for this thread alone (Linux ``setpriority`` takes a thread id)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BULK_NICE)
    except (OSError, AttributeError) as e:
        logger.debug("bulk thread keeps its priority: %s", e)


class BulkPool:
    """Up to ``workers`` low-priority threads (one per admitted Detect call)."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers, "vadnet-bulk", initializer=_init_thread)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on a bulk thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
