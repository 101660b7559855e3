"""Exceptions: one class per gRPC status a caller handles, all under `EmberError`."""
from __future__ import annotations

import grpc


class EmberError(Exception):
    """A call failed on the server or in transport. `code` is the grpc.StatusCode name
    (e.g. "NOT_FOUND"), `message` the server's text."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class InvalidArgument(EmberError):
    """The request was malformed; the message names the field."""


class NotFound(EmberError):
    """A collection, version, alias or monitor does not exist."""


class AlreadyExists(EmberError):
    """The name is taken."""


class FailedPrecondition(EmberError):
    """The request is valid but the state does not allow it (e.g. dropping an aliased version)."""


class ResourceExhausted(EmberError):
    """A limit was hit (message size, concurrent evaluations, disk); retry later or smaller."""


class Unauthenticated(EmberError):
    """No API key, or an unknown one."""


class PermissionDenied(EmberError):
    """The key's role or collections do not allow this call."""


class DeadlineExceeded(EmberError):
    """The call did not finish within its timeout."""


class Unavailable(EmberError):
    """The server cannot be reached (or is shutting down); safe to retry idempotent calls."""


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def from_rpc_error(e: grpc.RpcError) -> EmberError:
    """The EmberError subclass for a grpc (or grpc.aio) error; other codes give a plain EmberError."""
    code = e.code() if callable(getattr(e, "code", None)) else grpc.StatusCode.UNKNOWN
    details = e.details() if callable(getattr(e, "details", None)) else str(e)
    cls = _BY_CODE.get(code, EmberError)
    return cls(code.name, details or "")
