"""Upload end to end: a real server, worker, PostgreSQL, Redis and S3 endpoint (SeaweedFS) or local store.

Covers the protocol's promises (resume, offsets, checksums, limits, no commit
without `finish`), the import of each format, compressed too, and malformed
files failing with the row that broke them.
"""

from __future__ import annotations

import contextlib
import csv
import gzip
import hashlib
import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from grpc_status import rpc_status
from minio import Minio

from client import Client, UploadOptions
from client.errors import DatamillError
from datamill.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from server.devstack import S3Endpoint
from tests.e2e.conftest import Stack, s3_settings
from tests.e2e.helpers import wait_for

pytestmark = pytest.mark.timeout(120)

MiB = 1024 * 1024
ROWS = 2_000


def _records(rows: int = ROWS) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "name": f'name {i}, "quoted"' if i % 7 == 0 else f"name {i}",
            "score": i / 4,
            "active": i % 2 == 0,
            "seen": f"2024-01-{1 + i % 28:02d}T10:00:00+00:00",
        }
        for i in range(rows)
    ]


def _csv_bytes(records: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]))
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue().encode()


def _jsonl_bytes(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _parquet_bytes(records: list[dict[str, Any]]) -> bytes:
    typed = [{**r, "seen": datetime.fromisoformat(r["seen"])} for r in records]  # Parquet has its own types
    table = pa.Table.from_pylist(typed)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return bytes(sink.getvalue().to_pybytes())


def _client(stack: Stack) -> Client:
    return Client.connect(stack.target, timeout=20)


def _rows(stack: Stack, dataset: str) -> list[tuple[Any, ...]]:
    (table,) = stack.sql("SELECT table_name FROM datasets WHERE name = %s AND ready", dataset)[0]
    return stack.sql(f'SELECT id, name, score, active, seen FROM datasets."{table}" ORDER BY id')


def _expected(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(r["id"], r["name"], r["score"], r["active"], datetime.fromisoformat(r["seen"])) for r in records]


def _upload_and_wait(client: Client, path: Path, dataset: str, **kwargs: Any) -> job_pb2.Job:
    completed = client.upload(path, dataset, **kwargs)
    assert completed.size_bytes == path.stat().st_size
    assert completed.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    return client.wait(completed.job.id)


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("people.csv", _csv_bytes),
        ("people.csv.gz", lambda r: gzip.compress(_csv_bytes(r))),
        ("people.csv.zst", lambda r: _zstd(_csv_bytes(r))),
        ("people.jsonl", _jsonl_bytes),
        ("people.jsonl.gz", lambda r: gzip.compress(_jsonl_bytes(r))),
        ("people.jsonl.zst", lambda r: _zstd(_jsonl_bytes(r))),
        ("people.parquet", _parquet_bytes),
    ],
)
def test_each_format_round_trips_into_the_dataset(stack: Stack, tmp_path: Path, name: str, make: Any) -> None:
    records = _records()
    path = tmp_path / name
    path.write_bytes(make(records))
    with _client(stack) as client:
        job = _upload_and_wait(client, path, "people")
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error
        assert job.kind == job_pb2.JOB_KIND_INGEST
        assert job.ingest.row_count == ROWS
        assert job.ingest.skipped_rows == 0
        dataset = client.get_dataset("people")
    assert dataset.ready and dataset.row_count == ROWS
    types = {c.name: c.type for c in dataset.columns}
    assert types == {"id": "integer", "name": "text", "score": "float", "active": "boolean", "seen": "timestamp"}
    assert _rows(stack, "people") == _expected(records)


def test_multi_part_upload_into_s3_with_declared_columns(s3_stack: Stack, tmp_path: Path, s3_client: Minio) -> None:
    """20 MiB of CSV: three 8 MiB parts into SeaweedFS, which checks signatures and part sizes."""
    records = [{"id": i, "payload": os.urandom(24).hex()} for i in range(400_000)]
    data = _csv_bytes(records)
    assert len(data) > 2 * 8 * MiB
    path = tmp_path / "big.csv"
    path.write_bytes(data)
    acks: list[int] = []
    with _client(s3_stack) as client:
        completed = client.upload(
            path,
            "big",
            options=UploadOptions(columns=[("id", "integer", False), ("payload", "text")]),
            on_progress=lambda sent, committed, size: acks.append(committed),
        )
        job = client.wait(completed.job.id)
        assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error
    assert job.ingest.row_count == len(records)
    assert 8 * MiB in acks and 16 * MiB in acks  # each part acked as it was stored
    (table,) = s3_stack.sql("SELECT table_name FROM datasets WHERE name = 'big'")[0]
    count, digest = s3_stack.sql(
        f"SELECT count(*), md5(string_agg(payload, '' ORDER BY id)) FROM datasets.\"{table}\""
    )[0]
    assert count == len(records)
    assert digest == hashlib.md5("".join(str(r["payload"]) for r in records).encode()).hexdigest()
    bucket = s3_stack.env["DATAMILL_S3_BUCKET"]
    stored = s3_client.stat_object(bucket, _object_key(s3_stack, completed))
    assert stored.size == len(data)
    assert not s3_client._list_multipart_uploads(bucket).uploads


def _object_key(stack: Stack, completed: job_service_pb2.UploadCompleted) -> str:
    return str(stack.sql("SELECT object_key FROM uploads WHERE id = %s", completed.upload_id)[0][0])


# --- the raw protocol -----------------------------------------------------------------------------------


class RawUpload:
    """Drives one Upload stream message by message, as a misbehaving or careful client would."""

    def __init__(self, target: str) -> None:
        self._channel = grpc.insecure_channel(target)
        self._requests: queue.Queue[job_service_pb2.UploadRequest | None] = queue.Queue()
        stub = job_service_pb2_grpc.JobServiceStub(self._channel)
        self.call = stub.Upload(iter(self._requests.get, None))
        self.responses = iter(self.call)

    def send(self, **message: Any) -> None:
        self._requests.put(job_service_pb2.UploadRequest(**message))

    def end(self) -> None:
        self._requests.put(None)

    def header(self, **fields: Any) -> job_service_pb2.UploadStarted:
        fields.setdefault("format", job_service_pb2.FILE_FORMAT_CSV)
        self.send(header=job_service_pb2.UploadHeader(**fields))
        return next(self.responses).started

    def chunk(self, offset: int, data: bytes) -> None:
        self.send(chunk=job_service_pb2.UploadChunk(write_offset=offset, data=data))

    def finish(self, data: bytes) -> None:
        self.send(finish=job_service_pb2.UploadFinish(total_size=len(data), sha256=hashlib.sha256(data).hexdigest()))

    def error(self) -> tuple[grpc.RpcError, Any]:
        with pytest.raises(grpc.RpcError) as caught:
            for _ in self.responses:
                pass
        return caught.value, rpc_status.from_call(caught.value)

    def close(self) -> None:
        self.end()
        self.call.cancel()
        self._channel.close()


@pytest.fixture
def raw(stack: Stack) -> Iterator[Any]:
    opened: list[RawUpload] = []

    def make() -> RawUpload:
        opened.append(RawUpload(stack.target))
        return opened[-1]

    yield make
    for upload in opened:
        upload.close()


def _error_info(status: Any) -> dict[str, str]:
    from google.rpc import error_details_pb2  # noqa: PLC0415

    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return dict(info.metadata) | {"reason": info.reason}
    raise AssertionError("no ErrorInfo")


def test_a_chunk_that_skips_or_rewinds_is_out_of_range_with_the_committed_offset(raw: Any) -> None:
    for offset in (5, -1):
        upload = raw()
        started = upload.header(dataset_name="gaps", file_name="x.csv")
        assert started.committed_offset == 0
        upload.chunk(0, b"a,b\n")
        upload.chunk(4 + offset, b"1,2\n")
        err, status = upload.error()
        assert err.code() == grpc.StatusCode.OUT_OF_RANGE
        info = _error_info(status)
        assert info["reason"] == "UPLOAD_OFFSET_MISMATCH"
        assert info["committed_offset"] == "0"
        assert info["expected_offset"] == "4"


def test_unknown_upload_id_is_not_found(raw: Any) -> None:
    upload = raw()
    upload.send(header=job_service_pb2.UploadHeader(upload_id="6b1c4a43-3f0e-4d83-9f3e-0d2f0b0e8a11"))
    err, _ = upload.error()
    assert err.code() == grpc.StatusCode.NOT_FOUND


def test_bad_header_is_invalid_before_anything_is_stored(raw: Any, stack: Stack) -> None:
    upload = raw()
    upload.send(
        header=job_service_pb2.UploadHeader(
            dataset_name="Bad Name",
            format=job_service_pb2.FILE_FORMAT_PARQUET,
            compression=job_service_pb2.COMPRESSION_GZIP,
            expected_sha256="xyz",
        )
    )
    err, status = upload.error()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    from google.rpc import error_details_pb2  # noqa: PLC0415

    fields = set()
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            fields = {v.field for v in bad.field_violations}
    assert {"header.dataset_name", "header.compression", "header.expected_sha256"} <= fields
    assert stack.sql("SELECT count(*) FROM uploads") == [(0,)]


def test_checksum_mismatch_is_data_loss_and_deletes_the_stored_bytes(s3_stack: Stack, s3_client: Minio) -> None:
    data = os.urandom(9 * MiB)  # one full 8 MiB part is stored before the finish
    upload = RawUpload(s3_stack.target)
    try:
        started = upload.header(dataset_name="bad_sum", file_name="x.csv")
        for offset in range(0, len(data), MiB):
            upload.chunk(offset, data[offset : offset + MiB])
        upload.send(finish=job_service_pb2.UploadFinish(total_size=len(data), sha256="0" * 64))
        err, status = upload.error()
    finally:
        upload.close()
    assert err.code() == grpc.StatusCode.DATA_LOSS
    assert _error_info(status)["reason"] == "UPLOAD_CHECKSUM_MISMATCH"
    bucket = s3_stack.env["DATAMILL_S3_BUCKET"]
    assert not s3_client._list_multipart_uploads(bucket).uploads
    assert not list(s3_client.list_objects(bucket, recursive=True))
    assert s3_stack.sql("SELECT state FROM uploads WHERE id = %s", started.upload_id) == [("ABORTED",)]
    assert s3_stack.sql("SELECT count(*) FROM jobs") == [(0,)]
    # A resume learns why, and cannot revive it.
    again = RawUpload(s3_stack.target)
    try:
        again.send(header=job_service_pb2.UploadHeader(upload_id=started.upload_id))
        err, status = again.error()
    finally:
        again.close()
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _error_info(status)["reason"] == "UPLOAD_ABORTED"


def test_size_over_the_limit_is_resource_exhausted_as_soon_as_it_is_exceeded(stack_factory: Any) -> None:
    stack = stack_factory(settings={"DATAMILL_MAX_UPLOAD_BYTES": str(2 * MiB)})
    declared = RawUpload(stack.target)
    try:
        declared.send(
            header=job_service_pb2.UploadHeader(
                dataset_name="big", format=job_service_pb2.FILE_FORMAT_CSV, total_size=3 * MiB
            )
        )
        err, _ = declared.error()
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        declared.close()
    streamed = RawUpload(stack.target)
    try:
        streamed.header(dataset_name="big")
        streamed.chunk(0, b"x" * MiB)
        streamed.chunk(MiB, b"x" * MiB)
        streamed.chunk(2 * MiB, b"x")
        err, status = streamed.error()
    finally:
        streamed.close()
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert _error_info(status)["reason"] == "UPLOAD_TOO_LARGE"


def test_declared_size_differing_from_the_sent_size_is_invalid(raw: Any) -> None:
    upload = raw()
    upload.header(dataset_name="short", total_size=10)
    upload.chunk(0, b"a,b\n1,2\n")
    upload.finish(b"a,b\n1,2\n")
    err, _ = upload.error()
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_stream_that_ends_without_finish_commits_nothing_and_can_be_resumed(raw: Any, stack: Stack) -> None:
    data = b"a,b\n1,2\n3,4\n"
    upload = raw()
    started = upload.header(dataset_name="unfinished")
    upload.chunk(0, data)
    upload.end()
    err, status = upload.error()
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _error_info(status)["reason"] == "UPLOAD_NOT_FINISHED"
    assert stack.sql("SELECT state, committed_offset FROM uploads") == [("OPEN", 0)]
    assert stack.sql("SELECT count(*) FROM jobs") == [(0,)]
    resumed = raw()
    again = resumed.header(upload_id=started.upload_id, format=job_service_pb2.FILE_FORMAT_UNSPECIFIED)
    assert again.upload_id == started.upload_id
    assert again.committed_offset == 0  # the small tail was never a whole part: it is sent again
    resumed.chunk(0, data)
    resumed.finish(data)
    completed = next(r for r in resumed.responses if r.HasField("completed"))
    assert completed.completed.size_bytes == len(data)
    with _client(stack) as client:
        assert client.wait(completed.completed.job.id).ingest.row_count == 2


def test_repeating_a_request_id_resumes_and_then_returns_the_same_upload(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "same.csv"
    path.write_bytes(_csv_bytes(_records(10)))
    with _client(stack) as client:
        first = client.upload(path, "same", request_id="req-1")
        second = client.upload(path, "same", request_id="req-1")
        assert second.upload_id == first.upload_id
        assert second.job.id == first.job.id
        with pytest.raises(DatamillError) as caught:
            client.upload(path, "other_name", request_id="req-1")
        assert caught.value.code == grpc.StatusCode.ALREADY_EXISTS


# --- malformed files ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data", "row"),
    [
        ("bad.csv", b"id,score\n1,2.5\n2,oops\n3,4\n", 2),
        ("bad.jsonl", b'{"id": 1}\n{"id": 2}\n{"id": \n{"id": 4}\n', 3),
    ],
)
def test_a_malformed_row_fails_the_job_with_its_row_and_leaves_no_dataset(
    stack: Stack, tmp_path: Path, name: str, data: bytes, row: int
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    options = UploadOptions(columns=[("id", "integer"), ("score", "float")]) if name.endswith(".csv") else None
    with _client(stack) as client:
        job = _upload_and_wait(client, path, "broken", options=options)
        assert job.state == job_pb2.JOB_STATE_FAILED
        assert job.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]
        assert f"row {row}" in job.error.message
        assert job.attempt == 1  # a malformed file is not retried
        with pytest.raises(DatamillError) as caught:
            client.get_dataset("broken")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND
    assert stack.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'datasets'") == [(0,)]


def test_malformed_parquet_fails_the_job(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1" + os.urandom(4000) + b"PAR1")
    with _client(stack) as client:
        job = _upload_and_wait(client, path, "broken")
    assert job.state == job_pb2.JOB_STATE_FAILED
    assert "cannot be imported" in job.error.message


@pytest.mark.parametrize("column_type", ["text", "date"])
def test_parquet_text_that_is_not_utf8_fails_cleanly_at_once(stack: Stack, tmp_path: Path, column_type: str) -> None:
    """Found by the fuzz tests: bytes that are not UTF-8 fail as the file's fault, not INTERNAL after retries."""
    path = tmp_path / "latin.parquet"
    strings = pa.array([b"2024-01-01", b"caf\xe9"], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"t": strings}), path)
    with _client(stack) as client:
        options = UploadOptions(format="parquet", columns=[("t", column_type, True)])
        completed = client.upload(path, "latin", options=options)
        job = client.wait(completed.job.id)
    assert job.state == job_pb2.JOB_STATE_FAILED
    assert job.error.code == grpc.StatusCode.FAILED_PRECONDITION.value[0], job.error.message
    assert job.attempt == 1 and "cannot be imported" in job.error.message
    assert stack.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'datasets'") == [(0,)]


def test_skip_malformed_rows_imports_the_rest_and_counts_them(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "some_bad.csv"
    path.write_bytes(b"id,score\n1,2.5\n2,oops\n3,4\n4,5,6\n5,1e3\n")
    options = UploadOptions(columns=[("id", "integer"), ("score", "float")], skip_malformed_rows=True)
    with _client(stack) as client:
        job = _upload_and_wait(client, path, "partial", options=options)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error
    assert (job.ingest.row_count, job.ingest.skipped_rows) == (3, 2)
    (table,) = stack.sql("SELECT table_name FROM datasets WHERE name = 'partial'")[0]
    assert stack.sql(f'SELECT id, score FROM datasets."{table}" ORDER BY id') == [
        (1, 2.5),
        (3, 4.0),
        (5, 1000.0),
    ]


# --- resume after a crash -------------------------------------------------------------------------------

_PARTIAL_CLIENT = """
import hashlib, sys, time
import grpc
from datamill.v1 import job_service_pb2 as pb, job_service_pb2_grpc
target, path, stop_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(path, "rb").read()
def requests():
    yield pb.UploadRequest(header=pb.UploadHeader(
        dataset_name="killed", format=pb.FILE_FORMAT_CSV, file_name="f.csv", total_size=len(data)))
    for offset in range(0, stop_after, 1 << 20):
        yield pb.UploadRequest(chunk=pb.UploadChunk(write_offset=offset, data=data[offset:offset + (1 << 20)]))
    time.sleep(3600)  # hold the stream open until killed
call = job_service_pb2_grpc.JobServiceStub(grpc.insecure_channel(target)).Upload(requests())
for response in call:
    print(response.WhichOneof("message"), response.started.upload_id or response.ack.committed_offset, flush=True)
"""


def test_resume_after_the_client_is_killed_mid_stream(s3_stack: Stack, tmp_path: Path) -> None:
    records = [{"id": i, "payload": os.urandom(20).hex()} for i in range(500_000)]
    path = tmp_path / "resume.csv"
    path.write_bytes(_csv_bytes(records))
    size = path.stat().st_size
    proc = subprocess.Popen(
        [sys.executable, "-c", _PARTIAL_CLIENT, s3_stack.target, str(path), str(12 * MiB)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        kind, upload_id = proc.stdout.readline().split()
        assert kind == "started"
        assert proc.stdout.readline().split() == ["ack", str(8 * MiB)]  # one part durably stored
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
    assert s3_stack.sql("SELECT committed_offset FROM uploads WHERE id = %s", upload_id) == [(8 * MiB,)]
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("datamill")),
            *("--target", s3_stack.target, "--json", "upload", str(path)),
            *("--dataset", "killed", "--resume", upload_id),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout.splitlines()[-1])
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    assert int(job["ingest"]["row_count"]) == len(records)
    assert s3_stack.sql("SELECT size_bytes FROM uploads WHERE id = %s", upload_id) == [(size,)]


def test_resume_after_the_server_is_killed_mid_stream(s3_stack: Stack, tmp_path: Path) -> None:
    records = [{"id": i, "payload": os.urandom(20).hex()} for i in range(700_000)]
    path = tmp_path / "server_killed.csv"
    path.write_bytes(_csv_bytes(records))
    killed = threading.Event()
    restarted = threading.Thread(target=s3_stack.restart_server)

    def on_progress(sent: int, committed: int, size: int) -> None:
        if committed >= 8 * MiB and not killed.is_set():
            killed.set()
            s3_stack.server.kill()
            restarted.start()

    starts: list[str] = []
    with _client(s3_stack) as client:
        completed = client.upload(path, "survivor", on_progress=on_progress, on_started=starts.append)
        restarted.join()
        job = client.wait(completed.job.id)
    assert killed.is_set()
    assert len(starts) >= 2 and len(set(starts)) == 1  # resumed the same upload
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error
    assert job.ingest.row_count == len(records)
    assert completed.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_abandoned_uploads_are_aborted_after_their_ttl(
    stack_factory: Any, s3: S3Endpoint, s3_bucket: str, s3_client: Minio
) -> None:
    stack = stack_factory(settings={**s3_settings(s3, s3_bucket), "DATAMILL_UPLOAD_TTL_SECONDS": "2"})
    upload = RawUpload(stack.target)
    try:
        started = upload.header(dataset_name="abandoned", total_size=10 * MiB)
        for offset in range(0, 9 * MiB, MiB):
            upload.chunk(offset, os.urandom(MiB))
        wait_for(lambda: stack.sql("SELECT committed_offset FROM uploads")[0][0] == 8 * MiB, what="a stored part")
        assert s3_client._list_multipart_uploads(s3_bucket).uploads
    finally:
        upload.close()
    wait_for(lambda: stack.sql("SELECT count(*) FROM uploads") == [(0,)], timeout=30, what="the upload to expire")
    assert stack.sql("SELECT count(*) FROM upload_parts") == [(0,)]
    assert not s3_client._list_multipart_uploads(s3_bucket).uploads
    with contextlib.closing(RawUpload(stack.target)) as again:
        again.send(header=job_service_pb2.UploadHeader(upload_id=started.upload_id))
        err, _ = again.error()
    assert err.code() == grpc.StatusCode.NOT_FOUND


async def test_the_async_client_uploads_and_resumes_by_request_id(stack: Stack, tmp_path: Path) -> None:
    from client import AsyncClient  # noqa: PLC0415

    records = _records(50)
    path = tmp_path / "async.jsonl"
    path.write_bytes(_jsonl_bytes(records))
    progress: list[tuple[int, int, int]] = []
    async with await AsyncClient.connect(stack.target) as client:
        completed = await client.upload(
            path, "from_async", request_id="async-1", on_progress=lambda *p: progress.append(p)
        )
        again = await client.upload(path, "from_async", request_id="async-1")
        job = await client.wait(completed.job.id)
    assert again.upload_id == completed.upload_id and again.job.id == completed.job.id
    assert completed.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert progress[-1] == (path.stat().st_size, path.stat().st_size, path.stat().st_size)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error
    assert _rows(stack, "from_async") == _expected(records)
