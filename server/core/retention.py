"""Retention: expire terminal jobs older than DATAMILL_RETENTION_DAYS, with their events, objects and datasets.

The server's sweeper starts the run: once per DATAMILL_RETENTION_INTERVAL_SECONDS one replica wins `claim_run` and
sends the `datamill.expire_jobs` Taskiq task, and a worker runs `expire`. It works in batches of
DATAMILL_RETENTION_BATCH jobs, each one transaction taken with SKIP LOCKED, so several workers (or a run that
overlaps the next) share the work instead of repeating it. In each batch the objects are deleted from the object
store first (deleting a missing key is not an error), then the rows and the dataset tables, and the transaction
commits: a crash in between leaves rows whose objects are gone, and the next run deletes them again.

What expires with a job: its events and shards, the objects it wrote (an export's files, an upload's file), and the
datasets it built (rows and table). A job whose dataset a queued or running job still reads waits for a later round.
"""

from __future__ import annotations

from typing import Any

import structlog
from psycopg import sql

from server.core.objects import ObjectStore
from server.core.sql import query
from server.core.store import JobStore, drop_table

log = structlog.get_logger(__name__)

RUN_NAME = "retention"


def _q(name: str) -> sql.SQL:
    return query(name, "retention.sql")


async def claim_run(store: JobStore, interval_seconds: float, name: str = RUN_NAME) -> bool:
    """Whether this caller starts the periodic `name` now: true for one caller per interval."""
    async with store.connect() as conn:
        cur = await conn.execute(_q("claim_run"), {"name": name, "interval": interval_seconds})
        return await cur.fetchone() is not None


async def expire(store: JobStore, objects: ObjectStore, *, ttl_seconds: float, batch: int) -> int:
    """Delete every job expired now, batch by batch; return how many top-level jobs went."""
    total = 0
    while True:
        done = await expire_batch(store, objects, ttl_seconds=ttl_seconds, batch=batch)
        total += done
        if done < batch:
            break
    if total:
        log.info("jobs_expired", count=total, ttl_days=round(ttl_seconds / 86400, 3))
    return total


async def expire_batch(store: JobStore, objects: ObjectStore, *, ttl_seconds: float, batch: int) -> int:
    async with store.connect(transaction=True) as conn:
        cur = await conn.execute(_q("lock_expired_jobs"), {"ttl_seconds": ttl_seconds, "limit": batch})
        ids = [row["id"] for row in await cur.fetchall()]
        if not ids:
            return 0
        params: dict[str, Any] = {"ids": ids}
        cur = await conn.execute(_q("objects_of_jobs"), params)
        for row in await cur.fetchall():
            await objects.delete(row["key"])
        await conn.execute(_q("delete_objects_of_jobs"), params)
        cur = await conn.execute(_q("delete_datasets_of_jobs"), params)
        for row in await cur.fetchall():
            await conn.execute(drop_table(row["table_name"]))
        await conn.execute(_q("delete_jobs"), params)
    return len(ids)
