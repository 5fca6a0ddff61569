"""Retention (server/core/retention.py) against a real PostgreSQL and a real object directory."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from psycopg import sql

from server.core import retention
from server.core.errors import NotFound
from server.core.exports import StoredObject, record_object
from server.core.models import DATASET_SCHEMA, JobKind, NewDataset, NewJob, ProgressUnit
from server.core.objects.local import LocalObjectStore
from server.core.store import JobStore, open_pool

pytestmark = pytest.mark.integration

DAY = 86400.0


@pytest.fixture
async def store(pg_conninfo: str) -> AsyncIterator[JobStore]:
    pool = await open_pool(pg_conninfo, min_size=1, max_size=8, name="retention")
    try:
        yield JobStore(pool)
    finally:
        await pool.close()


@pytest.fixture
def objects(tmp_path: Path) -> LocalObjectStore:
    return LocalObjectStore(tmp_path / "objects")


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def make_job(
    store: JobStore,
    objects: LocalObjectStore,
    *,
    days_ago: float | None,
    kind: JobKind = JobKind.GENERATE,
    dataset_id: uuid.UUID | None = None,
    state: str = "SUCCEEDED",
) -> tuple[uuid.UUID, uuid.UUID | None, str]:
    """A job finished `days_ago` (None: still queued) that built a dataset (Generate) or read one, with one object."""
    builds = dataset_id is None
    dataset = None
    if builds:
        dataset_id = uuid.uuid4()
        dataset = NewDataset(
            id=dataset_id, name=f"d{dataset_id.hex[:8]}", table_name=f"ds_{dataset_id.hex}", columns=[]
        )
    new = NewJob(
        tenant="acme",
        kind=kind,
        spec={},
        request_id=None,
        request_hash="h",
        max_attempts=3,
        progress_total=1,
        progress_unit=ProgressUnit.ROWS,
        dataset_name="d",
        dataset_id=None if builds else dataset_id,
    )
    job, _ = await store.create_job(new, dataset)
    key = f"acme/exports/{job.id}/out.csv"
    await objects.put_stream(key, _chunks(b"a,b\n"), content_type="text/csv")
    async with store.connect(transaction=True) as conn:
        if dataset is not None:
            table = sql.Identifier(DATASET_SCHEMA, dataset.table_name)
            await conn.execute(sql.SQL("CREATE TABLE {} (n int)").format(table))
        await record_object(conn, "acme", StoredObject(key, 4, "0" * 64, "text/csv"), job.id)
        await conn.execute(
            "INSERT INTO job_events (job_id, seq, type, snapshot) VALUES (%s, 2, 'STARTED', '{}')", (job.id,)
        )
        if days_ago is not None:
            await conn.execute(
                "UPDATE jobs SET state = %s, finished_at = now() - make_interval(secs => %s) WHERE id = %s",
                (state, days_ago * DAY, job.id),
            )
    return job.id, dataset_id, key


async def _exists(store: JobStore, query: str, *params: object) -> bool:
    async with store.connect() as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchone() is not None


async def test_expired_jobs_go_with_their_events_objects_and_datasets(
    store: JobStore, objects: LocalObjectStore
) -> None:
    old, old_dataset, old_key = await make_job(store, objects, days_ago=31)
    failed, _, _ = await make_job(store, objects, days_ago=45, state="FAILED")
    young, young_dataset, young_key = await make_job(store, objects, days_ago=29)
    queued, _, _ = await make_job(store, objects, days_ago=None)

    assert await retention.expire(store, objects, ttl_seconds=30 * DAY, batch=500) == 2

    for job_id in (old, failed):
        with pytest.raises(NotFound):
            await store.get_job("acme", job_id)
        assert not await _exists(store, "SELECT 1 FROM job_events WHERE job_id = %s", job_id)
        assert not await _exists(store, "SELECT 1 FROM objects WHERE job_id = %s", job_id)
    assert not await _exists(store, "SELECT 1 FROM datasets WHERE id = %s", old_dataset)
    assert old_dataset is not None
    table = f"{DATASET_SCHEMA}.ds_{old_dataset.hex}"
    assert not await _exists(store, "SELECT 1 WHERE to_regclass(%s) IS NOT NULL", table)  # the table is dropped
    with pytest.raises(NotFound):
        await objects.stat(old_key)

    for job_id in (young, queued):  # too young, or not finished: untouched
        assert (await store.get_job("acme", job_id)).id == job_id
    assert await _exists(store, "SELECT 1 FROM datasets WHERE id = %s", young_dataset)
    assert young_dataset is not None
    assert await _exists(
        store, "SELECT 1 WHERE to_regclass(%s) IS NOT NULL", f"{DATASET_SCHEMA}.ds_{young_dataset.hex}"
    )
    assert (await objects.stat(young_key)).size == 4
    assert await retention.expire(store, objects, ttl_seconds=30 * DAY, batch=500) == 0  # nothing left to do


async def test_a_dataset_still_read_by_a_live_job_waits(store: JobStore, objects: LocalObjectStore) -> None:
    builder, dataset_id, _ = await make_job(store, objects, days_ago=60)
    reader, _, _ = await make_job(store, objects, days_ago=None, kind=JobKind.EXPORT, dataset_id=dataset_id)
    assert await retention.expire(store, objects, ttl_seconds=30 * DAY, batch=10) == 0
    assert await _exists(store, "SELECT 1 FROM datasets WHERE id = %s", dataset_id)
    async with store.connect() as conn:
        await conn.execute("UPDATE jobs SET state = 'SUCCEEDED', finished_at = now() WHERE id = %s", (reader,))
    assert await retention.expire(store, objects, ttl_seconds=30 * DAY, batch=10) == 1
    assert not await _exists(store, "SELECT 1 FROM jobs WHERE id = %s", builder)
    assert await _exists(store, "SELECT 1 FROM jobs WHERE id = %s", reader)  # the export itself is young


async def test_concurrent_runs_share_the_batches_and_delete_each_job_once(
    store: JobStore, objects: LocalObjectStore
) -> None:
    ids = [(await make_job(store, objects, days_ago=40))[0] for _ in range(23)]
    counts = await asyncio.gather(*(retention.expire(store, objects, ttl_seconds=30 * DAY, batch=4) for _ in range(3)))
    assert sum(counts) == 23, counts
    async with store.connect() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM jobs WHERE id = ANY(%s)", (ids,))
        assert (await cur.fetchone()) == {"n": 0}


async def test_one_replica_per_interval_starts_the_run(store: JobStore) -> None:
    claims = await asyncio.gather(*(retention.claim_run(store, 3600) for _ in range(6)))
    assert claims.count(True) == 1
    assert not await retention.claim_run(store, 3600)
    async with store.connect() as conn:
        await conn.execute("UPDATE maintenance_runs SET last_started = now() - interval '2 hours'")
    assert await retention.claim_run(store, 3600)
