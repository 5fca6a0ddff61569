"""Resumable uploads: a client's file, streamed part by part into an object-store multipart upload.

The design follows ByteStream's Write/QueryWriteStatus, tus and S3 multipart:

- A stream opens (or resumes) an upload with a header; the server answers with
  the committed offset, and chunks must continue exactly from there.
- Chunks fill a part buffer. A full part goes to the object store while the
  next one fills, so an upload holds at most two parts in memory. Only once
  the store has the part is it recorded in PostgreSQL, together with the
  SHA-256 state of every byte before its end; that record is the committed
  offset, and it survives any crash of the stream, the server or the client.
- The upload is committed (multipart completed, ingest job created) only on an
  explicit `finish` that states the size and SHA-256: a stream that merely ends
  may be a cancelled client (PITFALLS.md).
- Each stream that attaches bumps the upload's generation, and every write is
  fenced by it, so a stale stream (a client that reconnected while its old
  connection lingers) can no longer move the upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import mmap
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import structlog
from psycopg.types.json import Jsonb
from rehashes import PySha256

from server.core import metrics
from server.core.errors import (
    AlreadyExists,
    DataLoss,
    DatamillError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    OutOfRange,
    ResourceExhausted,
)
from server.core.exports import StoredObject, record_object
from server.core.fileformats import CONTENT_TYPES, CsvSpec, compression_violations, csv_violations
from server.core.jobs import JobDomain, check_identifier, check_request_id
from server.core.models import DATASET_SCHEMA, JobKind, JobRow, NewDataset, NewJob, ProgressUnit, dataset_table_name
from server.core.objects import ObjectStore
from server.core.objects.base import MAX_PARTS, PartInfo
from server.core.quotas import QuotaExceeded, Quotas, check, check_counts, quotas_for
from server.core.schema import INGEST_PG_TYPES, ColumnDef
from server.core.settings import Settings
from server.core.sql import query
from server.core.store import JobStore, error_json, insert_job

log = structlog.get_logger(__name__)

MiB = 1024 * 1024
MAX_CHUNK_BYTES = 1 * MiB
MAX_FILE_NAME = 255
FORMATS = ("csv", "jsonl", "parquet")
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
UPLOADS_SQL = "uploads.sql"


def _q(name: str) -> Any:
    return query(name, UPLOADS_SQL)


@dataclass(frozen=True, slots=True)
class UploadColumn:
    name: str
    type: str
    nullable: bool


@dataclass(frozen=True, slots=True)
class UploadHeaderSpec:
    """The header of an Upload stream, as the client sent it (empty strings and None: not set)."""

    upload_id: str = ""
    file_name: str = ""
    format: str = ""
    compression: str = ""  # "" = detect from the bytes
    total_size: int | None = None
    expected_sha256: str = ""
    dataset_name: str = ""
    columns: tuple[UploadColumn, ...] = ()
    csv: CsvSpec = field(default_factory=CsvSpec)
    request_id: str = ""
    skip_malformed_rows: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("upload_id")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UploadHeaderSpec:
        return cls(
            file_name=data["file_name"],
            format=data["format"],
            compression=data["compression"],
            total_size=data["total_size"],
            expected_sha256=data["expected_sha256"],
            dataset_name=data["dataset_name"],
            columns=tuple(UploadColumn(**c) for c in data["columns"]),
            csv=CsvSpec(**data["csv"]),
            request_id=data["request_id"],
            skip_malformed_rows=data["skip_malformed_rows"],
        )


@dataclass(frozen=True, slots=True)
class UploadRow:
    id: uuid.UUID
    tenant: str
    state: str
    request_id: str | None
    request_hash: str
    header: UploadHeaderSpec
    object_key: str
    multipart_handle: str
    part_size: int
    committed_offset: int
    sha256_state: bytes
    generation: int
    size_bytes: int | None
    sha256: str | None
    job_id: uuid.UUID | None
    error: dict[str, Any] | None
    expires_at: datetime
    created_by: str = ""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> UploadRow:
        return cls(
            id=row["id"],
            tenant=row["tenant"],
            state=row["state"],
            request_id=row["request_id"],
            request_hash=row["request_hash"],
            header=UploadHeaderSpec.from_json(row["header"]),
            object_key=row["object_key"],
            multipart_handle=row["multipart_handle"],
            part_size=int(row["part_size"]),
            committed_offset=int(row["committed_offset"]),
            sha256_state=bytes(row["sha256_state"]),
            generation=int(row["generation"]),
            size_bytes=row["size_bytes"],
            sha256=row["sha256"],
            job_id=row["job_id"],
            error=row["error"],
            expires_at=row["expires_at"],
            created_by=row.get("created_by") or "",
        )


class UploadSuperseded(FailedPrecondition):
    reason = "UPLOAD_SUPERSEDED"

    def __init__(self, upload_id: uuid.UUID) -> None:
        super().__init__(
            f"upload {upload_id} was resumed by another stream or ended; this stream can no longer write to it",
            metadata={"upload_id": str(upload_id)},
        )


def part_size_for(total_size: int | None, settings: Settings) -> int:
    """`max(minimum, size / 10,000)` in whole MiB, so that any allowed size fits S3's 10,000 parts."""
    size = total_size if total_size is not None else settings.max_upload_bytes
    needed = -(-size // MAX_PARTS)
    return max(settings.upload_part_bytes, -(-needed // MiB) * MiB)


def upload_key(tenant: str, upload_id: uuid.UUID) -> str:
    """The object key: chosen by datamill. The client's file name never reaches a path."""
    return f"{tenant}/uploads/{upload_id}"


class UploadStore:
    """Every read and write of uploads and their parts."""

    def __init__(self, jobs: JobStore) -> None:
        self._jobs = jobs

    async def insert(self, params: dict[str, Any]) -> UploadRow | None:
        """The new upload, or None when its request_id is taken."""
        async with self._jobs.connect() as conn:
            cur = await conn.execute(_q("insert_upload"), params)
            row = await cur.fetchone()
        return None if row is None else UploadRow.from_row(row)

    async def attach(
        self, tenant: str, *, upload_id: uuid.UUID | None, request_id: str | None, ttl_seconds: float
    ) -> tuple[UploadRow, list[PartInfo]] | None:
        """Take over an upload for a new stream (bumping its generation); None if there is no such upload."""
        async with self._jobs.connect(transaction=True) as conn:
            if upload_id is not None:
                params: dict[str, Any] = {"id": upload_id, "tenant": tenant, "ttl_seconds": ttl_seconds}
                cur = await conn.execute(_q("attach_upload_by_id"), params)
            else:
                params = {"request_id": request_id, "tenant": tenant, "ttl_seconds": ttl_seconds}
                cur = await conn.execute(_q("attach_upload_by_request_id"), params)
            row = await cur.fetchone()
            if row is None:
                return None
            cur = await conn.execute(_q("upload_parts"), {"id": row["id"]})
            parts = [PartInfo(number=r["number"], size=r["size"], etag=r["etag"]) for r in await cur.fetchall()]
        return UploadRow.from_row(row), parts

    async def quotas(self, tenant: str, defaults: Quotas, *, preflight: bool = False) -> Quotas:
        """The tenant's quotas; with `preflight`, QuotaExceeded now if one more job and dataset would be over."""
        async with self._jobs.connect() as conn:
            quotas = await quotas_for(conn, tenant, defaults)
            if preflight:
                await check_counts(conn, tenant, quotas, dataset=True, adding=1)
        return quotas

    async def dataset_name_taken(self, tenant: str, name: str) -> bool:
        async with self._jobs.connect() as conn:
            cur = await conn.execute("SELECT 1 FROM datasets WHERE tenant = %s AND name = %s", (tenant, name))
            return await cur.fetchone() is not None

    async def commit_part(
        self, upload: UploadRow, part: PartInfo, *, committed_offset: int, sha256_state: bytes, ttl_seconds: float
    ) -> None:
        async with self._jobs.connect(transaction=True) as conn:
            cur = await conn.execute(
                _q("commit_part"),
                {
                    "id": upload.id,
                    "generation": upload.generation,
                    "committed_offset": committed_offset,
                    "size": part.size,
                    "sha256_state": sha256_state,
                    "ttl_seconds": ttl_seconds,
                },
            )
            if await cur.fetchone() is None:
                raise UploadSuperseded(upload.id)
            await conn.execute(
                _q("upsert_part"), {"id": upload.id, "number": part.number, "size": part.size, "etag": part.etag}
            )
        metrics.UPLOAD_BYTES.inc(part.size)

    async def complete(
        self, upload: UploadRow, *, size: int, sha256: str, job: NewJob, dataset: NewDataset, quotas: Quotas
    ) -> tuple[UploadRow, JobRow]:
        """Mark the upload COMPLETED and create its ingest job and dataset (quotas admitting), in one transaction."""
        async with self._jobs.connect(transaction=True) as conn:
            cur = await conn.execute(_q("lock_open_upload"), {"id": upload.id, "generation": upload.generation})
            if await cur.fetchone() is None:
                raise UploadSuperseded(upload.id)
            job_row, _ = await insert_job(conn, job, dataset, quotas=quotas)
            content_type = CONTENT_TYPES.get(upload.header.format, "application/octet-stream")
            await record_object(
                conn, upload.tenant, StoredObject(upload.object_key, size, sha256, content_type), job_row.id
            )
            cur = await conn.execute(
                _q("complete_upload"), {"id": upload.id, "size_bytes": size, "sha256": sha256, "job_id": job_row.id}
            )
            row: Any = await cur.fetchone()
        metrics.JOBS_CREATED.labels(job_row.kind.value).inc()
        return UploadRow.from_row(row), job_row

    async def abort(self, upload_id: uuid.UUID, error: dict[str, Any], *, ttl_seconds: float) -> None:
        """Mark an OPEN upload ABORTED; the row stays until the TTL, so a resume learns why."""
        async with self._jobs.connect() as conn:
            await conn.execute(_q("abort_upload"), {"id": upload_id, "error": Jsonb(error), "ttl_seconds": ttl_seconds})

    async def job(self, job_id: uuid.UUID | None, tenant: str) -> JobRow | None:
        if job_id is None:
            return None
        try:
            return await self._jobs.get_job(tenant, job_id)
        except NotFound:
            return None

    async def expire(self, objects: ObjectStore, *, limit: int) -> int:
        """Abort the multipart uploads of expired uploads and delete their rows; returns how many.

        Each row stays locked while its multipart upload is aborted, so a stream
        attaching at that moment waits, then finds no upload (NOT_FOUND).
        """
        expired = 0
        async with self._jobs.connect(transaction=True) as conn:
            cur = await conn.execute(_q("expired_uploads"), {"limit": limit})
            for row in await cur.fetchall():
                await objects.abort_multipart(row["object_key"], row["multipart_handle"])
                await conn.execute(_q("delete_upload"), {"id": row["id"]})
                log.info("upload_expired", upload_id=str(row["id"]), state=row["state"])
                expired += 1
        return expired


@dataclass(frozen=True, slots=True)
class Completed:
    upload: UploadRow
    job: JobRow | None


class UploadDomain:
    """Opens and resumes uploads on behalf of the RPC layer."""

    def __init__(self, store: UploadStore, jobs: JobDomain, objects: ObjectStore, settings: Settings) -> None:
        self.store = store
        self.jobs = jobs
        self.objects = objects
        self.settings = settings

    async def open(self, tenant: str, header: UploadHeaderSpec, *, created_by: str = "") -> UploadSession:
        """A session on a new or resumed upload. Raises before any byte is stored if the header is bad."""
        if header.upload_id:
            try:
                upload_id = uuid.UUID(header.upload_id)
            except ValueError:
                raise InvalidArgument.single("header.upload_id", "must be an upload id (a UUID)") from None
            return await self._resume(tenant, header, upload_id=upload_id)
        self._validate(header)
        if header.request_id:
            existing = await self._attach(tenant, header, request_id=header.request_id)
            if existing is not None:
                return existing
        quotas = await self.store.quotas(tenant, self.jobs.quotas, preflight=True)
        if header.total_size is not None:
            check(tenant, "upload_bytes", quotas.upload_bytes, header.total_size)
        if await self.store.dataset_name_taken(tenant, header.dataset_name):
            raise AlreadyExists(
                f"a dataset named {header.dataset_name!r} already exists",
                reason="DATASET_EXISTS",
                metadata={"dataset_name": header.dataset_name},
            )
        upload_id = uuid.uuid4()
        key = upload_key(tenant, upload_id)
        content_type = CONTENT_TYPES[header.format]
        part_size = part_size_for(header.total_size, self.settings)
        # Every part but the last is exactly `part_size` bytes (`_PartBuffer`): the store may place them.
        handle = await self.objects.create_multipart(key, content_type=content_type, part_size=part_size)
        try:
            row = await self.store.insert(
                {
                    "id": upload_id,
                    "tenant": tenant,
                    "request_id": header.request_id or None,
                    "request_hash": _header_hash(header),
                    "header": Jsonb(header.to_json()),
                    "dataset_name": header.dataset_name,
                    "object_key": key,
                    "multipart_handle": handle,
                    "part_size": part_size,
                    "sha256_state": PySha256().serialize(),
                    "ttl_seconds": self.settings.upload_ttl_seconds,
                    "created_by": created_by,
                }
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self.objects.abort_multipart(key, handle)
            raise
        if row is None:  # a concurrent stream took the request_id first: resume that one
            with contextlib.suppress(Exception):
                await self.objects.abort_multipart(key, handle)
            return await self._resume(tenant, header, request_id=header.request_id)
        log.info("upload_started", upload_id=str(row.id), format=header.format, part_size=row.part_size)
        return UploadSession(self, row, [], PySha256(), quota=quotas.upload_bytes)

    async def _resume(
        self, tenant: str, header: UploadHeaderSpec, *, upload_id: uuid.UUID | None = None, request_id: str = ""
    ) -> UploadSession:
        session = await self._attach(tenant, header, upload_id=upload_id, request_id=request_id)
        if session is None:
            raise NotFound("upload", str(upload_id or request_id))
        return session

    async def _attach(
        self, tenant: str, header: UploadHeaderSpec, *, upload_id: uuid.UUID | None = None, request_id: str = ""
    ) -> UploadSession | None:
        """A session on an existing upload (by id, else by request_id), or None if there is none."""
        found = await self.store.attach(
            tenant, upload_id=upload_id, request_id=request_id or None, ttl_seconds=self.settings.upload_ttl_seconds
        )
        if found is None:
            return None
        row, parts = found
        if upload_id is None and row.request_hash != _header_hash(header):
            raise AlreadyExists(
                "request_id was already used for a different upload",
                reason="REQUEST_ID_REUSED",
                metadata={"request_id": header.request_id, "upload_id": str(row.id)},
            )
        _check_resume_header(header, row.header)
        if row.state == "ABORTED":
            error = row.error or {}
            raise FailedPrecondition(
                f"upload {row.id} was aborted: {error.get('message', 'unknown reason')}",
                reason="UPLOAD_ABORTED",
                metadata={"upload_id": str(row.id)},
            )
        if sum(p.size for p in parts) != row.committed_offset:
            raise DataLoss(f"upload {row.id} has inconsistent parts", reason="UPLOAD_PARTS_INCONSISTENT")
        completed = None
        if row.state == "COMPLETED":
            completed = Completed(row, await self.store.job(row.job_id, tenant))
        log.info("upload_resumed", upload_id=str(row.id), committed_offset=row.committed_offset, state=row.state)
        quotas = await self.store.quotas(tenant, self.jobs.quotas)
        return UploadSession(
            self, row, parts, PySha256.deserialize(row.sha256_state), completed=completed, quota=quotas.upload_bytes
        )

    def _validate(self, header: UploadHeaderSpec) -> None:
        violations = _header_violations(header)
        if violations:
            raise InvalidArgument(violations)
        limit = self.settings.max_upload_bytes
        if header.total_size is not None and header.total_size > limit:
            raise _too_large(header.total_size, limit)

    async def abort(self, upload: UploadRow, exc: DatamillError) -> None:
        """Reject the upload for good: delete the stored parts and record why."""
        error = error_json(exc.code.value, exc.message, exc.reason, exc.metadata)
        await self.store.abort(upload.id, error, ttl_seconds=self.settings.upload_ttl_seconds)
        try:
            await self.objects.abort_multipart(upload.object_key, upload.multipart_handle)
        except DatamillError as cleanup:  # the sweeper aborts it again when the row expires
            log.warning("upload_abort_incomplete", upload_id=str(upload.id), error=str(cleanup))
        log.info("upload_aborted", upload_id=str(upload.id), reason=exc.reason)

    async def create_ingest(self, upload: UploadRow, *, size: int, sha256: str) -> tuple[UploadRow, JobRow]:
        header = upload.header
        dataset_id = uuid.uuid4()
        columns = [ColumnDef(c.name, c.type, INGEST_PG_TYPES[c.type], c.nullable).to_json() for c in header.columns]
        spec = {
            "upload_id": str(upload.id),
            "object_key": upload.object_key,
            "size": size,
            "sha256": sha256,
            "format": header.format,
            "compression": header.compression or None,
            "csv": asdict(header.csv),
            "columns": columns,
            "skip_malformed_rows": header.skip_malformed_rows,
            "dataset_schema": DATASET_SCHEMA,
        }
        job = NewJob(
            tenant=upload.tenant,
            kind=JobKind.INGEST,
            spec=spec,
            request_id=None,
            request_hash=upload.request_hash,
            max_attempts=self.settings.max_attempts,
            progress_total=size,
            progress_unit=ProgressUnit.BYTES,
            dataset_name=header.dataset_name,
            created_by=upload.created_by,
        )
        dataset = NewDataset(
            id=dataset_id, name=header.dataset_name, table_name=dataset_table_name(dataset_id), columns=columns
        )
        upload_row, job_row = await self.store.complete(
            upload, size=size, sha256=sha256, job=job, dataset=dataset, quotas=self.jobs.quotas
        )
        await self.jobs.dispatch(job_row.id)
        log.info("upload_completed", upload_id=str(upload.id), job_id=str(job_row.id), size=size)
        return upload_row, job_row


#: Parts of one upload on their way to the object store at once. One part's round trip leaves
#: the store idle between parts; two keep it busy (minio's own put_object sends three).
PARTS_IN_FLIGHT = 2


class _PartBuffer:
    """One part's bytes, in an anonymous mapping: its memory goes back to the OS when closed,
    whatever malloc would do with 8 MiB blocks freed by other threads."""

    def __init__(self, size: int) -> None:
        self._map = mmap.mmap(-1, size)
        self.view = memoryview(self._map)
        self.length = 0

    def close(self) -> None:
        self.view.release()
        with contextlib.suppress(BufferError):  # a slice still held elsewhere: the GC unmaps it later
            self._map.close()


class UploadSession:
    """One stream's work on one upload: take chunks in order, store full parts, commit on finish.

    Chunks are copied into a part buffer and hashed as they arrive. A full
    part goes to the object store in a task, while the next one fills; up to
    PARTS_IN_FLIGHT parts travel at once, and they are recorded strictly in
    order, each with the SHA-256 state at its end. An upload holds at most
    PARTS_IN_FLIGHT + 1 part buffers, reused, whatever the file's size.

    Not safe for concurrent calls: one stream calls `write` and `finish` in order.
    `on_commit` is called with the committed offset each time a part is recorded.
    """

    def __init__(
        self,
        domain: UploadDomain,
        upload: UploadRow,
        parts: list[PartInfo],
        hasher: PySha256,
        *,
        completed: Completed | None = None,
        quota: int = 0,
    ) -> None:
        self._domain = domain
        self._quota = quota  # the tenant's upload_bytes quota; 0: none
        self.upload = upload
        self.completed = completed
        self._parts = parts
        self._hasher = hasher
        self.committed_offset = upload.committed_offset
        self._received = upload.committed_offset  # the offset the next chunk must have
        self._next_number = len(parts) + 1
        self._hashed = upload.committed_offset  # the end of the bytes copied into part buffers
        self._filling: _PartBuffer | None = None
        self._idle: list[_PartBuffer] = []
        self._buffers = 0
        self._returned = asyncio.Event()
        self._tail: asyncio.Task[None] | None = None  # the last part's task; it awaits the ones before
        self._failed: BaseException | None = None
        self.on_commit: Callable[[int], None] = lambda offset: None

    @property
    def upload_id(self) -> uuid.UUID:
        return self.upload.id

    async def write(self, offset: int, data: bytes) -> None:
        if not data or len(data) > MAX_CHUNK_BYTES:
            raise InvalidArgument.single("chunk.data", f"must hold 1 byte to {MAX_CHUNK_BYTES} bytes")
        if offset != self._received:
            raise OutOfRange(
                f"chunk write_offset {offset} does not continue the upload: expected {self._received}; "
                f"{self.committed_offset} bytes are committed",
                reason="UPLOAD_OFFSET_MISMATCH",
                metadata={"committed_offset": str(self.committed_offset), "expected_offset": str(self._received)},
            )
        end = self._received + len(data)
        limit = self._domain.settings.max_upload_bytes
        declared = self.upload.header.total_size
        if end > limit:
            await self._reject(_too_large(end, limit))
        if self._quota and end > self._quota:
            await self._reject(QuotaExceeded(self.upload.tenant, "upload_bytes", self._quota, end))
        if declared is not None and end > declared:
            await self._reject(
                InvalidArgument.single("chunk", f"the file is larger than its declared total_size of {declared} bytes")
            )
        self._received = end
        part_size = self.upload.part_size
        taken = 0
        while taken < len(data):
            if self._filling is None:
                self._filling = await self._take_buffer()
            buffer = self._filling
            room = part_size - buffer.length
            piece = data[taken : taken + room] if taken or len(data) > room else data  # no copy when it fits
            buffer.view[buffer.length : buffer.length + len(piece)] = piece
            buffer.length += len(piece)
            self._hasher.update(piece)
            self._hashed += len(piece)
            taken += len(piece)
            if buffer.length == part_size:
                self._filling = None
                self._submit(buffer)

    async def finish(self, total_size: int, sha256: str) -> Completed:
        """Store the last part, check size and SHA-256, complete the multipart upload, create the ingest job."""
        if not _SHA256_HEX.fullmatch(sha256):
            raise InvalidArgument.single("finish.sha256", "must be 64 lower-case hex digits")
        if self._filling is not None:
            buffer, self._filling = self._filling, None
            self._submit(buffer)
        await self._drain()
        size = self.committed_offset
        header = self.upload.header
        if size == 0:
            await self._reject(InvalidArgument.single("finish.total_size", "the file is empty"))
        if total_size != size:
            await self._reject(
                InvalidArgument.single("finish.total_size", f"says {total_size} bytes, but {size} were received")
            )
        if header.total_size is not None and header.total_size != size:
            await self._reject(
                InvalidArgument.single("header.total_size", f"said {header.total_size} bytes, but {size} were received")
            )
        digest = PySha256.deserialize(self._hasher.serialize()).finalize()
        for claimed, source in ((sha256, "finish.sha256"), (header.expected_sha256, "header.expected_sha256")):
            if claimed and claimed != digest:
                await self._reject(
                    DataLoss(
                        f"the received bytes have SHA-256 {digest}, not the {source} {claimed}; the upload is deleted",
                        reason="UPLOAD_CHECKSUM_MISMATCH",
                        metadata={"sha256": digest, "expected": claimed},
                    )
                )
        domain = self._domain
        await domain.objects.complete_multipart(self.upload.object_key, self.upload.multipart_handle, self._parts)
        try:
            upload, job = await domain.create_ingest(self.upload, size=size, sha256=digest)
        except AlreadyExists as exc:  # the dataset name was taken while the file streamed
            await self._reject(exc)
            raise AssertionError("unreachable") from exc
        self.completed = Completed(upload, job)
        return self.completed

    async def close(self) -> None:
        """Let parts already on their way finish and commit (valid data a resume keeps), then free the buffers."""
        if self._tail is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._tail)
        for buffer in [*self._idle, *([self._filling] if self._filling else [])]:
            buffer.close()
        self._idle, self._filling = [], None

    async def _take_buffer(self) -> _PartBuffer:
        while True:
            if self._failed is not None:
                raise self._failed
            if self._idle:
                return self._idle.pop()
            if self._buffers < PARTS_IN_FLIGHT + 1:
                self._buffers += 1
                return _PartBuffer(self.upload.part_size)
            self._returned.clear()
            await self._returned.wait()

    def _submit(self, buffer: _PartBuffer) -> None:
        number = self._next_number
        if number > MAX_PARTS:
            raise ResourceExhausted(f"the upload exceeds {MAX_PARTS} parts", reason="UPLOAD_TOO_MANY_PARTS")
        self._next_number += 1
        self._tail = asyncio.create_task(
            self._store_part(number, buffer, self._hashed, self._hasher.serialize(), self._tail),
            name=f"upload-{self.upload.id}-part-{number}",
        )

    async def _store_part(
        self, number: int, buffer: _PartBuffer, end: int, state: bytes, previous: asyncio.Task[None] | None
    ) -> None:
        upload, domain = self.upload, self._domain
        size = buffer.length
        try:
            data = buffer.view[:size]
            try:
                info = await domain.objects.upload_part(upload.object_key, upload.multipart_handle, number, data)
            finally:
                data.release()
                buffer.length = 0
                self._idle.append(buffer)
                self._returned.set()
            if previous is not None:
                await previous  # recorded strictly in order; an earlier part's failure is this one's too
            part = PartInfo(number=number, size=size, etag=info.etag)
            await domain.store.commit_part(
                upload, part, committed_offset=end, sha256_state=state, ttl_seconds=domain.settings.upload_ttl_seconds
            )
        except BaseException as exc:
            self._failed = self._failed or exc
            self._returned.set()
            raise
        self._parts.append(part)
        self.committed_offset = end
        self.on_commit(end)

    async def _drain(self) -> None:
        if self._tail is not None:
            await self._tail
        if self._failed is not None:
            raise self._failed

    async def _reject(self, exc: DatamillError) -> None:
        """Abort the upload for good (deleting what was stored) and raise `exc`."""
        with contextlib.suppress(Exception):
            await self._drain()
        await self._domain.abort(self.upload, exc)
        raise exc


def _too_large(size: int, limit: int) -> ResourceExhausted:
    return ResourceExhausted(
        f"the file exceeds the server's upload limit of {limit} bytes ({size} bytes)",
        reason="UPLOAD_TOO_LARGE",
        metadata={"limit_bytes": str(limit)},
    )


def _header_hash(header: UploadHeaderSpec) -> str:
    canonical = json.dumps(header.to_json(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _check_resume_header(header: UploadHeaderSpec, stored: UploadHeaderSpec) -> None:
    """On resume, every header field set must equal the original."""
    violations = []
    defaults = UploadHeaderSpec()
    for name in ("file_name", "format", "compression", "total_size", "expected_sha256", "dataset_name", "columns"):
        value = getattr(header, name)
        if value != getattr(defaults, name) and value != getattr(stored, name):
            violations.append(FieldViolation(f"header.{name}", "does not match the upload being resumed"))
    if header.csv != CsvSpec() and header.csv != stored.csv:
        violations.append(FieldViolation("header.csv_options", "does not match the upload being resumed"))
    if header.skip_malformed_rows and not stored.skip_malformed_rows:
        violations.append(FieldViolation("header.skip_malformed_rows", "does not match the upload being resumed"))
    if violations:
        raise InvalidArgument(violations)


def _header_violations(header: UploadHeaderSpec) -> list[FieldViolation]:
    violations = [
        v
        for v in (
            check_identifier(header.dataset_name, "header.dataset_name"),
            check_request_id(header.request_id or None, "header.request_id"),
        )
        if v is not None
    ]
    if header.format not in FORMATS:
        violations.append(FieldViolation("header.format", "must be CSV, JSONL or PARQUET"))
    violations += compression_violations(
        header.format, header.compression, "header.compression", "; send the file as it is"
    )
    if len(header.file_name) > MAX_FILE_NAME:
        violations.append(FieldViolation("header.file_name", f"must be at most {MAX_FILE_NAME} characters"))
    if header.total_size is not None and header.total_size < 1:
        violations.append(FieldViolation("header.total_size", "must be at least 1 when set"))
    if header.expected_sha256 and not _SHA256_HEX.fullmatch(header.expected_sha256):
        violations.append(FieldViolation("header.expected_sha256", "must be 64 lower-case hex digits"))
    violations.extend(_column_violations(header.columns))
    violations.extend(_csv_violations(header))
    return violations


def _column_violations(columns: Sequence[UploadColumn]) -> list[FieldViolation]:
    violations = []
    seen: set[str] = set()
    for index, column in enumerate(columns):
        path = f"header.columns[{index}]"
        problem = check_identifier(column.name, f"{path}.name")
        if problem is not None:
            violations.append(problem)
        elif column.name in seen:
            violations.append(FieldViolation(f"{path}.name", f"duplicates column {column.name!r}"))
        seen.add(column.name)
        if column.type not in INGEST_PG_TYPES:
            violations.append(
                FieldViolation(f"{path}.type", f"must be one of {', '.join(INGEST_PG_TYPES)} for an upload")
            )
    return violations


def _csv_violations(header: UploadHeaderSpec) -> list[FieldViolation]:
    csv = header.csv
    if csv == CsvSpec():
        return []
    if header.format != "csv":
        return [FieldViolation("header.csv_options", "only applies to FILE_FORMAT_CSV")]
    return csv_violations(csv, "header.csv_options")


__all__ = [
    "Completed",
    "CsvSpec",
    "UploadColumn",
    "UploadDomain",
    "UploadHeaderSpec",
    "UploadRow",
    "UploadSession",
    "UploadStore",
]
