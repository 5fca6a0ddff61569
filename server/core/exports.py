"""Exports and stored objects: validating an Export, the plan its worker follows, and ReadObject.

An Export is checked here completely before its job exists: the request's own
shape first (INVALID_ARGUMENT with every field violation at once), then the
dataset (NOT_FOUND), its columns (INVALID_ARGUMENT) and readiness
(FAILED_PRECONDITION). What passes becomes an `ExportPlan`, stored as the
job's spec and followed by the worker (`worker.jobs.export`), so a worker never
sees a request it would have to refuse.

Every object datamill writes (exports, uploaded files) is recorded in the
`objects` table with its tenant; ReadObject serves only keys recorded for the
caller's tenant, so another tenant's key is NOT_FOUND like a missing one.
"""

from __future__ import annotations

import codecs
import uuid
from collections.abc import AsyncGenerator
from dataclasses import asdict, dataclass, fields
from typing import Any

import psycopg
import structlog

from server.core.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound, OutOfRange
from server.core.fileformats import (
    COMPRESSED_CONTENT_TYPES,
    COMPRESSED_EXTENSIONS,
    CONTENT_TYPES,
    EXTENSIONS,
    CsvSpec,
    compression_violations,
    csv_violations,
    text_encoding,
)
from server.core.jobs import JobDomain, check_request_id, request_hash
from server.core.models import DatasetRow, JobKind, JobRow, NewJob, ProgressUnit
from server.core.objects import ObjectStore
from server.core.schema import ColumnDef
from server.core.sql import query
from server.core.store import JobStore, LeaseLost

log = structlog.get_logger(__name__)

EXPORTS_SQL = "exports.sql"
FORMATS = ("csv", "jsonl", "parquet", "sql")
PARQUET_COMPRESSIONS = ("zstd", "snappy", "gzip", "lz4", "none")
SQL_STYLES = ("insert", "copy")
DEFAULT_ROW_GROUP_SIZE = 131_072
MAX_ROW_GROUP_SIZE = 1_048_576
DEFAULT_ROWS_PER_STATEMENT = 1_000
MAX_ROWS_PER_STATEMENT = 100_000
MAX_SQL_TABLE_NAME_BYTES = 63
#: Encodings PostgreSQL's COPY can write a CSV in: Python's codec name -> PostgreSQL's name.
CSV_ENCODINGS = {
    "utf-8": "UTF8",
    "latin-1": "LATIN1",
    "iso8859-15": "LATIN9",
    "cp1252": "WIN1252",
    "cp1251": "WIN1251",
    "koi8-r": "KOI8R",
    "euc_jp": "EUC_JP",
    "shift_jis": "SJIS",
    "gb18030": "GB18030",
    "big5": "BIG5",
}


def _q(name: str) -> Any:
    return query(name, EXPORTS_SQL)


@dataclass(frozen=True, slots=True)
class ParquetSpec:
    row_group_size: int = 0
    compression: str = ""


@dataclass(frozen=True, slots=True)
class SqlSpec:
    style: str = ""  # "", "insert" or "copy"
    table_name: str = ""
    include_create_table: bool = False
    rows_per_statement: int = 0


@dataclass(frozen=True, slots=True)
class ExportRequestSpec:
    """An Export request as the client sent it. Options are None when their message was not set."""

    dataset: str
    format: str  # "" when unspecified, "#<n>" for an enum value this server does not know
    compression: str = ""
    csv: CsvSpec | None = None
    parquet: ParquetSpec | None = None
    sql: SqlSpec | None = None
    columns: tuple[str, ...] = ()
    row_limit: int | None = None
    request_id: str = ""

    def fingerprint(self) -> str:
        payload = asdict(self)
        payload.pop("request_id")
        return request_hash(JobKind.EXPORT, payload)


@dataclass(frozen=True, slots=True)
class ExportPlan:
    """What the export worker does, every default filled in. Stored as the job's spec."""

    format: str
    compression: str  # "none", "gzip" or "zstd"
    table: str  # the dataset's table, in schema DATASET_SCHEMA
    columns: tuple[ColumnDef, ...]
    row_limit: int | None = None
    # CSV
    delimiter: str = ","
    header: bool = True
    quote: str = '"'
    encoding: str = "UTF8"  # PostgreSQL's name
    # Parquet
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE
    parquet_compression: str = "zstd"
    # SQL
    sql_style: str = "insert"
    sql_table_name: str = ""
    sql_create_table: bool = False
    rows_per_statement: int = DEFAULT_ROWS_PER_STATEMENT

    @property
    def content_type(self) -> str:
        return COMPRESSED_CONTENT_TYPES.get(self.compression) or CONTENT_TYPES[self.format]

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format] + COMPRESSED_EXTENSIONS.get(self.compression, "")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["columns"] = [c.to_json() for c in self.columns]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExportPlan:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["columns"] = tuple(
            ColumnDef(c["name"], c["type"], c["pg_type"], bool(c["nullable"])) for c in data["columns"]
        )
        return cls(**values)


def export_key(job: JobRow, extension: str) -> str:
    """Where an attempt writes: its own key, so that a stale attempt can never overwrite a newer one's file."""
    return f"{job.tenant}/exports/{job.id}/{job.attempt}/{job.dataset_name}{extension}"


def request_violations(request: ExportRequestSpec) -> list[FieldViolation]:
    """Problems of the request on its own, before the dataset is looked at."""
    violations: list[FieldViolation] = []
    if not request.dataset:
        violations.append(FieldViolation("dataset", "is required"))
    if not request.format:
        violations.append(FieldViolation("format", "is required"))
    elif request.format not in FORMATS:
        violations.append(FieldViolation("format", "must be CSV, JSONL, PARQUET or SQL"))
    violations += compression_violations(
        request.format, request.compression, "compression", ": set parquet_options.compression instead"
    )
    for name, options in (("csv", request.csv), ("parquet", request.parquet), ("sql", request.sql)):
        if options is not None and request.format in FORMATS and request.format != name:
            violations.append(FieldViolation(f"{name}_options", f"only applies to FILE_FORMAT_{name.upper()}"))
    if request.csv is not None:
        violations.extend(_csv_violations(request.csv))
    if request.parquet is not None:
        violations.extend(_parquet_violations(request.parquet))
    if request.sql is not None:
        violations.extend(_sql_violations(request.sql))
    if request.row_limit is not None and request.row_limit < 0:
        violations.append(FieldViolation("row_limit", "must not be negative"))
    problem = check_request_id(request.request_id or None)
    if problem is not None:
        violations.append(problem)
    return violations


def _csv_violations(csv: CsvSpec) -> list[FieldViolation]:
    violations = csv_violations(csv, "csv_options")
    known = not any(v.field == "csv_options.encoding" for v in violations)
    if csv.encoding and known and _pg_encoding(csv.encoding) is None:
        violations.append(
            FieldViolation("csv_options.encoding", f"must be one of {', '.join(CSV_ENCODINGS)} for an export")
        )
    return violations


def _parquet_violations(parquet: ParquetSpec) -> list[FieldViolation]:
    violations = []
    if not 0 <= parquet.row_group_size <= MAX_ROW_GROUP_SIZE:
        violations.append(
            FieldViolation("parquet_options.row_group_size", f"must be between 1 and {MAX_ROW_GROUP_SIZE} (0: default)")
        )
    if parquet.compression and parquet.compression.lower() not in PARQUET_COMPRESSIONS:
        violations.append(
            FieldViolation("parquet_options.compression", f"must be one of {', '.join(PARQUET_COMPRESSIONS)}")
        )
    return violations


def _sql_violations(options: SqlSpec) -> list[FieldViolation]:
    violations = []
    if options.style and options.style not in SQL_STYLES:
        violations.append(FieldViolation("sql_options.style", "must be STYLE_INSERT or STYLE_COPY"))
    name = options.table_name
    if len(name.encode()) > MAX_SQL_TABLE_NAME_BYTES or "\x00" in name:
        violations.append(
            FieldViolation("sql_options.table_name", f"must be at most {MAX_SQL_TABLE_NAME_BYTES} bytes, without NUL")
        )
    if not 0 <= options.rows_per_statement <= MAX_ROWS_PER_STATEMENT:
        violations.append(
            FieldViolation(
                "sql_options.rows_per_statement", f"must be between 1 and {MAX_ROWS_PER_STATEMENT} (0: default)"
            )
        )
    elif options.rows_per_statement and options.style == "copy":
        violations.append(FieldViolation("sql_options.rows_per_statement", "only applies to STYLE_INSERT"))
    return violations


def _pg_encoding(name: str) -> str | None:
    canonical = text_encoding(name)
    aliases = {codecs.lookup(k).name: v for k, v in CSV_ENCODINGS.items()}
    return None if canonical is None else aliases.get(canonical)


def plan_export(request: ExportRequestSpec, dataset: DatasetRow) -> ExportPlan:
    """The plan for a request that passed `request_violations`, or InvalidArgument for its columns."""
    stored = {c["name"]: c for c in dataset.columns}
    violations = []
    seen: set[str] = set()
    for index, name in enumerate(request.columns):
        if name not in stored:
            violations.append(FieldViolation(f"columns[{index}]", f"dataset {dataset.name!r} has no column {name!r}"))
        elif name in seen:
            violations.append(FieldViolation(f"columns[{index}]", f"repeats column {name!r}"))
        seen.add(name)
    if violations:
        raise InvalidArgument(violations)
    chosen = [stored[n] for n in request.columns] if request.columns else list(dataset.columns)
    csv = request.csv or CsvSpec()
    parquet = request.parquet or ParquetSpec()
    sql = request.sql or SqlSpec()
    return ExportPlan(
        format=request.format,
        compression=request.compression or "none",
        table=dataset.table_name,
        columns=tuple(ColumnDef(c["name"], c["type"], c["pg_type"], bool(c.get("nullable", True))) for c in chosen),
        row_limit=request.row_limit,
        delimiter=csv.delimiter or ",",
        header=True if csv.header is None else csv.header,
        quote=csv.quote or '"',
        encoding=_pg_encoding(csv.encoding or "utf-8") or "UTF8",
        row_group_size=parquet.row_group_size or DEFAULT_ROW_GROUP_SIZE,
        parquet_compression=(parquet.compression or "zstd").lower(),
        sql_style=sql.style or "insert",
        sql_table_name=sql.table_name or dataset.name,
        sql_create_table=sql.include_create_table,
        rows_per_statement=sql.rows_per_statement or DEFAULT_ROWS_PER_STATEMENT,
    )


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    sha256: str
    content_type: str


@dataclass(frozen=True, slots=True)
class PendingUpload:
    """A multipart upload of an export attempt that has not committed."""

    job_id: uuid.UUID
    attempt: int
    object_key: str
    handle: str


async def record_object(conn: psycopg.AsyncConnection[Any], tenant: str, obj: StoredObject, job_id: uuid.UUID) -> None:
    """Make `obj` readable by its tenant (ReadObject), in the caller's transaction."""
    await conn.execute(
        _q("insert_object"),
        {
            "id": uuid.uuid4(),
            "tenant": tenant,
            "key": obj.key,
            "size_bytes": obj.size,
            "sha256": obj.sha256,
            "content_type": obj.content_type,
            "job_id": job_id,
        },
    )


class ExportStore:
    """The SQL of exports and stored objects."""

    def __init__(self, jobs: JobStore) -> None:
        self._jobs = jobs

    async def get_object(self, tenant: str, key: str) -> StoredObject:
        async with self._jobs.connect() as conn:
            cur = await conn.execute(_q("get_object"), {"tenant": tenant, "key": key})
            row: Any = await cur.fetchone()
        if row is None:
            raise NotFound("object", key)
        return StoredObject(row["key"], int(row["size_bytes"]), row["sha256"], row["content_type"])

    async def pending(self, job_id: uuid.UUID) -> list[PendingUpload]:
        async with self._jobs.connect() as conn:
            cur = await conn.execute(_q("pending_of_job"), {"job_id": job_id})
            rows: list[Any] = await cur.fetchall()
        return [PendingUpload(job_id, r["attempt"], r["object_key"], r["multipart_handle"]) for r in rows]

    async def is_pending(self, pending: PendingUpload) -> bool:
        """Whether the upload is still recorded: false once the success transaction has committed."""
        async with self._jobs.connect() as conn:
            cur = await conn.execute(_q("is_pending"), {"job_id": pending.job_id, "attempt": pending.attempt})
            return await cur.fetchone() is not None

    async def add_pending(self, pending: PendingUpload) -> None:
        async with self._jobs.connect() as conn:
            await conn.execute(
                _q("insert_pending"),
                {
                    "job_id": pending.job_id,
                    "attempt": pending.attempt,
                    "object_key": pending.object_key,
                    "multipart_handle": pending.handle,
                },
            )

    async def remove_pending(self, pending: PendingUpload, conn: psycopg.AsyncConnection[Any] | None = None) -> None:
        params = {"job_id": pending.job_id, "attempt": pending.attempt}
        if conn is not None:
            await conn.execute(_q("delete_pending"), params)
            return
        async with self._jobs.connect() as own:
            await own.execute(_q("delete_pending"), params)

    async def progress(
        self, job_id: uuid.UUID, lease_token: uuid.UUID, *, rows: int, size: int, lease_seconds: float
    ) -> bool:
        """Record rows and bytes written (renewing the lease); return whether cancellation was requested."""
        async with self._jobs.connect() as conn:
            cur = await conn.execute(
                _q("export_progress"),
                {"id": job_id, "lease_token": lease_token, "done": rows, "bytes": size, "lease_seconds": lease_seconds},
            )
            row: Any = await cur.fetchone()
        if row is None:
            raise LeaseLost(str(job_id))
        return bool(row["cancel_requested"])

    @staticmethod
    async def final_size(
        conn: psycopg.AsyncConnection[Any], job_id: uuid.UUID, lease_token: uuid.UUID, size: int
    ) -> None:
        await conn.execute(_q("final_size"), {"id": job_id, "lease_token": lease_token, "bytes": size})

    async def discard(self, objects: ObjectStore, pending: PendingUpload) -> None:
        """Abort the upload and delete what it may have completed, then forget it."""
        await objects.abort_multipart(pending.object_key, pending.handle)
        await objects.delete(pending.object_key)
        await self.remove_pending(pending)
        log.info("export_upload_discarded", job_id=str(pending.job_id), attempt=pending.attempt)

    async def discard_abandoned(self, objects: ObjectStore, *, limit: int) -> int:
        """The sweeper's part: remove the uploads of exports that ended without them; returns how many."""
        async with self._jobs.connect() as conn:
            cur = await conn.execute(_q("abandoned_pending"), {"limit": limit})
            rows: list[Any] = await cur.fetchall()
        for r in rows:
            await self.discard(
                objects, PendingUpload(r["job_id"], r["attempt"], r["object_key"], r["multipart_handle"])
            )
        return len(rows)


class ExportDomain:
    """Creates Export jobs and serves stored objects on behalf of the RPC layer."""

    def __init__(self, jobs: JobDomain, store: ExportStore, objects: ObjectStore) -> None:
        self.jobs = jobs
        self.store = store
        self.objects = objects

    async def export(self, tenant: str, request: ExportRequestSpec, *, created_by: str = "") -> tuple[JobRow, bool]:
        violations = request_violations(request)
        if violations:
            raise InvalidArgument(violations)
        dataset = await self.jobs.store.get_dataset(tenant, request.dataset)
        plan = plan_export(request, dataset)
        if not dataset.ready:
            raise FailedPrecondition(
                f"dataset {dataset.name!r} is not ready: the job that builds it has not succeeded",
                reason="DATASET_NOT_READY",
                metadata={"dataset": dataset.name, "job_id": str(dataset.job_id)},
            )
        rows = dataset.row_count if request.row_limit is None else min(dataset.row_count, request.row_limit)
        settings = self.jobs.settings
        new = NewJob(
            tenant=tenant,
            kind=JobKind.EXPORT,
            spec=plan.to_json(),
            request_id=request.request_id or None,
            request_hash=request.fingerprint(),
            max_attempts=settings.max_attempts,
            progress_total=rows,
            progress_unit=ProgressUnit.ROWS,
            dataset_name=dataset.name,
            dataset_id=dataset.id,
            created_by=created_by,
        )
        job, created = await self.jobs.store.create_job(new, quotas=self.jobs.quotas)
        if created:
            await self.jobs.dispatch(job.id)
            log.info("job_created", job_id=str(job.id), kind=job.kind.value, rows=rows, format=plan.format)
        return job, created

    async def read_object(
        self, tenant: str, key: str, *, offset: int, limit: int
    ) -> tuple[StoredObject, AsyncGenerator[bytes, None]]:
        """The object and a stream of its bytes from `offset` (at most `limit` of them; 0: to the end)."""
        violations = []
        if not key:
            violations.append(FieldViolation("object_key", "is required"))
        if offset < 0:
            violations.append(FieldViolation("offset", "must not be negative"))
        if limit < 0:
            violations.append(FieldViolation("limit", "must not be negative"))
        if violations:
            raise InvalidArgument(violations)
        stored = await self.store.get_object(tenant, key)
        if offset > stored.size:
            raise OutOfRange(
                f"offset {offset} is past the end of the object ({stored.size} bytes)",
                reason="OFFSET_PAST_END",
                metadata={"size_bytes": str(stored.size)},
            )
        return stored, self.objects.open_range(key, offset, limit or None)
