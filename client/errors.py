"""Typed errors raised by the datamill client.

Every failed RPC becomes one of these, built from the gRPC status and its
``google.rpc`` details, so callers catch a class instead of comparing codes::

    DatamillError                  grpc.StatusCode        details read
    ├── InvalidArgumentError       INVALID_ARGUMENT       BadRequest -> field_violations
    ├── NotFoundError              NOT_FOUND
    ├── AlreadyExistsError         ALREADY_EXISTS
    ├── FailedPreconditionError    FAILED_PRECONDITION
    ├── OutOfRangeError            OUT_OF_RANGE
    ├── PermissionDeniedError      PERMISSION_DENIED
    ├── UnauthenticatedError       UNAUTHENTICATED
    ├── ResourceExhaustedError     RESOURCE_EXHAUSTED     RetryInfo -> retry_delay
    ├── UnavailableError           UNAVAILABLE            RetryInfo -> retry_delay
    ├── DataLossError              DATA_LOSS
    ├── DeadlineExceededError      DEADLINE_EXCEEDED
    ├── CallCancelledError         CANCELLED
    ├── AbortedError               ABORTED
    ├── UnimplementedError         UNIMPLEMENTED
    ├── UnknownError               UNKNOWN
    └── InternalError              INTERNAL

Every error also carries ``reason``, ``domain`` and ``metadata`` from the
``ErrorInfo`` detail (domain ``"datamill.dev"``) when the server sent one.
``_ERROR_CLASSES`` is the one table from code to class.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2

__all__ = [
    "AbortedError",
    "AlreadyExistsError",
    "CallCancelledError",
    "DataLossError",
    "DatamillError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "FieldViolation",
    "InternalError",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UnimplementedError",
    "UnknownError",
    "error_class",
    "from_rpc_error",
    "from_status",
]

ERROR_DOMAIN = "datamill.dev"
# The trailing-metadata key under which grpc-status carries a serialized google.rpc.Status.
_STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One problem with one request field, named by its path, e.g. ``schema.fields[2].type``."""

    field: str
    description: str


class DatamillError(Exception):
    """Base of every error the client raises for a failed call.

    Attributes:
        code: The gRPC status code.
        message: The status message from the server.
        reason: ``ErrorInfo.reason`` (machine-readable, e.g. ``"DATASET_EXISTS"``); empty if absent.
        domain: ``ErrorInfo.domain``; ``"datamill.dev"`` for the server's own errors.
        metadata: ``ErrorInfo.metadata``.
        field_violations: ``BadRequest.field_violations``; empty unless the input was invalid.
        retry_delay: Seconds from ``RetryInfo.retry_delay``, or None when the server sent none.
        status: The full ``google.rpc.Status`` when the server sent one, else None.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Sequence[FieldViolation] = (),
        retry_delay: float | None = None,
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: list[FieldViolation] = list(field_violations)
        self.retry_delay = retry_delay
        self.status = status

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, reason={self.reason!r})"


class InvalidArgumentError(DatamillError):
    """The request is invalid; ``field_violations`` says which fields and why."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFoundError(DatamillError):
    """The job, dataset or object does not exist (or belongs to another tenant)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(DatamillError):
    """The name is taken, or a request_id was reused for a different request."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPreconditionError(DatamillError):
    """The system is not in a state that allows the call (e.g. dataset not ready)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class OutOfRangeError(DatamillError):
    """An offset or size is outside what the server holds."""

    code = grpc.StatusCode.OUT_OF_RANGE


class PermissionDeniedError(DatamillError):
    """The caller may not do this."""

    code = grpc.StatusCode.PERMISSION_DENIED


class UnauthenticatedError(DatamillError):
    """Credentials are missing or invalid."""

    code = grpc.StatusCode.UNAUTHENTICATED


class ResourceExhaustedError(DatamillError):
    """A quota or limit was hit; ``retry_delay`` says when to try again, if known."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(DatamillError):
    """The server cannot be reached or is shutting down; safe to retry idempotent calls."""

    code = grpc.StatusCode.UNAVAILABLE


class DataLossError(DatamillError):
    """Data was lost or corrupted, e.g. a checksum mismatch."""

    code = grpc.StatusCode.DATA_LOSS


class DeadlineExceededError(DatamillError):
    """The call's deadline passed before it finished."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class CallCancelledError(DatamillError):
    """The call was cancelled (named so as not to clash with ``asyncio.CancelledError``)."""

    code = grpc.StatusCode.CANCELLED


class AbortedError(DatamillError):
    """The operation was aborted, typically by a concurrency conflict."""

    code = grpc.StatusCode.ABORTED


class UnimplementedError(DatamillError):
    """The server does not implement this RPC."""

    code = grpc.StatusCode.UNIMPLEMENTED


class UnknownError(DatamillError):
    """The server reported an unknown error."""

    code = grpc.StatusCode.UNKNOWN


class InternalError(DatamillError):
    """A bug on the server; its details are in the server's log, not here."""

    code = grpc.StatusCode.INTERNAL


_ERROR_CLASSES: dict[grpc.StatusCode, type[DatamillError]] = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        AlreadyExistsError,
        FailedPreconditionError,
        OutOfRangeError,
        PermissionDeniedError,
        UnauthenticatedError,
        ResourceExhaustedError,
        UnavailableError,
        DataLossError,
        DeadlineExceededError,
        CallCancelledError,
        AbortedError,
        UnimplementedError,
        UnknownError,
        InternalError,
    )
}

# google.rpc.Code numbers are the same as grpc.StatusCode's first value element.
_CODES_BY_NUMBER: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def error_class(code: grpc.StatusCode) -> type[DatamillError]:
    """Return the exception class for a gRPC status code (DatamillError for OK)."""
    return _ERROR_CLASSES.get(code, DatamillError)


def from_status(status: status_pb2.Status) -> DatamillError:
    """Build the typed error for a ``google.rpc.Status`` (e.g. ``Job.error``, ``WatchEnded.status``)."""
    code = _CODES_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    return _build(code, status.message, status)


def from_rpc_error(error: grpc.RpcError) -> DatamillError:
    """Build the typed error for a failed call, sync (``grpc.RpcError``) or async (``AioRpcError``).

    Both kinds expose ``code()``, ``details()`` and ``trailing_metadata()``
    synchronously once the call has failed, so one function serves both; it
    reads ``grpc-status-details-bin`` itself rather than through
    ``grpc_status.rpc_status.from_call``, which raises when the rich status
    and the plain one disagree instead of reporting the error.
    """
    code = _call_value(error, "code")
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    details = _call_value(error, "details")
    message = details if isinstance(details, str) else ""
    return _build(code, message, _rich_status(_call_value(error, "trailing_metadata")))


def _call_value(error: grpc.RpcError, name: str) -> object:
    # A bare grpc.RpcError (e.g. raised by an interceptor) need not be a grpc.Call.
    method = getattr(error, name, None)
    return method() if callable(method) else None


def _rich_status(trailing_metadata: object) -> status_pb2.Status | None:
    if not isinstance(trailing_metadata, Iterable):
        return None
    for item in trailing_metadata:
        key, value = item
        if key == _STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:
                # A malformed detail must not hide the error the call did report.
                return None
    return None


def _build(code: grpc.StatusCode, message: str, status: status_pb2.Status | None) -> DatamillError:
    reason = ""
    domain = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    retry_delay: float | None = None
    for detail in status.details if status is not None else ():
        # Any.Unpack returns False when the detail is of another type.
        info = error_details_pb2.ErrorInfo()
        bad_request = error_details_pb2.BadRequest()
        retry_info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Unpack(bad_request):
            violations.extend(FieldViolation(v.field, v.description) for v in bad_request.field_violations)
        elif detail.Unpack(retry_info):
            retry_delay = retry_info.retry_delay.ToTimedelta().total_seconds()
    return error_class(code)(
        message,
        code=code,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=violations,
        retry_delay=retry_delay,
        status=status,
    )
