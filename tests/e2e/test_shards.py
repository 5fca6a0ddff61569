"""Sharded Generate with real server and worker processes.

A Generate above DATAMILL_GENERATE_SHARD_ROWS runs as shards on several
workers; the table must equal, byte for byte, the one a single job makes.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from client import Client, NotFoundError
from datamill.v1 import job_pb2
from tests.e2e.conftest import Stack
from tests.e2e.helpers import schema, wait_for

ROWS = 60_000
SHARDED = {"DATAMILL_GENERATE_SHARD_ROWS": "10000", "DATAMILL_GENERATE_CHUNK_ROWS": "2000"}


def table_of(stack: Stack, dataset: str) -> str:
    return str(stack.sql("SELECT table_name FROM datasets WHERE name = %s", dataset)[0][0])


def content_digest(stack: Stack, dataset: str) -> tuple[Any, ...]:
    """Row count, distinct seq and an order-independent digest of every row's text."""
    table = table_of(stack, dataset)
    digest = "md5(string_agg(t::text, E'\\n' ORDER BY t.seq))"
    return stack.sql(f'SELECT count(*), count(DISTINCT seq), {digest} FROM datasets."{table}" t')[0]


def shards_of(stack: Stack, job_id: str) -> list[tuple[Any, ...]]:
    return stack.sql(
        "SELECT state, attempt, progress_done, progress_total FROM jobs WHERE parent_id = %s"
        " ORDER BY (spec->>'start_row')::bigint",
        job_id,
    )


def test_shards_on_two_workers_make_the_same_table_as_one_job(stack_factory: object) -> None:
    stack: Stack = stack_factory(settings=SHARDED, workers=2)  # type: ignore[operator]
    # Both must be reading the queue before the shards are sent, or the first one up may take them all.
    wait_for(
        lambda: all("worker_started" in worker.log_tail(2_000) for worker in stack.workers),
        timeout=60,
        what="both workers to start",
    )
    with Client.connect(stack.target) as client:
        sharded = client.generate("sharded", schema=schema(ROWS))
        events = list(client.watch(sharded.id))
        final = client.wait(sharded.id)
        listed = [j.id for j in client.list_jobs().jobs]
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.error.message
    assert final.generate.row_count == ROWS
    assert final.progress.done == ROWS
    shards = shards_of(stack, sharded.id)
    assert len(shards) == 6
    assert all(s[0] == "SUCCEEDED" and s[2] == s[3] == 10_000 for s in shards)
    assert listed == [sharded.id], "shards are internal: ListJobs shows only the Generate"
    progress = [e.job.progress.done for e in events if e.type == job_pb2.JOB_EVENT_TYPE_PROGRESS]
    assert progress == sorted(progress)
    assert progress[-1] == ROWS
    assert [e.type for e in events][-1] == job_pb2.JOB_EVENT_TYPE_SUCCEEDED
    assert all("job_claimed" in worker.log_tail(2_000) for worker in stack.workers), "both workers took shards"

    # The same schema and seed as one job (no shards), on another stack: the same rows.
    single: Stack = stack_factory(settings={"DATAMILL_GENERATE_CHUNK_ROWS": "7777"})  # type: ignore[operator]
    with Client.connect(single.target) as client:
        one = client.wait(client.generate("sharded", schema=schema(ROWS)).id)
    assert one.state == job_pb2.JOB_STATE_SUCCEEDED
    assert not shards_of(single, one.id)
    assert content_digest(stack, "sharded") == content_digest(single, "sharded")
    assert content_digest(stack, "sharded")[:2] == (ROWS, ROWS)


def test_a_killed_shard_is_retried_and_replaces_nothing_twice(stack_factory: object) -> None:
    rows = 400_000
    settings = {
        "DATAMILL_GENERATE_SHARD_ROWS": "100000",
        "DATAMILL_GENERATE_CHUNK_ROWS": "10000",
        "DATAMILL_LEASE_SECONDS": "3",
    }
    stack: Stack = stack_factory(settings=settings, workers=1)  # type: ignore[operator]
    with Client.connect(stack.target) as client:
        job = client.generate("sharded", schema=schema(rows))
        wait_for(lambda: client.get_job(job.id).progress.done > 0, timeout=60, what="first checkpoint")
        stack.workers[0].kill()
        # The dataset is not readable as complete while shards remain.
        assert stack.sql("SELECT ready FROM datasets WHERE name = 'sharded'")[0][0] is False
        stack.start_worker()
        stack.start_worker()
        final = client.wait(job.id)
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED, final.error.message
    assert stack.sql("SELECT ready, row_count FROM datasets WHERE name = 'sharded'")[0] == (True, rows)
    count, distinct, _ = content_digest(stack, "sharded")
    assert (count, distinct) == (rows, rows), "no row lost or written twice"
    assert max(s[1] for s in shards_of(stack, job.id)) == 2, "the killed shard ran a second attempt"


def test_a_shard_out_of_attempts_fails_the_job_and_drops_the_data(stack_factory: object) -> None:
    settings = {
        "DATAMILL_GENERATE_SHARD_ROWS": "100000",
        "DATAMILL_GENERATE_CHUNK_ROWS": "10000",
        "DATAMILL_LEASE_SECONDS": "2",
        "DATAMILL_MAX_ATTEMPTS": "1",
    }
    stack: Stack = stack_factory(settings=settings, workers=1)  # type: ignore[operator]
    with Client.connect(stack.target) as client:
        job = client.generate("doomed", schema=schema(400_000))
        wait_for(lambda: client.get_job(job.id).progress.done > 0, timeout=60, what="first checkpoint")
        stack.workers[0].kill()
        final = client.wait(job.id)
    assert final.state == job_pb2.JOB_STATE_FAILED
    assert final.error.message.startswith("the worker stopped renewing its lease")
    states = {s[0] for s in shards_of(stack, job.id)}
    assert "RUNNING" not in states and "QUEUED" not in states
    assert "FAILED" in states
    assert stack.sql("SELECT count(*) FROM datasets WHERE name = 'doomed'")[0][0] == 0
    assert stack.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'datasets'")[0][0] == 0


def test_cancelling_a_sharded_job_stops_every_shard(stack_factory: object) -> None:
    settings = {"DATAMILL_GENERATE_SHARD_ROWS": "200000", "DATAMILL_GENERATE_CHUNK_ROWS": "10000"}
    stack: Stack = stack_factory(settings=settings, workers=2)  # type: ignore[operator]
    with Client.connect(stack.target) as client:
        job = client.generate("stopped", schema=schema(2_000_000))
        wait_for(lambda: client.get_job(job.id).progress.done > 0, timeout=60, what="first checkpoint")
        started = time.monotonic()
        client.cancel_job(job.id)
        final = client.wait(job.id)
        took = time.monotonic() - started
        # The Generate ends only once no shard writes any more, and with its data gone.
        assert {s[0] for s in shards_of(stack, job.id)} == {"CANCELLED"}
        assert stack.sql("SELECT count(*) FROM datasets WHERE name = 'stopped'")[0][0] == 0
        assert stack.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'datasets'")[0][0] == 0
        with pytest.raises(NotFoundError):
            client.get_dataset("stopped")
    assert final.state == job_pb2.JOB_STATE_CANCELLED
    assert final.error.message == "the job was cancelled"
    assert took < 2.0, f"cancellation took {took:.2f}s"
