"""A worker killed by SIGKILL in each phase of each kind of job (docs/reliability.md, rows W1-W3).

The worker kills itself at a crash point (`server.core.faults`): right after
its claim, after its first durable piece of work (a committed chunk, a COPY
under way, a stored part), or inside the success transaction. Armed once, the
job must then end SUCCEEDED on its second attempt with exactly the right data
and nothing left over; armed for every attempt, it must end FAILED after
max_attempts with a clear error, its partial data and objects removed.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from client import Client, UploadOptions
from datamill.v1 import job_pb2
from server.core.faults import PHASES
from server.devstack import S3Endpoint
from tests.e2e.conftest import Stack, s3_settings
from tests.e2e.helpers import schema, wait_for

pytestmark = pytest.mark.timeout(120)

KINDS = ("GENERATE", "INGEST", "EXPORT")
ROWS = 40_000


def _stack(stack_factory: Any, s3: S3Endpoint, bucket: str, tmp_path: Path, crash_at: str, *, once: bool) -> Stack:
    settings = {
        **s3_settings(s3, bucket),
        "DATAMILL_TEST_CRASH_AT": crash_at,
        "DATAMILL_LEASE_SECONDS": "3",
        "DATAMILL_RETRY_BACKOFF_BASE_SECONDS": "0.2",
        "DATAMILL_GENERATE_CHUNK_ROWS": "5000",  # several chunks: "midway" is after the first
        "DATAMILL_UPLOAD_PART_BYTES": str(5 * 1024**2),  # several export parts
        "DATAMILL_MAX_ATTEMPTS": "3" if once else "2",
    }
    if once:
        markers = tmp_path / "markers"
        markers.mkdir()
        settings["DATAMILL_TEST_CRASH_MARKER_DIR"] = str(markers)
    return stack_factory(settings=settings, workers=2)  # type: ignore[no-any-return]


def _csv_file(path: Path) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "name", "score"])
        writer.writerows((i, f"name {i}", i / 8) for i in range(ROWS))
    return path


def _start(client: Client, kind: str, tmp_path: Path) -> job_pb2.Job:
    """Start a job of `kind`; what it needs first (a dataset to export) is made without a crash point."""
    if kind == "GENERATE":
        return client.generate("subject", schema=schema(ROWS))
    if kind == "INGEST":
        completed = client.upload(_csv_file(tmp_path / "rows.csv"), "subject", options=UploadOptions(format="csv"))
        return completed.job
    source = client.wait(client.generate("source", schema=schema(200_000)).id)
    assert source.state == job_pb2.JOB_STATE_SUCCEEDED, source.error.message
    return client.export("source", format="csv")


def _table_digest(stack: Stack, dataset: str, order: str) -> tuple[int, str]:
    (table,) = stack.sql("SELECT table_name FROM datasets WHERE name = %s AND ready", dataset)[0]
    query = f"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY {order})) FROM datasets.\"{table}\" t"
    count, digest = stack.sql(query)[0]
    return int(str(count)), str(digest)


def _exports_in_bucket(s3_client: Minio, bucket: str) -> list[str]:
    return [o.object_name or "" for o in s3_client.list_objects(bucket, prefix="default/exports/", recursive=True)]


def _check_data(stack: Stack, client: Client, kind: str, job: job_pb2.Job, s3_client: Minio, bucket: str) -> None:
    if kind == "GENERATE":
        reference = client.wait(client.generate("reference", schema=schema(ROWS)).id)  # the same seed, no crash
        assert reference.state == job_pb2.JOB_STATE_SUCCEEDED
        assert _table_digest(stack, "subject", "seq") == _table_digest(stack, "reference", "seq")
        assert _table_digest(stack, "subject", "seq")[0] == ROWS
    elif kind == "INGEST":
        count, total, distinct = stack.sql(
            'SELECT count(*), sum(id), count(DISTINCT id) FROM datasets."' + _table(stack, "subject") + '"'
        )[0]
        assert (count, total, distinct) == (ROWS, ROWS * (ROWS - 1) // 2, ROWS)
    else:
        result = job.export
        data = b"".join(client.read_object(result.object_key))
        assert hashlib.sha256(data).hexdigest() == result.sha256
        lines = list(csv.reader(io.StringIO(data.decode(), newline="")))
        assert len(lines) - 1 == result.row_count == 200_000
        assert len({line[0] for line in lines[1:]}) == 200_000  # seq is unique: no row twice
        assert _exports_in_bucket(s3_client, bucket) == [result.object_key]  # the dead attempt's upload is gone


def _table(stack: Stack, dataset: str) -> str:
    return str(stack.sql("SELECT table_name FROM datasets WHERE name = %s", dataset)[0][0])


def _event_types(stack: Stack, job_id: str) -> list[str]:
    return [str(r[0]) for r in stack.sql("SELECT type FROM job_events WHERE job_id = %s ORDER BY seq", job_id)]


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_worker_killed_once_in_any_phase_leaves_the_right_data(
    stack_factory: Any, s3: S3Endpoint, s3_bucket: str, s3_client: Minio, tmp_path: Path, kind: str, phase: str
) -> None:
    stack = _stack(stack_factory, s3, s3_bucket, tmp_path, f"{kind}:{phase}", once=True)
    with Client.connect(stack.target, timeout=30) as client:
        job = _start(client, kind, tmp_path)
        done = client.wait(job.id)
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert (tmp_path / "markers" / f"{kind}-{phase}").exists(), "the crash point never fired"
        assert done.attempt == 2
        events = _event_types(stack, job.id)
        assert events.count("STARTED") == 2 and "REQUEUED" in events and events[-1] == "SUCCEEDED"
        _check_data(stack, client, kind, done, s3_client, s3_bucket)
    assert not s3_client._list_multipart_uploads(s3_bucket).uploads
    assert stack.sql("SELECT count(*) FROM export_parts_pending") == [(0,)]
    assert stack.sql("SELECT count(*) FROM jobs WHERE state NOT IN ('SUCCEEDED')") == [(0,)]


@pytest.mark.parametrize("kind", KINDS)
def test_a_job_whose_worker_always_dies_fails_after_max_attempts_and_leaves_nothing(
    stack_factory: Any, s3: S3Endpoint, s3_bucket: str, s3_client: Minio, tmp_path: Path, kind: str
) -> None:
    stack = _stack(stack_factory, s3, s3_bucket, tmp_path, f"{kind}:midway", once=False)
    with Client.connect(stack.target, timeout=30) as client:
        job = _start(client, kind, tmp_path)
        done = client.wait(job.id)
    assert done.state == job_pb2.JOB_STATE_FAILED
    assert done.attempt == 2 == done.max_attempts
    assert done.error.message.startswith("the worker stopped renewing its lease on attempt 2 of 2")
    if kind == "EXPORT":  # no worker lives to clean up: the sweeper removes the dead attempt's upload
        wait_for(lambda: stack.sql("SELECT count(*) FROM export_parts_pending") == [(0,)], timeout=10, what="sweep")
        assert _exports_in_bucket(s3_client, s3_bucket) == []
        assert stack.sql("SELECT count(*) FROM objects WHERE job_id = %s", job.id) == [(0,)]
    else:  # the dataset and its partial table are gone
        assert stack.sql("SELECT count(*) FROM datasets WHERE name = 'subject'") == [(0,)]
        assert stack.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'datasets'") == [(0,)]
    assert not s3_client._list_multipart_uploads(s3_bucket).uploads
