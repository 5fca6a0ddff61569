"""Process lifecycle: health on start and on SIGTERM, and a worker killed with SIGKILL mid-job."""

from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import Client, RetryPolicy
from client.errors import UnavailableError
from datamill.v1 import job_pb2
from server.dev import health_status
from server.devstack import EmbeddedRedis, free_port
from tests.e2e.conftest import Stack, stack_database
from tests.e2e.helpers import RawWatch, schema, wait_for

pytestmark = pytest.mark.e2e

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_serving_then_not_serving_on_sigterm(stack_factory: object) -> None:
    stack: Stack = stack_factory(settings={"DATAMILL_SHUTDOWN_DELAY_SECONDS": "1.5"})  # type: ignore[operator]
    for service in ("", "datamill.v1.JobService", "datamill.v1.DatasetService"):
        assert health_status(stack.target, service) == SERVING

    # A Watch on the health service sees the change as it happens; Check sees it during the delay.
    channel = grpc.insecure_channel(stack.target)
    updates = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""))
    assert next(updates).status == SERVING
    # An open WatchJob stream is an in-flight RPC the server must drain.
    watch = RawWatch(stack.target)
    with Client.connect(stack.target) as client:
        job = client.generate("drain", schema=schema(10))
    watch.subscribe(job.id)

    stack.server.signal(signal.SIGTERM)
    assert next(updates).status == NOT_SERVING
    assert wait_for(lambda: health_status(stack.target) == NOT_SERVING, timeout=1.5, what="NOT_SERVING via Check")
    assert stack.server.proc is not None
    assert stack.server.proc.wait(timeout=30) == 0, stack.server.log_tail()
    watch.close()
    channel.close()
    log = stack.server.log_path.read_text()
    assert log.index('"server_draining"') < log.index('"server_stopped"')


def test_worker_killed_mid_job_is_finished_by_another_worker(stack_factory: object) -> None:
    rows = 4_000_000
    stack: Stack = stack_factory(  # type: ignore[operator]
        settings={
            "DATAMILL_LEASE_SECONDS": "3",
            "DATAMILL_GENERATE_CHUNK_ROWS": "50000",
            "DATAMILL_GENERATE_SHARD_ROWS": str(rows),  # one job, not shards: this is about one job's retry
        },
        workers=1,
    )
    victim = stack.workers[0]
    with Client.connect(stack.target) as client:
        job = client.generate("survivor", schema=schema(rows))
        done = wait_for(
            lambda: (p := client.get_job(job.id).progress.done) > 0 and p, timeout=60, what="first checkpoint"
        )
        assert done < rows, "the job finished before the worker could be killed"
        victim.kill()  # SIGKILL the whole process group, mid-job
        killed_at = time.monotonic()
        stack.start_worker()
        final = client.wait(job.id)

    assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.error.message
    assert final.attempt == 2
    assert final.generate.row_count == rows
    (table,) = stack.sql("SELECT table_name FROM datasets WHERE name = 'survivor'")[0]
    count, distinct, low, high = stack.sql(
        f'SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM datasets."{table}"'
    )[0]
    assert (count, distinct, low, high) == (rows, rows, 1, rows), "rows must be exact: no loss, no duplicate"
    types = [t for (t,) in stack.sql("SELECT type FROM job_events WHERE job_id = %s ORDER BY seq", job.id)]
    assert "REQUEUED" in types and types.count("STARTED") == 2 and types[-1] == "SUCCEEDED"
    assert time.monotonic() - killed_at < 60


def test_not_serving_until_postgres_and_redis_answer(stack_factory: object, pg_server: str, tmp_path: Path) -> None:
    """The server listens at once but serves only once migrated and both dependencies answer;
    a job submitted while Redis is down runs as soon as it is back."""
    redis_port = free_port()
    stack: Stack = stack_factory(  # type: ignore[operator]
        redis=f"redis://127.0.0.1:{redis_port}/0", create_database=False, wait=False
    )
    wait_for(lambda: health_status(stack.target) is not None, timeout=30, what="the server to listen")
    time.sleep(1.0)
    assert health_status(stack.target) == NOT_SERVING
    with Client.connect(stack.target, retry=RetryPolicy(max_attempts=1)) as client:
        with pytest.raises(UnavailableError) as starting:
            client.get_job("00000000-0000-0000-0000-000000000000")
        assert starting.value.reason == "STARTING"
        assert starting.value.retry_delay is not None

        stack_database(pg_server, str(psycopg.conninfo.conninfo_to_dict(stack.database_url)["dbname"]))
        time.sleep(2.0)  # migrated now, but Redis is still missing
        assert health_status(stack.target) == NOT_SERVING
        job = client.generate("patient", schema=schema(1_000))  # stored; the hand-off waits for Redis

        with EmbeddedRedis(tmp_path / "late-redis", port=redis_port):
            wait_for(lambda: health_status(stack.target) == SERVING, timeout=30, what="SERVING")
            final = client.wait(job.id)
            assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.error.message
            for proc in (*stack.workers, stack.server):
                proc.stop()


def test_worker_sigterm_gives_the_job_back_at_once(stack_factory: object) -> None:
    """A stopping worker that cannot finish in its grace period hands the job back without
    waiting for its lease to expire, keeps its checkpoints and spends no attempt."""
    rows = 6_000_000
    stack: Stack = stack_factory(  # type: ignore[operator]
        settings={
            "DATAMILL_LEASE_SECONDS": "60",
            "DATAMILL_GENERATE_CHUNK_ROWS": "50000",
            "DATAMILL_WORKER_SHUTDOWN_SECONDS": "0.2",
            "DATAMILL_GENERATE_SHARD_ROWS": str(rows),  # one job, not shards: this is about one job's release
        },
    )
    with Client.connect(stack.target) as client:
        job = client.generate("handed_back", schema=schema(rows))
        wait_for(lambda: client.get_job(job.id).progress.done > 0, timeout=60, what="first checkpoint")
        stopped_at = time.monotonic()
        assert stack.workers[0].stop() == 0, stack.workers[0].log_tail()
        released = client.get_job(job.id)
        assert released.state == job_pb2.JOB_STATE_QUEUED, "the job should be back in the queue"
        assert released.attempt == 0
        assert 0 < released.progress.done < rows
        assert time.monotonic() - stopped_at < 15, "released long before the 60 s lease"
        stack.start_worker()
        final = client.wait(job.id)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.error.message
    assert final.attempt == 1
    (table,) = stack.sql("SELECT table_name FROM datasets WHERE name = 'handed_back'")[0]
    assert stack.sql(f'SELECT count(*), count(DISTINCT seq) FROM datasets."{table}"') == [(rows, rows)]


def test_sigterm_lets_an_in_flight_download_finish(stack_factory: object) -> None:
    """A stream that is running when SIGTERM arrives completes within the grace period; new calls are refused."""
    stack: Stack = stack_factory()  # type: ignore[operator]
    with Client.connect(stack.target, timeout=30) as client:
        made = client.wait(client.generate("download", schema=schema(600_000)).id)
        assert made.state == job_pb2.JOB_STATE_SUCCEEDED
        result = client.wait(client.export("download", format="csv").id).export
        digest = hashlib.sha256()
        received = 0
        # No reconnection: the one stream must carry every byte.
        with Client.connect(stack.target, watch_retry=RetryPolicy(max_attempts=1)) as reader:
            for chunk in reader.read_object(result.object_key):
                if received == 0:
                    stack.server.signal(signal.SIGTERM)  # the first MiB is here; the rest is still to come
                    time.sleep(0.5)
                received += len(chunk)
                digest.update(chunk)
    assert received == result.size_bytes > 50 * 1024 * 1024
    assert digest.hexdigest() == result.sha256
    assert stack.server.proc is not None and stack.server.proc.wait(timeout=30) == 0
