"""JobService: parse, delegate to the core, build the reply."""

from __future__ import annotations

import asyncio
import collections
import uuid
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

import grpc
from google.protobuf import timestamp_pb2

from datamill.v1 import job_service_pb2 as pb
from datamill.v1 import job_service_pb2_grpc
from server.api import convert
from server.api.context import principal_of, tenant_of
from server.api.errors import check_text, stream, to_status, unary
from server.core.auth import Role
from server.core.errors import FailedPrecondition, InvalidArgument
from server.core.events import EventHub
from server.core.exports import ExportDomain
from server.core.jobs import JobDomain
from server.core.models import EventRow
from server.core.uploads import Completed, UploadDomain, UploadSession
from server.core.watch import Ended, EndReason, Keepalive, Subscribed, WatchMessage, WatchSession

Ctx: TypeAlias = grpc.aio.ServicerContext[Any, Any]

_END_REASONS = {
    EndReason.TERMINAL: pb.WATCH_END_REASON_TERMINAL,
    EndReason.UNSUBSCRIBED: pb.WATCH_END_REASON_UNSUBSCRIBED,
    EndReason.ERROR: pb.WATCH_END_REASON_ERROR,
}


class JobServicer(job_service_pb2_grpc.JobServiceServicer):
    def __init__(
        self,
        domain: JobDomain,
        uploads: UploadDomain,
        exports: ExportDomain,
        hub: EventHub,
        *,
        keepalive_seconds: float,
    ) -> None:
        self._domain = domain
        self._uploads = uploads
        self._exports = exports
        self._hub = hub
        self._keepalive = keepalive_seconds

    @unary
    async def Generate(self, request: pb.GenerateRequest, context: Ctx) -> pb.GenerateResponse:
        job, _ = await self._domain.generate(
            tenant_of(context),
            dataset_name=request.dataset_name,
            schema=convert.schema_spec(request.schema),
            request_id=request.request_id or None,
            created_by=principal_of(context).subject,
        )
        return pb.GenerateResponse(job=convert.job(job))

    @stream
    async def Upload(
        self, request_iterator: AsyncIterator[pb.UploadRequest], context: Ctx
    ) -> AsyncIterator[pb.UploadResponse]:
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("message") != "header":
            raise InvalidArgument.single("header", "the first message of an Upload must be its header")
        check_text(first)
        session = await self._uploads.open(
            tenant_of(context), convert.upload_header(first.header), created_by=principal_of(context).subject
        )
        # Acks are sent as parts commit, while chunks keep arriving: the reader runs
        # beside this generator and hands it every response, error or end.
        out: asyncio.Queue[pb.UploadResponse | Exception | None] = asyncio.Queue()
        session.on_commit = lambda offset: out.put_nowait(pb.UploadResponse(ack=pb.UploadAck(committed_offset=offset)))
        reader = asyncio.create_task(_read_upload(requests, session, out), name=f"upload-{session.upload_id}")
        try:
            yield pb.UploadResponse(
                started=pb.UploadStarted(upload_id=str(session.upload_id), committed_offset=session.committed_offset)
            )
            if session.completed is not None:  # resumed after it was already committed
                reader.cancel()
                yield _upload_completed(session.completed)
                return
            while (item := await out.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await session.close()

    @unary
    async def Export(self, request: pb.ExportRequest, context: Ctx) -> pb.ExportResponse:
        job, _ = await self._exports.export(
            tenant_of(context), convert.export_request(request), created_by=principal_of(context).subject
        )
        return pb.ExportResponse(job=convert.job(job))

    @unary
    async def GetJob(self, request: pb.GetJobRequest, context: Ctx) -> pb.GetJobResponse:
        return pb.GetJobResponse(job=convert.job(await self._domain.get(tenant_of(context), request.job_id)))

    @unary
    async def ListJobs(self, request: pb.ListJobsRequest, context: Ctx) -> pb.ListJobsResponse:
        page = await self._domain.list(
            tenant_of(context),
            kind=convert.kind_filter(request.kind),
            state=convert.state_filter(request.state),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListJobsResponse(jobs=[convert.job(j) for j in page.items], next_page_token=page.next_page_token)

    @unary
    async def CancelJob(self, request: pb.CancelJobRequest, context: Ctx) -> pb.CancelJobResponse:
        principal = principal_of(context)
        owner = None if principal.role >= Role.ADMIN else principal.subject  # an editor cancels only its own jobs
        job = await self._domain.cancel(principal.tenant, request.job_id, only_if_created_by=owner)
        return pb.CancelJobResponse(job=convert.job(job))

    @stream
    async def WatchJob(
        self, request_iterator: AsyncIterator[pb.WatchJobRequest], context: Ctx
    ) -> AsyncIterator[pb.WatchJobResponse]:
        session = WatchSession(self._domain.store, self._hub, tenant_of(context), keepalive_seconds=self._keepalive)

        async def read_requests() -> None:
            try:
                async for request in request_iterator:
                    action = request.WhichOneof("action")
                    if action == "subscribe":
                        sub = request.subscribe
                        after = sub.after_sequence if sub.HasField("after_sequence") else 0
                        await session.subscribe(sub.job_id, after)
                    elif action == "unsubscribe":
                        await session.unsubscribe(request.unsubscribe.job_id)
            finally:
                session.input_finished()

        reader = asyncio.create_task(read_requests(), name="watch-reader")
        try:
            async for message in session.messages():
                yield _watch_response(message)
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)
            await session.close()


async def _read_upload(
    requests: AsyncIterator[pb.UploadRequest],
    session: UploadSession,
    out: asyncio.Queue[pb.UploadResponse | Exception | None],
) -> None:
    try:
        async for request in requests:
            kind = request.WhichOneof("message")
            if kind == "chunk":
                await session.write(request.chunk.write_offset, request.chunk.data)
            elif kind == "finish":
                completed = await session.finish(request.finish.total_size, request.finish.sha256)
                out.put_nowait(_upload_completed(completed))
                out.put_nowait(None)
                return
            else:
                raise InvalidArgument.single(kind or "message", "only the first message of an Upload is a header")
        # A client that is cancelled can look like one that ended its stream (PITFALLS.md):
        # only `finish` commits. Whoever is still listening learns where to resume.
        raise FailedPrecondition(
            "the stream ended without `finish`; resume the upload from its committed offset",
            reason="UPLOAD_NOT_FINISHED",
            metadata={"upload_id": str(session.upload_id), "committed_offset": str(session.committed_offset)},
        )
    except Exception as exc:  # noqa: BLE001  # handed to the generator, which turns it into the status
        out.put_nowait(exc)


def _upload_completed(completed: Completed) -> pb.UploadResponse:
    upload = completed.upload
    message = pb.UploadCompleted(
        upload_id=str(upload.id), size_bytes=upload.size_bytes or 0, sha256=upload.sha256 or ""
    )
    if completed.job is not None:
        message.job.CopyFrom(convert.job(completed.job))
    return pb.UploadResponse(completed=message)


#: The last events' responses, shared by every watcher of the job on this process; never mutated once built.
_EVENT_RESPONSES: collections.OrderedDict[tuple[uuid.UUID, int], pb.WatchJobResponse] = collections.OrderedDict()
_EVENT_RESPONSES_KEPT = 4096


def _event_response(row: EventRow) -> pb.WatchJobResponse:
    """An event's response, converted once for all its watchers (a job's event is the same for each of them)."""
    key = (row.job_id, row.seq)
    response = _EVENT_RESPONSES.get(key)
    if response is None:
        response = _EVENT_RESPONSES[key] = pb.WatchJobResponse(event=convert.event(row))
        if len(_EVENT_RESPONSES) > _EVENT_RESPONSES_KEPT:
            _EVENT_RESPONSES.popitem(last=False)
    return response


def _watch_response(message: WatchMessage) -> pb.WatchJobResponse:
    if isinstance(message, EventRow):
        return _event_response(message)
    if isinstance(message, Subscribed):
        return pb.WatchJobResponse(subscribed=pb.WatchSubscribed(job_id=message.job_id))
    if isinstance(message, Ended):
        ended = pb.WatchEnded(job_id=message.job_id, reason=_END_REASONS[message.reason])
        if message.error is not None:
            ended.status.CopyFrom(to_status(message.error))
        return pb.WatchJobResponse(ended=ended)
    if isinstance(message, Keepalive):
        now = timestamp_pb2.Timestamp()
        now.FromDatetime(message.time)
        return pb.WatchJobResponse(keepalive=pb.WatchKeepalive(time=now))
    raise TypeError(f"unexpected watch message {message!r}")
