"""Quotas admitted in the inserting transaction (server/core/quotas.py), against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from server.core.models import JobKind, NewDataset, NewJob, ProgressUnit
from server.core.quotas import QuotaExceeded, Quotas, list_quotas, quotas_for, set_quotas
from server.core.store import JobStore, open_pool

pytestmark = pytest.mark.integration


@pytest.fixture
async def store(pg_conninfo: str) -> AsyncIterator[JobStore]:
    pool = await open_pool(pg_conninfo, min_size=1, max_size=12, name="quotas")
    try:
        yield JobStore(pool)
    finally:
        await pool.close()


@pytest.fixture
def operator(pg_conninfo: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(pg_conninfo, autocommit=True) as conn:
        yield conn


def generate(tenant: str, rows: int = 10, *, request_id: str | None = None) -> tuple[NewJob, NewDataset]:
    dataset_id = uuid.uuid4()
    new = NewJob(
        tenant=tenant,
        kind=JobKind.GENERATE,
        spec={"rows": rows},
        request_id=request_id,
        request_hash="h",
        max_attempts=3,
        progress_total=rows,
        progress_unit=ProgressUnit.ROWS,
        dataset_name=f"d{dataset_id.hex[:8]}",
    )
    return new, NewDataset(id=dataset_id, name=new.dataset_name, table_name=f"ds_{dataset_id.hex}", columns=[])


async def _count(store: JobStore, table: str, tenant: str) -> int:
    async with store.connect() as conn:
        cur = await conn.execute(f"SELECT count(*) AS n FROM {table} WHERE tenant = %s", (tenant,))
        row = await cur.fetchone()
    assert row is not None
    return int(row["n"])


async def test_concurrent_submissions_never_overshoot_the_concurrent_jobs_quota(store: JobStore) -> None:
    quotas = Quotas(concurrent_jobs=5)
    results = await asyncio.gather(
        *(store.create_job(*generate("acme"), quotas=quotas) for _ in range(24)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert len(refused) == 19 and len(results) - len(refused) == 5, results
    assert await _count(store, "jobs", "acme") == 5 and await _count(store, "datasets", "acme") == 5
    error = refused[0]
    assert error.code.value == "RESOURCE_EXHAUSTED" and error.reason == "QUOTA_EXCEEDED" and error.retryable
    assert error.retry_after == 1.0
    assert error.metadata == {"tenant": "acme", "quota": "concurrent_jobs", "limit": "5", "requested": "6"}
    assert error.quota_violations == [("tenant:acme/concurrent_jobs", "at most 5")]

    # Another tenant has its own count; a finished job frees its place.
    assert (await store.create_job(*generate("rival"), quotas=quotas))[1]
    async with store.connect() as conn:
        await conn.execute(
            "UPDATE jobs SET state = 'SUCCEEDED', finished_at = now() WHERE tenant = 'acme' AND id = "
            "(SELECT id FROM jobs WHERE tenant = 'acme' LIMIT 1)"
        )
    assert (await store.create_job(*generate("acme"), quotas=quotas))[1]


async def test_a_repeated_request_id_returns_its_job_even_at_the_quota(store: JobStore) -> None:
    quotas = Quotas(concurrent_jobs=1)
    first, created = await store.create_job(*generate("acme", request_id="r1"), quotas=quotas)
    again, created_again = await store.create_job(*generate("acme", request_id="r1"), quotas=quotas)
    assert created and not created_again and again.id == first.id
    with pytest.raises(QuotaExceeded):
        await store.create_job(*generate("acme", request_id="r2"), quotas=quotas)


async def test_rows_and_datasets_quotas_refuse_without_storing_anything(store: JobStore) -> None:
    with pytest.raises(QuotaExceeded) as rows:
        await store.create_job(*generate("acme", rows=1001), quotas=Quotas(generate_rows=1000))
    assert rows.value.metadata["quota"] == "generate_rows" and not rows.value.retryable
    assert rows.value.retry_after is None
    assert await _count(store, "jobs", "acme") == 0 and await _count(store, "datasets", "acme") == 0
    assert (await store.create_job(*generate("acme", rows=1000), quotas=Quotas(generate_rows=1000)))[1]

    two = Quotas(datasets=2)
    assert (await store.create_job(*generate("acme"), quotas=two))[1]
    with pytest.raises(QuotaExceeded) as held:
        await store.create_job(*generate("acme"), quotas=two)
    assert held.value.metadata == {"tenant": "acme", "quota": "datasets", "limit": "2", "requested": "3"}
    assert await _count(store, "datasets", "acme") == 2


async def test_a_tenants_own_quotas_override_the_defaults(
    store: JobStore, operator: psycopg.Connection[tuple[object, ...]]
) -> None:
    defaults = Quotas(concurrent_jobs=1000, generate_rows=0, upload_bytes=0, datasets=10)
    set_quotas(operator, "acme", {"generate_rows": 50, "datasets": 0})
    assert set_quotas(operator, "acme", {"upload_bytes": 7}) == {
        "tenant": "acme",
        "concurrent_jobs": None,
        "generate_rows": 50,
        "upload_bytes": 7,
        "datasets": 0,
    }
    async with store.connect() as conn:
        assert await quotas_for(conn, "acme", defaults) == Quotas(1000, 50, 7, 0)
        assert await quotas_for(conn, "rival", defaults) == defaults
    with pytest.raises(QuotaExceeded):
        await store.create_job(*generate("acme", rows=51), quotas=defaults)
    set_quotas(operator, "acme", {"generate_rows": None})  # back to the default (unlimited)
    assert (await store.create_job(*generate("acme", rows=51), quotas=defaults))[1]
    assert [r["tenant"] for r in list_quotas(operator)] == ["acme"]
    with pytest.raises(ValueError, match="unknown quotas"):
        set_quotas(operator, "acme", {"rows": 1})
    with pytest.raises(ValueError, match="0 \\(unlimited\\) or more"):
        set_quotas(operator, "acme", {"datasets": -1})
    with pytest.raises(ValueError, match="tenant must match"):
        set_quotas(operator, "Not A Tenant", {"datasets": 1})
