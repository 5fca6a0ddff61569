"""The WatchJob servicer in-process on a real grpc.aio server and a real PostgreSQL:
keepalives while idle, and every resource released when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from datamill.v1 import job_service_pb2 as pb
from datamill.v1 import job_service_pb2_grpc
from server.api.auth import AuthInterceptor
from server.api.job_servicer import JobServicer
from server.core.events import EventHub
from server.core.exports import ExportDomain, ExportStore
from server.core.jobs import JobDomain
from server.core.models import JobKind, NewJob, ProgressUnit
from server.core.objects import LocalObjectStore
from server.core.settings import Settings
from server.core.store import JobStore, open_pool
from server.core.uploads import UploadDomain, UploadStore
from tests.integration.fakes import NoDispatch

pytestmark = pytest.mark.integration


@pytest.fixture
async def served(pg_conninfo: str, tmp_path: Path) -> AsyncIterator[tuple[str, EventHub, JobStore]]:
    pool = await open_pool(pg_conninfo, min_size=1, max_size=4, name="test")
    store = JobStore(pool)
    hub = EventHub(pg_conninfo)
    hub_task = asyncio.create_task(hub.run())
    await asyncio.wait_for(hub.connected.wait(), 10)
    settings = Settings(database_url=pg_conninfo, redis_url="redis://unused")
    server = grpc.aio.server(interceptors=[AuthInterceptor(enabled=False)])  # auth off: the one tenant "default"
    job_service_pb2_grpc.add_JobServiceServicer_to_server(
        JobServicer(
            JobDomain(store, NoDispatch(), settings),
            UploadDomain(
                UploadStore(store), JobDomain(store, NoDispatch(), settings), LocalObjectStore(tmp_path), settings
            ),
            ExportDomain(JobDomain(store, NoDispatch(), settings), ExportStore(store), LocalObjectStore(tmp_path)),
            hub,
            keepalive_seconds=0.2,
        ),
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", hub, store
    finally:
        await server.stop(None)
        hub_task.cancel()
        await asyncio.gather(hub_task, return_exceptions=True)
        await pool.close()


async def _job(store: JobStore) -> str:
    new = NewJob(
        tenant="default",
        kind=JobKind.GENERATE,
        spec={},
        request_id=None,
        request_hash="h",
        max_attempts=1,
        progress_total=1,
        progress_unit=ProgressUnit.ROWS,
    )
    job, _ = await store.create_job(new)
    return str(job.id)


async def test_idle_stream_gets_keepalives(served: tuple[str, EventHub, JobStore]) -> None:
    target, _, _ = served
    async with grpc.aio.insecure_channel(target) as channel:
        call: Any = job_service_pb2_grpc.JobServiceStub(channel).WatchJob()
        kinds = [(await asyncio.wait_for(call.read(), 2)).WhichOneof("message") for _ in range(3)]
        assert kinds == ["keepalive", "keepalive", "keepalive"]
        call.cancel()


async def test_client_going_away_releases_subscriptions(served: tuple[str, EventHub, JobStore]) -> None:
    target, hub, store = served
    job_ids = [await _job(store) for _ in range(5)]
    async with grpc.aio.insecure_channel(target) as channel:
        call: Any = job_service_pb2_grpc.JobServiceStub(channel).WatchJob()
        for job_id in job_ids:
            await call.write(pb.WatchJobRequest(subscribe=pb.WatchSubscribe(job_id=job_id)))
        subscribed: set[str] = set()
        while len(subscribed) < len(job_ids):
            response = await asyncio.wait_for(call.read(), 5)
            if response.HasField("subscribed"):
                subscribed.add(response.subscribed.job_id)
        assert hub.watcher_count == 5
        call.cancel()  # the client vanishes without unsubscribing
    for _ in range(100):
        if hub.watcher_count == 0:
            break
        await asyncio.sleep(0.05)
    assert hub.watcher_count == 0


async def test_unsubscribe_ends_only_that_subscription(served: tuple[str, EventHub, JobStore]) -> None:
    target, hub, store = served
    first, second = await _job(store), await _job(store)
    async with grpc.aio.insecure_channel(target) as channel:
        call: Any = job_service_pb2_grpc.JobServiceStub(channel).WatchJob()
        for job_id in (first, second):
            await call.write(pb.WatchJobRequest(subscribe=pb.WatchSubscribe(job_id=job_id)))
        await call.write(pb.WatchJobRequest(unsubscribe=pb.WatchUnsubscribe(job_id=first)))
        ended = None
        while ended is None:
            response = await asyncio.wait_for(call.read(), 5)
            if response.HasField("ended"):
                ended = response.ended
        assert ended.job_id == first
        assert ended.reason == pb.WATCH_END_REASON_UNSUBSCRIBED
        assert hub.watcher_count == 1
        call.cancel()
