"""Generate → Watch end to end, over real server and worker processes."""

from __future__ import annotations

import time

import pytest

from client import Client
from client.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from datamill.v1 import job_pb2, job_service_pb2
from tests.e2e.conftest import Stack
from tests.e2e.helpers import TERMINAL, RawWatch, schema, wait_for

pytestmark = pytest.mark.e2e


def _table_stats(stack: Stack, dataset: str) -> tuple[int, int, int, int]:
    (table,) = stack.sql("SELECT table_name FROM datasets WHERE name = %s", dataset)[0]
    return stack.sql(f'SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM datasets."{table}"')[0]  # type: ignore[return-value]


def test_generate_100k_rows_watched_to_succeeded(stack: Stack) -> None:
    with Client.connect(stack.target) as client:
        job = client.generate("orders", schema=schema(100_000))
        assert job.state == job_pb2.JOB_STATE_QUEUED
        events = list(client.watch([job.id]))

    sequences = [e.sequence for e in events]
    assert sequences == list(range(1, len(events) + 1)), "events must start at 1 with no gap and no duplicate"
    assert events[0].type == job_pb2.JOB_EVENT_TYPE_CREATED
    assert events[-1].type == job_pb2.JOB_EVENT_TYPE_SUCCEEDED
    final = events[-1].job
    assert final.state == job_pb2.JOB_STATE_SUCCEEDED
    assert final.progress.done == final.progress.total == 100_000
    assert final.generate.row_count == 100_000
    progress = [e.job.progress.done for e in events if e.type == job_pb2.JOB_EVENT_TYPE_PROGRESS]
    assert progress == sorted(progress) and progress[-1] == 100_000
    assert _table_stats(stack, "orders") == (100_000, 100_000, 1, 100_000)

    with Client.connect(stack.target) as client:
        dataset = client.get_dataset("orders")
    assert dataset.ready and dataset.row_count == 100_000
    assert [c.name for c in dataset.columns] == ["seq", "id", "qty", "price", "status", "note", "at"]


def test_watch_resumes_from_cursor_without_gap_or_duplicate(stack: Stack) -> None:
    """Read part of a live job's events, drop the stream, resume from the cursor on a new one."""
    with Client.connect(stack.target) as client:
        job = client.generate("resume", schema=schema(600_000))
    first = RawWatch(stack.target)
    first.subscribe(job.id)
    seen = [first.next_event().sequence, first.next_event().sequence, first.next_event().sequence]
    first.close()  # disconnect mid-job

    time.sleep(0.3)  # let more events land while no one watches
    second = RawWatch(stack.target)
    second.subscribe(job.id, after_sequence=seen[-1])
    while True:
        response = second.next()
        if response.HasField("event"):
            seen.append(response.event.sequence)
        elif response.HasField("ended"):
            assert response.ended.reason == job_service_pb2.WATCH_END_REASON_TERMINAL
            break
    second.close()

    assert seen == list(range(1, len(seen) + 1))
    (last_seq,) = stack.sql("SELECT max(seq) FROM job_events WHERE job_id = %s", job.id)[0]
    assert seen[-1] == last_seq

    # A cursor at the very end replays nothing and ends the subscription at once.
    third = RawWatch(stack.target)
    third.subscribe(job.id, after_sequence=seen[-1])
    assert third.next().HasField("subscribed")
    ended = third.next()
    assert ended.HasField("ended") and ended.ended.reason == job_service_pb2.WATCH_END_REASON_TERMINAL
    third.close()


def test_two_jobs_watched_on_one_stream(stack: Stack) -> None:
    with Client.connect(stack.target) as client:
        a = client.generate("first", schema=schema(120_000))
        b = client.generate("second", schema=schema(80_000))
    watch = RawWatch(stack.target)
    watch.subscribe(a.id)
    watch.subscribe(b.id)
    sequences: dict[str, list[int]] = {a.id: [], b.id: []}
    ended: set[str] = set()
    while len(ended) < 2:
        response = watch.next()
        if response.HasField("event"):
            sequences[response.event.job_id].append(response.event.sequence)
        elif response.HasField("ended"):
            assert response.ended.reason == job_service_pb2.WATCH_END_REASON_TERMINAL
            ended.add(response.ended.job_id)
    watch.close()
    for job_id, seqs in sequences.items():
        assert seqs == list(range(1, len(seqs) + 1)), job_id
    assert ended == {a.id, b.id}


def test_watch_unknown_job_ends_that_subscription_only(stack: Stack) -> None:
    with Client.connect(stack.target) as client:
        job = client.generate("known", schema=schema(1_000))
    watch = RawWatch(stack.target)
    watch.subscribe("00000000-0000-0000-0000-000000000000")
    watch.subscribe(job.id)
    got_error = got_terminal = False
    while not (got_error and got_terminal):
        response = watch.next()
        if response.HasField("ended"):
            if response.ended.reason == job_service_pb2.WATCH_END_REASON_ERROR:
                assert response.ended.status.code == 5  # NOT_FOUND
                got_error = True
            else:
                assert response.ended.job_id == job.id
                got_terminal = True
    watch.close()


def test_cancel_stops_a_running_job_and_removes_its_data(stack: Stack) -> None:
    with Client.connect(stack.target) as client:
        job = client.generate("doomed", schema=schema(20_000_000))
        wait_for(lambda: client.get_job(job.id).progress.done > 0, timeout=30, what="the job to make progress")
        requested = time.monotonic()
        client.cancel_job(job.id)
        final = wait_for(lambda: (j := client.get_job(job.id)).state in TERMINAL and j, timeout=10, what="cancellation")
        took = time.monotonic() - requested
        assert final.state == job_pb2.JOB_STATE_CANCELLED
        assert took < 2.0, f"cancellation took {took:.2f}s"
        assert final.progress.done < 20_000_000
        with pytest.raises(NotFoundError):
            client.get_dataset("doomed")
    tables = stack.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'datasets'")
    assert tables == [(0,)]


def test_cancel_queued_job_is_immediate(stack_factory: object) -> None:
    stack: Stack = stack_factory(workers=0)  # type: ignore[operator]
    with Client.connect(stack.target) as client:
        job = client.generate("never_runs", schema=schema(10))
        cancelled = client.cancel_job(job.id)
        assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
        events = list(client.watch([job.id]))
    assert [e.type for e in events] == [job_pb2.JOB_EVENT_TYPE_CREATED, job_pb2.JOB_EVENT_TYPE_CANCELLED]


def test_repeated_request_id_returns_the_same_job(stack: Stack) -> None:
    with Client.connect(stack.target) as client:
        first = client.generate("idem", schema=schema(1_000), request_id="req-42")
        again = client.generate("idem", schema=schema(1_000), request_id="req-42")
        assert again.id == first.id
        with pytest.raises(AlreadyExistsError) as reused:
            client.generate("idem", schema=schema(2_000), request_id="req-42")
        assert reused.value.reason == "REQUEST_ID_REUSED"
        with pytest.raises(AlreadyExistsError):  # same dataset name, new request
            client.generate("idem", schema=schema(1_000), request_id="req-43")
        client.wait(first.id)
    assert stack.sql("SELECT count(*) FROM jobs") == [(1,)]


def test_invalid_schema_gets_field_violations_and_creates_nothing(stack: Stack) -> None:
    bad = {
        "rows": 0,
        "fields": [
            {"name": "ok", "type": "integer"},
            {"name": "Bad Name", "type": "integer"},
            {"name": "x", "type": "no_such_type"},
            {"name": "y", "type": "integer", "params": {"min": 10, "max": 1}},
            {"name": "ok", "type": "float", "null_rate": 1.5},
        ],
    }
    with Client.connect(stack.target) as client, pytest.raises(InvalidArgumentError) as caught:
        client.generate("bad", schema=bad)
    fields = {v.field for v in caught.value.field_violations}
    assert {
        "schema.rows",
        "schema.fields[1].name",
        "schema.fields[2].type",
        "schema.fields[4].name",
        "schema.fields[4].null_rate",
    } <= fields
    assert any(f.startswith("schema.fields[3].params") for f in fields), fields
    assert stack.sql("SELECT count(*) FROM jobs") == [(0,)]
    assert stack.sql("SELECT count(*) FROM datasets") == [(0,)]
