"""Per-tenant quotas: concurrent jobs, rows per Generate, bytes per Upload and datasets.

Each limit is the tenant's own (table `tenant_quotas`, set by `datamill quotas set`) or else the server's default
(DATAMILL_QUOTA_*); 0 means unlimited. A job is admitted in the transaction that inserts it (`admit`), after the
insert and under a per-tenant advisory lock: the counts then include every committed job plus this one, so two
concurrent submissions cannot both take the last place, and a repeated request_id (no insert) is never refused.
Upload bytes are checked against the declared size at open and against the bytes received on every chunk.

Only `concurrent_jobs` is worth retrying: the others stay exceeded until an operator or a deletion changes them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from psycopg import sql
from psycopg.rows import dict_row

from server.core.auth import TENANT_PATTERN
from server.core.errors import ResourceExhausted
from server.core.models import JobKind
from server.core.sql import query

if TYPE_CHECKING:
    import psycopg

    from server.core.models import NewDataset, NewJob
    from server.core.settings import Settings

#: How long a caller refused for concurrent jobs should wait before trying again.
CONCURRENT_RETRY_SECONDS = 1.0


def _q(name: str) -> sql.SQL:
    return query(name, "quotas.sql")


@dataclass(frozen=True, slots=True)
class Quotas:
    """One tenant's limits; 0 is unlimited."""

    concurrent_jobs: int = 0
    generate_rows: int = 0
    upload_bytes: int = 0
    datasets: int = 0

    @classmethod
    def defaults(cls, settings: Settings) -> Quotas:
        return cls(
            concurrent_jobs=settings.quota_concurrent_jobs,
            generate_rows=settings.quota_generate_rows,
            upload_bytes=settings.quota_upload_bytes,
            datasets=settings.quota_datasets,
        )

    def overridden(self, row: dict[str, Any] | None) -> Quotas:
        """These defaults with the tenant's own non-NULL values."""
        if row is None:
            return self
        return replace(self, **{k: v for k, v in row.items() if k in QUOTA_NAMES and v is not None})


QUOTA_NAMES = tuple(f.name for f in fields(Quotas))


class QuotaExceeded(ResourceExhausted):
    reason = "QUOTA_EXCEEDED"

    def __init__(self, tenant: str, quota: str, limit: int, requested: int) -> None:
        message = f"tenant {tenant!r} is over its {quota} quota: {requested} > {limit}"
        super().__init__(
            message,
            metadata={"tenant": tenant, "quota": quota, "limit": str(limit), "requested": str(requested)},
            retry_after=CONCURRENT_RETRY_SECONDS if quota == "concurrent_jobs" else None,
            quota_violations=[(f"tenant:{tenant}/{quota}", f"at most {limit}")],
        )
        self.retryable = quota == "concurrent_jobs"


def check(tenant: str, quota: str, limit: int, requested: int) -> None:
    """Raise QuotaExceeded when `requested` is over a set (non-zero) `limit`."""
    if limit and requested > limit:
        raise QuotaExceeded(tenant, quota, limit, requested)


async def quotas_for(conn: psycopg.AsyncConnection[Any], tenant: str, defaults: Quotas) -> Quotas:
    cur = await conn.execute(_q("tenant_quotas"), {"tenant": tenant})
    return defaults.overridden(await cur.fetchone())


async def send_admission(
    conn: psycopg.AsyncConnection[Any], new: NewJob, dataset: NewDataset | None, defaults: Quotas
) -> Admission:
    """Send the tenant's lock and its counts after the job's insert, in the caller's pipeline; `admit` reads them."""
    lock = await conn.execute(_q("lock_tenant_quotas"), {"tenant": new.tenant})
    usage = await _send_count(conn, new.tenant, defaults, dataset=dataset is not None)
    return Admission(new, defaults, lock, usage)


async def _send_count(
    conn: psycopg.AsyncConnection[Any], tenant: str, quotas: Quotas, *, dataset: bool
) -> psycopg.AsyncCursor[Any]:
    params = {"tenant": tenant, "jobs": quotas.concurrent_jobs, "datasets": quotas.datasets, "dataset": dataset}
    return await conn.execute(_q("count_usage"), params)


def _check_usage(tenant: str, quotas: Quotas, used: Any, adding: int = 0) -> None:
    for quota in ("concurrent_jobs", "datasets"):
        check(tenant, quota, getattr(quotas, quota), used[quota] + adding)


@dataclass(frozen=True, slots=True)
class Admission:
    """The lock and counts `send_admission` sent for one new job."""

    new: NewJob
    defaults: Quotas
    lock: psycopg.AsyncCursor[Any]
    usage: psycopg.AsyncCursor[Any]


async def admit(admission: Admission) -> None:
    """Refuse the job just inserted in the transaction if it puts its tenant over a quota (the caller rolls back)."""
    new = admission.new
    quotas = admission.defaults.overridden(await admission.lock.fetchone())
    if new.kind is JobKind.GENERATE:
        check(new.tenant, "generate_rows", quotas.generate_rows, new.progress_total)
    _check_usage(new.tenant, quotas, await admission.usage.fetchone())


async def check_counts(
    conn: psycopg.AsyncConnection[Any], tenant: str, quotas: Quotas, *, dataset: bool, adding: int = 0
) -> None:
    """Raise QuotaExceeded if the tenant's live jobs (and, with `dataset`, datasets) plus `adding` are over quota.

    A new upload checks before any byte is sent (adding=1), without the lock, and its completion is admitted like
    any job (`send_admission`, `admit`).
    """
    if not (quotas.concurrent_jobs or (quotas.datasets and dataset)):
        return
    cur = await _send_count(conn, tenant, quotas, dataset=dataset)  # the tenant's own quotas are these already
    _check_usage(tenant, quotas, await cur.fetchone(), adding)


def set_quotas(conn: psycopg.Connection[Any], tenant: str, changes: dict[str, int | None]) -> dict[str, Any]:
    """Set some of a tenant's quotas (None: back to the server's default) and return its row; ValueError if bad."""
    if not TENANT_PATTERN.fullmatch(tenant):
        raise ValueError(f"tenant must match {TENANT_PATTERN.pattern}")
    unknown = set(changes) - set(QUOTA_NAMES)
    if unknown:
        raise ValueError(f"unknown quotas: {sorted(unknown)}")
    if any(v is not None and v < 0 for v in changes.values()):
        raise ValueError("a quota is 0 (unlimited) or more")
    with conn.transaction():
        conn.execute(_q("ensure_quota_row"), {"tenant": tenant})
        for name, value in changes.items():  # names from QUOTA_NAMES only
            statement = sql.SQL("UPDATE tenant_quotas SET {} = %(value)s, updated_at = now() WHERE tenant = %(tenant)s")
            conn.execute(statement.format(sql.Identifier(name)), {"value": value, "tenant": tenant})
        row: Any = conn.cursor(row_factory=dict_row).execute(_q("tenant_quota_row"), {"tenant": tenant}).fetchone()
    return dict(row)


def list_quotas(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every tenant with quotas of its own (NULL columns: the server's default)."""
    return [dict(r) for r in conn.cursor(row_factory=dict_row).execute(_q("list_quotas")).fetchall()]
