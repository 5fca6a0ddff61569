"""The authentication interceptor: each RPC's caller, its role check and its audit event.

Every RPC of datamill's services needs a bearer JWT (see server/core/auth.py)
unless authentication is off; the health service and reflection are open. The
principal is bound for the RPC's task (`current_principal`), so `tenant_of`
scopes every query by the token's tenant, and `row_tenant` scopes its connections for PostgreSQL's
row-level security (server/core/tenancy.py). The role an RPC needs is in
`REQUIRED_ROLES`; a method missing there is refused, so that a new RPC cannot be
left open by accident.

Then the tenant's rate limit for the method's class (read or write) is taken
(server/core/ratelimit.py). Audit: every mutating RPC and every refused call logs one `audit` event with
tenant, principal, method and outcome (the status code). Tokens are never logged.
"""

from __future__ import annotations

import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import structlog

from server.api.errors import abort
from server.api.interceptors import OPEN_PREFIXES, status_name, with_behaviors
from server.core.apikeys import ApiKeyVerifier, looks_like_api_key
from server.core.auth import (
    DEV_PRINCIPAL,
    UNAUTHENTICATED_MESSAGE,
    AuthError,
    Principal,
    Role,
    TokenVerifier,
    bearer_token,
)
from server.core.errors import DatamillError, PermissionDenied, ResourceExhausted, Unauthenticated
from server.core.ratelimit import RateLimiter
from server.core.tenancy import row_tenant

log = structlog.get_logger(__name__)

_JOBS = "/datamill.v1.JobService/"
_DATASETS = "/datamill.v1.DatasetService/"

#: The least role each RPC needs, and whether it changes anything (audited).
REQUIRED_ROLES: dict[str, tuple[Role, bool]] = {
    _JOBS + "Generate": (Role.EDITOR, True),
    _JOBS + "Upload": (Role.EDITOR, True),
    _JOBS + "Export": (Role.EDITOR, True),
    _JOBS + "CancelJob": (Role.EDITOR, True),
    _JOBS + "WatchJob": (Role.VIEWER, False),
    _JOBS + "GetJob": (Role.VIEWER, False),
    _JOBS + "ListJobs": (Role.VIEWER, False),
    _DATASETS + "DeleteDataset": (Role.ADMIN, True),
    _DATASETS + "GetDataset": (Role.VIEWER, False),
    _DATASETS + "ListDatasets": (Role.VIEWER, False),
    _DATASETS + "ReadObject": (Role.VIEWER, False),
}

_principal: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("datamill_principal", default=None)


def current_principal() -> Principal:
    """The caller of the RPC running in this task; Unauthenticated outside an authenticated RPC (fail closed)."""
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated(UNAUTHENTICATED_MESSAGE, reason="UNAUTHENTICATED")
    return principal


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates each call by JWT or API key (or, when not `enabled`, makes every caller DEV_PRINCIPAL) and
    checks its role."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        tokens: TokenVerifier | None = None,
        keys: ApiKeyVerifier | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._enabled, self._tokens, self._keys, self._limiter = enabled, tokens, keys, limiter

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        required, mutating = REQUIRED_ROLES.get(method, (None, True))

        async def admit(
            context: grpc.aio.ServicerContext[Any, Any],
        ) -> tuple[Principal | None, DatamillError | None]:
            try:
                principal = await self._authenticate(context)
            except DatamillError as exc:
                return None, exc
            if required is None:
                return principal, PermissionDenied("this method is not open to callers", reason="METHOD_NOT_ALLOWED")
            try:
                principal.require(required, method.rsplit("/", 1)[-1])
                if self._limiter is not None:
                    await self._limiter.take(principal.tenant, "write" if mutating else "read")
            except (PermissionDenied, ResourceExhausted) as exc:
                return principal, exc
            return principal, None

        def audit(principal: Principal | None, context: grpc.aio.ServicerContext[Any, Any], code: str) -> None:
            if mutating or code in ("UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED"):
                log.info(
                    "audit",
                    method=method,
                    tenant=principal.tenant if principal else None,
                    principal=principal.subject if principal else None,
                    role=principal.role.label if principal else None,
                    outcome=code,
                    peer=context.peer(),
                )

        def unary(behavior: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                principal, refusal = await admit(context)
                if refusal is not None:
                    audit(principal, context, refusal.code.value)
                    await abort(context, refusal)
                assert principal is not None  # abort raised otherwise
                token, scope = _principal.set(principal), row_tenant.set(principal.tenant)
                try:
                    result = await behavior(request, context)
                except BaseException:
                    audit(principal, context, status_name(context, failed=True))
                    raise
                else:
                    audit(principal, context, status_name(context))
                    return result
                finally:
                    _principal.reset(token)
                    row_tenant.reset(scope)

            return wrapped

        def stream(behavior: Callable[..., AsyncIterator[Any]]) -> Callable[..., AsyncIterator[Any]]:
            async def wrapped(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                principal, refusal = await admit(context)
                if refusal is not None:
                    audit(principal, context, refusal.code.value)
                    await abort(context, refusal)
                assert principal is not None  # abort raised otherwise
                token, scope = _principal.set(principal), row_tenant.set(principal.tenant)
                code = "OK"
                try:
                    async for item in behavior(request, context):
                        yield item
                except BaseException:
                    code = status_name(context, failed=True)
                    raise
                finally:
                    _principal.reset(token)
                    row_tenant.reset(scope)
                    audit(principal, context, code if code != "OK" else status_name(context))

            return wrapped

        return with_behaviors(handler, unary, stream)

    async def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
        if not self._enabled:
            return DEV_PRINCIPAL
        token = bearer_token(context.invocation_metadata())
        try:
            if looks_like_api_key(token):
                if self._keys is None:
                    raise AuthError("API keys are not accepted here")
                return await self._keys.verify(token)
            if self._tokens is None:
                raise AuthError("no JWT key is configured")
            return self._tokens.verify(token)
        except AuthError as exc:
            log.info("auth_refused", why=str(exc), peer=context.peer())
            raise Unauthenticated(UNAUTHENTICATED_MESSAGE, reason="UNAUTHENTICATED") from None
