"""Stored objects and pending export uploads against a real PostgreSQL and a local object store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from server.core.errors import InvalidArgument, NotFound, OutOfRange
from server.core.exports import ExportDomain, ExportStore, PendingUpload, StoredObject, record_object
from server.core.jobs import JobDomain
from server.core.models import JobKind, NewJob, ProgressUnit
from server.core.objects import LocalObjectStore
from server.core.settings import Settings
from server.core.store import JobStore, open_pool
from tests.integration.fakes import NoDispatch

pytestmark = pytest.mark.integration


@pytest.fixture
async def parts(pg_conninfo: str, tmp_path: Path) -> AsyncIterator[tuple[JobStore, ExportDomain, LocalObjectStore]]:
    pool = await open_pool(pg_conninfo, min_size=1, max_size=4, name="test")
    store = JobStore(pool)
    objects = LocalObjectStore(tmp_path / "objects")
    await objects.ensure_ready()
    settings = Settings(database_url=pg_conninfo, redis_url="redis://unused")
    domain = ExportDomain(JobDomain(store, NoDispatch(), settings), ExportStore(store), objects)
    try:
        yield store, domain, objects
    finally:
        await objects.close()
        await pool.close()


async def _job(store: JobStore, tenant: str = "acme") -> uuid.UUID:
    new = NewJob(
        tenant=tenant,
        kind=JobKind.EXPORT,
        spec={},
        request_id=None,
        request_hash="h",
        max_attempts=3,
        progress_total=0,
        progress_unit=ProgressUnit.ROWS,
    )
    job, _ = await store.create_job(new)
    return job.id


async def _put(objects: LocalObjectStore, key: str, data: bytes) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield data

    await objects.put_stream(key, chunks(), content_type="text/csv")


async def test_read_object_serves_only_the_owners_keys(parts: tuple[JobStore, ExportDomain, Any]) -> None:
    store, domain, objects = parts
    key = "acme/exports/x/1/orders.csv"
    await _put(objects, key, b"0123456789")
    job_id = await _job(store)
    async with store.transaction() as conn:
        await record_object(conn, "acme", StoredObject(key, 10, "0" * 64, "text/csv"), job_id)
    stored, chunks = await domain.read_object("acme", key, offset=3, limit=4)
    assert stored.size == 10 and b"".join([c async for c in chunks]) == b"3456"
    with pytest.raises(NotFound):  # the same key, another tenant: as if it did not exist
        await domain.read_object("other", key, offset=0, limit=0)
    with pytest.raises(NotFound):
        await domain.read_object("acme", "acme/exports/missing.csv", offset=0, limit=0)
    with pytest.raises(OutOfRange):
        await domain.read_object("acme", key, offset=11, limit=0)
    with pytest.raises(InvalidArgument) as raised:
        await domain.read_object("acme", "", offset=-1, limit=-1)
    assert [v.field for v in raised.value.violations] == ["object_key", "offset", "limit"]


async def test_sweeper_removes_uploads_of_ended_exports_only(parts: tuple[JobStore, ExportDomain, Any]) -> None:
    store, domain, objects = parts
    exports = domain.store
    ended, running = await _job(store), await _job(store)
    uploads = {}
    for job_id in (ended, running):
        key = f"acme/exports/{job_id}/1/orders.csv"
        handle = await objects.create_multipart(key, content_type="text/csv")
        await objects.upload_part(key, handle, 1, b"partial")
        uploads[job_id] = PendingUpload(job_id, 1, key, handle)
        await exports.add_pending(uploads[job_id])
    completed_key = f"acme/exports/{ended}/2/orders.csv"  # an attempt that completed its upload, then died
    await _put(objects, completed_key, b"whole file")
    await exports.add_pending(PendingUpload(ended, 2, completed_key, "gone-handle"))
    async with store.transaction() as conn:
        await conn.execute("UPDATE jobs SET state = 'FAILED' WHERE id = %s", (ended,))
        await conn.execute("UPDATE jobs SET state = 'RUNNING' WHERE id = %s", (running,))

    assert await exports.discard_abandoned(objects, limit=10) == 2
    assert await exports.pending(ended) == []
    assert await exports.pending(running) == [uploads[running]]
    with pytest.raises(NotFound):  # the multipart upload is gone
        await objects.upload_part(uploads[ended].object_key, uploads[ended].handle, 2, b"more")
    with pytest.raises(NotFound):  # and so is the object the dead attempt completed
        await objects.stat(completed_key)
    await objects.upload_part(uploads[running].object_key, uploads[running].handle, 2, b"more")  # untouched
    assert await exports.discard_abandoned(objects, limit=10) == 0
