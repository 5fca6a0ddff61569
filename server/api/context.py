"""Who is calling. Authentication arrives with the security work (issue 7); until
then every caller belongs to the single tenant `default`, and every query is
already scoped by tenant so that isolation only needs this function to change."""

from __future__ import annotations

from typing import Any

import grpc

DEFAULT_TENANT = "default"


def tenant_of(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    del context
    return DEFAULT_TENANT
