"""The ingest job: import an uploaded file into its dataset's table, all or nothing.

The file is read from object storage as a stream (Parquet by ranged reads),
parsed and converted in a thread (`worker.engines.ingest`), and written by one
binary COPY inside one transaction that also creates the table and marks the
dataset ready. A malformed row, a cancel or a crash rolls all of it back: the
dataset is never half-imported. A retry starts again from the first byte.

Forward-read formats are hashed as they stream and checked against the
SHA-256 the server verified at upload, so bytes damaged at rest are caught.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, cast

import psycopg
import pyarrow as pa
import structlog
from psycopg import sql
from psycopg.types.json import Jsonb

from server.core.errors import DataLoss, FailedPrecondition
from server.core.models import DATASET_SCHEMA, JobRow, JobState
from server.core.objects import ObjectStore
from server.core.sql import query
from server.core.store import drop_pending_dataset
from worker.attempt import Attempt
from worker.engines.ingest import IngestColumn, IngestOptions, IngestReader, MalformedFile
from worker.engines.pgcopy import COPY_HEADER, COPY_TRAILER, copy_sql, create_table_sql, encode_copy_tuples

log = structlog.get_logger(__name__)

# Parsing holds the GIL for most of its time, so one thread per worker process is enough.
_PARSER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-parse")
PROGRESS_INTERVAL_SECONDS = 0.5


class ObjectFile(io.RawIOBase):
    """A read-only, seekable file over one stored object, for code running in a thread.

    Reads pull 1 MiB chunks from one ranged stream of the async store through
    the event loop; a seek elsewhere starts a new ranged stream. Bytes read in
    one pass from offset 0 are hashed, so the caller can check the SHA-256.
    """

    def __init__(self, store: ObjectStore, key: str, size: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._store, self._key, self._size, self._loop = store, key, size, loop
        self._pos = 0
        self._stream: AsyncGenerator[bytes, None] | None = None
        self._carry = memoryview(b"")
        self._sha256: Any = hashlib.sha256()
        self._hashed = 0  # bytes hashed, all from offset 0 in order; stops counting after a seek back

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = {io.SEEK_SET: offset, io.SEEK_CUR: self._pos + offset, io.SEEK_END: self._size + offset}[whence]
        if target != self._pos:
            self._drop_stream()
            self._pos = max(0, target)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        piece = self._next(len(view))
        view[: len(piece)] = piece
        return len(piece)

    def read(self, size: int | None = -1) -> bytes:
        """Exactly `size` bytes (all the rest for -1), fewer only at the end: pyarrow expects full reads."""
        wanted = self._size - self._pos if size is None or size < 0 else size
        out = bytearray()
        while len(out) < wanted and (piece := self._next(wanted - len(out))):
            out += piece
        return bytes(out)

    def _next(self, limit: int) -> memoryview:
        """Up to `limit` bytes at the current position (empty at the end)."""
        if self._pos >= self._size or limit <= 0:
            return memoryview(b"")
        if not self._carry:
            if self._stream is None:
                self._stream = self._store.open_range(self._key, self._pos)
            try:
                self._carry = memoryview(self._call(anext(self._stream)))
            except StopAsyncIteration:
                return memoryview(b"")
        piece, self._carry = self._carry[:limit], self._carry[limit:]
        if self._hashed == self._pos:
            self._sha256.update(piece)
            self._hashed += len(piece)
        self._pos += len(piece)
        return piece

    def sha256_if_whole(self) -> str | None:
        """The SHA-256 of the object if it was read once from start to end, else None."""
        return self._sha256.hexdigest() if self._hashed == self._size else None

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _drop_stream(self) -> None:
        self._carry = memoryview(b"")
        if self._stream is not None:
            stream, self._stream = self._stream, None
            with contextlib.suppress(Exception):
                self._call(stream.aclose())

    def close(self) -> None:
        if not self.closed:
            self._drop_stream()
        super().close()


class IngestJob:
    def __init__(self, objects: ObjectStore) -> None:
        self._objects = objects

    async def run(self, attempt: Attempt) -> None:
        job = attempt.job
        if job.spec is None or job.dataset_id is None:
            raise RuntimeError("an ingest job needs its spec and dataset")
        spec = job.spec
        loop = asyncio.get_running_loop()
        source = ObjectFile(self._objects, spec["object_key"], int(spec["size"]), loop)
        try:
            reader = await loop.run_in_executor(_PARSER, _open_reader, source, spec)
            table = await attempt.dataset_table()
            async with attempt.store.transaction() as conn:
                try:
                    await self._load(attempt, conn, reader, table)
                except psycopg.DataError as exc:  # e.g. text that is not UTF-8, refused by COPY
                    message = exc.diag.message_primary or str(exc)
                    raise FailedPrecondition(
                        f"the file cannot be imported: {message}", reason="MALFORMED_FILE"
                    ) from exc
                if (digest := source.sha256_if_whole()) is not None and digest != spec["sha256"]:
                    raise DataLoss(
                        f"the stored upload has SHA-256 {digest}, not the {spec['sha256']} it had when uploaded",
                        reason="UPLOAD_CORRUPTED",
                    )
                attempt.raise_if_cancelled()
                await conn.execute(query("mark_dataset_ready"), {"id": job.dataset_id, "row_count": reader.rows})
                await attempt.succeed(conn, result=_result(job, reader.rows, reader.skipped), done=int(spec["size"]))
            log.info("dataset_ready", dataset_id=str(job.dataset_id), rows=reader.rows, skipped=reader.skipped)
        finally:
            await loop.run_in_executor(_PARSER, source.close)

    async def _load(
        self, attempt: Attempt, conn: psycopg.AsyncConnection[Any], reader: IngestReader, table: str
    ) -> None:
        job = attempt.job
        columns = reader.columns
        # A previous attempt's table can only exist if it committed, and then this job would be done;
        # dropping first keeps a retry after any crash simple.
        await conn.execute(
            sql.SQL("DROP TABLE IF EXISTS {}.{}").format(sql.Identifier(DATASET_SCHEMA), sql.Identifier(table))
        )
        await conn.execute(create_table_sql(DATASET_SCHEMA, table, columns))
        await conn.execute(
            "UPDATE datasets SET columns = %s WHERE id = %s",
            (Jsonb([c.to_json() for c in columns]), job.dataset_id),
        )
        loop = asyncio.get_running_loop()
        batches = iter(reader.batches())
        last_progress = time.monotonic()
        async with conn.cursor().copy(copy_sql(DATASET_SCHEMA, table, columns)) as pipe:
            await pipe.write(COPY_HEADER)
            while (payload := await loop.run_in_executor(_PARSER, _next_payload, batches)) is not None:
                await pipe.write(payload)
                attempt.reached("midway")
                if time.monotonic() - last_progress >= PROGRESS_INTERVAL_SECONDS:
                    last_progress = time.monotonic()
                    await self._progress(attempt, reader.bytes_read)
                attempt.raise_if_cancelled()
            await pipe.write(COPY_TRAILER)

    @staticmethod
    async def _progress(attempt: Attempt, done: int) -> None:
        """Progress in its own transaction: the data's transaction commits only at the end."""
        async with attempt.store.transaction() as conn:
            await attempt.checkpoint(conn, done=done)

    async def cleanup(
        self, conn: psycopg.AsyncConnection[Any], job: JobRow, state: JobState, error: dict[str, Any]
    ) -> None:
        if job.dataset_id is not None:
            await drop_pending_dataset(conn, job.dataset_id)


def _open_reader(source: ObjectFile, spec: dict[str, Any]) -> IngestReader:
    csv = spec.get("csv") or {}
    options = IngestOptions(
        format=spec["format"],
        compression=spec.get("compression"),
        delimiter=csv.get("delimiter") or ",",
        header=True if csv.get("header") is None else bool(csv["header"]),
        quote=csv.get("quote") or '"',
        encoding=csv.get("encoding") or "utf-8",
        skip_malformed_rows=bool(spec.get("skip_malformed_rows")),
    )
    given = [IngestColumn(c["name"], c["type"], bool(c["nullable"])) for c in spec.get("columns") or []]
    try:
        return IngestReader(cast(BinaryIO, source), options, given or None)
    except MalformedFile as exc:
        raise _malformed(exc) from exc
    except ValueError as exc:  # options or columns the engine refuses (UnsupportedColumn among them)
        raise FailedPrecondition(
            f"the file cannot be imported with these options: {exc}", reason="UNSUPPORTED_INGEST_OPTIONS"
        ) from exc


def _next_payload(batches: Any) -> memoryview | None:
    try:
        batch: pa.RecordBatch = next(batches)
    except StopIteration:
        return None
    except MalformedFile as exc:
        raise _malformed(exc) from exc
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError) as exc:
        # Bytes the engine did not foresee (text that is not UTF-8 where a value must be parsed, found
        # by the fuzz tests): still the file's fault, so not retried and never INTERNAL.
        raise FailedPrecondition(f"the file cannot be imported: {exc}", reason="MALFORMED_FILE") from exc
    return encode_copy_tuples(batch)


def _malformed(exc: MalformedFile) -> FailedPrecondition:
    metadata = {"reason": exc.reason}
    if exc.row is not None:
        metadata["row"] = str(exc.row)
    if exc.column is not None:
        metadata["column"] = exc.column
    return FailedPrecondition(f"the file cannot be imported: {exc}", reason="MALFORMED_FILE", metadata=metadata)


def _result(job: JobRow, rows: int, skipped: int) -> dict[str, Any]:
    spec = job.spec or {}
    return {
        "dataset_id": str(job.dataset_id),
        "dataset_name": job.dataset_name,
        "row_count": rows,
        "upload_id": spec.get("upload_id", ""),
        "skipped_rows": skipped,
    }
