"""The Export job: write a dataset into one file in the object store, all or nothing.

The engine (`worker.engines.export`) runs in a thread on a database connection
of its own and hands the file over in parts; this side uploads them into a
multipart upload, at most PARTS_IN_FLIGHT at a time while the next part fills,
and writes progress (rows and bytes) every half second. The engine waits for
a free upload slot, so memory holds a few parts whatever the dataset's size.

Each attempt writes to a key of its own (`exports.export_key`) and records its
multipart upload (`export_parts_pending`) before the first byte. The success
transaction records the object, forgets that upload and marks the job
SUCCEEDED together. Any other end (a cancel, an error, a crash) leaves the
record behind, and whoever comes next removes the upload and anything it
completed: this attempt on its way out, the next attempt before it starts,
or the sweeper once the job has ended. So a failed or cancelled export leaves
neither an object nor an open multipart upload, and a stale attempt can
never overwrite the file of a newer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pyarrow as pa
import structlog
from psycopg import errors as pgerrors

from server.core.errors import DatamillError, FailedPrecondition, Unavailable
from server.core.exports import (
    ExportPlan,
    ExportStore,
    PendingUpload,
    StoredObject,
    export_key,
    record_object,
)
from server.core.models import JobRow, JobState
from server.core.objects import ObjectStore, PartInfo
from server.core.settings import Settings
from worker.attempt import Attempt, JobCancelled
from worker.engines.export import ExportOutcome, ExportProgress, ExportStopped, FileOutput, run_export

log = structlog.get_logger(__name__)

#: One thread per running export: the worker process runs a few jobs at once (--max-async-tasks).
_EXPORTERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="export")
PARTS_IN_FLIGHT = 2
PROGRESS_INTERVAL_SECONDS = 0.5
#: Parts double in size every this many, so that 10,000 parts hold far more than any dataset.
PARTS_PER_DOUBLING = 1000
MAX_PART_BYTES = 5 * 1024**3


def part_size(base: int, number: int) -> int:
    """The size from which part `number` (1-based) is cut: `base` for the first 1,000, then doubling."""
    return min(base << ((number - 1) // PARTS_PER_DOUBLING), MAX_PART_BYTES)


class ExportJob:
    def __init__(self, objects: ObjectStore, exports: ExportStore, settings: Settings) -> None:
        self._objects = objects
        self._exports = exports
        self._settings = settings

    async def run(self, attempt: Attempt) -> None:
        job = attempt.job
        if job.spec is None:
            raise RuntimeError("an Export job needs its spec")
        plan = ExportPlan.from_json(job.spec)
        for earlier in await self._exports.pending(job.id):  # a previous attempt's upload or object
            await self._exports.discard(self._objects, earlier)
        key = export_key(job, plan.extension)
        base = self._settings.upload_part_bytes
        # Parts 1 to PARTS_PER_DOUBLING are cut to exactly `base` bytes: the hint covers them.
        handle = await self._objects.create_multipart(key, content_type=plan.content_type, part_size=base)
        pending = PendingUpload(job.id, job.attempt, key, handle)
        try:
            await self._exports.add_pending(pending)
        except BaseException:
            await asyncio.shield(self._objects.abort_multipart(key, handle))
            raise
        loop = asyncio.get_running_loop()
        uploader = _PartUploader(self._objects, key, handle, loop, on_part=lambda: attempt.reached("midway"))
        out = FileOutput(plan.compression, uploader.emit, lambda number: part_size(base, number))
        stop = threading.Event()
        database_url = self._settings.database_url
        work = loop.run_in_executor(_EXPORTERS, _run_engine, database_url, plan, out, stop)
        try:
            outcome = await self._follow(attempt, work, out.progress)
            parts = await uploader.finish()
            await self._objects.complete_multipart(key, handle, parts)
            stored = StoredObject(key, outcome.size, outcome.sha256, plan.content_type)
            result = await self._result(job, stored, outcome)
            async with attempt.store.transaction() as conn:
                await record_object(conn, job.tenant, stored, job.id)
                await self._exports.remove_pending(pending, conn)
                await self._exports.final_size(conn, job.id, attempt.lease_token, outcome.size)
                await attempt.succeed(conn, result=result, done=outcome.rows)
            log.info("export_written", key=key, rows=outcome.rows, bytes=outcome.size, parts=outcome.parts)
        except BaseException:
            stop.set()
            await asyncio.shield(self._unwind(work, uploader, pending))
            raise

    async def _follow(
        self, attempt: Attempt, work: asyncio.Future[ExportOutcome], progress: ExportProgress
    ) -> ExportOutcome:
        """Wait for the engine, writing progress as it goes; raise JobCancelled once asked to stop."""
        reported = (-1, -1)
        while True:
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(work), PROGRESS_INTERVAL_SECONDS)
            now = (progress.rows, progress.bytes)
            if now != reported:
                reported = now
                if await self._exports.progress(
                    attempt.job.id,
                    attempt.lease_token,
                    rows=now[0],
                    size=now[1],
                    lease_seconds=self._settings.lease_seconds,
                ):
                    attempt.cancel_requested = True
            attempt.raise_if_cancelled()

    async def _result(self, job: JobRow, stored: StoredObject, outcome: ExportOutcome) -> dict[str, Any]:
        result: dict[str, Any] = {
            "object_key": stored.key,
            "size_bytes": stored.size,
            "sha256": stored.sha256,
            "row_count": outcome.rows,
            "content_type": stored.content_type,
        }
        ttl = timedelta(seconds=self._settings.export_url_ttl_seconds)
        url = await self._objects.presigned_get_url(stored.key, ttl)
        if url:
            result["presigned_url"] = url
            result["presigned_url_expire_time"] = (datetime.now(UTC) + ttl).isoformat().replace("+00:00", "Z")
        return result

    async def _unwind(
        self, work: asyncio.Future[ExportOutcome], uploader: _PartUploader, pending: PendingUpload
    ) -> None:
        """Stop the engine and remove this attempt's upload; the sweeper retries if the store is down.

        A cancel can arrive just after the success transaction committed (the heartbeat then
        finds the job SUCCEEDED and stops the task): the upload is then no longer pending, and
        the object it became is the job's result, so it is kept.
        """
        await uploader.close()
        with contextlib.suppress(BaseException):
            await work
        try:
            if await self._exports.is_pending(pending):
                await self._exports.discard(self._objects, pending)
        except DatamillError as exc:
            log.warning("export_discard_failed", key=pending.object_key, error=str(exc))

    async def cleanup(
        self, conn: psycopg.AsyncConnection[Any], job: JobRow, state: JobState, error: dict[str, Any]
    ) -> None:
        """Nothing to do in the database: `run` removed its upload on the way out (or the sweeper will)."""


def _run_engine(database_url: str, plan: ExportPlan, out: FileOutput, stop: threading.Event) -> ExportOutcome:
    """The engine in its thread, with its errors as datamill's."""
    started = time.monotonic()
    try:
        outcome = run_export(database_url, plan, out, stop)
    except ExportStopped:
        raise JobCancelled("export stopped") from None
    except pgerrors.UndefinedTable as exc:
        raise FailedPrecondition(
            "the dataset's table is gone: it was deleted while the export waited", reason="DATASET_DELETED"
        ) from exc
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise Unavailable("the database is unavailable", reason="DATABASE_UNAVAILABLE", retry_after=1.0) from exc
    except psycopg.Error as exc:  # a value PostgreSQL cannot render in this format or encoding
        raise FailedPrecondition(
            f"the dataset cannot be exported this way: {exc.diag.message_primary or exc}", reason="EXPORT_FAILED"
        ) from exc
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise FailedPrecondition(f"the dataset cannot be written as Parquet: {exc}", reason="EXPORT_FAILED") from exc
    log.info("export_engine_done", seconds=round(time.monotonic() - started, 3), rows=outcome.rows)
    return outcome


class _PartUploader:
    """Uploads the parts the engine's thread hands over, at most PARTS_IN_FLIGHT at once.

    `emit` runs in the engine's thread and returns once its part has a slot, so a
    slow object store slows the engine down instead of filling memory. An upload
    that failed makes the next `emit` (or `finish`) raise.
    """

    def __init__(
        self,
        objects: ObjectStore,
        key: str,
        handle: str,
        loop: asyncio.AbstractEventLoop,
        *,
        on_part: Callable[[], None] = lambda: None,
    ) -> None:
        self._objects, self._key, self._handle, self._loop = objects, key, handle, loop
        self._on_part = on_part
        self._slots = asyncio.Semaphore(PARTS_IN_FLIGHT)
        self._uploads: list[asyncio.Task[PartInfo]] = []
        self._closed = False

    def emit(self, data: memoryview) -> None:
        asyncio.run_coroutine_threadsafe(self._start(data), self._loop).result()

    async def _start(self, data: memoryview) -> None:
        for upload in self._uploads:
            if upload.done() and upload.exception() is not None:
                raise upload.exception()  # type: ignore[misc]
        await self._slots.acquire()
        if self._closed:
            self._slots.release()
            raise ExportStopped
        number = len(self._uploads) + 1
        self._uploads.append(asyncio.create_task(self._upload(number, data), name=f"export-part-{number}"))

    async def _upload(self, number: int, data: memoryview) -> PartInfo:
        try:
            part = await self._objects.upload_part(self._key, self._handle, number, data)
        finally:
            self._slots.release()
        self._on_part()
        return part

    async def finish(self) -> list[PartInfo]:
        return list(await asyncio.gather(*self._uploads))

    async def close(self) -> None:
        """Refuse further parts and wait for those in flight (an abort must not race an upload)."""
        self._closed = True
        await asyncio.gather(*self._uploads, return_exceptions=True)
