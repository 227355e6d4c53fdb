"""Bearer-token check on the ``authorization`` metadata, as a server interceptor.

Health checks stay open: probes (kubelet, load balancers) carry no token. So does
reflection: it tells only the schema, which is public (protos/), and grpcurl needs it to
reach health without a local copy of the .proto.

The token file holds one token per line, any of which is accepted, and is re-read when it
changes (checked at most once a second), so a token is rotated without a restart: add the
new line, move the clients over, delete the old line.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from vadnet.model.errors import InvalidInputError

logger = logging.getLogger("vadnet")

OPEN_SERVICES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
_RECHECK_S = 1.0  # how often the token file's mtime is looked at


def read_tokens(path: str | Path) -> list[str]:
    """The tokens in ``path``, one per non-empty line; refuses a file with none."""
    try:
        tokens = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as e:
        raise InvalidInputError(f"cannot read --auth-token-file {path}: {e}") from e
    if not tokens:
        raise InvalidInputError(f"--auth-token-file {path} is empty: put the token in it")
    return tokens


def read_token(path: str | Path) -> str:
    """The first token in ``path``."""
    return read_tokens(path)[0]


class TokenFile:
    """The accepted ``Bearer`` values of a token file, re-read when its mtime changes. A
    file that turns unreadable or empty keeps the last good tokens (and says so)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._mtime = self._stat()
        self.values = self._load(read_tokens(self.path))
        self._checked = time.monotonic()

    @staticmethod
    def _load(tokens: list[str]) -> list[bytes]:
        return [f"Bearer {t}".encode() for t in tokens]

    def _stat(self) -> float | None:
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return None

    def current(self) -> list[bytes]:
        now = time.monotonic()
        if now - self._checked >= _RECHECK_S:
            self._checked = now
            mtime = self._stat()
            if mtime != self._mtime:
                self._mtime = mtime
                try:
                    self.values = self._load(read_tokens(self.path))
                    logger.info("token file %s re-read: %s token(s)", self.path, len(self.values))
                except InvalidInputError as e:
                    logger.warning("keeping the previous tokens: %s", e)
        return self.values


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` with UNAUTHENTICATED."""

    def __init__(self, token: str | TokenFile, on_reject: Callable[[], None] | None = None) -> None:
        """``token``: one fixed token, or a :class:`TokenFile` (re-read on change)."""
        self._tokens = token if isinstance(token, TokenFile) else None
        self._fixed = [f"Bearer {token}".encode()] if isinstance(token, str) else []
        self._on_reject = on_reject

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if details.method.startswith(OPEN_SERVICES):
            return await continuation(details)
        got = b""
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                got = value.encode() if isinstance(value, str) else value
                break
        # Constant-time compares: the time taken says nothing about a token.
        expected = self._tokens.current() if self._tokens is not None else self._fixed
        if sum(hmac.compare_digest(got, e) for e in expected):
            return await continuation(details)
        if self._on_reject is not None:
            self._on_reject()
        handler = await continuation(details)
        return _rejecting(handler, "missing or wrong bearer token in 'authorization' metadata")


def _rejecting(handler: grpc.RpcMethodHandler | None, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that aborts with UNAUTHENTICATED."""

    async def unary(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(request: object, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler is None:
        return grpc.unary_unary_rpc_method_handler(unary)
    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    fn = streaming if handler.response_streaming else unary
    return make(
        fn,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
