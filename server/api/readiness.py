"""A gate that answers UNAVAILABLE (with RetryInfo) until the server's start-up work is done.

The server listens at once, so that Kubernetes and compose see the health
service (NOT_SERVING) while PostgreSQL or Redis are still coming up; this gate
keeps every other RPC from touching a database that is not migrated yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc_status import rpc_status

from server.api.errors import to_status
from server.api.interceptors import OPEN_PREFIXES, with_behaviors
from server.core.errors import Unavailable


class ReadinessGate(grpc.aio.ServerInterceptor):
    def __init__(self, ready: asyncio.Event) -> None:
        self._ready = ready

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or self._ready.is_set() or handler_call_details.method.startswith(OPEN_PREFIXES):
            return handler
        status = rpc_status.to_status(
            to_status(Unavailable("the server is starting", reason="STARTING", retry_after=1.0))
        )

        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort_with_status(status)

        async def refuse_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            await context.abort_with_status(status)
            yield  # pragma: no cover  # makes this an async generator

        return with_behaviors(handler, lambda _: refuse, lambda _: refuse_stream)
