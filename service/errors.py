"""The ONE place that maps vadnet errors to gRPC status codes.

Each :class:`VadnetError` names its code in ``grpc_code``; handlers raise them and
:func:`abort` turns one into a status with the error's message. Anything else is a bug:
it is logged with its traceback and the client gets INTERNAL, never UNKNOWN.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from vadnet.model.errors import ResourceExhaustedError, VadnetError

logger = logging.getLogger("vadnet")


class StreamTimeoutError(VadnetError):
    """A stream sent nothing for longer than the idle timeout."""

    grpc_code = "DEADLINE_EXCEEDED"


class UnavailableError(VadnetError):
    """The server is draining or not ready: retry on another replica."""

    grpc_code = "UNAVAILABLE"


class OverloadedError(ResourceExhaustedError):
    """The server is full: retry after ``retry_after_ms`` (sent as trailing metadata)."""

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = int(retry_after_ms)


# Trailing-metadata keys of the retry hint: gRPC's own (honoured by a client's retry
# policy) and a plain one for clients that read metadata themselves.
RETRY_PUSHBACK_KEY = "grpc-retry-pushback-ms"
RETRY_AFTER_KEY = "retry-after-ms"


def retry_metadata(err: BaseException) -> tuple[tuple[str, str], ...]:
    """The retry hint of ``err`` as trailing metadata (empty when it has none)."""
    ms = getattr(err, "retry_after_ms", None)
    if ms is None:
        return ()
    return ((RETRY_PUSHBACK_KEY, str(ms)), (RETRY_AFTER_KEY, str(ms)))


def status_code(err: BaseException) -> grpc.StatusCode:
    """The status code for ``err``: its ``grpc_code``, or INTERNAL for anything else."""
    if isinstance(err, VadnetError):
        return getattr(grpc.StatusCode, err.grpc_code, grpc.StatusCode.INTERNAL)
    return grpc.StatusCode.INTERNAL


def status_message(err: BaseException) -> str:
    """What the client reads: our own message, or a generic one that leaks no internals."""
    if isinstance(err, VadnetError):
        return str(err)
    return "internal error; the server log has the details"


async def abort(context: grpc.aio.ServicerContext, err: BaseException) -> NoReturn:
    """End the RPC with the status of ``err`` (logs a traceback when it is a bug)."""
    if not isinstance(err, VadnetError):
        logger.error("unexpected error in %s", type(err).__name__, exc_info=err)
    await context.abort(status_code(err), status_message(err), retry_metadata(err))
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover
