"""The Detect RPC's work, in a child process at the lowest priority.

A Detect call decodes an upload, runs the model over the whole clip and segments it:
seconds of CPU for a long clip, much of it Python that holds the GIL. In the server's
own process that work shares one GIL with the event loop and the streams' model thread.
Run on low-priority threads, a Detect thread preempted while it held the GIL stalled the
real-time path until the kernel ran it again (a priority inversion); run at normal
priority, it took the core from the streams. Measured with ``bench/detect_priority.py``
(20 real-time streams beside 10 clients sending 590 s Detects back to back, server on one
core): the streams' p99 was 52-671 ms with Detect on threads of the server process, and
22 ms with the same Detect work in a second process at SCHED_IDLE on the same core.

So Detect runs here: one child process per server process, started on the first Detect
call (an idle server pays nothing for it: ~3 s of import and model load, then about the
model's RSS again), under SCHED_IDLE and nice 19 (``priority.nice_thread``, inherited by all
its threads), so the kernel gives it only the CPU that the real-time path leaves. Its own
GIL cannot stall the server's. The server process keeps only what is cheap: the admission
checks, handing the upload over and building the response. The upload goes over as a
memfd: one write of the whole upload with the GIL released, where streaming 11 MB through
the socket took ~170 writes, each taking the GIL back from the event loop.

The child is a fresh ``python`` that lowers its priority before it imports anything
heavy (numpy, torch: seconds of CPU that must not compete with the streams), not a
``multiprocessing`` spawn: a spawn re-imports the parent's ``__main__``, which breaks any
script that starts a server without an ``if __name__ == "__main__"`` guard. Protocol, over one socket pair
(``multiprocessing.connection.Connection`` framing):

* server -> child, once: the model's config and weights (numpy arrays), the device, the
  slice length, torch threads, the most calls at once and the longest audio accepted;
* server -> child: ``("detect", job_id)`` then a memfd holding the serialized
  DetectRequest (``SCM_RIGHTS``; the child parses it), or ``("cancel", job_id)`` (the client went away: its remaining
  slices are skipped);
* child -> server: ``(job_id, DetectResult | None, (error class name, message) | None)``.

A child that dies (killed, out of memory) fails the calls it held with UNAVAILABLE, and
the next call starts a new one: the server itself never goes down with it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.reduction import recvfds, sendfds

import numpy as np

from vadnet.model import errors as model_errors
from vadnet.model.errors import InvalidInputError, VadnetError
from vadnet.model.segmenter import Segment

from .errors import UnavailableError

logger = logging.getLogger("vadnet")

_STOP_S = 1.0  # how long stop() waits for the child to exit before killing it


@dataclass(frozen=True)
class DetectResult:
    """One clip's answer: segments at the input rate, P(speech) per frame if asked."""

    audio_s: float
    input_rate_hz: int
    frames: int
    segments: list[Segment]
    probabilities: np.ndarray | None
    model_s: float  # wall time of the model over the clip (metrics, retry hints)


class _Cancelled(Exception):
    pass


# --- the child --------------------------------------------------------------------------
# The child's command: lowest priority first (every thread it starts inherits it).
_CHILD = (
    "import sys; from vadnet.service.priority import name_thread, nice_thread; nice_thread();"
    " name_thread(b'vadnet-detect'); from vadnet.service.detect_worker import child_main;"
    " child_main(int(sys.argv[1]))"
)


def child_main(fd: int) -> None:
    """The Detect worker process's main, on the socket ``fd`` (see the module docstring)."""
    sock = socket.socket(fileno=fd)
    conn = Connection(os.dup(fd))
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    import torch

    from vadnet.model.inference import WholeInputVAD
    from vadnet.model.network import ModelConfig, VadNet

    model_cfg, state, device, chunk_s, threads, max_calls, limit_s = conn.recv()
    if threads:
        torch.set_num_threads(threads)
    model = VadNet(ModelConfig.from_dict(model_cfg))
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
    whole = WholeInputVAD(model.eval(), device=device, chunk_s=chunk_s)
    send_lock = threading.Lock()
    cancelled: set[int] = set()  # of the calls in ``running`` only: it never grows
    running: set[int] = set()
    pool = ThreadPoolExecutor(max_calls, thread_name_prefix="vadnet-detect")
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break  # the server closed the pipe, or died
        if msg[0] == "stop":
            break
        if msg[0] == "cancel":
            if msg[1] in running:  # a cancel can cross the call's answer
                cancelled.add(msg[1])
            continue
        _, job_id = msg
        running.add(job_id)
        (upload,) = recvfds(sock, 1)  # read by the call's own thread, not here
        job = functools.partial(_detect, whole, limit_s, upload, lambda j=job_id: j in cancelled)
        pool.submit(_run_job, conn, send_lock, (running, cancelled), job_id, job)
    # Whatever still runs was for calls the server has given up on: no reason to finish.
    os._exit(0)


def _run_job(conn, send_lock, sets: tuple[set[int], set[int]], job_id: int, job) -> None:
    try:
        result, error = job(), None
    except _Cancelled:
        result, error = None, ("UnavailableError", "cancelled")
    except VadnetError as e:
        result, error = None, (type(e).__name__, str(e))
    except Exception as e:  # a bug or a broken clip fails this call, not the child
        logger.exception("Detect call %s failed", job_id)
        result, error = None, ("VadnetError", f"Detect failed: {type(e).__name__}: {e}")
    for ids in sets:  # running, cancelled: discard is atomic under the GIL
        ids.discard(job_id)
    try:
        with send_lock:
            conn.send((job_id, result, error))
    except (OSError, ValueError):
        pass  # the server is gone


def _read_upload(fd: int) -> bytes:
    with open(fd, "rb") as f:  # closes the memfd
        f.seek(0)  # the server's write left the shared offset at the end
        return f.read()


def _detect(whole, limit_s: float, upload: int | bytes, is_cancelled) -> DetectResult:
    """One Detect call: parse, decode, the model, segments. ``upload``: a memfd holding
    the serialized DetectRequest (or the bytes themselves). Each copy of the upload is
    dropped as soon as the next exists: 10 calls of 590 s are in flight at once."""
    from google.protobuf.message import DecodeError

    from vadnet.model.audio import MODEL_RATE_HZ, decode_audio, load_audio_bytes
    from vadnet.model.segmenter import segment_probs
    from vadnet.v1 import vad_pb2 as pb

    from .messages import encoding_name, segmenter_options

    payload = _read_upload(upload) if isinstance(upload, int) else upload
    try:
        request = pb.DetectRequest.FromString(payload)
    except DecodeError as e:
        raise InvalidInputError(f"not a DetectRequest: {e}") from e
    del payload, upload
    options = segmenter_options(request.segmenter)  # cheap checks before the decode
    if is_cancelled():
        raise _Cancelled
    want_probabilities = request.return_probabilities
    source = request.WhichOneof("audio_source")
    if source == "file":
        data = request.file
        del request
        audio = load_audio_bytes(data, limit_s)
    elif source == "raw":
        raw = request.raw
        enc, rate, data = encoding_name(raw.encoding), int(raw.sample_rate_hz), raw.data
        del request, raw
        audio = decode_audio(data, enc, rate, limit_s)
    else:
        raise InvalidInputError("set either file (wav/flac/ogg bytes) or raw audio")
    del data
    t0 = time.perf_counter()
    parts = []
    for s in whole.plan(audio.samples.size):  # slice by slice, so a cancel stops it early
        if is_cancelled():
            raise _Cancelled
        parts.extend(whole.run([audio.samples], [s]))
    probs = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    model_s = time.perf_counter() - t0
    segments = segment_probs(
        probs,
        options,
        whole.hop / MODEL_RATE_HZ,
        audio.input_rate_hz,
        audio.num_input_samples,
    )
    return DetectResult(
        audio_s=audio.duration_s,
        input_rate_hz=audio.input_rate_hz,
        frames=int(probs.size),
        segments=segments,
        probabilities=probs if want_probabilities else None,
        model_s=model_s,
    )


# --- the server's side ----------------------------------------------------------------
def _error(name: str, message: str) -> VadnetError:
    """The child's error, as the same class where it is one of ours (one gRPC code map)."""
    if name == "UnavailableError":
        return UnavailableError(message)
    cls = getattr(model_errors, name, None)
    if isinstance(cls, type) and issubclass(cls, VadnetError):
        try:
            return cls(message)
        except TypeError:
            pass
    return VadnetError(message)


class DetectWorker:
    """The server's handle on its Detect child: ``await run(job, payload)``."""

    def __init__(
        self, model, device: str, chunk_s: float, threads: int, max_calls: int, limit_s: float
    ) -> None:
        # The child gets the weights as float32 numpy arrays: the server's model may be
        # half precision, on a GPU, or handed in by a test with no file behind it.
        self._cfg = model.cfg.to_dict()
        self._state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
        self._device, self._chunk_s = device, chunk_s
        self._threads, self._max_calls, self._limit_s = threads, max_calls, limit_s
        self._ids = itertools.count()
        self._lock = threading.Lock()  # one message (header + payload) at a time
        self._start_lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._conn = None
        self._socks: dict[Connection, socket.socket] = {}
        # job id -> (its loop, its future, the connection of the child holding it)
        self._pending: dict[
            int, tuple[asyncio.AbstractEventLoop, asyncio.Future, Connection | None]
        ] = {}
        self._model_s = 0.0  # running mean model time per call, for retry hints
        self.on_result = None  # callable(DetectResult): metrics

    def _ensure_started(self) -> Connection:
        """The running child's connection; starts one if there is none. Blocking (the
        first message waits for the child's imports): call it off the event loop."""
        with self._start_lock:
            if self._proc is not None and self._proc.poll() is None:
                return self._conn
            return self._start()

    def _start(self) -> Connection:
        ours, theirs = socket.socketpair()
        with theirs:
            proc = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                # One malloc arena per thread (glibc's default) kept ~0.5 GB more RSS
                # with 10 calls of 590 s in flight; two arenas are plenty for its threads.
                env={**os.environ, "MALLOC_ARENA_MAX": "2"},
            )
        conn = Connection(os.dup(ours.fileno()))
        self._socks[conn] = ours  # the same socket, for the memfds (SCM_RIGHTS)
        with self._lock:  # before any call's message
            conn.send((self._cfg, self._state, self._device, self._chunk_s, self._threads,
                       self._max_calls, self._limit_s))  # fmt: skip
        self._proc, self._conn = proc, conn
        threading.Thread(
            target=self._read, args=(proc, conn), name="vadnet-detect-reader", daemon=True
        ).start()
        logger.info("Detect worker process %s started", proc.pid)
        return conn

    def _submit(self, job_id: int, request: bytes) -> None:
        conn = self._ensure_started()
        entry = self._pending.get(job_id)
        if entry is None:
            return  # cancelled while the child started
        self._pending[job_id] = (*entry[:2], conn)  # lost with this child if it dies
        self._send(conn, ("detect", job_id), request)

    def _cancel(self, conn: Connection, job_id: int) -> None:
        try:
            self._send(conn, ("cancel", job_id))
        except (OSError, ValueError):
            pass  # the child is gone, and the call with it

    def _send(self, conn, header: tuple, payload: bytes | None = None) -> None:
        if payload is None:
            with self._lock:
                conn.send(header)
            return
        upload = os.memfd_create("vadnet-detect-upload", os.MFD_CLOEXEC)
        try:
            view = memoryview(payload)
            while view:  # one write, unless the kernel takes less
                view = view[os.write(upload, view) :]
            with self._lock:
                conn.send(header)
                sendfds(self._socks[conn], [upload])
        finally:
            os.close(upload)

    def _read(self, proc, conn) -> None:
        """The reader thread: answers to their callers; when the child is gone, fail the
        calls it held."""
        while True:
            try:
                job_id, result, error = conn.recv()
            except (EOFError, OSError):
                break
            self._settle(job_id, result, error)
        try:
            proc.wait(1.0)
        except subprocess.TimeoutExpired:
            pass
        conn.close()
        sock = self._socks.pop(conn, None)
        if sock is not None:
            sock.close()
        lost = [j for j, (_, _, c) in list(self._pending.items()) if c is conn]
        if lost:
            logger.error(
                "Detect worker process exited (code %s) holding %s calls", proc.poll(), len(lost)
            )
        for job_id in lost:
            self._settle(
                job_id, None, ("UnavailableError", "the Detect worker process exited: retry")
            )

    def _settle(self, job_id: int, result, error) -> None:
        entry = self._pending.pop(job_id, None)
        if entry is None:
            return  # the caller gave up
        loop, fut, _ = entry

        def settle() -> None:
            if fut.done():
                return
            if error is not None:
                fut.set_exception(_error(*error))
            else:
                fut.set_result(result)

        loop.call_soon_threadsafe(settle)

    async def run(self, request: bytes) -> DetectResult:
        """Run one Detect call (a serialized DetectRequest) in the child. Cancelling the
        await cancels it there too."""
        loop = asyncio.get_running_loop()
        job_id = next(self._ids)
        fut = loop.create_future()
        self._pending[job_id] = (loop, fut, None)
        try:
            try:
                await asyncio.to_thread(self._submit, job_id, request)
            except (OSError, ValueError) as e:  # the pipe broke while sending
                self._pending.pop(job_id, None)
                raise UnavailableError("the Detect worker process is gone: retry") from e
            result = await fut
        except asyncio.CancelledError:
            entry = self._pending.pop(job_id, None)
            if entry is not None and entry[2] is not None:  # off the loop: the send may wait
                loop.run_in_executor(None, self._cancel, entry[2], job_id)
            raise
        m = self._model_s
        self._model_s = result.model_s if m == 0 else 0.8 * m + 0.2 * result.model_s
        if self.on_result is not None:
            self.on_result(result)
        return result

    def backlog_s(self) -> float:
        """Model time the calls in the child still need, at the mean so far (the retry
        hint of a refused Detect call)."""
        return len(self._pending) * self._model_s

    @property
    def pid(self) -> int | None:
        """The child's pid while it runs (tests, benches)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def stop(self) -> None:
        """Ask the child to exit; kill it if it has not within a few seconds."""
        proc, conn = self._proc, self._conn
        self._proc = None
        if proc is None:
            return
        try:
            self._send(conn, ("stop",))
        except (OSError, ValueError):
            pass
        try:
            proc.wait(_STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(1.0)
