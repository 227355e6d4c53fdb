"""Thread and process priorities: names the OS can see, and the lowest priority.

The Detect worker process (service/detect_worker.py) puts itself at the lowest priority
with :func:`nice_thread` before it starts any thread, so all of its threads inherit it;
the streams' model thread names itself with :func:`name_thread`.
"""

from __future__ import annotations

import logging
import os
import threading

logger = logging.getLogger("vadnet")

LOWEST_NICE = 19  # the kernel's lowest priority short of SCHED_IDLE


def name_thread(name: bytes) -> None:
    """Name this thread for the OS too, so ``top -H`` and bench/server_cost.py can tell
    its CPU apart (Python's thread names stay inside Python)."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name)  # PR_SET_NAME; Linux only
    except (OSError, AttributeError):
        pass


def nice_thread() -> None:
    """This thread (Linux takes a thread id), and the threads it starts from now on, at
    the lowest priority: SCHED_IDLE where allowed, on top of nice 19. A woken thread of
    the server preempts a SCHED_IDLE one at once, where a nice-19 one may first run out
    its slice. Only for a process of its own (the Detect worker): a low-priority thread
    that shares the server's GIL stalls it when preempted while holding it."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOWEST_NICE)
    except (OSError, AttributeError) as e:
        logger.debug("thread keeps its priority: %s", e)
    if hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        except OSError as e:
            logger.debug("thread stays at nice %s: %s", LOWEST_NICE, e)
