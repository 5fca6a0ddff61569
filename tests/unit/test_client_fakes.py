"""In-memory fakes of JobService and DatasetService for the client and CLI unit tests.

They run on a real `grpc.aio` server bound to 127.0.0.1, either on the test's
event loop (`FakeServer`) or on a thread of its own (`ThreadedFakeServer`) for
synchronous callers such as the CLI, which would otherwise block the loop
that serves them. The fakes answer like the real server: errors carry
google.rpc details, and WatchJob replays after a cursor, then ends each
subscription after its terminal event.

This module holds no tests; its name only places it among the client's test files.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.protobuf import any_pb2, duration_pb2, timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from typing_extensions import override

from datamill.v1 import (
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
)

KNOWN_TYPES = {"integer", "float", "uuid4", "text", "choice", "timestamp"}
TERMINAL_EVENTS = {
    job_pb2.JOB_EVENT_TYPE_SUCCEEDED: job_pb2.JOB_STATE_SUCCEEDED,
    job_pb2.JOB_EVENT_TYPE_FAILED: job_pb2.JOB_STATE_FAILED,
    job_pb2.JOB_EVENT_TYPE_CANCELLED: job_pb2.JOB_STATE_CANCELLED,
}


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


def rich_status(
    code: grpc.StatusCode,
    message: str,
    *,
    reason: str = "",
    violations: Sequence[tuple[str, str]] = (),
    retry_delay: float | None = None,
    metadata: dict[str, str] | None = None,
) -> status_pb2.Status:
    """A google.rpc.Status with the details the real server attaches."""
    status = status_pb2.Status(code=code.value[0], message=message)
    status.details.append(
        _pack(error_details_pb2.ErrorInfo(reason=reason or code.name, domain="datamill.dev", metadata=metadata))
    )
    if violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in violations
            ]
        )
        status.details.append(_pack(bad_request))
    if retry_delay is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_delay * 1e9))
        status.details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status


async def abort(context: grpc.aio.ServicerContext[Any, Any], status: status_pb2.Status) -> None:
    await context.abort_with_status(rpc_status.to_status(status))


def _now() -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.GetCurrentTime()
    return ts


@dataclass
class FakeState:
    """Everything the fakes know; tests read and script it directly."""

    jobs: dict[str, job_pb2.Job] = field(default_factory=dict)
    events: dict[str, list[job_pb2.JobEvent]] = field(default_factory=dict)
    datasets: dict[str, job_pb2.Dataset] = field(default_factory=dict)
    objects: dict[str, bytes] = field(default_factory=dict)
    requests: list[object] = field(default_factory=list)
    # WatchSubscribe messages received, in order, across all streams and servers.
    subscriptions: list[tuple[str, int | None]] = field(default_factory=list)
    # Method name -> statuses to fail the next calls with, one per call.
    failures: dict[str, list[status_pb2.Status]] = field(default_factory=dict)
    # WatchJob sends events up to this sequence, then stays silent as if the job were still running.
    stall_after: int | None = None
    # ReadObject chunk size, and after how many chunks the next ReadObject breaks with UNAVAILABLE.
    chunk_size: int = 4
    break_read_after: int | None = None
    # Dataset names whose Generate job fails.
    failing_datasets: set[str] = field(default_factory=set)
    progress_steps: int = 3
    counter: itertools.count[int] = field(default_factory=itertools.count)

    def add_job(
        self,
        *,
        kind: int = job_pb2.JOB_KIND_GENERATE,
        dataset_name: str = "people",
        request_id: str = "",
        outcome: int = job_pb2.JOB_EVENT_TYPE_SUCCEEDED,
        total: int = 300,
        unit: int = job_pb2.PROGRESS_UNIT_ROWS,
    ) -> job_pb2.Job:
        """Store a QUEUED job and script its whole event log (created, started, progress, end)."""
        index = next(self.counter)
        job = job_pb2.Job(
            id=str(uuid.UUID(int=index + 1)),
            kind=kind,  # type: ignore[arg-type]
            state=job_pb2.JOB_STATE_QUEUED,
            max_attempts=3,
            request_id=request_id,
            dataset_name=dataset_name,
            progress=job_pb2.Progress(total=total, unit=unit),  # type: ignore[arg-type]
        )
        job.create_time.FromSeconds(1_700_000_000 + index)
        job.update_time.CopyFrom(job.create_time)
        self.jobs[job.id] = job
        self.events[job.id] = self._script(job, outcome=outcome, total=total)
        return job

    def _script(self, job: job_pb2.Job, *, outcome: int, total: int) -> list[job_pb2.JobEvent]:
        steps: list[tuple[int, job_pb2.Job]] = []
        current = job_pb2.Job()
        current.CopyFrom(job)
        steps.append((job_pb2.JOB_EVENT_TYPE_CREATED, _copy(current)))
        current.state = job_pb2.JOB_STATE_RUNNING
        current.attempt = 1
        current.start_time.FromSeconds(current.create_time.seconds + 1)
        steps.append((job_pb2.JOB_EVENT_TYPE_STARTED, _copy(current)))
        for step in range(1, self.progress_steps + 1):
            current.progress.done = total * step // self.progress_steps
            steps.append((job_pb2.JOB_EVENT_TYPE_PROGRESS, _copy(current)))
        current.state = TERMINAL_EVENTS[outcome]  # type: ignore[index]
        current.finish_time.FromSeconds(current.create_time.seconds + 2)
        if outcome == job_pb2.JOB_EVENT_TYPE_SUCCEEDED:
            if current.kind == job_pb2.JOB_KIND_EXPORT:
                data = b"id,name\n" + b"".join(f"{i},name{i}\n".encode() for i in range(total))
                self.objects[f"exports/{current.id}.csv"] = data
                current.export.object_key = f"exports/{current.id}.csv"
                current.export.size_bytes = len(data)
                current.export.row_count = total
                current.export.content_type = "text/csv"
                current.export.sha256 = hashlib.sha256(data).hexdigest()
            else:
                current.generate.dataset_id = str(uuid.uuid5(uuid.NAMESPACE_OID, current.dataset_name))
                current.generate.dataset_name = current.dataset_name
                current.generate.row_count = total
        else:
            current.error.CopyFrom(rich_status(grpc.StatusCode.INTERNAL, "worker crashed", reason="JOB_FAILED"))
        steps.append((outcome, _copy(current)))
        return [
            job_pb2.JobEvent(job_id=job.id, sequence=seq, type=kind, job=snapshot)  # type: ignore[arg-type]
            for seq, (kind, snapshot) in enumerate(steps, start=1)
        ]

    def take_failure(self, method: str) -> status_pb2.Status | None:
        pending = self.failures.get(method)
        return pending.pop(0) if pending else None


def _copy(job: job_pb2.Job) -> job_pb2.Job:
    copy = job_pb2.Job()
    copy.CopyFrom(job)
    return copy


class FakeJobService(job_service_pb2_grpc.JobServiceServicer):
    def __init__(self, state: FakeState) -> None:
        self.state = state

    async def _check(self, method: str, request: object, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        self.state.requests.append(request)
        failure = self.state.take_failure(method)
        if failure is not None:
            await abort(context, failure)

    @override
    async def Generate(self, request, context):
        await self._check("Generate", request, context)
        violations = []
        if request.schema.rows < 1:
            violations.append(("schema.rows", "must be at least 1"))
        for index, f in enumerate(request.schema.fields):
            if f.type not in KNOWN_TYPES:
                violations.append((f"schema.fields[{index}].type", f"unknown type {f.type!r}"))
        if violations:
            await abort(
                context,
                rich_status(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"invalid schema: {len(violations)} problem(s)",
                    reason="INVALID_SCHEMA",
                    violations=violations,
                ),
            )
        for job in self.state.jobs.values():
            if request.request_id and job.request_id == request.request_id:
                return job_service_pb2.GenerateResponse(job=job)
        if any(job.dataset_name == request.dataset_name for job in self.state.jobs.values()):
            await abort(
                context,
                rich_status(
                    grpc.StatusCode.ALREADY_EXISTS,
                    f"dataset {request.dataset_name!r} already exists",
                    reason="DATASET_EXISTS",
                    metadata={"dataset_name": request.dataset_name},
                ),
            )
        outcome = (
            job_pb2.JOB_EVENT_TYPE_FAILED
            if request.dataset_name in self.state.failing_datasets
            else job_pb2.JOB_EVENT_TYPE_SUCCEEDED
        )
        job = self.state.add_job(
            dataset_name=request.dataset_name,
            request_id=request.request_id,
            outcome=outcome,
            total=request.schema.rows,
        )
        return job_service_pb2.GenerateResponse(job=job)

    @override
    async def Export(self, request, context):
        await self._check("Export", request, context)
        if request.format == job_service_pb2.FILE_FORMAT_UNSPECIFIED:
            await abort(
                context,
                rich_status(
                    grpc.StatusCode.INVALID_ARGUMENT, "format is required", violations=[("format", "must be set")]
                ),
            )
        for job in self.state.jobs.values():
            if request.request_id and job.request_id == request.request_id:
                return job_service_pb2.ExportResponse(job=job)
        job = self.state.add_job(
            kind=job_pb2.JOB_KIND_EXPORT, dataset_name=request.dataset, request_id=request.request_id, total=50
        )
        return job_service_pb2.ExportResponse(job=job)

    @override
    async def GetJob(self, request, context):
        await self._check("GetJob", request, context)
        events = self.state.events.get(request.job_id)
        if not events:
            await abort(context, rich_status(grpc.StatusCode.NOT_FOUND, f"job {request.job_id!r} not found"))
        return job_service_pb2.GetJobResponse(job=events[-1].job)  # type: ignore[index]

    @override
    async def ListJobs(self, request, context):
        await self._check("ListJobs", request, context)
        jobs = sorted(self.state.jobs.values(), key=lambda j: j.create_time.seconds, reverse=True)
        jobs = [j for j in jobs if request.kind in (0, j.kind) and request.state in (0, j.state)]
        start = int(request.page_token or 0)
        size = request.page_size or 50
        page = jobs[start : start + size]
        next_token = str(start + size) if start + size < len(jobs) else ""
        return job_service_pb2.ListJobsResponse(jobs=page, next_page_token=next_token)

    @override
    async def CancelJob(self, request, context):
        await self._check("CancelJob", request, context)
        job = self.state.jobs.get(request.job_id)
        if job is None:
            await abort(context, rich_status(grpc.StatusCode.NOT_FOUND, f"job {request.job_id!r} not found"))
        job.state = job_pb2.JOB_STATE_CANCELLED  # type: ignore[union-attr]
        return job_service_pb2.CancelJobResponse(job=job)

    @override
    async def WatchJob(
        self,
        request_iterator: AsyncIterator[job_service_pb2.WatchJobRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        outbox: asyncio.Queue[job_service_pb2.WatchJobResponse] = asyncio.Queue()
        feeders: dict[str, asyncio.Task[None]] = {}

        async def feed(job_id: str, after: int) -> None:
            events = self.state.events.get(job_id)
            if events is None:
                ended = job_service_pb2.WatchEnded(
                    job_id=job_id,
                    reason=job_service_pb2.WATCH_END_REASON_ERROR,
                    status=rich_status(grpc.StatusCode.NOT_FOUND, f"job {job_id!r} not found"),
                )
                await outbox.put(job_service_pb2.WatchJobResponse(ended=ended))
                return
            await outbox.put(
                job_service_pb2.WatchJobResponse(subscribed=job_service_pb2.WatchSubscribed(job_id=job_id))
            )
            for event in events:
                if event.sequence <= after:
                    continue
                if self.state.stall_after is not None and event.sequence > self.state.stall_after:
                    await asyncio.Event().wait()  # "still running": never more events on this server
                await outbox.put(job_service_pb2.WatchJobResponse(event=event))
            ended = job_service_pb2.WatchEnded(job_id=job_id, reason=job_service_pb2.WATCH_END_REASON_TERMINAL)
            await outbox.put(job_service_pb2.WatchJobResponse(ended=ended))

        async def read_requests() -> None:
            async for request in request_iterator:
                if request.HasField("subscribe"):
                    sub = request.subscribe
                    after = sub.after_sequence if sub.HasField("after_sequence") else None
                    self.state.subscriptions.append((sub.job_id, after))
                    feeders[sub.job_id] = asyncio.create_task(feed(sub.job_id, after or 0))
                else:
                    job_id = request.unsubscribe.job_id
                    task = feeders.pop(job_id, None)
                    if task is not None:
                        task.cancel()
                    ended = job_service_pb2.WatchEnded(
                        job_id=job_id, reason=job_service_pb2.WATCH_END_REASON_UNSUBSCRIBED
                    )
                    await outbox.put(job_service_pb2.WatchJobResponse(ended=ended))

        reader = asyncio.create_task(read_requests())
        try:
            while True:
                yield await outbox.get()
        finally:
            for task in [reader, *feeders.values()]:
                task.cancel()
            await asyncio.gather(reader, *feeders.values(), return_exceptions=True)

    @override
    async def Upload(self, request_iterator, context):  # pragma: no cover - not used by the client yet
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "fake")
        yield job_service_pb2.UploadResponse()


class FakeDatasetService(dataset_service_pb2_grpc.DatasetServiceServicer):
    def __init__(self, state: FakeState) -> None:
        self.state = state

    async def _find(self, name: str, context: grpc.aio.ServicerContext[Any, Any]) -> job_pb2.Dataset:
        for dataset in self.state.datasets.values():
            if name in (dataset.id, dataset.name):
                return dataset
        await abort(context, rich_status(grpc.StatusCode.NOT_FOUND, f"dataset {name!r} not found"))
        raise AssertionError("unreachable")

    @override
    async def GetDataset(self, request, context):
        self.state.requests.append(request)
        return dataset_service_pb2.GetDatasetResponse(dataset=await self._find(request.dataset, context))

    @override
    async def ListDatasets(self, request, context):
        self.state.requests.append(request)
        datasets = list(self.state.datasets.values())
        start = int(request.page_token or 0)
        size = request.page_size or 50
        next_token = str(start + size) if start + size < len(datasets) else ""
        return dataset_service_pb2.ListDatasetsResponse(
            datasets=datasets[start : start + size], next_page_token=next_token
        )

    @override
    async def DeleteDataset(self, request, context):
        self.state.requests.append(request)
        failure = self.state.take_failure("DeleteDataset")
        if failure is not None:
            await abort(context, failure)
        dataset = await self._find(request.dataset, context)
        del self.state.datasets[dataset.id]
        return dataset_service_pb2.DeleteDatasetResponse()

    @override
    async def ReadObject(self, request, context):
        self.state.requests.append(request)
        data = self.state.objects.get(request.object_key)
        if data is None:
            await abort(context, rich_status(grpc.StatusCode.NOT_FOUND, f"object {request.object_key!r} not found"))
            return
        end = len(data) if request.limit == 0 else min(len(data), request.offset + request.limit)
        for sent, start in enumerate(range(request.offset, end, self.state.chunk_size)):
            if self.state.break_read_after is not None and sent == self.state.break_read_after:
                self.state.break_read_after = None
                await abort(context, rich_status(grpc.StatusCode.UNAVAILABLE, "server restarting"))
            chunk = data[start : min(start + self.state.chunk_size, end)]
            yield dataset_service_pb2.ReadObjectResponse(offset=start, data=chunk, size_bytes=len(data))


class FakeServer:
    """The fakes on a grpc.aio server on the current event loop."""

    def __init__(self, state: FakeState | None = None, *, port: int = 0) -> None:
        self.state = state or FakeState()
        self.port = port
        self._server: grpc.aio.Server | None = None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        server = grpc.aio.server()
        job_service_pb2_grpc.add_JobServiceServicer_to_server(FakeJobService(self.state), server)
        dataset_service_pb2_grpc.add_DatasetServiceServicer_to_server(FakeDatasetService(self.state), server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        await server.start()
        self._server = server

    async def stop(self, grace: float | None = None) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None


class ThreadedFakeServer:
    """The fakes on a grpc.aio server running on its own thread and event loop."""

    def __init__(self, state: FakeState | None = None) -> None:
        self.fake = FakeServer(state)
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="fake-datamill", daemon=True)

    @property
    def state(self) -> FakeState:
        return self.fake.state

    @property
    def target(self) -> str:
        return self.fake.target

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self.fake.start())
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self.fake.stop(None))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    def __enter__(self) -> ThreadedFakeServer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


__all__ = [
    "KNOWN_TYPES",
    "FakeServer",
    "FakeState",
    "ThreadedFakeServer",
    "abort",
    "rich_status",
]
