"""The job and dataset model: states, kinds, and rows as frozen dataclasses.

A row comes either from a query (`from_row`) or from an event snapshot, the
JSON image of the row the database recorded with the event (`from_snapshot`).
Both give the same `JobRow`, so a replayed event and a live one look alike.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class JobKind(StrEnum):
    GENERATE = "GENERATE"
    GENERATE_SHARD = "GENERATE_SHARD"  # a part of a large Generate; internal, shown as GENERATE
    INGEST = "INGEST"
    EXPORT = "EXPORT"


class JobState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})


class EventType(StrEnum):
    CREATED = "CREATED"
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    REQUEUED = "REQUEUED"
    CANCEL_REQUESTED = "CANCEL_REQUESTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class ProgressUnit(StrEnum):
    ROWS = "ROWS"
    BYTES = "BYTES"


def _uuid(value: Any) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


def _time(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


@dataclass(frozen=True, slots=True)
class JobRow:
    id: uuid.UUID
    tenant: str
    kind: JobKind
    state: JobState
    request_id: str | None
    dataset_id: uuid.UUID | None
    dataset_name: str
    progress_done: int
    progress_total: int
    progress_unit: ProgressUnit
    attempt: int
    max_attempts: int
    cancel_requested: bool
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    event_seq: int
    created_at: datetime
    started_at: datetime | None
    updated_at: datetime
    finished_at: datetime | None
    parent_id: uuid.UUID | None = None  # on a shard: its Generate job
    shard_count: int = 0  # on a sharded Generate: its number of shards
    progress_bytes: int = 0  # bytes written, for jobs that write a file (Export)
    # Only on rows read from the jobs table; snapshots leave it out.
    spec: dict[str, Any] | None = None
    request_hash: str | None = None
    #: The subject of the principal that created the job ('' when unknown).
    created_by: str = ""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> JobRow:
        return cls(
            id=_uuid(row["id"]),  # type: ignore[arg-type]
            tenant=row["tenant"],
            kind=JobKind(row["kind"]),
            state=JobState(row["state"]),
            request_id=row["request_id"],
            dataset_id=_uuid(row["dataset_id"]),
            dataset_name=row["dataset_name"],
            progress_done=int(row["progress_done"]),
            progress_total=int(row["progress_total"]),
            progress_unit=ProgressUnit(row["progress_unit"]),
            attempt=int(row["attempt"]),
            max_attempts=int(row["max_attempts"]),
            cancel_requested=bool(row["cancel_requested"]),
            result=row["result"],
            error=row["error"],
            event_seq=int(row["event_seq"]),
            created_at=_time(row["created_at"]),  # type: ignore[arg-type]
            started_at=_time(row["started_at"]),
            updated_at=_time(row["updated_at"]),  # type: ignore[arg-type]
            finished_at=_time(row["finished_at"]),
            parent_id=_uuid(row.get("parent_id")),
            shard_count=int(row.get("shard_count") or 0),
            progress_bytes=int(row.get("progress_bytes") or 0),
            spec=row.get("spec"),
            request_hash=row.get("request_hash"),
            created_by=row.get("created_by") or "",
        )

    from_snapshot = from_row


@dataclass(frozen=True, slots=True)
class EventRow:
    job_id: uuid.UUID
    seq: int
    type: EventType
    created_at: datetime
    job: JobRow

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> EventRow:
        return cls(
            job_id=_uuid(row["job_id"]),  # type: ignore[arg-type]
            seq=int(row["seq"]),
            type=EventType(row["type"]),
            created_at=_time(row["created_at"]),  # type: ignore[arg-type]
            job=JobRow.from_snapshot(row["snapshot"]),
        )

    @property
    def terminal(self) -> bool:
        return self.job.state.terminal


@dataclass(frozen=True, slots=True)
class DatasetRow:
    id: uuid.UUID
    tenant: str
    name: str
    table_name: str
    columns: list[dict[str, Any]]
    row_count: int
    ready: bool
    job_id: uuid.UUID
    created_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> DatasetRow:
        return cls(
            id=row["id"],
            tenant=row["tenant"],
            name=row["name"],
            table_name=row["table_name"],
            columns=row["columns"],
            row_count=int(row["row_count"]),
            ready=bool(row["ready"]),
            job_id=row["job_id"],
            created_at=row["created_at"],
        )


@dataclass(frozen=True, slots=True)
class NewJob:
    """What the service hands the store to create a job."""

    tenant: str
    kind: JobKind
    spec: dict[str, Any]
    request_id: str | None
    request_hash: str
    max_attempts: int
    progress_total: int
    progress_unit: ProgressUnit
    dataset_name: str = ""
    dataset_id: uuid.UUID | None = None
    #: The principal (its subject) on whose behalf the job runs; shards inherit it.
    created_by: str = ""
    # A sharded Generate: its shards, created with it (each with its own row range in spec).
    shards: tuple[NewJob, ...] = ()


@dataclass(frozen=True, slots=True)
class NewDataset:
    """A dataset reserved together with the job that builds it."""

    id: uuid.UUID
    name: str
    table_name: str
    columns: list[dict[str, Any]]


DATASET_SCHEMA = "datasets"


def dataset_table_name(dataset_id: uuid.UUID) -> str:
    return f"ds_{dataset_id.hex}"
