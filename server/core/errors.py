"""The one error hierarchy of datamill. It imports no transport.

    DatamillError                  code          retryable
    ├── InvalidArgument            INVALID_ARGUMENT   no   (carries field violations)
    ├── NotFound                   NOT_FOUND          no
    ├── AlreadyExists              ALREADY_EXISTS     no
    ├── FailedPrecondition         FAILED_PRECONDITION no
    ├── OutOfRange                 OUT_OF_RANGE       no
    ├── PermissionDenied           PERMISSION_DENIED  no
    ├── Unauthenticated            UNAUTHENTICATED    no
    ├── DataLoss                   DATA_LOSS          no
    ├── Unimplemented              UNIMPLEMENTED      no
    ├── ResourceExhausted          RESOURCE_EXHAUSTED yes, after retry_after
    └── Unavailable                UNAVAILABLE        yes, after retry_after

`server.api.errors` maps each `Code` to a gRPC status with google.rpc details
(ErrorInfo always, BadRequest for violations, RetryInfo when retry_after is
set). Any other exception is a bug: it becomes INTERNAL and its text is logged,
never sent. Workers use `retryable` to tell transient failures from permanent ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

ERROR_DOMAIN = "datamill.dev"


class Code(StrEnum):
    """Status codes, named as in google.rpc.Code."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    DATA_LOSS = "DATA_LOSS"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One problem with one request field, named by its path (`schema.fields[2].type`)."""

    field: str
    description: str


class DatamillError(Exception):
    """Base of every error datamill raises on purpose."""

    code: Code = Code.INTERNAL
    reason: str = "INTERNAL"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason
        self.metadata: dict[str, str] = dict(metadata or {})
        self.retry_after = retry_after

    def __str__(self) -> str:
        return self.message


class InvalidArgument(DatamillError):
    code = Code.INVALID_ARGUMENT
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: Sequence[FieldViolation], message: str | None = None) -> None:
        if not violations:
            raise ValueError("InvalidArgument needs at least one violation")
        self.violations = list(violations)
        first = self.violations[0]
        more = f" (and {len(self.violations) - 1} more)" if len(self.violations) > 1 else ""
        super().__init__(message or f"invalid {first.field}: {first.description}{more}")

    @classmethod
    def single(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(DatamillError):
    code = Code.NOT_FOUND
    reason = "NOT_FOUND"

    def __init__(self, resource_type: str, name: str) -> None:
        super().__init__(
            f"{resource_type} {name!r} not found",
            metadata={"resource_type": resource_type, "resource_name": name},
        )


class AlreadyExists(DatamillError):
    code = Code.ALREADY_EXISTS
    reason = "ALREADY_EXISTS"


class FailedPrecondition(DatamillError):
    code = Code.FAILED_PRECONDITION
    reason = "FAILED_PRECONDITION"


class OutOfRange(DatamillError):
    code = Code.OUT_OF_RANGE
    reason = "OUT_OF_RANGE"


class PermissionDenied(DatamillError):
    code = Code.PERMISSION_DENIED
    reason = "PERMISSION_DENIED"


class Unauthenticated(DatamillError):
    code = Code.UNAUTHENTICATED
    reason = "UNAUTHENTICATED"


class DataLoss(DatamillError):
    code = Code.DATA_LOSS
    reason = "DATA_LOSS"


class ResourceExhausted(DatamillError):
    code = Code.RESOURCE_EXHAUSTED
    reason = "RESOURCE_EXHAUSTED"
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        quota_violations: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata, retry_after=retry_after)
        #: (subject, description) of each quota exceeded, sent as google.rpc.QuotaFailure.
        self.quota_violations = list(quota_violations)


class Unavailable(DatamillError):
    code = Code.UNAVAILABLE
    reason = "UNAVAILABLE"
    retryable = True


class Unimplemented(DatamillError):
    code = Code.UNIMPLEMENTED
    reason = "UNIMPLEMENTED"
