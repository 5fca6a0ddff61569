"""The asyncio datamill client, on a `grpc.aio` channel.

    async with await AsyncClient.connect("127.0.0.1:50051") as client:
        job = await client.generate("people", schema={"rows": 1000, "fields": [...]})
        job = await client.wait(job.id)

Every failed call raises a `client.errors.DatamillError` subclass. Calls that
are safe to repeat are retried on UNAVAILABLE with backoff (see `RetryPolicy`);
creates always carry a request_id, so a retried Generate or Export returns the
job the first attempt made.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import aclosing
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import grpc
import grpc.aio

from client import _requests as rq
from client import _upload as up
from client._requests import (
    DEFAULT_RETRY,
    DEFAULT_WATCH_RETRY,
    DatasetPage,
    EnumLike,
    JobPage,
    RetryPolicy,
    SchemaLike,
    WatchTracker,
)
from client._upload import FileSender, UploadOptions, UploadProgress
from client.errors import DataLossError, DatamillError, UnavailableError, from_rpc_error
from datamill.v1 import (
    dataset_service_pb2,
    dataset_service_pb2_grpc,
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
)

__all__ = ["AsyncClient", "AsyncWatchStream"]

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")

OnEvent = Callable[[job_pb2.JobEvent], Awaitable[None] | None]
"""Called with each event `AsyncClient.wait` sees; may be a coroutine function."""


class AsyncWatchStream:
    """One open WatchJob stream on which jobs can be (un)subscribed at any time.

    Iterate it to receive every `WatchJobResponse` (events, subscribed, ended,
    keepalive). It does not reconnect: `AsyncClient.watch` builds that on top.
    Close it (or use ``async with``) to end the call.
    """

    def __init__(
        self, call: grpc.aio.StreamStreamCall[job_service_pb2.WatchJobRequest, job_service_pb2.WatchJobResponse]
    ) -> None:
        self._call = call
        self._closed = False

    async def subscribe(self, job_id: str, *, after_sequence: int | None = None) -> None:
        """Start watching ``job_id``; the server replays its events after ``after_sequence`` first."""
        await self._write(rq.subscribe_request(job_id, after_sequence=after_sequence))

    async def unsubscribe(self, job_id: str) -> None:
        """Stop watching ``job_id``; the server confirms with ``ended`` (UNSUBSCRIBED)."""
        await self._write(rq.unsubscribe_request(job_id))

    async def close(self) -> None:
        """Cancel the call. Safe to call more than once."""
        self._closed = True
        self._call.cancel()

    def __aiter__(self) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        return self._messages()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _write(self, request: job_service_pb2.WatchJobRequest) -> None:
        try:
            await self._call.write(request)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from exc

    async def _messages(self) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        while True:
            try:
                message = await self._call.read()
            except grpc.RpcError as exc:
                if self._closed:
                    return
                raise from_rpc_error(exc) from exc
            except asyncio.CancelledError:
                # grpc.aio raises CancelledError from read() once close() cancelled the
                # call; only a cancellation of this task itself must propagate.
                task = asyncio.current_task()
                if self._closed and task is not None and not task.cancelling():
                    return
                raise
            if not isinstance(message, job_service_pb2.WatchJobResponse):  # grpc.aio.EOF
                return
            yield message


class AsyncClient:
    """Asynchronous client of datamill's JobService and DatasetService.

    Create it with `AsyncClient.connect`, and close it with `close` or
    ``async with``. It is safe to share between tasks.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        watch_retry: RetryPolicy = DEFAULT_WATCH_RETRY,
    ) -> None:
        """Wrap an open channel; prefer `connect`. The client owns the channel and closes it."""
        self._channel = channel
        self._jobs = job_service_pb2_grpc.JobServiceStub(channel)
        self._datasets = dataset_service_pb2_grpc.DatasetServiceStub(channel)
        self._metadata = tuple(metadata)
        self._timeout = timeout
        self._retry = retry
        self._watch_retry = watch_retry

    @classmethod
    async def connect(
        cls,
        target: str,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = 30.0,  # noqa: ASYNC109 - the deadline of each later call, not of connect
        retry: RetryPolicy = DEFAULT_RETRY,
        watch_retry: RetryPolicy = DEFAULT_WATCH_RETRY,
    ) -> AsyncClient:
        """Open a channel to ``target`` ("host:port").

        The channel connects lazily: an unreachable server shows up as
        `UnavailableError` on the first call, after retries.

        Args:
            target: The server address, "host:port".
            tls: Use TLS; implied by ``root_certificates``.
            root_certificates: PEM CA bundle to trust instead of the system's.
            certificate_chain: PEM client certificate chain, for a server that requires mTLS
                (with ``private_key``); implies TLS.
            private_key: PEM private key of ``certificate_chain``.
            metadata: Sent with every call, e.g. ``[("authorization", "Bearer ...")]``.
            timeout: Deadline in seconds of each unary call attempt; None for none.
                Streams (watch, read_object) have no deadline.
            retry: Retry policy of unary calls.
            watch_retry: Reconnect policy of `watch` and `read_object`.
        """
        credentials = rq.channel_credentials(
            tls=tls, root_certificates=root_certificates, certificate_chain=certificate_chain, private_key=private_key
        )
        if credentials is None:
            channel = grpc.aio.insecure_channel(target, options=rq.CHANNEL_OPTIONS)
        else:
            channel = grpc.aio.secure_channel(target, credentials, options=rq.CHANNEL_OPTIONS)
        return cls(channel, metadata=metadata, timeout=timeout, retry=retry, watch_retry=watch_retry)

    async def close(self) -> None:
        """Close the channel; calls still running are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- jobs -------------------------------------------------------------------------------------

    async def generate(self, dataset_name: str, *, schema: SchemaLike, request_id: str | None = None) -> job_pb2.Job:
        """Start a Generate job that makes ``schema.rows`` rows into the new dataset ``dataset_name``.

        Args:
            dataset_name: Name of the dataset to create, ``[a-z_][a-z0-9_]*``.
            schema: A `schema_pb2.Schema`, or the same structure as a dict.
            request_id: Idempotency key; a fresh UUID when None, so that retries are safe.

        Raises:
            SchemaError: ``schema`` is a dict that does not have the shape of a Schema.
            InvalidArgumentError: The server rejected the schema; see ``field_violations``.
            AlreadyExistsError: The dataset name is taken, or request_id was used for another request.
        """
        request = rq.generate_request(dataset_name, schema=schema, request_id=request_id)
        response = await self._unary(self._jobs.Generate, request, safe_to_retry=True)
        return response.job

    async def export(
        self,
        dataset: str,
        *,
        format: EnumLike,
        compression: EnumLike | None = None,
        columns: Sequence[str] = (),
        row_limit: int | None = None,
        request_id: str | None = None,
        csv_options: job_service_pb2.CsvOptions | None = None,
        parquet_options: job_service_pb2.ParquetOptions | None = None,
        sql_options: job_service_pb2.SqlOptions | None = None,
    ) -> job_pb2.Job:
        """Start an Export job that writes ``dataset`` (id or name) into object storage.

        Args:
            dataset: The dataset's id or name.
            format: ``"csv"``, ``"jsonl"``, ``"parquet"``, ``"sql"`` or a FileFormat value.
            compression: ``"none"``, ``"gzip"``, ``"zstd"`` (not with parquet), or None.
            columns: Columns to write, in order; all when empty.
            row_limit: Write at most this many rows.
            request_id: Idempotency key; a fresh UUID when None.
            csv_options: Options of the CSV format.
            parquet_options: Options of the Parquet format.
            sql_options: Options of the SQL format.

        Raises:
            InvalidArgumentError: An invalid combination, e.g. compression with Parquet.
            NotFoundError: No such dataset.
            FailedPreconditionError: The dataset is not ready yet.
        """
        request = rq.export_request(
            dataset,
            format=format,
            compression=compression,
            columns=columns,
            row_limit=row_limit,
            request_id=request_id,
            csv_options=csv_options,
            parquet_options=parquet_options,
            sql_options=sql_options,
        )
        response = await self._unary(self._jobs.Export, request, safe_to_retry=True)
        return response.job

    async def upload(
        self,
        path: str | os.PathLike[str],
        dataset_name: str,
        *,
        options: UploadOptions | None = None,
        request_id: str | None = None,
        upload_id: str | None = None,
        on_progress: UploadProgress | None = None,
        on_started: Callable[[str], object] | None = None,
    ) -> job_service_pb2.UploadCompleted:
        """Stream the file at ``path`` into the new dataset ``dataset_name``; return once it is stored.

        The returned message holds the ingest job that imports the file (wait
        for it with `wait`). A broken stream (the server restarting, a network
        failure) is resumed from the server's committed offset, with backoff.

        Args:
            path: The file: CSV, JSON Lines or Parquet, optionally gzip- or zstd-compressed.
            dataset_name: Name of the dataset to create.
            options: Format, columns and parsing options; guessed from the file name by default.
            request_id: Idempotency key; a repeat with the same key resumes or returns the same upload.
            upload_id: Resume this earlier upload (for example after the process was killed).
            on_progress: Called with (sent, committed, size) as bytes go out and are stored.
            on_started: Called with the upload_id once the server has opened the upload.
        """
        file = Path(path)
        sender = FileSender(file)
        header = up.header_request(
            file,
            dataset_name,
            options or UploadOptions(),
            size=sender.size,
            request_id=request_id or rq.new_request_id(),
        )
        failures = 0
        committed_before = -1
        while True:
            opening = up.resume_request(upload_id) if upload_id else header
            call = self._jobs.Upload(metadata=self._metadata)
            try:
                await call.write(opening)
                started = await call.read()
                if not isinstance(started, job_service_pb2.UploadResponse) or not started.HasField("started"):
                    raise DataLossError("Upload: the server did not answer the header with `started`")
                upload_id = started.started.upload_id
                if started.started.committed_offset > committed_before:
                    failures = 0  # progress since the last break: the retry budget starts again
                committed_before = started.started.committed_offset
                if on_started is not None:
                    on_started(upload_id)
                reader = asyncio.create_task(_upload_responses(call, sender, on_progress))
                try:
                    for request in sender.requests_from(started.started.committed_offset):
                        if reader.done():
                            break  # the server answered early (completed, or an error)
                        await call.write(request)
                        if on_progress is not None:
                            on_progress(sender.sent, committed_before, sender.size)
                    await call.done_writing()
                except (grpc.RpcError, asyncio.InvalidStateError):
                    pass  # the call ended; the reader has the server's last word
                return await reader
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                if upload_id is None or not up.is_resumable(error):
                    raise error from exc
                failures += 1
                delay = up.UPLOAD_RETRY.retry_delay(UnavailableError(error.message), failures, safe_to_retry=True)
                if delay is None:
                    raise error from exc
            finally:
                call.cancel()
            await asyncio.sleep(delay)

    async def get_job(self, job_id: str) -> job_pb2.Job:
        """Return the job ``job_id``. Raises `NotFoundError` if there is none."""
        request = job_service_pb2.GetJobRequest(job_id=job_id)
        response = await self._unary(self._jobs.GetJob, request, safe_to_retry=True)
        return response.job

    async def list_jobs(
        self,
        *,
        kind: EnumLike | None = None,
        state: EnumLike | None = None,
        page_size: int = 50,
        page_token: str = "",
    ) -> JobPage:
        """Return one page of the caller's jobs, newest first, optionally filtered by kind and state."""
        request = rq.list_jobs_request(kind=kind, state=state, page_size=page_size, page_token=page_token)
        response = await self._unary(self._jobs.ListJobs, request, safe_to_retry=True)
        return JobPage(jobs=list(response.jobs), next_page_token=response.next_page_token)

    async def iter_jobs(
        self, *, kind: EnumLike | None = None, state: EnumLike | None = None, page_size: int = 100
    ) -> AsyncIterator[job_pb2.Job]:
        """Yield every job of every page, newest first, fetching pages as needed."""
        page_token = ""
        while True:
            page = await self.list_jobs(kind=kind, state=state, page_size=page_size, page_token=page_token)
            for job in page.jobs:
                yield job
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def cancel_job(self, job_id: str) -> job_pb2.Job:
        """Cancel a job and return it; a finished job is returned unchanged."""
        request = job_service_pb2.CancelJobRequest(job_id=job_id)
        # Cancelling twice has the effect of cancelling once, so a retry is safe.
        response = await self._unary(self._jobs.CancelJob, request, safe_to_retry=True)
        return response.job

    # --- watching ---------------------------------------------------------------------------------

    def watch_stream(self) -> AsyncWatchStream:
        """Open one WatchJob stream for manual (un)subscription; it does not reconnect."""
        return AsyncWatchStream(self._jobs.WatchJob(metadata=self._metadata))

    async def watch(
        self, job_ids: str | Iterable[str], *, after_sequence: Mapping[str, int] | None = None
    ) -> AsyncGenerator[job_pb2.JobEvent]:
        """Yield the events of one or more jobs until each has ended, on one stream.

        When the stream breaks with UNAVAILABLE (for example a server restart),
        it reconnects with backoff and subscribes again after the last
        sequence seen of each job, so no event is missed or repeated.

        Args:
            job_ids: One job id, or several.
            after_sequence: Per job, skip the events up to and including this sequence.

        Raises:
            NotFoundError: A job does not exist (the subscription ended with that error).
            UnavailableError: The server stayed unreachable for all reconnect attempts.
        """
        tracker = WatchTracker([job_ids] if isinstance(job_ids, str) else job_ids, after_sequence=after_sequence)
        failures = 0
        while not tracker.done:
            try:
                async with self.watch_stream() as stream:
                    for job_id, after in tracker.subscriptions():
                        await stream.subscribe(job_id, after_sequence=after)
                    async for message in stream:
                        event = tracker.accept(message)
                        if event is not None:
                            failures = 0
                            yield event
                        if tracker.done:
                            return
                # A stream that ends while subscriptions are open was cut, not finished.
                error: DatamillError = UnavailableError("the watch stream ended early")
            except UnavailableError as exc:
                error = exc
            failures += 1
            delay = self._watch_retry.retry_delay(error, failures, safe_to_retry=True)
            if delay is None:
                raise error
            await asyncio.sleep(delay)

    async def wait(self, job_id: str, *, on_event: OnEvent | None = None) -> job_pb2.Job:
        """Watch ``job_id`` until it is terminal and return the final job.

        Args:
            job_id: The job.
            on_event: Called with each event (replayed ones included), e.g. to show progress.
        """
        last: job_pb2.Job | None = None
        async with aclosing(self.watch(job_id)) as events:
            async for event in events:
                last = event.job
                if on_event is not None:
                    result = on_event(event)
                    if inspect.isawaitable(result):
                        await result
        if last is None or not rq.is_terminal(last):
            # The subscription ended without a terminal event in view (e.g. after_sequence past it).
            last = await self.get_job(job_id)
        return last

    # --- datasets ---------------------------------------------------------------------------------

    async def get_dataset(self, dataset: str) -> job_pb2.Dataset:
        """Return a dataset by id or name. Raises `NotFoundError` if there is none."""
        request = dataset_service_pb2.GetDatasetRequest(dataset=dataset)
        response = await self._unary(self._datasets.GetDataset, request, safe_to_retry=True)
        return response.dataset

    async def list_datasets(self, *, page_size: int = 50, page_token: str = "") -> DatasetPage:
        """Return one page of the caller's datasets, newest first."""
        request = rq.list_datasets_request(page_size=page_size, page_token=page_token)
        response = await self._unary(self._datasets.ListDatasets, request, safe_to_retry=True)
        return DatasetPage(datasets=list(response.datasets), next_page_token=response.next_page_token)

    async def iter_datasets(self, *, page_size: int = 100) -> AsyncIterator[job_pb2.Dataset]:
        """Yield every dataset of every page, newest first."""
        page_token = ""
        while True:
            page = await self.list_datasets(page_size=page_size, page_token=page_token)
            for dataset in page.datasets:
                yield dataset
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    async def delete_dataset(self, dataset: str) -> None:
        """Delete a dataset and its rows.

        Raises:
            FailedPreconditionError: A job that builds or reads it is running.
        """
        request = dataset_service_pb2.DeleteDatasetRequest(dataset=dataset)
        # Not retried: if the first attempt landed, a retry would report NOT_FOUND for a success.
        await self._unary(self._datasets.DeleteDataset, request, safe_to_retry=False)

    async def read_object(self, object_key: str, *, offset: int = 0, limit: int = 0) -> AsyncIterator[bytes]:
        """Yield the bytes of a stored object (e.g. ``job.export.object_key``) in chunks.

        A broken stream is resumed from the last byte received, so the chunks
        always join into exactly the requested range.

        Args:
            object_key: The object's key.
            offset: First byte to read.
            limit: Bytes to read at most; 0 reads to the end.
        """
        position = offset
        failures = 0
        while True:
            remaining = 0 if limit == 0 else limit - (position - offset)
            if limit and remaining <= 0:
                return
            request = dataset_service_pb2.ReadObjectRequest(object_key=object_key, offset=position, limit=remaining)
            call = self._datasets.ReadObject(request, metadata=self._metadata)
            try:
                async for response in call:
                    if response.offset != position:
                        raise DataLossError(f"ReadObject sent offset {response.offset}, expected {position}")
                    position += len(response.data)
                    failures = 0
                    yield response.data
                return
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                failures += 1
                delay = self._watch_retry.retry_delay(error, failures, safe_to_retry=True)
                if delay is None:
                    raise error from exc
            finally:
                call.cancel()
            await asyncio.sleep(delay)

    # --- plumbing ---------------------------------------------------------------------------------

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[_Req, _Resp],
        request: _Req,
        *,
        safe_to_retry: bool,
    ) -> _Resp:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await method(request, timeout=self._timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                delay = self._retry.retry_delay(error, attempt, safe_to_retry=safe_to_retry)
                if delay is None:
                    raise error from exc
            await asyncio.sleep(delay)


async def _upload_responses(
    call: grpc.aio.StreamStreamCall[job_service_pb2.UploadRequest, job_service_pb2.UploadResponse],
    sender: FileSender,
    on_progress: UploadProgress | None,
) -> job_service_pb2.UploadCompleted:
    """Read acks until `completed` (raises the call's error if it fails)."""
    while isinstance(response := await call.read(), job_service_pb2.UploadResponse):
        kind = response.WhichOneof("message")
        if kind == "ack" and on_progress is not None:
            on_progress(sender.sent, response.ack.committed_offset, sender.size)
        elif kind == "completed":
            if on_progress is not None:
                on_progress(sender.size, response.completed.size_bytes, sender.size)
            return response.completed
    raise DataLossError("Upload: the stream ended without `completed`")
