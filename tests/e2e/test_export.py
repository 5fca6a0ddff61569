"""Export end to end: a real server, worker, PostgreSQL, Redis and S3 endpoint (SeaweedFS) or local store.

Round trips for every format and compression (Generate, then Export, then the
file downloaded through ReadObject and read with csv, json, pyarrow or run by
PostgreSQL), an uploaded CSV exported back, presigned URLs, cancel and crash
clean-up (no object and no open multipart upload is left), bad requests, and
the CLI's `export -o` and `download`.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from minio import Minio
from psycopg import sql

from client import Client, UploadOptions
from client.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutOfRangeError,
)
from datamill.v1 import job_pb2, job_service_pb2
from tests.e2e.conftest import Stack
from tests.e2e.helpers import schema, wait_for

pytestmark = pytest.mark.timeout(180)

ROWS = 3_000
#: helpers.SCHEMA's columns and how each format's reader gives them back.
COLUMNS = ["seq", "id", "qty", "price", "status", "note", "at"]


def _client(stack: Stack) -> Client:
    return Client.connect(stack.target, timeout=20)


def _generate(client: Client, name: str, rows: int = ROWS) -> None:
    job = client.wait(client.generate(name, schema=schema(rows)).id)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error.message


def _table_rows(stack: Stack, dataset: str) -> list[tuple[Any, ...]]:
    """The dataset's rows in storage order, which is the order an export writes."""
    (table,) = stack.sql("SELECT table_name FROM datasets WHERE name = %s", dataset)[0]
    with psycopg.connect(stack.database_url, options="-c TimeZone=UTC") as conn:
        query = sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), sql.Identifier("datasets", str(table))
        )
        return conn.execute(query).fetchall()


def _download(client: Client, result: job_pb2.ExportResult) -> bytes:
    data = b"".join(client.read_object(result.object_key))
    assert len(data) == result.size_bytes
    assert hashlib.sha256(data).hexdigest() == result.sha256
    return data


def _typed(record: list[Any]) -> tuple[Any, ...]:
    """A row read from a text format, in psycopg's types."""
    seq, id_, qty, price, status, note, at = record
    return (
        int(seq),
        uuid.UUID(str(id_)),
        int(qty),
        float(price),
        status,
        note if note not in ("", None) else None,
        datetime.fromisoformat(at),
    )


def _decompress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.decompress(data)
    if compression == "zstd":
        return bytes(pa.CompressedInputStream(pa.BufferReader(data), "zstd").read())
    return data


def _read_back(stack: Stack, format: str, data: bytes) -> list[tuple[Any, ...]]:
    if format == "csv":
        records = list(csv.reader(io.StringIO(data.decode(), newline="")))
        assert records[0] == COLUMNS
        return [_typed(r) for r in records[1:]]
    if format == "jsonl":
        lines = [json.loads(line) for line in data.decode().splitlines()]
        assert all(list(line) == COLUMNS for line in lines)
        return [_typed([line[c] for c in COLUMNS]) for line in lines]
    if format == "parquet":
        table = pq.read_table(pa.BufferReader(data))
        assert table.schema.field("id").type == pa.uuid()
        return [tuple(r[c] for c in COLUMNS) for r in table.to_pylist()]
    assert format == "sql"
    restored = f"restored_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(stack.database_url, autocommit=True, options="-c TimeZone=UTC") as conn:
        text = data.decode()
        head, _, rest = text.partition(" FROM stdin;\n")
        if rest:  # COPY style: the statements, then the block fed as psql would
            statements, _, copy_line = head.rpartition("\n")
            conn.execute(statements.replace('"rt"', f'"{restored}"'))
            with conn.cursor().copy(copy_line.replace('"rt"', f'"{restored}"') + " FROM stdin") as copy:
                copy.write(rest.removesuffix("\\.\n"))
        else:
            conn.execute(text.replace('"rt"', f'"{restored}"'))
        query = sql.SQL("SELECT {} FROM {} ORDER BY seq").format(  # a table is a set: the source is in seq order
            sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), sql.Identifier(restored)
        )
        return conn.execute(query).fetchall()


EXPORTS = [
    ("csv", "none"),
    ("csv", "gzip"),
    ("csv", "zstd"),
    ("jsonl", "none"),
    ("jsonl", "gzip"),
    ("jsonl", "zstd"),
    ("parquet", "none"),
    ("sql", "none"),
    ("sql", "gzip"),
    ("sql", "zstd"),
]


def test_every_format_and_compression_round_trips_through_s3(s3_stack: Stack, s3_client: Minio) -> None:
    with _client(s3_stack) as client:
        _generate(client, "rt")
        expected = _table_rows(s3_stack, "rt")
        sql_styles = iter([job_service_pb2.SqlOptions.STYLE_INSERT, job_service_pb2.SqlOptions.STYLE_COPY] * 2)
        jobs = []
        for format, compression in EXPORTS:
            options: dict[str, Any] = {}
            if format == "sql":
                options["sql_options"] = job_service_pb2.SqlOptions(
                    style=next(sql_styles), include_create_table=True, rows_per_statement=0
                )
            job = client.export("rt", format=format, compression=compression, **options)
            assert job.kind == job_pb2.JOB_KIND_EXPORT and job.progress.total == ROWS
            jobs.append((format, compression, job))
        for format, compression, job in jobs:
            done = client.wait(job.id)
            assert done.state == job_pb2.JOB_STATE_SUCCEEDED, (format, compression, done.error.message)
            result = done.export
            assert result.row_count == ROWS and done.progress.done == ROWS
            assert done.progress.bytes_done == result.size_bytes
            assert result.object_key.startswith(f"default/exports/{done.id}/")
            suffix = {"none": "", "gzip": ".gz", "zstd": ".zst"}[compression]
            assert result.object_key.endswith(f"/rt.{format}{suffix}")
            stored = s3_client.stat_object(s3_stack.env["DATAMILL_S3_BUCKET"], result.object_key)
            assert stored.size == result.size_bytes and stored.content_type == result.content_type
            data = _decompress(_download(client, result), compression)
            assert _read_back(s3_stack, format, data) == expected, (format, compression)
    assert not s3_client._list_multipart_uploads(s3_stack.env["DATAMILL_S3_BUCKET"]).uploads
    assert s3_stack.sql("SELECT count(*) FROM export_parts_pending") == [(0,)]


def test_presigned_url_downloads_the_export(stack_factory: Any, s3: Any, s3_bucket: str) -> None:
    from tests.e2e.conftest import s3_settings  # noqa: PLC0415

    stack = stack_factory(settings={**s3_settings(s3, s3_bucket), "DATAMILL_EXPORT_URL_TTL_SECONDS": "120"})
    with _client(stack) as client:
        _generate(client, "signed", rows=100)
        job = client.wait(client.export("signed", format="csv").id)
    result = job.export
    assert result.presigned_url.startswith(f"http://{s3.endpoint}/{s3_bucket}/")
    expires = result.presigned_url_expire_time.ToDatetime(tzinfo=UTC)
    assert 100 < (expires - datetime.now(UTC)).total_seconds() <= 121
    with urllib.request.urlopen(result.presigned_url, timeout=10) as response:  # our own endpoint
        body = response.read()
    assert hashlib.sha256(body).hexdigest() == result.sha256
    assert body.startswith(b"seq,id,qty,price,status,note,at\n")


def test_uploaded_csv_exports_as_the_same_records(stack: Stack, tmp_path: Path) -> None:
    source = tmp_path / "people.csv"
    records = [
        {"id": str(i), "name": f'name {i}, "q"' if i % 5 == 0 else f"name {i}", "score": str(i / 4)} for i in range(500)
    ]
    with source.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "name", "score"])
        writer.writeheader()
        writer.writerows(records)
    with _client(stack) as client:
        completed = client.upload(source, "people", options=UploadOptions(format="csv"))
        assert client.wait(completed.job.id).state == job_pb2.JOB_STATE_SUCCEEDED
        job = client.wait(client.export("people", format="csv").id)
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error.message
        assert job.export.presigned_url == ""  # the local store has none: ReadObject instead
        exported = list(csv.DictReader(io.StringIO(_download(client, job.export).decode(), newline="")))
        # The uploaded file itself is a stored object of the tenant too.
        upload_key = f"default/uploads/{completed.upload_id}"
        assert b"".join(client.read_object(upload_key)) == source.read_bytes()
    assert [(int(r["id"]), r["name"], float(r["score"])) for r in exported] == [
        (int(r["id"]), r["name"], float(r["score"])) for r in records
    ]


def test_read_object_ranges_and_errors(stack: Stack) -> None:
    with _client(stack) as client:
        _generate(client, "ranges", rows=2000)
        job = client.wait(client.export("ranges", format="jsonl", request_id="ranges-1").id)
        key, size = job.export.object_key, job.export.size_bytes
        assert client.export("ranges", format="jsonl", request_id="ranges-1").id == job.id  # a retry, not a new job
        with pytest.raises(AlreadyExistsError):  # the same key for another request
            client.export("ranges", format="csv", request_id="ranges-1")
        whole = b"".join(client.read_object(key))
        assert len(whole) == size
        pieces = b"".join(b"".join(client.read_object(key, offset=o, limit=1000)) for o in range(0, size, 1000))
        assert pieces == whole
        assert b"".join(client.read_object(key, offset=size)) == b""
        with pytest.raises(OutOfRangeError):
            b"".join(client.read_object(key, offset=size + 1))
        with pytest.raises(NotFoundError):
            b"".join(client.read_object("default/exports/nothing-here.csv"))
        with pytest.raises(NotFoundError):  # a key that exists in the store but is no object of this tenant
            b"".join(client.read_object(key.replace("default/", "other/", 1)))


def test_bad_requests_are_refused_before_any_job(stack: Stack) -> None:
    with _client(stack) as client:
        _generate(client, "checked", rows=10)
        cases: list[tuple[dict[str, Any], str]] = [
            ({"format": "parquet", "compression": "gzip"}, "compression"),
            ({"format": "jsonl", "csv_options": job_service_pb2.CsvOptions(delimiter=";")}, "csv_options"),
            ({"format": "csv", "csv_options": job_service_pb2.CsvOptions(delimiter="ab")}, "csv_options.delimiter"),
            ({"format": "csv", "csv_options": job_service_pb2.CsvOptions(encoding="utf-16")}, "csv_options.encoding"),
            ({"format": "csv", "columns": ["seq", "nope"]}, "columns[1]"),
            ({"format": "csv", "columns": ["seq", "seq"]}, "columns[1]"),
            ({"format": "csv", "row_limit": -1}, "row_limit"),
            (
                {"format": "parquet", "parquet_options": job_service_pb2.ParquetOptions(compression="rar")},
                "parquet_options.compression",
            ),
            (
                {
                    "format": "sql",
                    "sql_options": job_service_pb2.SqlOptions(
                        style=job_service_pb2.SqlOptions.STYLE_COPY, rows_per_statement=10
                    ),
                },
                "sql_options.rows_per_statement",
            ),
        ]
        for request, field in cases:
            with pytest.raises(InvalidArgumentError) as raised:
                client.export("checked", **request)
            assert field in [v.field for v in raised.value.field_violations], (request, raised.value)
        with pytest.raises(NotFoundError):
            client.export("no_such_dataset", format="csv")
        pending = client.generate("pending", schema=schema(3_000_000))
        with pytest.raises(FailedPreconditionError) as not_ready:
            client.export("pending", format="csv")
        assert not_ready.value.reason == "DATASET_NOT_READY"
        client.cancel_job(pending.id)
    assert stack.sql("SELECT count(*) FROM jobs WHERE kind = 'EXPORT'") == [(0,)]


def _bucket_keys(s3_client: Minio, bucket: str) -> list[str]:
    return [o.object_name or "" for o in s3_client.list_objects(bucket, recursive=True)]


def test_cancel_mid_export_leaves_no_object_and_no_multipart_upload(
    stack_factory: Any, s3: Any, s3_bucket: str, s3_client: Minio
) -> None:
    from tests.e2e.conftest import s3_settings  # noqa: PLC0415

    stack = stack_factory(settings={**s3_settings(s3, s3_bucket), "DATAMILL_UPLOAD_PART_BYTES": str(5 * 1024**2)})
    with _client(stack) as client:
        _generate(client, "big", rows=1_000_000)
        job = client.export("big", format="parquet")
        wait_for(
            lambda: client.get_job(job.id).progress.bytes_done > 0, timeout=60, interval=0.02, what="bytes written"
        )
        assert s3_client._list_multipart_uploads(s3_bucket).uploads  # mid-stream: a multipart upload is open
        asked = time.monotonic()
        client.cancel_job(job.id)
        wait_for(
            lambda: client.get_job(job.id).state in (job_pb2.JOB_STATE_CANCELLED, job_pb2.JOB_STATE_SUCCEEDED),
            timeout=10,
            what="the export to stop",
        )
        elapsed = time.monotonic() - asked
        assert client.get_job(job.id).state == job_pb2.JOB_STATE_CANCELLED
    assert elapsed < 2.0
    wait_for(lambda: not s3_client._list_multipart_uploads(s3_bucket).uploads, timeout=5, what="no multipart upload")
    assert not [k for k in _bucket_keys(s3_client, s3_bucket) if "/exports/" in k]
    assert stack.sql("SELECT count(*) FROM export_parts_pending") == [(0,)]
    assert stack.sql("SELECT count(*) FROM objects WHERE job_id = %s", uuid.UUID(job.id)) == [(0,)]


def test_worker_killed_mid_export_leaves_nothing_behind(
    stack_factory: Any, s3: Any, s3_bucket: str, s3_client: Minio
) -> None:
    """SIGKILL mid-stream: the next attempt removes the dead one's upload; out of attempts, the sweeper does."""
    from tests.e2e.conftest import s3_settings  # noqa: PLC0415

    settings = {
        **s3_settings(s3, s3_bucket),
        "DATAMILL_UPLOAD_PART_BYTES": str(5 * 1024**2),
        "DATAMILL_LEASE_SECONDS": "3",
        "DATAMILL_RETRY_BACKOFF_BASE_SECONDS": "0.2",
    }
    stack = stack_factory(settings=settings)
    with _client(stack) as client:
        _generate(client, "big", rows=1_000_000)
        job = client.export("big", format="parquet")
        wait_for(lambda: client.get_job(job.id).progress.bytes_done > 0, timeout=60, interval=0.02, what="bytes")
        stack.workers[0].kill()
        stack.start_worker()
        done = client.wait(job.id)
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED and done.attempt == 2, done.error.message
        assert pq.read_table(pa.BufferReader(_download(client, done.export))).num_rows == 1_000_000
    assert [k for k in _bucket_keys(s3_client, s3_bucket) if "/exports/" in k] == [done.export.object_key]
    assert not s3_client._list_multipart_uploads(s3_bucket).uploads
    assert stack.sql("SELECT count(*) FROM export_parts_pending") == [(0,)]


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "client.cli", "--target", stack.target, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_cli_export_downloads_and_verifies(stack: Stack, tmp_path: Path) -> None:
    with _client(stack) as client:
        _generate(client, "cli_rows", rows=1500)
    out = tmp_path / "rows.parquet"
    options = ["--parquet-compression", "snappy", "--row-group-size", "500"]
    run = _cli(stack, "export", "cli_rows", "--format", "parquet", *options, "-o", str(out))
    assert run.returncode == 0, run.stderr
    assert "(checked)" in run.stderr
    parquet = pq.ParquetFile(out)
    assert parquet.metadata.num_rows == 1500 and parquet.metadata.num_row_groups == 3
    assert parquet.metadata.row_group(0).column(0).compression == "SNAPPY"
    key = str(stack.sql("SELECT result ->> 'object_key' FROM jobs WHERE kind = 'EXPORT'")[0][0])
    again = tmp_path / "again.parquet"
    run = _cli(stack, "download", key, "-o", str(again), "--sha256", hashlib.sha256(out.read_bytes()).hexdigest())
    assert run.returncode == 0, run.stderr
    assert again.read_bytes() == out.read_bytes()
    wrong = _cli(stack, "download", key, "-o", str(tmp_path / "bad.parquet"), "--sha256", "0" * 64)
    assert wrong.returncode != 0 and "sha256 mismatch" in wrong.stderr
    assert not (tmp_path / "bad.parquet").exists()
