"""Rows to protos and protos to domain values. The only module that knows both."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from google.protobuf import json_format, timestamp_pb2

from datamill.v1 import job_pb2, job_service_pb2, schema_pb2
from server.api.errors import stored_error_to_status
from server.core.exports import ExportRequestSpec, ParquetSpec, SqlSpec
from server.core.fileformats import CsvSpec
from server.core.models import DatasetRow, EventRow, JobKind, JobRow, JobState
from server.core.schema import FieldSpec, SchemaSpec
from server.core.uploads import UploadColumn, UploadHeaderSpec

_RESULT_FIELDS = {
    JobKind.GENERATE: ("generate", job_pb2.GenerateResult),
    JobKind.GENERATE_SHARD: ("generate", job_pb2.GenerateResult),
    JobKind.INGEST: ("ingest", job_pb2.IngestResult),
    JobKind.EXPORT: ("export", job_pb2.ExportResult),
}


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def job_kind(kind: JobKind) -> job_pb2.JobKind.ValueType:
    shown = JobKind.GENERATE if kind is JobKind.GENERATE_SHARD else kind
    return job_pb2.JobKind.Value(f"JOB_KIND_{shown.value}")


def job_state(state: JobState) -> job_pb2.JobState.ValueType:
    return job_pb2.JobState.Value(f"JOB_STATE_{state.value}")


def kind_filter(value: int) -> JobKind | None:
    if value == job_pb2.JOB_KIND_UNSPECIFIED:
        return None
    return JobKind(job_pb2.JobKind.Name(value).removeprefix("JOB_KIND_"))  # type: ignore[arg-type]


def state_filter(value: int) -> JobState | None:
    if value == job_pb2.JOB_STATE_UNSPECIFIED:
        return None
    return JobState(job_pb2.JobState.Name(value).removeprefix("JOB_STATE_"))  # type: ignore[arg-type]


def job(row: JobRow) -> job_pb2.Job:
    message = job_pb2.Job(
        id=str(row.id),
        kind=job_kind(row.kind),
        state=job_state(row.state),
        progress=job_pb2.Progress(
            done=row.progress_done,
            total=row.progress_total,
            unit=job_pb2.ProgressUnit.Value(f"PROGRESS_UNIT_{row.progress_unit.value}"),
            bytes_done=row.progress_bytes,
        ),
        attempt=row.attempt,
        max_attempts=row.max_attempts,
        cancel_requested=row.cancel_requested,
        request_id=row.request_id or "",
        dataset_name=row.dataset_name,
        create_time=timestamp(row.created_at),
        start_time=timestamp(row.started_at),
        update_time=timestamp(row.updated_at),
        finish_time=timestamp(row.finished_at),
    )
    if row.result is not None and row.state is JobState.SUCCEEDED:
        field, cls = _RESULT_FIELDS[row.kind]
        getattr(message, field).CopyFrom(json_format.ParseDict(row.result, cls(), ignore_unknown_fields=True))
    if row.error is not None and row.state in (JobState.FAILED, JobState.CANCELLED, JobState.QUEUED):
        message.error.CopyFrom(stored_error_to_status(row.error))
    return message


def event(row: EventRow) -> job_pb2.JobEvent:
    return job_pb2.JobEvent(
        job_id=str(row.job_id),
        sequence=row.seq,
        type=job_pb2.JobEventType.Value(f"JOB_EVENT_TYPE_{row.type.value}"),
        job=job(row.job),
        time=timestamp(row.created_at),
    )


def dataset(row: DatasetRow) -> job_pb2.Dataset:
    return job_pb2.Dataset(
        id=str(row.id),
        name=row.name,
        columns=[
            schema_pb2.Column(name=c["name"], type=c["type"], nullable=bool(c.get("nullable", True)))
            for c in row.columns
        ],
        row_count=row.row_count,
        job_id=str(row.job_id),
        ready=row.ready,
        create_time=timestamp(row.created_at),
    )


def schema_spec(message: schema_pb2.Schema) -> SchemaSpec:
    """The schema as the client sent it; validation happens in the core."""
    return SchemaSpec(
        fields=tuple(
            FieldSpec(
                name=f.name,
                type=f.type,
                params=json_format.MessageToDict(f.params) if f.HasField("params") else {},
                null_rate=f.null_rate,
                unique=f.unique,
                seed=f.seed if f.HasField("seed") else None,
            )
            for f in message.fields
        ),
        rows=message.rows,
        seed=message.seed if message.HasField("seed") else None,
        locale=message.locale,
    )


_FORMATS = {
    job_service_pb2.FILE_FORMAT_CSV: "csv",
    job_service_pb2.FILE_FORMAT_JSONL: "jsonl",
    job_service_pb2.FILE_FORMAT_PARQUET: "parquet",
    job_service_pb2.FILE_FORMAT_SQL: "sql",
}
_COMPRESSIONS = {
    job_service_pb2.COMPRESSION_NONE: "none",
    job_service_pb2.COMPRESSION_GZIP: "gzip",
    job_service_pb2.COMPRESSION_ZSTD: "zstd",
}


def _enum_text(table: Mapping[Any, str], value: int) -> str:
    """The core's name of an enum value: "" when unspecified, "#<n>" when this server does not know it."""
    if value == 0:
        return ""
    return table.get(value, f"#{value}")


def _csv(message: job_service_pb2.CsvOptions) -> CsvSpec:
    return CsvSpec(
        delimiter=message.delimiter,
        header=message.header if message.HasField("header") else None,
        quote=message.quote,
        encoding=message.encoding,
    )


_SQL_STYLES = {
    job_service_pb2.SqlOptions.STYLE_INSERT: "insert",
    job_service_pb2.SqlOptions.STYLE_COPY: "copy",
}


def export_request(message: job_service_pb2.ExportRequest) -> ExportRequestSpec:
    """The request as the client sent it; validation happens in the core."""
    sql = message.sql_options
    return ExportRequestSpec(
        dataset=message.dataset,
        format=_enum_text(_FORMATS, message.format),
        compression=_enum_text(_COMPRESSIONS, message.compression),
        csv=_csv(message.csv_options) if message.HasField("csv_options") else None,
        parquet=ParquetSpec(
            row_group_size=message.parquet_options.row_group_size, compression=message.parquet_options.compression
        )
        if message.HasField("parquet_options")
        else None,
        sql=SqlSpec(
            style=_enum_text(_SQL_STYLES, sql.style),
            table_name=sql.table_name,
            include_create_table=sql.include_create_table,
            rows_per_statement=sql.rows_per_statement,
        )
        if message.HasField("sql_options")
        else None,
        columns=tuple(message.columns),
        row_limit=message.row_limit if message.HasField("row_limit") else None,
        request_id=message.request_id,
    )


def upload_header(message: job_service_pb2.UploadHeader) -> UploadHeaderSpec:
    """The header as the client sent it; validation happens in the core."""
    return UploadHeaderSpec(
        upload_id=message.upload_id,
        file_name=message.file_name,
        format=_FORMATS.get(message.format, ""),
        compression=_COMPRESSIONS.get(message.compression, ""),
        total_size=message.total_size if message.HasField("total_size") else None,
        expected_sha256=message.expected_sha256,
        dataset_name=message.dataset_name,
        columns=tuple(UploadColumn(name=c.name, type=c.type, nullable=c.nullable) for c in message.columns),
        csv=_csv(message.csv_options),
        request_id=message.request_id,
        skip_malformed_rows=message.skip_malformed_rows,
    )
