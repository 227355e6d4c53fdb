"""Bearer-token check on the ``authorization`` metadata, as a server interceptor.

Health checks stay open: probes (kubelet, load balancers) carry no token.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from vadnet.model.errors import InvalidInputError

logger = logging.getLogger("vadnet")

OPEN_SERVICES = ("/grpc.health.v1.Health/",)


def read_token(path: str | Path) -> str:
    """The token in ``path`` (surrounding whitespace stripped); refuses an empty file."""
    try:
        token = Path(path).read_text().strip()
    except OSError as e:
        raise InvalidInputError(f"cannot read --auth-token-file {path}: {e}") from e
    if not token:
        raise InvalidInputError(f"--auth-token-file {path} is empty: put the token in it")
    return token


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls without ``authorization: Bearer <token>`` with UNAUTHENTICATED."""

    def __init__(self, token: str, on_reject: Callable[[], None] | None = None) -> None:
        self._expected = f"Bearer {token}".encode()
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
        # Constant-time compare: the time taken says nothing about the token.
        if hmac.compare_digest(got, self._expected):
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
