"""JobStore, EventHub and WatchSession against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace

import psycopg
import pytest

from server.core.errors import AlreadyExists, NotFound
from server.core.events import EventHub
from server.core.models import EventRow, JobKind, JobState, NewDataset, NewJob, ProgressUnit
from server.core.store import JobStore, LeaseLost, cancelled_error, error_json, open_pool, stop_parent
from server.core.watch import Ended, EndReason, WatchSession

pytestmark = pytest.mark.integration

TENANT = "t1"


@pytest.fixture
async def store(pg_conninfo: str) -> AsyncIterator[JobStore]:
    pool = await open_pool(pg_conninfo, min_size=1, max_size=8, name="test")
    try:
        yield JobStore(pool)
    finally:
        await pool.close()


def new_job(*, request_id: str | None = None, max_attempts: int = 3, fingerprint: str = "h") -> NewJob:
    return NewJob(
        tenant=TENANT,
        kind=JobKind.GENERATE,
        spec={"x": 1},
        request_id=request_id,
        request_hash=fingerprint,
        max_attempts=max_attempts,
        progress_total=100,
        progress_unit=ProgressUnit.ROWS,
        dataset_name="d",
    )


async def _events(store: JobStore, job_id: uuid.UUID) -> list[EventRow]:
    return await store.events_after(job_id, 0)


async def test_claim_is_exclusive_under_concurrency(store: JobStore) -> None:
    job, created = await store.create_job(new_job())
    assert created and job.state is JobState.QUEUED and job.event_seq == 1
    results = await asyncio.gather(*(store.claim(job.id, uuid.uuid4(), 30) for _ in range(8)))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert winners[0].state is JobState.RUNNING and winners[0].attempt == 1


async def test_writes_are_fenced_by_the_lease_token(store: JobStore) -> None:
    job, _ = await store.create_job(new_job())
    token = uuid.uuid4()
    assert await store.claim(job.id, token, 30) is not None
    async with store.transaction() as conn:
        await store.checkpoint(conn, job.id, token, done=50, lease_seconds=30)
    with pytest.raises(LeaseLost):
        async with store.transaction() as conn:
            await store.checkpoint(conn, job.id, uuid.uuid4(), done=60, lease_seconds=30)
    with pytest.raises(LeaseLost):
        await store.renew_lease(job.id, uuid.uuid4(), 30)
    async with store.transaction() as conn:
        final = await store.finish(conn, job.id, token, state=JobState.SUCCEEDED, result={"row_count": 100}, done=100)
    assert final.state is JobState.SUCCEEDED and final.progress_done == 100
    events = await _events(store, job.id)
    assert [(e.seq, e.type.value) for e in events] == [
        (1, "CREATED"),
        (2, "STARTED"),
        (3, "PROGRESS"),
        (4, "SUCCEEDED"),
    ]
    assert events[2].job.progress_done == 50
    assert events[-1].terminal and events[-1].job.result == {"row_count": 100}


async def test_request_id_is_idempotent_and_reuse_is_refused(store: JobStore) -> None:
    first, created = await store.create_job(new_job(request_id="r1"))
    again, created_again = await store.create_job(new_job(request_id="r1"))
    assert created and not created_again and again.id == first.id
    with pytest.raises(AlreadyExists) as caught:
        await store.create_job(new_job(request_id="r1", fingerprint="other"))
    assert caught.value.reason == "REQUEST_ID_REUSED"


async def test_dataset_name_is_unique_per_tenant_and_nothing_half_created(store: JobStore, pg_conninfo: str) -> None:
    def dataset() -> NewDataset:
        ds = uuid.uuid4()
        return NewDataset(id=ds, name="same", table_name=f"ds_{ds.hex}", columns=[])

    await store.create_job(new_job(), dataset())
    with pytest.raises(AlreadyExists):
        await store.create_job(new_job(), dataset())
    async with await psycopg.AsyncConnection.connect(pg_conninfo) as conn:
        cur = await conn.execute("SELECT count(*) FROM jobs")
        assert await cur.fetchone() == (1,)


async def test_sweeper_requeues_expired_leases_then_fails_after_max_attempts(store: JobStore) -> None:
    ds = uuid.uuid4()
    job, _ = await store.create_job(new_job(max_attempts=2), NewDataset(ds, "sweep", f"ds_{ds.hex}", []))
    assert await store.claim(job.id, uuid.uuid4(), 0.1) is not None
    await asyncio.sleep(0.3)
    (requeued,) = await store.sweep_expired(limit=10, backoff=lambda attempt: 0.0)
    assert requeued.state is JobState.QUEUED and requeued.error is not None
    assert requeued.error["reason"] == "LEASE_EXPIRED"
    assert await store.due_for_dispatch(limit=10, redispatch_after=30) == [job.id]
    assert await store.due_for_dispatch(limit=10, redispatch_after=30) == []  # marked as sent

    assert (await store.claim(job.id, uuid.uuid4(), 0.1)) is not None  # attempt 2 of 2
    await asyncio.sleep(0.3)
    (failed,) = await store.sweep_expired(limit=10, backoff=lambda attempt: 0.0)
    assert failed.state is JobState.FAILED and failed.error is not None
    assert failed.error["reason"] == "ATTEMPTS_EXHAUSTED"
    assert [e.type.value for e in await _events(store, job.id)][-1] == "FAILED"
    with pytest.raises(Exception, match="not found"):
        await store.get_dataset(TENANT, "sweep")  # the unfinished dataset is gone


async def test_a_sharded_job_ends_with_its_first_failure_only_once_no_shard_runs(store: JobStore) -> None:
    ds = uuid.uuid4()
    shard = replace(new_job(), kind=JobKind.GENERATE_SHARD)
    parent, _ = await store.create_job(
        replace(new_job(), shards=(shard, shard, shard)), NewDataset(ds, "sharded", f"ds_{ds.hex}", [])
    )
    first, second, queued = await store.shard_ids(parent.id)
    tokens = {first: uuid.uuid4(), second: uuid.uuid4()}
    for shard_id, token in tokens.items():
        assert await store.claim(shard_id, token, 30) is not None
    boom = error_json("INTERNAL", "boom", "INTERNAL")

    async with store.transaction() as conn:  # the first shard fails: the others are stopped
        stopping = await stop_parent(conn, parent.id, boom, shard_id=first)
        await store.finish(conn, first, tokens[first], state=JobState.FAILED, error=boom)
    assert stopping is not None and stopping.state is JobState.RUNNING, "a shard still runs"
    assert (await store.get_job(TENANT, queued)).state is JobState.CANCELLED
    assert await store.get_dataset(TENANT, "sharded")  # the running shard may still write into it

    cancelled = await store.cancel_job(TENANT, parent.id)  # a later CancelJob changes no outcome
    assert cancelled.state is JobState.RUNNING

    async with store.transaction() as conn:  # the last running shard ends: the parent ends with it
        ended = await stop_parent(conn, parent.id, cancelled_error(), shard_id=second)
        await store.finish(conn, second, tokens[second], state=JobState.CANCELLED, error=cancelled_error())
    assert ended is not None and ended.state is JobState.FAILED
    assert ended.error is not None and ended.error["message"] == "boom"
    with pytest.raises(NotFound):
        await store.get_dataset(TENANT, "sharded")


async def test_backoff_delays_the_next_claim(store: JobStore) -> None:
    job, _ = await store.create_job(new_job())
    token = uuid.uuid4()
    await store.claim(job.id, token, 30)
    await store.requeue(job.id, token, error={"code": "UNAVAILABLE", "message": "x", "reason": "R"}, delay_seconds=60)
    assert await store.claim(job.id, uuid.uuid4(), 30) is None
    assert await store.due_for_dispatch(limit=10, redispatch_after=0.001) == []


async def _drive(store: JobStore, job_id: uuid.UUID, steps: int) -> None:
    token = uuid.uuid4()
    assert await store.claim(job_id, token, 30) is not None
    for done in range(1, steps + 1):
        async with store.transaction() as conn:
            await store.checkpoint(conn, job_id, token, done=done, lease_seconds=30)
        if done % 7 == 0:
            await asyncio.sleep(0)
    async with store.transaction() as conn:
        await store.finish(conn, job_id, token, state=JobState.SUCCEEDED, result={}, done=steps)


async def _collect(session: WatchSession) -> list[int]:
    seqs: list[int] = []
    async for message in session.messages():
        if isinstance(message, EventRow):
            seqs.append(message.seq)
        elif isinstance(message, Ended):
            assert message.reason is EndReason.TERMINAL, message
            session.input_finished()
    return seqs


async def test_watch_has_no_gap_or_duplicate_when_subscribing_during_writes(store: JobStore, pg_conninfo: str) -> None:
    """Subscriptions start at different moments of a burst of writes; each sees 1..N exactly once."""
    hub = EventHub(pg_conninfo)
    hub_task = asyncio.create_task(hub.run())
    await asyncio.wait_for(hub.connected.wait(), 10)
    try:
        job, _ = await store.create_job(new_job())
        steps = 300
        writer = asyncio.create_task(_drive(store, job.id, steps))
        sessions = []
        for delay in (0.0, 0.01, 0.03, 0.08):
            await asyncio.sleep(delay)
            session = WatchSession(store, hub, TENANT, keepalive_seconds=5)
            await session.subscribe(str(job.id), 0)
            sessions.append(session)
        results = await asyncio.wait_for(asyncio.gather(*(_collect(s) for s in sessions)), 60)
        await writer
        expected = list(range(1, steps + 4))  # CREATED, STARTED, N progress, SUCCEEDED
        for seqs in results:
            assert seqs == expected
        for session in sessions:
            await session.close()
        assert hub.watcher_count == 0
    finally:
        hub_task.cancel()
        await asyncio.gather(hub_task, return_exceptions=True)


async def test_watch_survives_the_listener_connection_being_killed(store: JobStore, pg_conninfo: str) -> None:
    hub = EventHub(pg_conninfo, reconnect_delay=0.05)
    hub_task = asyncio.create_task(hub.run())
    await asyncio.wait_for(hub.connected.wait(), 10)
    try:
        job, _ = await store.create_job(new_job())
        session = WatchSession(store, hub, TENANT, keepalive_seconds=5)
        await session.subscribe(str(job.id), 0)
        collector = asyncio.create_task(_collect(session))
        token = uuid.uuid4()
        await store.claim(job.id, token, 30)
        async with await psycopg.AsyncConnection.connect(pg_conninfo, autocommit=True) as admin:
            cur = await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%%' AND pid <> pg_backend_pid()"
            )
            assert await cur.fetchall() == [(True,)], "the hub's LISTEN connection should have been killed"
        for done in range(1, 21):  # some of these land while the hub is reconnecting
            async with store.transaction() as conn:
                await store.checkpoint(conn, job.id, token, done=done, lease_seconds=30)
        async with store.transaction() as conn:
            await store.finish(conn, job.id, token, state=JobState.SUCCEEDED, result={}, done=20)
        assert await asyncio.wait_for(collector, 30) == list(range(1, 24))
        await session.close()
    finally:
        hub_task.cancel()
        await asyncio.gather(hub_task, return_exceptions=True)
