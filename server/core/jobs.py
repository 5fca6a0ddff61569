"""The job domain: creating, reading and cancelling jobs. Transport-free.

The gRPC servicers parse requests into plain values, call these methods and
turn the returned rows into protos. Validation happens here, before any job
exists, and raises InvalidArgument with every field violation at once.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

import structlog

from server.core import paging
from server.core.dispatch import Dispatcher
from server.core.errors import FieldViolation, InvalidArgument, PermissionDenied
from server.core.models import (
    DATASET_SCHEMA,
    DatasetRow,
    JobKind,
    JobRow,
    JobState,
    NewDataset,
    NewJob,
    ProgressUnit,
    dataset_table_name,
)
from server.core.quotas import Quotas
from server.core.references import resolve_references
from server.core.schema import SchemaSpec, columns, validate_schema
from server.core.settings import Settings
from server.core.store import JobStore

log = structlog.get_logger(__name__)

IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_IDENTIFIER_BYTES = 63
MAX_REQUEST_ID = 128


T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


def check_identifier(value: str, field: str) -> FieldViolation | None:
    if not value:
        return FieldViolation(field, "is required")
    if len(value.encode()) > MAX_IDENTIFIER_BYTES:
        return FieldViolation(field, f"must be at most {MAX_IDENTIFIER_BYTES} bytes")
    if not IDENTIFIER.fullmatch(value):  # not `match`: its `$` also matches before a final newline
        return FieldViolation(field, "must match [a-z_][a-z0-9_]* (lower-case letters, digits, underscores)")
    return None


def check_request_id(value: str | None, field: str = "request_id") -> FieldViolation | None:
    if value is not None and len(value) > MAX_REQUEST_ID:
        return FieldViolation(field, f"must be at most {MAX_REQUEST_ID} characters")
    return None


def request_hash(kind: JobKind, payload: dict[str, Any]) -> str:
    """Fingerprint of a request as the client sent it, to tell a retry from a reuse of its request_id."""
    canonical = json.dumps({"kind": kind.value, **payload}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def parse_job_id(value: str, field: str = "job_id") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise InvalidArgument.single(field, "must be a job id (a UUID)") from None


def shard_ranges(rows: int, *, shard_rows: int, max_shards: int, align: int) -> list[tuple[int, int]]:
    """(start row, row count) of each shard: about shard_rows each, whole chunks, at most max_shards."""
    size = max(shard_rows, -(-rows // max_shards))
    size = -(-size // align) * align
    return [(start, min(size, rows - start)) for start in range(0, rows, size)]


class JobDomain:
    """Creates and manages jobs on behalf of the RPC layer."""

    def __init__(self, store: JobStore, dispatcher: Dispatcher, settings: Settings) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.settings = settings
        self.quotas = Quotas.defaults(settings)  # each tenant's own quotas override these (server/core/quotas.py)

    async def generate(
        self, tenant: str, *, dataset_name: str, schema: SchemaSpec, request_id: str | None, created_by: str = ""
    ) -> tuple[JobRow, bool]:
        violations = [
            v for v in (check_identifier(dataset_name, "dataset_name"), check_request_id(request_id)) if v is not None
        ]
        fingerprint = request_hash(JobKind.GENERATE, {"dataset_name": dataset_name, "schema": schema.to_json()})
        schema, reference_violations = await resolve_references(self.store, tenant, schema)
        violations.extend(reference_violations)
        try:
            spec = validate_schema(
                schema, max_rows=self.settings.max_generate_rows, max_fields=self.settings.max_fields
            )
        except InvalidArgument as exc:
            violations.extend(exc.violations)
        if violations:
            raise InvalidArgument(violations)

        dataset_id = uuid.uuid4()
        dataset = NewDataset(
            id=dataset_id,
            name=dataset_name,
            table_name=dataset_table_name(dataset_id),
            columns=[c.to_json() for c in columns(spec)],
        )
        job_spec = {
            "schema": spec.to_json(),
            "chunk_rows": self.settings.generate_chunk_rows,
            "dataset_schema": DATASET_SCHEMA,
        }
        new = NewJob(
            tenant=tenant,
            kind=JobKind.GENERATE,
            spec=job_spec,
            request_id=request_id,
            request_hash=fingerprint,
            max_attempts=self.settings.max_attempts,
            progress_total=spec.rows,
            progress_unit=ProgressUnit.ROWS,
            dataset_name=dataset_name,
            created_by=created_by,
        )
        ranges = shard_ranges(
            spec.rows,
            shard_rows=self.settings.generate_shard_rows,
            max_shards=self.settings.generate_max_shards,
            align=self.settings.generate_chunk_rows,
        )
        if len(ranges) > 1:
            shards = tuple(
                replace(
                    new,
                    kind=JobKind.GENERATE_SHARD,
                    spec={**job_spec, "start_row": start, "row_count": count},
                    request_id=None,
                    progress_total=count,
                )
                for start, count in ranges
            )
            new = replace(new, shards=shards)
        job, created = await self.store.create_job(new, dataset, quotas=self.quotas)
        if created:
            for job_id in await self.store.shard_ids(job.id) if job.shard_count else [job.id]:
                await self.dispatch(job_id)
            log.info("job_created", job_id=str(job.id), kind=job.kind.value, rows=spec.rows, shards=len(ranges))
        return job, created

    async def dispatch(self, job_id: uuid.UUID) -> None:
        """Hand a stored job to the queue; if that fails, the sweeper hands it off later."""
        try:
            await self.dispatcher.dispatch(job_id)
        except Exception:  # the job is stored; the sweeper will hand it off again
            log.warning("dispatch_failed", job_id=str(job_id), exc_info=True)
            await self.store.mark_undispatched(job_id)

    async def get(self, tenant: str, job_id: str) -> JobRow:
        return await self.store.get_job(tenant, parse_job_id(job_id))

    async def list(
        self, tenant: str, *, kind: JobKind | None, state: JobState | None, page_size: int, page_token: str
    ) -> Page[JobRow]:
        size = paging.page_size(page_size)
        after = paging.decode_token(page_token)
        rows = await self.store.list_jobs(tenant, kind=kind, state=state, limit=size + 1, after=after)
        token = paging.encode_token(rows[size - 1].created_at, rows[size - 1].id) if len(rows) > size else ""
        return Page(rows[:size], token)

    async def cancel(self, tenant: str, job_id: str, *, only_if_created_by: str | None = None) -> JobRow:
        """Cancel a job of the tenant; with `only_if_created_by`, PermissionDenied unless that principal created it."""
        parsed = parse_job_id(job_id)
        if only_if_created_by is not None:
            owner = (await self.store.get_job(tenant, parsed)).created_by
            if owner != only_if_created_by:
                raise PermissionDenied(
                    "cancelling a job another caller created needs the admin role",
                    reason="NOT_JOB_OWNER",
                    metadata={"action": "CancelJob", "required_role": "admin", "role": "editor"},
                )
        job = await self.store.cancel_job(tenant, parsed)
        log.info("job_cancel_requested", job_id=str(job.id), state=job.state.value)
        return job

    async def get_dataset(self, tenant: str, dataset: str) -> DatasetRow:
        if not dataset:
            raise InvalidArgument.single("dataset", "is required")
        return await self.store.get_dataset(tenant, dataset)

    async def list_datasets(self, tenant: str, *, page_size: int, page_token: str) -> Page[DatasetRow]:
        size = paging.page_size(page_size)
        rows = await self.store.list_datasets(tenant, limit=size + 1, after=paging.decode_token(page_token))
        token = paging.encode_token(rows[size - 1].created_at, rows[size - 1].id) if len(rows) > size else ""
        return Page(rows[:size], token)

    async def delete_dataset(self, tenant: str, dataset: str) -> None:
        if not dataset:
            raise InvalidArgument.single("dataset", "is required")
        await self.store.delete_dataset(tenant, dataset)
        log.info("dataset_deleted", dataset=dataset)
