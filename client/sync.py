"""The synchronous datamill client, on a plain `grpc` channel (no event loop).

    with Client.connect("127.0.0.1:50051") as client:
        job = client.generate("people", schema={"rows": 1000, "fields": [...]})
        job = client.wait(job.id)

It has the same surface and the same retry rules as `client.aio.AsyncClient`;
both build their requests and follow their watches with `client._requests`.
"""

from __future__ import annotations

import os
import queue
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from types import TracebackType
from typing import Self, TypeVar

import grpc

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

__all__ = ["Client", "WatchStream"]

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")


class WatchStream:
    """One open WatchJob stream on which jobs can be (un)subscribed at any time.

    Iterate it to receive every `WatchJobResponse`; `subscribe` and
    `unsubscribe` may be called from any thread, also while another thread
    iterates. It does not reconnect: `Client.watch` builds that on top.
    """

    def __init__(
        self,
        method: grpc.StreamStreamMultiCallable[job_service_pb2.WatchJobRequest, job_service_pb2.WatchJobResponse],
        *,
        metadata: tuple[tuple[str, str], ...],
    ) -> None:
        # A sync stream-stream call pulls requests from an iterator on gRPC's own
        # thread; a queue lets subscribe() feed it at any time. None closes it.
        self._requests: queue.SimpleQueue[job_service_pb2.WatchJobRequest | None] = queue.SimpleQueue()
        self._closed = False
        self._call = method(self._request_iterator(), metadata=metadata)

    def subscribe(self, job_id: str, *, after_sequence: int | None = None) -> None:
        """Start watching ``job_id``; the server replays its events after ``after_sequence`` first."""
        self._requests.put(rq.subscribe_request(job_id, after_sequence=after_sequence))

    def unsubscribe(self, job_id: str) -> None:
        """Stop watching ``job_id``; the server confirms with ``ended`` (UNSUBSCRIBED)."""
        self._requests.put(rq.unsubscribe_request(job_id))

    def close(self) -> None:
        """Cancel the call. Safe to call more than once."""
        self._closed = True
        self._requests.put(None)  # releases gRPC's thread blocked on the queue
        self._call.cancel()

    def __iter__(self) -> Iterator[job_service_pb2.WatchJobResponse]:
        while True:
            try:
                message = next(self._call)
            except StopIteration:
                return
            except grpc.RpcError as exc:
                if self._closed:
                    return
                raise from_rpc_error(exc) from exc
            yield message

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _request_iterator(self) -> Iterator[job_service_pb2.WatchJobRequest]:
        while (request := self._requests.get()) is not None:
            yield request


class Client:
    """Synchronous client of datamill's JobService and DatasetService.

    Create it with `Client.connect`, and close it with `close` or ``with``.
    It is safe to share between threads.
    """

    def __init__(
        self,
        channel: grpc.Channel,
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
    def connect(
        cls,
        target: str,
        *,
        tls: bool = False,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        timeout: float | None = 30.0,
        retry: RetryPolicy = DEFAULT_RETRY,
        watch_retry: RetryPolicy = DEFAULT_WATCH_RETRY,
    ) -> Client:
        """Open a channel to ``target`` ("host:port"); arguments as for `AsyncClient.connect`."""
        credentials = rq.channel_credentials(
            tls=tls, root_certificates=root_certificates, certificate_chain=certificate_chain, private_key=private_key
        )
        if credentials is None:
            channel = grpc.insecure_channel(target, options=rq.CHANNEL_OPTIONS)
        else:
            channel = grpc.secure_channel(target, credentials, options=rq.CHANNEL_OPTIONS)
        return cls(channel, metadata=metadata, timeout=timeout, retry=retry, watch_retry=watch_retry)

    def close(self) -> None:
        """Close the channel; calls still running are cancelled."""
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- jobs -------------------------------------------------------------------------------------

    def generate(self, dataset_name: str, *, schema: SchemaLike, request_id: str | None = None) -> job_pb2.Job:
        """Start a Generate job; see `AsyncClient.generate`."""
        request = rq.generate_request(dataset_name, schema=schema, request_id=request_id)
        return self._unary(self._jobs.Generate, request, safe_to_retry=True).job

    def export(
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
        """Start an Export job; see `AsyncClient.export`."""
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
        return self._unary(self._jobs.Export, request, safe_to_retry=True).job

    def upload(
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
        """Stream a file into a new dataset, resuming after broken streams; see `AsyncClient.upload`."""
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
            # gRPC pulls the requests in its own thread: the chunks wait for `started` to say where to begin.
            start_at: queue.Queue[int | None] = queue.Queue()

            def requests(
                opening: job_service_pb2.UploadRequest = opening, start_at: queue.Queue[int | None] = start_at
            ) -> Iterator[job_service_pb2.UploadRequest]:
                yield opening
                offset = start_at.get()
                if offset is not None:
                    yield from sender.requests_from(offset)

            responses = self._jobs.Upload(requests(), metadata=self._metadata)
            try:
                for response in responses:
                    kind = response.WhichOneof("message")
                    if kind == "started":
                        upload_id = response.started.upload_id
                        if response.started.committed_offset > committed_before:
                            failures = 0  # progress since the last break: the retry budget starts again
                        committed_before = response.started.committed_offset
                        if on_started is not None:
                            on_started(upload_id)
                        start_at.put(committed_before)
                    elif kind == "ack" and on_progress is not None:
                        on_progress(sender.sent, response.ack.committed_offset, sender.size)
                    elif kind == "completed":
                        if on_progress is not None:
                            on_progress(sender.size, response.completed.size_bytes, sender.size)
                        return response.completed
                raise DataLossError("Upload: the stream ended without `completed`")
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                if upload_id is None or not up.is_resumable(error):
                    raise error from exc
                failures += 1
                delay = up.UPLOAD_RETRY.retry_delay(UnavailableError(error.message), failures, safe_to_retry=True)
                if delay is None:
                    raise error from exc
            finally:
                start_at.put(None)
                responses.cancel()
            time.sleep(delay)

    def get_job(self, job_id: str) -> job_pb2.Job:
        """Return the job ``job_id``. Raises `NotFoundError` if there is none."""
        request = job_service_pb2.GetJobRequest(job_id=job_id)
        return self._unary(self._jobs.GetJob, request, safe_to_retry=True).job

    def list_jobs(
        self,
        *,
        kind: EnumLike | None = None,
        state: EnumLike | None = None,
        page_size: int = 50,
        page_token: str = "",
    ) -> JobPage:
        """Return one page of the caller's jobs, newest first, optionally filtered by kind and state."""
        request = rq.list_jobs_request(kind=kind, state=state, page_size=page_size, page_token=page_token)
        response = self._unary(self._jobs.ListJobs, request, safe_to_retry=True)
        return JobPage(jobs=list(response.jobs), next_page_token=response.next_page_token)

    def iter_jobs(
        self, *, kind: EnumLike | None = None, state: EnumLike | None = None, page_size: int = 100
    ) -> Iterator[job_pb2.Job]:
        """Yield every job of every page, newest first, fetching pages as needed."""
        page_token = ""
        while True:
            page = self.list_jobs(kind=kind, state=state, page_size=page_size, page_token=page_token)
            yield from page.jobs
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def cancel_job(self, job_id: str) -> job_pb2.Job:
        """Cancel a job and return it; a finished job is returned unchanged."""
        request = job_service_pb2.CancelJobRequest(job_id=job_id)
        # Cancelling twice has the effect of cancelling once, so a retry is safe.
        return self._unary(self._jobs.CancelJob, request, safe_to_retry=True).job

    # --- watching ---------------------------------------------------------------------------------

    def watch_stream(self) -> WatchStream:
        """Open one WatchJob stream for manual (un)subscription; it does not reconnect."""
        return WatchStream(self._jobs.WatchJob, metadata=self._metadata)

    def watch(
        self, job_ids: str | Iterable[str], *, after_sequence: Mapping[str, int] | None = None
    ) -> Generator[job_pb2.JobEvent]:
        """Yield the events of one or more jobs until each has ended; see `AsyncClient.watch`.

        Reconnects on UNAVAILABLE and resumes after the last sequence seen of each job.
        """
        tracker = WatchTracker([job_ids] if isinstance(job_ids, str) else job_ids, after_sequence=after_sequence)
        failures = 0
        while not tracker.done:
            try:
                with self.watch_stream() as stream:
                    for job_id, after in tracker.subscriptions():
                        stream.subscribe(job_id, after_sequence=after)
                    for message in stream:
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
            time.sleep(delay)

    def wait(self, job_id: str, *, on_event: Callable[[job_pb2.JobEvent], object] | None = None) -> job_pb2.Job:
        """Watch ``job_id`` until it is terminal and return the final job; see `AsyncClient.wait`."""
        last: job_pb2.Job | None = None
        with closing(self.watch(job_id)) as events:
            for event in events:
                last = event.job
                if on_event is not None:
                    on_event(event)
        if last is None or not rq.is_terminal(last):
            last = self.get_job(job_id)
        return last

    # --- datasets ---------------------------------------------------------------------------------

    def get_dataset(self, dataset: str) -> job_pb2.Dataset:
        """Return a dataset by id or name. Raises `NotFoundError` if there is none."""
        request = dataset_service_pb2.GetDatasetRequest(dataset=dataset)
        return self._unary(self._datasets.GetDataset, request, safe_to_retry=True).dataset

    def list_datasets(self, *, page_size: int = 50, page_token: str = "") -> DatasetPage:
        """Return one page of the caller's datasets, newest first."""
        request = rq.list_datasets_request(page_size=page_size, page_token=page_token)
        response = self._unary(self._datasets.ListDatasets, request, safe_to_retry=True)
        return DatasetPage(datasets=list(response.datasets), next_page_token=response.next_page_token)

    def iter_datasets(self, *, page_size: int = 100) -> Iterator[job_pb2.Dataset]:
        """Yield every dataset of every page, newest first."""
        page_token = ""
        while True:
            page = self.list_datasets(page_size=page_size, page_token=page_token)
            yield from page.datasets
            if not page.next_page_token:
                return
            page_token = page.next_page_token

    def delete_dataset(self, dataset: str) -> None:
        """Delete a dataset and its rows. Raises `FailedPreconditionError` while a job uses it."""
        request = dataset_service_pb2.DeleteDatasetRequest(dataset=dataset)
        # Not retried: if the first attempt landed, a retry would report NOT_FOUND for a success.
        self._unary(self._datasets.DeleteDataset, request, safe_to_retry=False)

    def read_object(self, object_key: str, *, offset: int = 0, limit: int = 0) -> Iterator[bytes]:
        """Yield the bytes of a stored object in chunks, resuming a broken stream; see `AsyncClient.read_object`."""
        position = offset
        failures = 0
        while True:
            remaining = 0 if limit == 0 else limit - (position - offset)
            if limit and remaining <= 0:
                return
            request = dataset_service_pb2.ReadObjectRequest(object_key=object_key, offset=position, limit=remaining)
            call = self._datasets.ReadObject(request, metadata=self._metadata)
            try:
                for response in call:
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
            time.sleep(delay)

    # --- plumbing ---------------------------------------------------------------------------------

    def _unary(self, method: grpc.UnaryUnaryMultiCallable[_Req, _Resp], request: _Req, *, safe_to_retry: bool) -> _Resp:
        attempt = 0
        while True:
            attempt += 1
            try:
                return method(request, timeout=self._timeout, metadata=self._metadata)
            except grpc.RpcError as exc:
                error = from_rpc_error(exc)
                delay = self._retry.retry_delay(error, attempt, safe_to_retry=safe_to_retry)
                if delay is None:
                    raise error from exc
            time.sleep(delay)
