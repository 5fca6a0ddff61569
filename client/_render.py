"""How the CLI shows jobs, datasets, progress and errors: rich tables for people, JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from client._requests import enum_name
from client.errors import DatamillError, from_status
from client.schema_file import SchemaError
from datamill.v1 import job_pb2

_STATE_STYLES: dict[int, str] = {
    job_pb2.JOB_STATE_QUEUED: "yellow",
    job_pb2.JOB_STATE_RUNNING: "cyan",
    job_pb2.JOB_STATE_SUCCEEDED: "green",
    job_pb2.JOB_STATE_FAILED: "red",
    job_pb2.JOB_STATE_CANCELLED: "magenta",
}


def state_name(state: int) -> str:
    """``SUCCEEDED`` for JOB_STATE_SUCCEEDED."""
    return enum_name(job_pb2.JobState, "JOB_STATE_", state)


def kind_name(kind: int) -> str:
    """``GENERATE`` for JOB_KIND_GENERATE."""
    return enum_name(job_pb2.JobKind, "JOB_KIND_", kind)


def _styled_state(state: int) -> str:
    style = _STATE_STYLES.get(state, "white")
    return f"[{style}]{state_name(state)}[/{style}]"


def _time(ts: timestamp_pb2.Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return ts.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")


def progress_text(progress: job_pb2.Progress) -> str:
    """``1,000/5,000 rows (20%)``, or ``-`` before any progress was reported."""
    unit = {job_pb2.PROGRESS_UNIT_ROWS: "rows", job_pb2.PROGRESS_UNIT_BYTES: "bytes"}.get(progress.unit, "")
    if not progress.done and not progress.total:
        return "-"
    if progress.total:
        percent = 100 * progress.done / progress.total
        return f"{progress.done:,}/{progress.total:,} {unit} ({percent:.0f}%)".replace("  ", " ")
    return f"{progress.done:,} {unit}".strip()


def to_json(message: Message) -> dict[str, Any]:
    """A message as proto3 JSON with the .proto's field names (int64 values are strings)."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def print_json(console: Console, value: object) -> None:
    """Print one JSON document on one line, for scripts."""
    # soft_wrap keeps a long document on one line; markup/highlight off keeps the text verbatim.
    console.print(json.dumps(value, sort_keys=True), soft_wrap=True, markup=False, highlight=False)


def job_table(job: job_pb2.Job) -> Table:
    """A two-column table with everything about one job."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("id", job.id)
    table.add_row("kind", kind_name(job.kind))
    table.add_row("state", _styled_state(job.state) + (" (cancel requested)" if job.cancel_requested else ""))
    table.add_row("dataset", escape(job.dataset_name) or "-")
    table.add_row("progress", progress_text(job.progress))
    table.add_row("attempt", f"{job.attempt}/{job.max_attempts}")
    if job.request_id:
        table.add_row("request id", escape(job.request_id))
    table.add_row("created", _time(job.create_time))
    table.add_row("started", _time(job.start_time))
    table.add_row("finished", _time(job.finish_time))
    result = job.WhichOneof("result")
    if result == "generate":
        table.add_row("dataset id", job.generate.dataset_id)
        table.add_row("rows", f"{job.generate.row_count:,}")
    elif result == "ingest":
        table.add_row("dataset id", job.ingest.dataset_id)
        table.add_row("rows", f"{job.ingest.row_count:,}")
        table.add_row("upload id", job.ingest.upload_id)
    elif result == "export":
        export = job.export
        table.add_row("object key", escape(export.object_key))
        table.add_row("size", f"{export.size_bytes:,} bytes")
        table.add_row("rows", f"{export.row_count:,}")
        table.add_row("sha256", export.sha256)
        table.add_row("content type", export.content_type)
        if export.presigned_url:
            table.add_row("url", escape(export.presigned_url))
    if job.HasField("error"):
        table.add_row("error", f"[red]{escape(error_text(job.error.code, job.error.message))}[/red]")
    return table


def error_text(code: int, message: str) -> str:
    """``NOT_FOUND: message`` from a google.rpc.Code number."""
    return str(from_status(status_pb2.Status(code=code, message=message)))


def _age(ts: timestamp_pb2.Timestamp, now: datetime | None = None) -> str:
    """How long ago, compactly: ``45s``, ``12m``, ``3h``, ``2d``."""
    if not ts.seconds and not ts.nanos:
        return "-"
    seconds = int(((now or datetime.now(UTC)) - ts.ToDatetime(tzinfo=UTC)).total_seconds())
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _short_progress(progress: job_pb2.Progress) -> str:
    if progress.total:
        return f"{100 * progress.done // progress.total}%"
    return f"{progress.done:,}" if progress.done else "-"


def jobs_table(jobs: Iterable[job_pb2.Job]) -> Table:
    """One row per job: id, kind, state, progress, dataset, age."""
    table = Table(box=None, pad_edge=False)
    table.add_column("ID", no_wrap=True)
    table.add_column("KIND", no_wrap=True)
    table.add_column("STATE", no_wrap=True)
    table.add_column("PROGRESS", no_wrap=True, justify="right")
    table.add_column("DATASET", overflow="fold")
    table.add_column("AGE", no_wrap=True, justify="right")
    for job in jobs:
        table.add_row(
            job.id,
            kind_name(job.kind).lower(),
            _styled_state(job.state),
            _short_progress(job.progress),
            escape(job.dataset_name),
            _age(job.create_time),
        )
    return table


def dataset_table(dataset: job_pb2.Dataset) -> Table:
    """Everything about one dataset, its columns included."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("id", dataset.id)
    table.add_row("name", escape(dataset.name))
    table.add_row("rows", f"{dataset.row_count:,}")
    table.add_row("ready", "yes" if dataset.ready else "no")
    table.add_row("job", dataset.job_id or "-")
    table.add_row("created", _time(dataset.create_time))
    columns = ", ".join(f"{c.name} {c.type}{'' if c.nullable else ' not null'}" for c in dataset.columns)
    table.add_row("columns", escape(columns) or "-")
    return table


def datasets_table(datasets: Iterable[job_pb2.Dataset]) -> Table:
    """One row per dataset: name, id, rows, ready, age."""
    table = Table(box=None, pad_edge=False)
    table.add_column("NAME", overflow="fold")
    table.add_column("ID", no_wrap=True)
    table.add_column("ROWS", no_wrap=True, justify="right")
    table.add_column("READY", no_wrap=True)
    table.add_column("AGE", no_wrap=True, justify="right")
    for dataset in datasets:
        table.add_row(
            escape(dataset.name),
            dataset.id,
            f"{dataset.row_count:,}",
            "yes" if dataset.ready else "no",
            _age(dataset.create_time),
        )
    return table


def error_lines(error: DatamillError | SchemaError) -> list[str]:
    """The lines that explain an error: code and message, then one line per field violation."""
    if isinstance(error, SchemaError):
        return [f"error: invalid schema: {error}"]
    lines = [f"error: {error.code.name}: {error.message}"]
    lines.extend(f"  {violation.field}: {violation.description}" for violation in error.field_violations)
    if error.reason and error.reason != error.code.name:
        lines.append(f"  reason: {error.reason}")
    if error.retry_delay is not None:
        lines.append(f"  retry after {error.retry_delay:g}s")
    return lines


def error_json(error: DatamillError | SchemaError) -> dict[str, Any]:
    """The same as `error_lines`, as a JSON object."""
    if isinstance(error, SchemaError):
        return {"code": "INVALID_ARGUMENT", "message": f"invalid schema: {error}"}
    document: dict[str, Any] = {"code": error.code.name, "message": error.message}
    if error.reason:
        document["reason"] = error.reason
    if error.metadata:
        document["metadata"] = error.metadata
    if error.field_violations:
        document["field_violations"] = [
            {"field": v.field, "description": v.description} for v in error.field_violations
        ]
    if error.retry_delay is not None:
        document["retry_delay"] = error.retry_delay
    return document


class JobProgress:
    """Live progress bars, one per job, fed by watch events."""

    def __init__(self, console: Console, job_ids: Sequence[str], *, enabled: bool = True) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            console=console,
            disable=not enabled,
        )
        self._tasks: dict[str, TaskID] = {
            job_id: self._progress.add_task(job_id, total=None, detail="waiting") for job_id in job_ids
        }

    def __enter__(self) -> Self:
        self._progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(self, event: job_pb2.JobEvent) -> None:
        """Show the job as it is after ``event``."""
        task = self._tasks.get(event.job_id)
        if task is None:
            return
        job = event.job
        total = job.progress.total or None
        completed = job.progress.done
        if job.state == job_pb2.JOB_STATE_SUCCEEDED and total is None:
            total = completed = max(completed, 1)
        self._progress.update(
            task,
            description=f"{event.job_id[:8]} {_styled_state(job.state)}",
            total=total,
            completed=completed,
            detail=progress_text(job.progress),
        )


def download_progress(console: Console, *, enabled: bool) -> Progress:
    """A bytes progress bar for downloads."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        disable=not enabled,
    )
