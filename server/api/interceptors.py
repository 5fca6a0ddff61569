"""Server interceptors: bind method and request_id to the log context, log each RPC once and count it."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog

from server.core import metrics, tracing

log = structlog.get_logger(__name__)

REQUEST_ID_KEY = "x-request-id"
#: Methods every interceptor lets through untouched: health (for probes) and reflection.
OPEN_PREFIXES = ("/grpc.health", "/grpc.reflection")


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            return value[:128]
    return uuid.uuid4().hex


def status_name(context: grpc.aio.ServicerContext[Any, Any], *, failed: bool = False) -> str:
    """The status code the RPC ended with; with none set, OK (or UNKNOWN if the handler raised)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN" if failed else "OK"


def _finished(name: str, context: grpc.aio.ServicerContext[Any, Any], start: float, streams: Any) -> None:
    seconds = time.perf_counter() - start
    code = status_name(context)
    log.info("rpc", code=code, ms=round(seconds * 1000, 2))
    metrics.GRPC_REQUESTS.labels(name, code).inc()
    metrics.GRPC_SECONDS.labels(name).observe(seconds)
    if streams is not None:
        streams.dec()


class LoggingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each handler so that the bound context lives in the RPC's own task."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        if method.startswith(OPEN_PREFIXES):
            return handler
        name = method.rsplit("/", 1)[-1]
        streaming = bool(getattr(handler, "request_streaming", False))

        def unary_wrapper(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                start = time.perf_counter()
                streams = metrics.OPEN_STREAMS.labels(name) if streaming else None
                if streams is not None:
                    streams.inc()
                with structlog.contextvars.bound_contextvars(method=method, request_id=_request_id(context)):
                    try:
                        return await behavior(request, context)
                    finally:
                        _finished(name, context, start, streams)

            return wrapped

        def stream_wrapper(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                start = time.perf_counter()
                streams = metrics.OPEN_STREAMS.labels(name)
                streams.inc()
                with structlog.contextvars.bound_contextvars(method=method, request_id=_request_id(context)):
                    try:
                        async for item in behavior(request, context):
                            yield item
                    finally:
                        _finished(name, context, start, streams)

            return wrapped

        return with_behaviors(handler, unary_wrapper, stream_wrapper)


def with_behaviors(
    handler: grpc.RpcMethodHandler[Any, Any],
    unary: Callable[[Callable[..., Any]], Callable[..., Awaitable[Any]]],
    stream: Callable[[Callable[..., Any]], Callable[..., AsyncIterator[Any]]],
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same handler with its behavior replaced: `unary` wraps unary-response
    behaviors, `stream` wraps streaming-response ones. Serializers are kept."""
    h: Any = handler
    args = (h.request_deserializer, h.response_serializer)
    if h.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary(h.unary_unary), *args)
    if h.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary(h.stream_unary), *args)
    if h.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream(h.unary_stream), *args)
    return grpc.stream_stream_rpc_method_handler(stream(h.stream_stream), *args)


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """A span per RPC, continuing the caller's `traceparent` (installed only when DATAMILL_TRACING is on)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        name = method.lstrip("/")
        attributes = {"rpc.system": "grpc", "rpc.method": method.rsplit("/", 1)[-1]}

        def carrier(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
            return {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}

        def unary_wrapper(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                with tracing.span(name, carrier(context), **attributes) as span:
                    try:
                        return await behavior(request, context)
                    finally:
                        span.set_attribute("rpc.grpc.status_code", status_name(context))

            return wrapped

        def stream_wrapper(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                with tracing.span(name, carrier(context), **attributes) as span:
                    try:
                        async for item in behavior(request, context):
                            yield item
                    finally:
                        span.set_attribute("rpc.grpc.status_code", status_name(context))

            return wrapped

        return with_behaviors(handler, unary_wrapper, stream_wrapper)
