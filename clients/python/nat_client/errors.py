"""Errors: every gRPC status the coordinator answers becomes a `NatError` subclass per code."""

from __future__ import annotations

import re
from typing import Dict, Optional, Type

import grpc


class NatError(Exception):
    """An error answered by the coordinator (or a request this client refused to send).

    ``code`` is the gRPC status code name (``"INVALID_ARGUMENT"``, ``"NOT_FOUND"``, …) and
    ``message`` the coordinator's text.
    """

    code: str = "UNKNOWN"

    def __init__(self, message: str, *, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class InvalidArgument(NatError):
    """Bad input. ``field`` names it (e.g. ``"architectures[1]"``) when the message does."""

    code = "INVALID_ARGUMENT"

    @property
    def field(self) -> Optional[str]:
        """The offending field, parsed from the coordinator's ``invalid FIELD: reason``."""
        match = re.match(r"invalid (\S+): ", self.message)
        return match.group(1) if match else None


class NotFound(NatError):
    """Unknown id."""

    code = "NOT_FOUND"


class AlreadyExists(NatError):
    """The thing to create exists already."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(NatError):
    """Wrong state for the request (e.g. cancelling a finished job)."""

    code = "FAILED_PRECONDITION"


class Aborted(NatError):
    """A concurrent change won; retry."""

    code = "ABORTED"


class Unavailable(NatError):
    """The coordinator cannot be reached or is shutting down; retry with backoff."""

    code = "UNAVAILABLE"


class DeadlineExceeded(NatError):
    """The call ran past its timeout."""

    code = "DEADLINE_EXCEEDED"


class Unauthenticated(NatError):
    """Missing or wrong credentials."""

    code = "UNAUTHENTICATED"


class PermissionDenied(NatError):
    """The credentials do not allow this call."""

    code = "PERMISSION_DENIED"


class Unimplemented(NatError):
    """The coordinator does not offer this call or feature."""

    code = "UNIMPLEMENTED"


class ResourceExhausted(NatError):
    """A limit was hit (message size, quota)."""

    code = "RESOURCE_EXHAUSTED"


class Internal(NatError):
    """The coordinator failed (its log has the cause)."""

    code = "INTERNAL"


class Cancelled(NatError):
    """The call was cancelled (by this client)."""

    code = "CANCELLED"


_BY_CODE: Dict[grpc.StatusCode, Type[NatError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.INTERNAL: Internal,
    grpc.StatusCode.CANCELLED: Cancelled,
}


def from_rpc_error(error: grpc.RpcError) -> NatError:
    """The `NatError` for a failed call (its class chosen by the status code)."""
    status = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = error.details() if isinstance(error, grpc.Call) else None
    cls = _BY_CODE.get(status, NatError)
    return cls(details or str(error), code=status.name)
