"""PostgreSQL row-level security (migration 0007) as the second guard behind each query's tenant filter.

The database is owned by an ordinary role, as in production: superusers skip row-level security.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
from psycopg import errors as pgerrors
from psycopg import sql

from server.core.errors import NotFound
from server.core.migrate import apply_migrations
from server.core.models import JobKind, NewJob, ProgressUnit
from server.core.store import JobStore, open_pool
from server.core.tenancy import row_tenant
from server.devstack import create_owned_database

pytestmark = pytest.mark.integration

OWNER = "datamill_rls_test"


@pytest.fixture
async def store(pg_server: str) -> AsyncIterator[JobStore]:
    name = f"rls_{uuid.uuid4().hex[:12]}"
    conninfo = create_owned_database(pg_server, name, owner=OWNER, password=secrets.token_hex(16))
    await apply_migrations(conninfo)
    pool = await open_pool(conninfo, min_size=1, max_size=1, name="rls")  # one connection: scopes must not leak
    try:
        yield JobStore(pool)
    finally:
        await pool.close()
        async with await psycopg.AsyncConnection.connect(pg_server, autocommit=True) as conn:
            await conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def job_for(tenant: str) -> NewJob:
    return NewJob(
        tenant=tenant,
        kind=JobKind.GENERATE,
        spec={"x": 1},
        request_id=None,
        request_hash="h",
        max_attempts=3,
        progress_total=10,
        progress_unit=ProgressUnit.ROWS,
        dataset_name="d",
    )


async def _tenants_seen(store: JobStore) -> list[str]:
    """Every job's tenant, by a query with no tenant filter at all: only the policy can narrow it."""
    async with store.connect() as conn:
        cur = await conn.execute("SELECT tenant FROM jobs ORDER BY tenant")
        return [r["tenant"] for r in await cur.fetchall()]


async def test_a_scoped_connection_sees_and_writes_only_its_tenant(store: JobStore) -> None:
    a, _ = await store.create_job(job_for("a"))
    b, _ = await store.create_job(job_for("b"))
    assert await _tenants_seen(store) == ["a", "b"]  # unscoped: workers and the sweeper see every tenant

    token = row_tenant.set("a")
    try:
        assert await _tenants_seen(store) == ["a"]
        with pytest.raises(NotFound):  # even a query that names tenant b finds nothing while scoped to a
            await store.get_job("b", b.id)
        assert (await store.get_job("a", a.id)).id == a.id
        async with store.connect() as conn:
            cur = await conn.execute("UPDATE jobs SET cancel_requested = true WHERE id = %s", (b.id,))
            assert cur.rowcount == 0  # b's row is invisible to UPDATE too
        with pytest.raises(pgerrors.InsufficientPrivilege, match="row-level security"):
            await store.create_job(job_for("b"))  # WITH CHECK refuses to write another tenant's row
        created, _ = await store.create_job(job_for("a"))
        assert created.tenant == "a"
    finally:
        row_tenant.reset(token)

    # The scope was transaction-local: the pool's one connection is unscoped again.
    assert await _tenants_seen(store) == ["a", "a", "b"]
    assert not (await store.get_job("b", b.id)).cancel_requested


async def test_every_tenant_table_has_a_forced_policy(store: JobStore) -> None:
    async with store.connect() as conn:
        cur = await conn.execute(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, count(p.polname) AS policies"
            " FROM pg_class c LEFT JOIN pg_policy p ON p.polrelid = c.oid"
            " WHERE c.relkind = 'r' AND c.relnamespace = 'public'::regnamespace"
            " AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant')"
            " GROUP BY c.relname, c.relrowsecurity, c.relforcerowsecurity ORDER BY c.relname"
        )
        rows = await cur.fetchall()
    assert {r["relname"] for r in rows} == {"api_keys", "datasets", "jobs", "objects", "tenant_quotas", "uploads"}
    assert all(r["relrowsecurity"] and r["relforcerowsecurity"] and r["policies"] == 1 for r in rows), rows


async def test_the_owner_is_an_ordinary_role(store: JobStore) -> None:
    async with store.connect() as conn:
        cur = await conn.execute("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
        assert await cur.fetchone() == {"rolsuper": False, "rolbypassrls": False}
