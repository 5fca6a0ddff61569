"""Redis and PostgreSQL restarted under load (docs/reliability.md, rows R1 and P1).

Each test runs its own Redis or PostgreSQL, so that restarting it disturbs no
other test. Jobs are queued and running when the service goes away; every one
must end SUCCEEDED with the right row count once it is back, with no help.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import Client, RetryPolicy
from client.errors import UnavailableError
from datamill.v1 import job_pb2
from server.dev import server_process
from server.devstack import EmbeddedPostgres, EmbeddedRedis
from tests.e2e.conftest import Stack, make_stack, stop_stack
from tests.e2e.helpers import schema, wait_for

pytestmark = pytest.mark.timeout(180)

FAST_RECOVERY = {
    "DATAMILL_LEASE_SECONDS": "3",
    "DATAMILL_REDISPATCH_AFTER_SECONDS": "2",
    "DATAMILL_RETRY_BACKOFF_BASE_SECONDS": "0.2",
    "DATAMILL_GENERATE_CHUNK_ROWS": "20000",
}


def _serving(target: str) -> bool:
    return bool(_health(target) == health_pb2.HealthCheckResponse.SERVING)


def _health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.RpcError:
            return -1
    return int(response.status)


def _submit(client: Client, prefix: str, count: int, rows: int) -> list[str]:
    return [client.generate(f"{prefix}_{i}", schema=schema(rows)).id for i in range(count)]


def _all_succeed(client: Client, stack: Stack, job_ids: list[str], rows: int) -> None:
    for job_id in job_ids:
        done = client.wait(job_id)
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED, (job_id, done.error.message)
        assert done.generate.row_count == rows
        (table,) = stack.sql("SELECT table_name FROM datasets WHERE job_id = %s", job_id)[0]
        assert stack.sql(f'SELECT count(*), count(DISTINCT seq) FROM datasets."{table}"') == [(rows, rows)]


def test_redis_crash_loses_no_job_and_dispatch_resumes(stack_factory: Any, tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "redis") as redis:
        stack: Stack = stack_factory(redis=redis.url, settings=FAST_RECOVERY, workers=1)
        with Client.connect(stack.target, timeout=30) as client:
            running = client.generate("long", schema=schema(1_500_000)).id
            wait_for(lambda: client.get_job(running).progress.done > 0, timeout=30, what="a running job")
            queued = _submit(client, "queued", 8, 20_000)  # waiting behind the long one in the stream
            redis.restart(crash=True)  # SIGKILL: the stream, its group and the queued messages are lost
            wait_for(
                lambda: _health(stack.target) == health_pb2.HealthCheckResponse.SERVING, timeout=30, what="SERVING"
            )
            after = _submit(client, "after", 4, 20_000)  # sent to the new Redis
            _all_succeed(client, stack, [running], 1_500_000)
            _all_succeed(client, stack, [*queued, *after], 20_000)


def test_postgres_restart_is_unavailable_then_recovers_by_itself(
    redis_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    with EmbeddedPostgres(tmp_path / "pg") as pg:
        stack = make_stack(pg.conninfo, redis_url, tmp_path / "stack", settings=FAST_RECOVERY)
        try:
            _check_postgres_restart(stack, pg)
        except BaseException:
            print(stack.dump_logs())
            raise
        finally:
            stop_stack(stack, pg.conninfo)


def _check_postgres_restart(stack: Stack, pg: EmbeddedPostgres) -> None:
    with Client.connect(stack.target, timeout=30) as client:
        running = client.generate("long", schema=schema(1_000_000)).id
        wait_for(lambda: client.get_job(running).progress.done > 0, timeout=30, what="a running job")
        queued = _submit(client, "queued", 4, 20_000)
        pg.stop()
        try:
            wait_for(
                lambda: _health(stack.target) == health_pb2.HealthCheckResponse.NOT_SERVING,
                timeout=15,
                what="NOT_SERVING while PostgreSQL is down",
            )
            # An RPC in flight gets UNAVAILABLE with RetryInfo, never INTERNAL.
            with grpc.insecure_channel(stack.target) as channel:
                from datamill.v1 import job_service_pb2, job_service_pb2_grpc  # noqa: PLC0415

                stub = job_service_pb2_grpc.JobServiceStub(channel)
                with pytest.raises(grpc.RpcError) as raised:
                    stub.GetJob(job_service_pb2.GetJobRequest(job_id=running), timeout=20)
            assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value.details()
            with (
                Client.connect(stack.target, timeout=20, retry=RetryPolicy(max_attempts=1)) as once,
                pytest.raises(UnavailableError) as typed,
            ):
                once.get_job(running)
            assert typed.value.retry_delay is not None and typed.value.retry_delay > 0
            # A client with retries waits the outage out (GetJob is safe to retry, AIP-194).
            answered: list[job_pb2.Job] = []
            waiter = threading.Thread(target=lambda: answered.append(client.get_job(running)))
            waiter.start()
            time.sleep(1.0)
        finally:
            pg.start()
        waiter.join(60)
        assert answered and answered[0].id == running
        wait_for(lambda: _serving(stack.target), timeout=30, what="SERVING")
        _all_succeed(client, stack, [running], 1_000_000)
        _all_succeed(client, stack, queued, 20_000)


def test_server_killed_mid_watch_the_watcher_resumes_without_gap_or_duplicate(stack_factory: Any) -> None:
    stack: Stack = stack_factory(settings=FAST_RECOVERY)
    sequences: list[int] = []
    with Client.connect(stack.target, timeout=30) as client:
        job = client.generate("watched", schema=schema(2_000_000))
        watcher = threading.Thread(target=lambda: sequences.extend(e.sequence for e in client.watch(job.id)))
        watcher.start()
        wait_for(lambda: len(sequences) >= 3, timeout=30, what="the first events")
        stack.server.kill()  # SIGKILL: the stream breaks without a goodbye
        stack.server = server_process(stack.env, stack.logs / "server-after-kill.log").start()
        watcher.join(120)
        assert not watcher.is_alive()
        final = client.get_job(job.id)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED
    stored = [int(str(r[0])) for r in stack.sql("SELECT seq FROM job_events WHERE job_id = %s ORDER BY seq", job.id)]
    assert sequences == stored == list(range(1, len(stored) + 1))
