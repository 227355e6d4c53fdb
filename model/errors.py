"""The one exception hierarchy of vadnet.

Every error a user can cause derives from :class:`VadnetError`. Each subclass names the
gRPC status it maps to, so the service maps errors to codes in one place
(``vadnet.service.errors``) and the CLI prints ``str(err)`` as its one error line.
"""

from __future__ import annotations


class VadnetError(Exception):
    """Base class of all errors vadnet raises on purpose."""

    #: Name of the grpc.StatusCode this error maps to.
    grpc_code = "INTERNAL"


class InvalidInputError(VadnetError, ValueError):
    """Bad audio, bad options or bad requests: the caller must change what it sends."""

    grpc_code = "INVALID_ARGUMENT"


class UnauthenticatedError(VadnetError):
    """A missing or wrong bearer token."""

    grpc_code = "UNAUTHENTICATED"


class ResourceExhaustedError(VadnetError):
    """A limit was reached: too many streams, too much audio, a stream too long."""

    grpc_code = "RESOURCE_EXHAUSTED"


class ModelError(VadnetError):
    """A checkpoint that cannot be loaded or does not match the code."""

    grpc_code = "FAILED_PRECONDITION"
