"""The tenant whose rows this task may touch, for PostgreSQL row-level security.

The authentication interceptor binds `row_tenant` for each RPC. Every pooled
connection taken inside it (`JobStore.connect`) first runs
`set_config('datamill.tenant', <tenant>, true)`, and migration 0007's policies
then hide and refuse any row of another tenant, even to a query that forgot its
`tenant = %(tenant)s`. Workers, the sweeper and operator commands run with it
unset: they act for every tenant.
"""

from __future__ import annotations

import contextvars

row_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("datamill_row_tenant", default=None)
