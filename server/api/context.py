"""Who is calling: the tenant every query of an RPC is scoped by comes from here, and only from here.

The authentication interceptor (server/api/auth.py) binds the caller's principal
for the RPC's task; with authentication off it is the single tenant `default`.
"""

from __future__ import annotations

from typing import Any

import grpc

from server.api.auth import current_principal
from server.core.auth import DEV_PRINCIPAL, Principal

DEFAULT_TENANT = DEV_PRINCIPAL.tenant


def principal_of(context: grpc.aio.ServicerContext[Any, Any]) -> Principal:
    del context  # the principal is bound for the RPC's task, not stored on its context
    return current_principal()


def tenant_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    return principal_of(context).tenant
