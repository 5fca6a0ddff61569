"""The one mapping from datamill errors to gRPC statuses with google.rpc details.

`unary` and `stream` wrap servicer methods (one decorator per RPC shape), so no
method repeats try/except/abort. An unexpected exception is logged with its
traceback and becomes INTERNAL with a generic message: its text never leaves.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.core.errors import ERROR_DOMAIN, Code, DatamillError, FieldViolation, InvalidArgument, ResourceExhausted

log = structlog.get_logger(__name__)

GRPC_CODES: dict[Code, grpc.StatusCode] = {code: getattr(grpc.StatusCode, code.value) for code in Code}

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self_ = TypeVar("Self_")


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


#: Longest message, and longest ErrorInfo metadata value or field-violation description, put in a status. Errors
#: may quote what the caller sent; a 10,000-character name quoted whole made trailers larger than gRPC's 8 KiB
#: default, and the client saw RESOURCE_EXHAUSTED instead of the error.
MAX_MESSAGE_CHARS = 1024
MAX_DETAIL_CHARS = 256


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_status(exc: DatamillError) -> status_pb2.Status:
    metadata = {key: _clip(value, MAX_DETAIL_CHARS) for key, value in exc.metadata.items()}
    details = [_pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN, metadata=metadata))]
    if isinstance(exc, InvalidArgument):
        details.append(
            _pack(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field=_clip(v.field, MAX_DETAIL_CHARS), description=_clip(v.description, MAX_DETAIL_CHARS)
                        )
                        for v in exc.violations
                    ]
                )
            )
        )
    if isinstance(exc, ResourceExhausted) and exc.quota_violations:
        violations = [
            error_details_pb2.QuotaFailure.Violation(
                subject=_clip(subject, MAX_DETAIL_CHARS), description=_clip(description, MAX_DETAIL_CHARS)
            )
            for subject, description in exc.quota_violations
        ]
        details.append(_pack(error_details_pb2.QuotaFailure(violations=violations)))
    if exc.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(exc.retry_after * 1e9))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    message = _clip(exc.message, MAX_MESSAGE_CHARS)
    return status_pb2.Status(code=getattr(code_pb2, exc.code.value), message=message, details=details)


def stored_error_to_status(error: dict[str, Any]) -> status_pb2.Status:
    """A job's stored error (see store.error_json) as a google.rpc.Status."""
    code_name = str(error.get("code", "INTERNAL"))
    info = error_details_pb2.ErrorInfo(
        reason=str(error.get("reason", code_name)),
        domain=ERROR_DOMAIN,
        metadata={str(k): str(v) for k, v in (error.get("metadata") or {}).items()},
    )
    return status_pb2.Status(
        code=getattr(code_pb2, code_name, code_pb2.INTERNAL),
        message=str(error.get("message", "")),
        details=[_pack(info)],
    )


def _internal() -> status_pb2.Status:
    return status_pb2.Status(
        code=code_pb2.INTERNAL,
        message="internal error",
        details=[_pack(error_details_pb2.ErrorInfo(reason="INTERNAL", domain=ERROR_DOMAIN))],
    )


async def abort(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException) -> None:
    """End the RPC with `exc` as a google.rpc status (INTERNAL, logged with its traceback, for an unexpected one)."""
    if isinstance(exc, DatamillError):
        log.info("rpc_error", code=exc.code.value, reason=exc.reason, message=exc.message)
        status = to_status(exc)
    else:
        log.error("rpc_internal_error", exc_info=exc)
        status = _internal()
    await context.abort_with_status(rpc_status.to_status(status))


def nul_violations(message: Message, prefix: str = "") -> list[FieldViolation]:
    """A violation for each string field (nested and repeated too) holding a NUL, which PostgreSQL cannot store."""
    violations = []
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        values = value if field.is_repeated else [value]
        for index, item in enumerate(values):
            where = f"{path}[{index}]" if field.is_repeated else path
            if isinstance(item, str) and "\x00" in item:
                violations.append(FieldViolation(where, "must not contain NUL characters"))
            elif isinstance(item, Message):
                violations.extend(nul_violations(item, f"{where}."))
    return violations


def check_text(request: object) -> None:
    """InvalidArgument, before any work, if a string of the request holds a NUL character."""
    if isinstance(request, Message) and (violations := nul_violations(request)):
        raise InvalidArgument(violations)


def unary(
    method: Callable[[Self_, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]],
) -> Callable[[Self_, Req, grpc.aio.ServicerContext[Req, Resp]], Awaitable[Resp]]:
    @functools.wraps(method)
    async def wrapper(self: Self_, request: Req, context: grpc.aio.ServicerContext[Req, Resp]) -> Resp:
        try:
            check_text(request)
            return await method(self, request, context)
        except asyncio.CancelledError:
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # the single place errors become statuses
            await abort(context, exc)
            raise AssertionError("unreachable: abort raises") from exc

    return wrapper


def stream(
    method: Callable[[Self_, Req, grpc.aio.ServicerContext[Any, Resp]], AsyncIterator[Resp]],
) -> Callable[[Self_, Req, grpc.aio.ServicerContext[Any, Resp]], AsyncIterator[Resp]]:
    @functools.wraps(method)
    async def wrapper(self: Self_, request: Req, context: grpc.aio.ServicerContext[Any, Resp]) -> AsyncIterator[Resp]:
        try:
            check_text(request)
            async for item in method(self, request, context):
                yield item
        except asyncio.CancelledError:
            raise  # never swallow: grpc #43360
        except grpc.aio.AbortError:
            raise
        except Exception as exc:  # noqa: BLE001  # the single place errors become statuses
            await abort(context, exc)

    return wrapper
