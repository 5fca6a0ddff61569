"""The async and sync clients against in-process fake services on a real gRPC server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import grpc
import pytest
from google.rpc import status_pb2

from client import (
    AlreadyExistsError,
    AsyncClient,
    Client,
    InvalidArgumentError,
    NotFoundError,
    RetryPolicy,
    SchemaError,
    UnavailableError,
)
from client.errors import FieldViolation
from datamill.v1 import dataset_service_pb2, job_pb2, job_service_pb2, schema_pb2
from tests.unit.test_client_fakes import FakeServer, FakeState, ThreadedFakeServer, rich_status

FAST = RetryPolicy(max_attempts=4, initial_backoff=0.01, max_backoff=0.05)
FAST_WATCH = RetryPolicy(max_attempts=30, initial_backoff=0.02, max_backoff=0.1)

SCHEMA = {
    "rows": 300,
    "seed": 42,
    "fields": [
        {"name": "id", "type": "uuid4"},
        {"name": "age", "type": "integer", "params": {"min": 18, "max": 90}, "null_rate": 0.1},
        {"name": "tag", "type": "choice", "params": {"values": ["a", "b"]}, "unique": False, "seed": 7},
    ],
}


def _unavailable() -> status_pb2.Status:
    return rich_status(grpc.StatusCode.UNAVAILABLE, "restarting", retry_delay=0.01)


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    fake = FakeServer()
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def client(server: FakeServer) -> AsyncIterator[AsyncClient]:
    async with await AsyncClient.connect(server.target, retry=FAST, watch_retry=FAST_WATCH) as dm:
        yield dm


def _requests(state: FakeState, kind: type) -> list[Any]:
    return [r for r in state.requests if isinstance(r, kind)]


# --- generate and errors --------------------------------------------------------------------------


async def test_generate_with_dict_schema_sends_the_parsed_schema_and_a_request_id(
    client: AsyncClient, server: FakeServer
) -> None:
    job = await client.generate("people", schema=SCHEMA)

    assert job.state == job_pb2.JOB_STATE_QUEUED
    assert job.dataset_name == "people"
    [request] = _requests(server.state, job_service_pb2.GenerateRequest)
    assert request.schema.rows == 300
    assert request.schema.seed == 42
    assert [f.name for f in request.schema.fields] == ["id", "age", "tag"]
    age = request.schema.fields[1]
    assert age.params["min"] == 18
    assert age.null_rate == pytest.approx(0.1)
    assert request.schema.fields[2].seed == 7
    assert uuid.UUID(request.request_id).version == 4
    assert job.request_id == request.request_id


async def test_generate_accepts_a_schema_message_and_keeps_a_given_request_id(
    client: AsyncClient, server: FakeServer
) -> None:
    schema = schema_pb2.Schema(rows=5, fields=[schema_pb2.Field(name="id", type="uuid4")])

    job = await client.generate("ids", schema=schema, request_id="my-key")

    assert job.request_id == "my-key"
    assert _requests(server.state, job_service_pb2.GenerateRequest)[0].schema == schema


async def test_dict_schema_of_the_wrong_shape_fails_before_any_call(client: AsyncClient, server: FakeServer) -> None:
    with pytest.raises(SchemaError, match="nme"):
        await client.generate("people", schema={"rows": 1, "fields": [{"nme": "x"}]})

    assert server.state.requests == []


async def test_invalid_argument_becomes_typed_error_with_field_violations(
    client: AsyncClient, server: FakeServer
) -> None:
    schema = {"rows": 0, "fields": [{"name": "a", "type": "integer"}, {"name": "b", "type": "nope"}]}

    with pytest.raises(InvalidArgumentError) as caught:
        await client.generate("people", schema=schema)

    error = caught.value
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == "INVALID_SCHEMA"
    assert error.domain == "datamill.dev"
    assert error.field_violations == [
        FieldViolation("schema.rows", "must be at least 1"),
        FieldViolation("schema.fields[1].type", "unknown type 'nope'"),
    ]
    # INVALID_ARGUMENT is never retried.
    assert len(_requests(server.state, job_service_pb2.GenerateRequest)) == 1


async def test_generate_is_retried_on_unavailable_with_the_same_request_id(
    client: AsyncClient, server: FakeServer
) -> None:
    server.state.failures["Generate"] = [_unavailable(), _unavailable()]

    job = await client.generate("people", schema=SCHEMA)

    requests = _requests(server.state, job_service_pb2.GenerateRequest)
    assert len(requests) == 3
    assert len({r.request_id for r in requests}) == 1
    assert job.request_id == requests[0].request_id
    assert len(server.state.jobs) == 1


async def test_retries_are_bounded(client: AsyncClient, server: FakeServer) -> None:
    server.state.failures["GetJob"] = [_unavailable() for _ in range(10)]

    with pytest.raises(UnavailableError) as caught:
        await client.get_job("x")

    assert caught.value.retry_delay == pytest.approx(0.01)
    assert len(_requests(server.state, job_service_pb2.GetJobRequest)) == FAST.max_attempts


async def test_delete_is_not_retried(client: AsyncClient, server: FakeServer) -> None:
    server.state.failures["DeleteDataset"] = [_unavailable()]

    with pytest.raises(UnavailableError):
        await client.delete_dataset("people")

    assert len(_requests(server.state, dataset_service_pb2.DeleteDatasetRequest)) == 1


async def test_already_exists_and_not_found_are_typed(client: AsyncClient) -> None:
    await client.generate("people", schema=SCHEMA)
    with pytest.raises(AlreadyExistsError) as exists:
        await client.generate("people", schema=SCHEMA)
    with pytest.raises(NotFoundError):
        await client.get_job("no-such-job")

    assert exists.value.reason == "DATASET_EXISTS"
    assert exists.value.metadata == {"dataset_name": "people"}


async def test_unreachable_server_is_unavailable() -> None:
    async with await AsyncClient.connect("127.0.0.1:1", retry=FAST, timeout=5) as dm:
        with pytest.raises(UnavailableError):
            await dm.get_job("x")


async def test_export_builds_the_request_from_friendly_values(client: AsyncClient, server: FakeServer) -> None:
    job = await client.export("people", format="csv", compression="gzip", columns=["id"], row_limit=10)

    [request] = _requests(server.state, job_service_pb2.ExportRequest)
    assert request.format == job_service_pb2.FILE_FORMAT_CSV
    assert request.compression == job_service_pb2.COMPRESSION_GZIP
    assert list(request.columns) == ["id"]
    assert request.HasField("row_limit")
    assert request.row_limit == 10
    assert request.request_id
    assert job.kind == job_pb2.JOB_KIND_EXPORT


async def test_unknown_enum_names_are_rejected_locally(client: AsyncClient) -> None:
    with pytest.raises(ValueError, match="expected one of: csv, jsonl, parquet, sql"):
        await client.export("people", format="xml")


# --- listing --------------------------------------------------------------------------------------


async def test_list_jobs_pages_and_iter_jobs_walks_every_page(client: AsyncClient, server: FakeServer) -> None:
    for index in range(7):
        server.state.add_job(dataset_name=f"d{index}")
    server.state.add_job(kind=job_pb2.JOB_KIND_EXPORT, dataset_name="d0")

    first = await client.list_jobs(kind="generate", page_size=3)
    second = await client.list_jobs(kind="generate", page_size=3, page_token=first.next_page_token)
    everything = [job.dataset_name async for job in client.iter_jobs(kind="GENERATE", page_size=3)]

    assert [j.dataset_name for j in first] == ["d6", "d5", "d4"]
    assert [j.dataset_name for j in second] == ["d3", "d2", "d1"]
    assert everything == [f"d{i}" for i in reversed(range(7))]
    assert len(first) == 3
    assert first.next_page_token
    requests = _requests(server.state, job_service_pb2.ListJobsRequest)
    assert all(r.kind == job_pb2.JOB_KIND_GENERATE for r in requests)
    assert [r.page_token for r in requests[2:]] == ["", "3", "6"]


async def test_list_datasets_pages(client: AsyncClient, server: FakeServer) -> None:
    for index in range(3):
        dataset = job_pb2.Dataset(id=f"id{index}", name=f"d{index}", ready=True)
        server.state.datasets[dataset.id] = dataset

    page = await client.list_datasets(page_size=2)
    names = [d.name async for d in client.iter_datasets(page_size=2)]
    found = await client.get_dataset("d1")
    await client.delete_dataset("d1")

    assert [d.name for d in page] == ["d0", "d1"]
    assert names == ["d0", "d1", "d2"]
    assert found.id == "id1"
    assert "id1" not in server.state.datasets


# --- watching -------------------------------------------------------------------------------------


async def test_watch_yields_every_event_of_several_jobs_and_stops_at_the_end(
    client: AsyncClient, server: FakeServer
) -> None:
    a = server.state.add_job(dataset_name="a")
    b = server.state.add_job(dataset_name="b", outcome=job_pb2.JOB_EVENT_TYPE_FAILED)

    events = [event async for event in client.watch([a.id, b.id])]

    for job in (a, b):
        assert [e.sequence for e in events if e.job_id == job.id] == [1, 2, 3, 4, 5, 6]
    assert events[-1].type in (job_pb2.JOB_EVENT_TYPE_SUCCEEDED, job_pb2.JOB_EVENT_TYPE_FAILED)
    assert server.state.subscriptions == [(a.id, 0), (b.id, 0)]


async def test_watch_honours_after_sequence(client: AsyncClient, server: FakeServer) -> None:
    job = server.state.add_job()

    events = [e async for e in client.watch(job.id, after_sequence={job.id: 4})]

    assert [e.sequence for e in events] == [5, 6]
    assert server.state.subscriptions == [(job.id, 4)]


async def test_watch_resumes_across_a_server_restart_without_gap_or_duplicate(server: FakeServer) -> None:
    job = server.state.add_job()
    server.state.stall_after = 3  # the first server sends events 1..3, then the job "keeps running"
    seen: list[int] = []
    restarted: FakeServer | None = None

    async def restart_later() -> FakeServer:
        # Down for a while, so that the client meets refused connections and backs off.
        await asyncio.sleep(0.3)
        server.state.stall_after = None
        replacement = FakeServer(server.state, port=server.port)
        await replacement.start()
        return replacement

    async with await AsyncClient.connect(server.target, retry=FAST, watch_retry=FAST_WATCH) as dm:
        restart: asyncio.Task[FakeServer] | None = None
        async with aclosing(dm.watch(job.id)) as events:
            async for event in events:
                seen.append(event.sequence)
                if event.sequence == 3:
                    await server.stop(grace=0)
                    restart = asyncio.create_task(restart_later())
        assert restart is not None
        restarted = await restart
    await restarted.stop()

    assert seen == [1, 2, 3, 4, 5, 6]
    # Subscribed afresh, then again after the restart from the last sequence seen.
    assert server.state.subscriptions[0] == (job.id, 0)
    assert server.state.subscriptions[-1] == (job.id, 3)


async def test_watch_gives_up_after_bounded_reconnects(server: FakeServer) -> None:
    job = server.state.add_job()
    server.state.stall_after = 1
    policy = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)

    seen: list[int] = []

    async def follow(dm: AsyncClient) -> None:
        async for event in dm.watch(job.id):
            seen.append(event.sequence)
            await server.stop(grace=0)

    async with await AsyncClient.connect(server.target, watch_retry=policy) as dm:
        with pytest.raises(UnavailableError):
            await follow(dm)

    assert seen == [1]


async def test_watch_of_an_unknown_job_raises_not_found(client: AsyncClient) -> None:
    with pytest.raises(NotFoundError, match="not found"):
        async for _ in client.watch("missing"):
            pass


async def test_wait_returns_the_final_job_and_reports_each_event(client: AsyncClient, server: FakeServer) -> None:
    job = server.state.add_job(total=90)
    seen: list[int] = []

    async def on_event(event: job_pb2.JobEvent) -> None:
        seen.append(event.job.progress.done)

    final = await client.wait(job.id, on_event=on_event)

    assert final.state == job_pb2.JOB_STATE_SUCCEEDED
    assert final.generate.row_count == 90
    assert seen == [0, 0, 30, 60, 90, 90]


async def test_watch_stream_subscribes_and_unsubscribes_on_one_stream(client: AsyncClient, server: FakeServer) -> None:
    job = server.state.add_job()
    server.state.stall_after = 2
    kinds: list[str | None] = []

    async with client.watch_stream() as stream:
        await stream.subscribe(job.id, after_sequence=1)
        async for message in stream:
            kinds.append(message.WhichOneof("message"))
            if message.HasField("event"):
                await stream.unsubscribe(job.id)
            if message.HasField("ended"):
                assert message.ended.reason == job_service_pb2.WATCH_END_REASON_UNSUBSCRIBED
                break

    assert kinds == ["subscribed", "event", "ended"]


# --- downloads ------------------------------------------------------------------------------------


async def test_read_object_resumes_after_a_broken_stream(client: AsyncClient, server: FakeServer) -> None:
    data = bytes(range(30))
    server.state.objects["exports/x.csv"] = data
    server.state.break_read_after = 2

    chunks = [chunk async for chunk in client.read_object("exports/x.csv")]
    ranged = b"".join([chunk async for chunk in client.read_object("exports/x.csv", offset=5, limit=10)])

    assert b"".join(chunks) == data
    assert ranged == data[5:15]
    offsets = [r.offset for r in _requests(server.state, dataset_service_pb2.ReadObjectRequest)]
    assert offsets == [0, 8, 5]


# --- the sync client ------------------------------------------------------------------------------


@pytest.fixture
def threaded() -> Iterator[ThreadedFakeServer]:
    with ThreadedFakeServer() as fake:
        yield fake


@pytest.fixture
def sync_client(threaded: ThreadedFakeServer) -> Iterator[Client]:
    with Client.connect(threaded.target, retry=FAST, watch_retry=FAST_WATCH) as dm:
        yield dm


def test_sync_generate_wait_and_errors(sync_client: Client, threaded: ThreadedFakeServer) -> None:
    threaded.state.failures["Generate"] = [_unavailable()]

    job = sync_client.generate("people", schema=SCHEMA)
    events: list[job_pb2.JobEvent] = []
    final = sync_client.wait(job.id, on_event=events.append)

    assert final.state == job_pb2.JOB_STATE_SUCCEEDED
    assert [e.sequence for e in events] == [1, 2, 3, 4, 5, 6]
    requests = _requests(threaded.state, job_service_pb2.GenerateRequest)
    assert len(requests) == 2
    assert requests[0].request_id == requests[1].request_id
    with pytest.raises(InvalidArgumentError) as caught:
        sync_client.generate("other", schema={"rows": 1, "fields": [{"name": "x", "type": "bad"}]})
    assert caught.value.field_violations == [FieldViolation("schema.fields[0].type", "unknown type 'bad'")]


def test_sync_list_watch_cancel_and_read(sync_client: Client, threaded: ThreadedFakeServer) -> None:
    jobs = [threaded.state.add_job(dataset_name=f"d{i}") for i in range(5)]
    threaded.state.objects["k"] = b"hello world, this is an object"
    threaded.state.break_read_after = 1

    page = sync_client.list_jobs(page_size=2)
    every = list(sync_client.iter_jobs(page_size=2))
    events = list(sync_client.watch([jobs[0].id, jobs[1].id], after_sequence={jobs[0].id: 5}))
    cancelled = sync_client.cancel_job(jobs[2].id)
    data = b"".join(sync_client.read_object("k"))

    assert len(page) == 2
    assert [j.id for j in every] == [j.id for j in reversed(jobs)]
    assert [(e.job_id, e.sequence) for e in events if e.job_id == jobs[0].id] == [(jobs[0].id, 6)]
    assert [e.sequence for e in events if e.job_id == jobs[1].id] == [1, 2, 3, 4, 5, 6]
    assert cancelled.state == job_pb2.JOB_STATE_CANCELLED
    assert data == b"hello world, this is an object"
    with pytest.raises(NotFoundError):
        list(sync_client.watch("missing"))


def test_sync_watch_stream(sync_client: Client, threaded: ThreadedFakeServer) -> None:
    job = threaded.state.add_job()

    with sync_client.watch_stream() as stream:
        stream.subscribe(job.id, after_sequence=4)
        messages = []
        for message in stream:
            messages.append(message)
            if message.HasField("ended"):
                break

    assert [m.WhichOneof("message") for m in messages] == ["subscribed", "event", "event", "ended"]
    assert [m.event.sequence for m in messages if m.HasField("event")] == [5, 6]
