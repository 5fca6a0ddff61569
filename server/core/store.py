"""JobStore: every read and write of jobs, events and datasets, on a psycopg pool.

The store is the only place that speaks SQL for the job platform. psycopg errors
become datamill errors here (`translate_errors`), so callers above never see a
driver exception. Worker writes are fenced by the attempt's lease token: when
the token no longer matches, the write changes nothing and `LeaseLost` is raised.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import psycopg
import structlog
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from server.core import metrics
from server.core.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from server.core.models import (
    DATASET_SCHEMA,
    DatasetRow,
    EventRow,
    JobKind,
    JobRow,
    JobState,
    NewDataset,
    NewJob,
)
from server.core.quotas import Quotas, admit, send_admission
from server.core.sql import query
from server.core.tenancy import row_tenant

log = structlog.get_logger(__name__)

_SCOPE = "SELECT set_config('datamill.tenant', %s, true)"
ERROR_MESSAGE_LIMIT = 1000  # keeps NOTIFY payloads (8000 bytes) safe
_CONSTRAINT_MESSAGES = {
    "datasets_tenant_name_key": "a dataset with this name already exists",
}


class LeaseLost(Exception):  # a signal, not an error for callers to report
    """The attempt's lease expired or the job was taken over: stop without writing."""


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    """Turn psycopg errors into datamill errors at the store's edge."""
    try:
        yield
    except pgerrors.UniqueViolation as exc:
        constraint = exc.diag.constraint_name or ""
        message = _CONSTRAINT_MESSAGES.get(constraint, "already exists")
        raise AlreadyExists(message, reason="ALREADY_EXISTS", metadata={"constraint": constraint}) from exc
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise Unavailable("the database is unavailable", reason="DATABASE_UNAVAILABLE", retry_after=1.0) from exc
    except pgerrors.AdminShutdown as exc:  # pragma: no cover - subclass of OperationalError in practice
        raise Unavailable("the database is shutting down", retry_after=1.0) from exc


def error_json(code: str, message: str, reason: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """The stored form of a job's error; `server.api` turns it into a google.rpc.Status."""
    return {
        "code": code,
        "message": message[:ERROR_MESSAGE_LIMIT],
        "reason": reason,
        "metadata": {k: v[:200] for k, v in (metadata or {}).items()},
    }


async def open_pool(conninfo: str, *, min_size: int, max_size: int, name: str) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        name=name,
        timeout=10.0,
        open=False,
        check=AsyncConnectionPool.check_connection,
        kwargs={"row_factory": dict_row},
    )
    await pool.open(wait=True, timeout=30)
    return pool


class JobStore:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    @contextlib.asynccontextmanager
    async def connect(self, *, transaction: bool = False) -> AsyncIterator[psycopg.AsyncConnection[dict[str, Any]]]:
        """A pooled connection with errors translated, scoped to the RPC's tenant (server/core/tenancy.py).

        Scoping opens the connection's transaction with `set_config(..., true)`, which lasts until the pool
        commits at the block's end; `transaction=True` makes the block one explicit transaction either way.
        """
        tenant = row_tenant.get()
        with translate_errors():
            async with self.pool.connection() as conn, contextlib.AsyncExitStack() as block:
                if tenant is None:
                    if transaction:
                        await block.enter_async_context(conn.transaction())
                else:
                    # One round trip for BEGIN and the scope: outside a pipeline psycopg sends BEGIN on its own.
                    async with conn.pipeline():
                        if transaction:
                            await block.enter_async_context(conn.transaction())
                        await conn.execute(_SCOPE, (tenant,))
                yield conn  # type: ignore[misc]

    async def ping(self) -> None:
        async with self.connect() as conn:
            await conn.execute("SELECT 1")

    # --- creating and reading jobs (server side) ---

    async def create_job(
        self, new: NewJob, dataset: NewDataset | None = None, *, quotas: Quotas | None = None
    ) -> tuple[JobRow, bool]:
        """Insert a job (and the dataset it builds) atomically; return (job, created).

        A repeated request_id returns the stored job with created=False; the
        same request_id for a different request raises AlreadyExists. With `quotas`
        (the server's defaults), a new job over one of its tenant's quotas is
        rolled back and QuotaExceeded raised (server/core/quotas.py).
        """
        async with self.connect(transaction=True) as conn:
            job, created = await insert_job(conn, new, dataset, quotas=quotas)
        if created:
            metrics.JOBS_CREATED.labels(job.kind.value).inc()
        return job, created

    async def shard_ids(self, parent_id: uuid.UUID) -> list[uuid.UUID]:
        async with self.connect() as conn:
            cur = await conn.execute(query("shard_ids"), {"parent_id": parent_id})
            return [r["id"] for r in await cur.fetchall()]

    async def mark_undispatched(self, job_id: uuid.UUID) -> None:
        """The hand-off to the queue failed: let the sweeper send it at its next round."""
        async with self.connect() as conn:
            await conn.execute(query("clear_dispatched"), {"id": job_id})

    async def get_job(self, tenant: str, job_id: uuid.UUID) -> JobRow:
        async with self.connect() as conn:
            cur = await conn.execute(query("get_job"), {"id": job_id, "tenant": tenant})
            row = await cur.fetchone()
        if row is None:
            raise NotFound("job", str(job_id))
        return JobRow.from_row(row)

    async def list_jobs(
        self,
        tenant: str,
        *,
        kind: JobKind | None,
        state: JobState | None,
        limit: int,
        after: tuple[datetime, uuid.UUID] | None,
    ) -> list[JobRow]:
        async with self.connect() as conn:
            cur = await conn.execute(
                query("list_jobs"),
                {
                    "tenant": tenant,
                    "kind": kind.value if kind else None,
                    "state": state.value if state else None,
                    "after_created": after[0] if after else None,
                    "after_id": after[1] if after else None,
                    "limit": limit,
                },
            )
            return [JobRow.from_row(r) for r in await cur.fetchall()]

    async def cancel_job(self, tenant: str, job_id: uuid.UUID) -> JobRow:
        """Cancel a QUEUED job at once, or flag a RUNNING one for its worker."""
        async with self.connect(transaction=True) as conn:
            params = {"id": job_id, "tenant": tenant}
            cur = await conn.execute(query("lock_live_parent"), params)
            if await cur.fetchone() is not None:
                parent = await stop_parent(conn, job_id, cancelled_error(), shard_id=None)
                if parent is not None:
                    return parent
            cur = await conn.execute(query("cancel_queued_job"), params)
            row = await cur.fetchone()
            if row is not None:
                job = JobRow.from_row(row)
                if job.kind is not JobKind.EXPORT and job.dataset_id is not None:
                    await drop_pending_dataset(conn, job.dataset_id)
                return job
            cur = await conn.execute(query("request_cancel_running_job"), params)
            row = await cur.fetchone()
            if row is not None:
                return JobRow.from_row(row)
        return await self.get_job(tenant, job_id)

    async def events_after(self, job_id: uuid.UUID, after: int, limit: int = 500) -> list[EventRow]:
        async with self.connect() as conn:
            cur = await conn.execute(query("events_after"), {"job_id": job_id, "after": after, "limit": limit})
            return [EventRow.from_row(r) for r in await cur.fetchall()]

    # --- datasets ---

    async def get_dataset(self, tenant: str, id_or_name: str) -> DatasetRow:
        try:
            as_id: str | None = str(uuid.UUID(id_or_name))
        except ValueError:
            as_id = None
        async with self.connect() as conn:
            cur = await conn.execute(query("get_dataset"), {"tenant": tenant, "name": id_or_name, "id": as_id})
            row = await cur.fetchone()
        if row is None:
            raise NotFound("dataset", id_or_name)
        return DatasetRow.from_row(row)

    async def list_datasets(
        self, tenant: str, *, limit: int, after: tuple[datetime, uuid.UUID] | None
    ) -> list[DatasetRow]:
        async with self.connect() as conn:
            cur = await conn.execute(
                query("list_datasets"),
                {
                    "tenant": tenant,
                    "after_created": after[0] if after else None,
                    "after_id": after[1] if after else None,
                    "limit": limit,
                },
            )
            return [DatasetRow.from_row(r) for r in await cur.fetchall()]

    async def delete_dataset(self, tenant: str, id_or_name: str) -> None:
        dataset = await self.get_dataset(tenant, id_or_name)
        async with self.connect(transaction=True) as conn:
            cur = await conn.execute(query("lock_dataset_for_delete"), {"tenant": tenant, "id": dataset.id})
            row = await cur.fetchone()
            if row is None:
                raise NotFound("dataset", id_or_name)
            if row["busy"]:
                raise FailedPrecondition(
                    "a job that builds or reads this dataset is still running",
                    reason="DATASET_BUSY",
                    metadata={"dataset": dataset.name},
                )
            await conn.execute(query("delete_dataset"), {"id": dataset.id})
            await conn.execute(drop_table(row["table_name"]))

    # --- worker side: claim, lease, checkpoints, outcomes ---

    async def claim(self, job_id: uuid.UUID, lease_token: uuid.UUID, lease_seconds: float) -> JobRow | None:
        """Claim a QUEUED job for one attempt; None if it is not claimable (duplicate delivery)."""
        async with self.connect(transaction=True) as conn:
            cur = await conn.execute(
                query("claim_job"), {"id": job_id, "lease_token": lease_token, "lease_seconds": lease_seconds}
            )
            row = await cur.fetchone()
        if row is None:
            return None
        job = JobRow.from_row(row)
        if job.parent_id is not None:  # a separate transaction: locks are taken parent first everywhere else
            await self.sync_parent(job.parent_id)
        return job

    async def sync_parent(self, parent_id: uuid.UUID) -> None:
        """Start a sharded Generate if it was queued, and set its progress to the sum of its shards'."""
        async with self.connect() as conn:
            await conn.execute(query("sync_parent"), {"id": parent_id})

    async def renew_lease(self, job_id: uuid.UUID, lease_token: uuid.UUID, lease_seconds: float) -> bool:
        """Extend the lease; return whether cancellation was requested. Raises LeaseLost."""
        async with self.connect() as conn:
            cur = await conn.execute(
                query("renew_lease"), {"id": job_id, "lease_token": lease_token, "lease_seconds": lease_seconds}
            )
            row = await cur.fetchone()
        if row is None:
            raise LeaseLost(str(job_id))
        return bool(row["cancel_requested"])

    @staticmethod
    async def checkpoint(
        conn: psycopg.AsyncConnection[Any],
        job_id: uuid.UUID,
        lease_token: uuid.UUID,
        *,
        done: int,
        lease_seconds: float,
    ) -> bool:
        """Record progress inside the caller's transaction, so data and progress commit together.

        Returns whether cancellation was requested; raises LeaseLost, which
        rolls the caller's transaction back.
        """
        cur = await conn.execute(
            query("checkpoint"),
            {"id": job_id, "lease_token": lease_token, "done": done, "lease_seconds": lease_seconds},
        )
        row = await cur.fetchone()
        if row is None:
            raise LeaseLost(str(job_id))
        return bool(row[0] if isinstance(row, tuple) else row["cancel_requested"])

    @staticmethod
    async def finish(
        conn: psycopg.AsyncConnection[Any],
        job_id: uuid.UUID,
        lease_token: uuid.UUID,
        *,
        state: JobState,
        result: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
        done: int | None = None,
    ) -> JobRow:
        """Move a job to a terminal state inside the caller's transaction."""
        cur = await conn.execute(
            query("finish_job"),
            {
                "id": job_id,
                "lease_token": lease_token,
                "state": state.value,
                "result": Jsonb(result) if result is not None else None,
                "error": Jsonb(error) if error is not None else None,
                "done": done,
            },
        )
        row = await cur.fetchone()
        if row is None:
            raise LeaseLost(str(job_id))
        return JobRow.from_row(row)

    async def requeue(
        self, job_id: uuid.UUID, lease_token: uuid.UUID, *, error: dict[str, Any], delay_seconds: float
    ) -> JobRow:
        """Give the job back for another attempt after a transient failure."""
        async with self.connect() as conn:
            cur = await conn.execute(
                query("requeue_job"),
                {"id": job_id, "lease_token": lease_token, "error": Jsonb(error), "delay_seconds": delay_seconds},
            )
            row = await cur.fetchone()
        if row is None:
            raise LeaseLost(str(job_id))
        return JobRow.from_row(row)

    async def release(self, job_id: uuid.UUID, lease_token: uuid.UUID) -> JobRow:
        """Give a job back without spending an attempt (worker shutdown); progress is kept."""
        async with self.connect() as conn:
            cur = await conn.execute(query("release_job"), {"id": job_id, "lease_token": lease_token})
            row = await cur.fetchone()
        if row is None:
            raise LeaseLost(str(job_id))
        return JobRow.from_row(row)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """A pooled connection inside a transaction, with errors translated."""
        async with self.connect(transaction=True) as conn:
            yield conn

    # --- sweeper ---

    async def sweep_expired(self, *, limit: int, backoff: Any) -> list[JobRow]:
        """Requeue (or fail, after max_attempts) RUNNING jobs whose lease expired.

        `backoff(attempt) -> seconds` gives the delay before the next attempt. Each job is
        settled in its own transaction that locks a shard's parent before the shard, the
        order CancelJob and the workers use, so a sweep never deadlocks with them.
        """
        async with self.connect() as conn:
            cur = await conn.execute(query("expired_leases"), {"limit": limit})
            candidates = await cur.fetchall()
        changed: list[JobRow] = []
        for candidate in candidates:
            async with self.connect(transaction=True) as conn:
                if candidate["parent_id"] is not None:
                    await conn.execute(query("lock_job"), {"id": candidate["parent_id"]})
                cur = await conn.execute(query("lock_expired"), {"id": candidate["id"]})
                row = await cur.fetchone()
                if row is not None:  # else renewed, settled or taken by another sweeper meanwhile
                    changed.append(await _settle_expired(conn, row, backoff))
        return changed

    async def due_for_dispatch(self, *, limit: int, redispatch_after: float) -> list[uuid.UUID]:
        async with self.connect() as conn:
            cur = await conn.execute(query("due_for_dispatch"), {"limit": limit, "redispatch_after": redispatch_after})
            return [r["id"] for r in await cur.fetchall()]


async def _settle_expired(conn: psycopg.AsyncConnection[Any], row: dict[str, Any], backoff: Any) -> JobRow:
    if row["attempt"] < row["max_attempts"] and not row["cancel_requested"]:
        error = error_json(
            "UNAVAILABLE", f"the worker stopped renewing its lease on attempt {row['attempt']}", "LEASE_EXPIRED"
        )
        cur = await conn.execute(
            query("requeue_expired"), {"id": row["id"], "error": Jsonb(error), "delay_seconds": backoff(row["attempt"])}
        )
        return JobRow.from_row(await _one(cur))
    if row["cancel_requested"]:
        state, error = JobState.CANCELLED, cancelled_error()
    else:
        state = JobState.FAILED
        error = error_json(
            "UNAVAILABLE",
            f"the worker stopped renewing its lease on attempt {row['attempt']} of {row['max_attempts']}; "
            "no attempts left",
            "ATTEMPTS_EXHAUSTED",
        )
    if row["parent_id"] is not None:
        await stop_parent(conn, row["parent_id"], error, shard_id=row["id"])
    elif row["kind"] != JobKind.EXPORT.value and row["dataset_id"] is not None:
        await drop_pending_dataset(conn, row["dataset_id"])
    cur = await conn.execute(query("fail_expired"), {"id": row["id"], "error": Jsonb(error), "state": state.value})
    return JobRow.from_row(await _one(cur))


def cancelled_error() -> dict[str, Any]:
    return error_json("CANCELLED", "the job was cancelled", "CANCELLED")


async def stop_parent(
    conn: psycopg.AsyncConnection[Any], parent_id: uuid.UUID, error: dict[str, Any], *, shard_id: uuid.UUID | None
) -> JobRow | None:
    """Stop a sharded Generate that will not succeed: one of its shards ended otherwise, or CancelJob.

    The first such outcome is kept on the parent, and its other shards are cancelled or
    asked to stop. The parent ends (CANCELLED if that outcome was a cancel, else FAILED)
    only once no shard runs any more (`shard_id`, the caller's own, not counted), and its
    partial table goes in the same transaction: an ended Generate never has a shard still
    writing, nor data left behind. Returns the parent, or None if it had already ended.
    """
    cur = await conn.execute(
        query("stop_parent"), {"id": parent_id, "error": Jsonb(error), "announce": shard_id is None}
    )
    row = await cur.fetchone()
    if row is None:
        return None
    await conn.execute(query("cancel_queued_shards"), {"parent_id": parent_id})
    await conn.execute(query("stop_running_shards"), {"parent_id": parent_id})
    cur = await conn.execute(query("other_running_shards"), {"parent_id": parent_id, "shard_id": shard_id})
    if (await _one(cur))["running"]:
        return JobRow.from_row(row)
    first = row["error"]
    state = JobState.CANCELLED if first["reason"] == "CANCELLED" else JobState.FAILED
    cur = await conn.execute(
        query("finish_parent"),
        {"id": parent_id, "state": state.value, "result": None, "error": Jsonb(first), "done": None},
    )
    if row["dataset_id"] is not None:
        await drop_pending_dataset(conn, row["dataset_id"])
    return JobRow.from_row(await _one(cur))


def _job_params(
    job_id: uuid.UUID, new: NewJob, dataset_id: uuid.UUID | None, *, parent_id: uuid.UUID | None
) -> dict[str, Any]:
    return {
        "id": job_id,
        "tenant": new.tenant,
        "kind": new.kind.value,
        "request_id": new.request_id,
        "request_hash": new.request_hash,
        "dataset_id": dataset_id,
        "dataset_name": new.dataset_name,
        "spec": Jsonb(new.spec),
        "progress_total": new.progress_total,
        "progress_unit": new.progress_unit.value,
        "max_attempts": new.max_attempts,
        "parent_id": parent_id,
        "shard_count": len(new.shards),
        "created_by": new.created_by,
    }


async def drop_pending_dataset(conn: psycopg.AsyncConnection[Any], dataset_id: uuid.UUID) -> None:
    """Remove a dataset that never became ready, with its partial table."""
    cur = await conn.execute(query("delete_pending_dataset"), {"dataset_id": dataset_id})
    row = await cur.fetchone()
    if row is not None:
        table = row[0] if isinstance(row, tuple) else row["table_name"]
        await conn.execute(drop_table(table))


def drop_table(table_name: str) -> sql.Composed:
    return sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(DATASET_SCHEMA, table_name))


async def _one(cur: psycopg.AsyncCursor[Any]) -> Any:
    row = await cur.fetchone()
    if row is None:  # pragma: no cover - guarded by the queries' own conditions
        raise RuntimeError("expected a row")
    return row


async def insert_job(
    conn: psycopg.AsyncConnection[Any], new: NewJob, dataset: NewDataset | None = None, *, quotas: Quotas | None = None
) -> tuple[JobRow, bool]:
    """`JobStore.create_job` in the caller's transaction (also used to create an upload's ingest job)."""
    job_id = uuid.uuid4()
    dataset_id = dataset.id if dataset else new.dataset_id
    admission = None
    async with conn.pipeline():  # the inserts and the quota's lock and counts in one round trip
        cur = await conn.execute(query("insert_job"), _job_params(job_id, new, dataset_id, parent_id=None))
        if dataset is not None:  # inserts nothing when the job's insert did (its request_id is taken)
            await conn.execute(
                query("insert_dataset"),
                {
                    "id": dataset.id,
                    "tenant": new.tenant,
                    "name": dataset.name,
                    "table_name": dataset.table_name,
                    "columns": Jsonb(dataset.columns),
                    "job_id": job_id,
                },
            )
        if quotas is not None:
            admission = await send_admission(conn, new, dataset, quotas)
        row = await cur.fetchone()
    if row is None:  # the request_id is taken
        cur = await conn.execute(query("get_job_by_request_id"), {"tenant": new.tenant, "request_id": new.request_id})
        existing = JobRow.from_row(await _one(cur))
        if existing.request_hash != new.request_hash:
            raise AlreadyExists(
                "request_id was already used for a different request",
                reason="REQUEST_ID_REUSED",
                metadata={"request_id": new.request_id or "", "job_id": str(existing.id)},
            )
        return existing, False
    if admission is not None:
        await admit(admission)
    for shard in new.shards:
        await conn.execute(query("insert_job"), _job_params(uuid.uuid4(), shard, dataset_id, parent_id=job_id))
    return JobRow.from_row(row), True
