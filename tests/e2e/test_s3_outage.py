"""The S3 endpoint goes away mid-export and mid-upload (docs/reliability.md, rows S1 and S2).

Each test runs its own SeaweedFS, stops it while bytes are flowing and starts it
again on the same port a few seconds later. The export is retried with backoff
and succeeds; the upload is resumed by the client from its committed offset.
Meanwhile the circuit breaker opens (health reports the object store) instead
of letting every call wait for a dead endpoint, and closes once it is back.
"""

from __future__ import annotations

import csv
import hashlib
import io
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
import urllib3
from grpc_health.v1 import health_pb2, health_pb2_grpc
from minio import Minio

from client import Client, UploadOptions
from datamill.v1 import job_pb2
from server.devstack import SeaweedS3
from tests.e2e.conftest import Stack, s3_settings
from tests.e2e.helpers import schema, wait_for

pytestmark = pytest.mark.timeout(240)

MiB = 1024 * 1024
BUCKET = "outage"


def _health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        try:
            return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status)
        except grpc.RpcError:
            return -1


@pytest.fixture
def seaweed(tmp_path: Path) -> Any:
    with SeaweedS3(tmp_path / "seaweed") as server:
        yield server


def _stack(stack_factory: Any, seaweed: SeaweedS3) -> Stack:
    settings = {
        **s3_settings(seaweed.connection, BUCKET),
        "DATAMILL_UPLOAD_PART_BYTES": str(5 * MiB),
        "DATAMILL_LEASE_SECONDS": "3",
        "DATAMILL_RETRY_BACKOFF_BASE_SECONDS": "1",
        "DATAMILL_MAX_ATTEMPTS": "6",
        "DATAMILL_S3_BREAKER_FAILURES": "3",
        "DATAMILL_S3_BREAKER_RESET_SECONDS": "1",
    }
    return stack_factory(settings=settings)  # type: ignore[no-any-return]


def _minio(seaweed: SeaweedS3) -> Minio:
    s3 = seaweed.connection
    http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=30), retries=urllib3.Retry(total=1))
    return Minio(s3.endpoint, access_key=s3.access_key, secret_key=s3.secret_key, secure=False, http_client=http)


def _outage(seaweed: SeaweedS3, stack: Stack, seconds: float) -> None:
    """Stop the endpoint, see the server report it, and start it again after `seconds`."""
    seaweed.stop()
    began = time.monotonic()
    wait_for(
        lambda: _health(stack.target) == health_pb2.HealthCheckResponse.NOT_SERVING,
        timeout=15,
        what="NOT_SERVING while S3 is down",
    )
    time.sleep(max(seconds - (time.monotonic() - began), 0))
    seaweed.start()


def test_export_survives_an_s3_outage(stack_factory: Any, seaweed: SeaweedS3) -> None:
    stack = _stack(stack_factory, seaweed)
    with Client.connect(stack.target, timeout=30) as client:
        made = client.wait(client.generate("big", schema=schema(1_000_000)).id)
        assert made.state == job_pb2.JOB_STATE_SUCCEEDED
        job = client.export("big", format="csv")
        wait_for(lambda: client.get_job(job.id).progress.bytes_done > 0, timeout=60, interval=0.02, what="bytes")
        _outage(seaweed, stack, 4)
        done = client.wait(job.id)
        assert done.state == job_pb2.JOB_STATE_SUCCEEDED, done.error.message
        assert done.attempt >= 2
        data = b"".join(client.read_object(done.export.object_key))
    assert hashlib.sha256(data).hexdigest() == done.export.sha256
    assert len(list(csv.reader(io.StringIO(data.decode(), newline="")))) == 1_000_001
    requeues = stack.sql(
        "SELECT snapshot -> 'error' ->> 'code' FROM job_events WHERE job_id = %s AND type = 'REQUEUED'", job.id
    )
    assert requeues and all(code == "UNAVAILABLE" for (code,) in requeues)
    logs = "\n".join((stack.logs / name).read_text() for name in ("server.log", "worker0.log"))
    assert "object_store_circuit_opened" in logs and "object_store_circuit_closed" in logs
    wait_for(lambda: _health(stack.target) == health_pb2.HealthCheckResponse.SERVING, timeout=15, what="SERVING")
    minio = _minio(seaweed)
    wait_for(lambda: not minio._list_multipart_uploads(BUCKET).uploads, timeout=15, what="no open multipart upload")
    exports = [o.object_name for o in minio.list_objects(BUCKET, prefix="default/exports/", recursive=True)]
    assert exports == [done.export.object_key]


def test_upload_resumes_after_an_s3_outage(stack_factory: Any, seaweed: SeaweedS3, tmp_path: Path) -> None:
    stack = _stack(stack_factory, seaweed)
    path = tmp_path / "rows.csv"
    with path.open("w") as out:
        out.write("id,token\n")
        for start in range(0, 1_500_000, 100_000):
            out.write("".join(f"{i},{i * 7919 % 1000003:x}{'x' * 20}\n" for i in range(start, start + 100_000)))
    outage: list[threading.Thread] = []

    def progress(sent: int, committed: int, size: int) -> None:
        if committed > 0 and not outage:  # a part is stored: now the endpoint goes away
            outage.append(threading.Thread(target=_outage, args=(seaweed, stack, 4)))
            outage[0].start()

    with Client.connect(stack.target, timeout=30) as client:
        completed = client.upload(path, "resumed", options=UploadOptions(format="csv"), on_progress=progress)
        assert outage, "the upload ended before the outage"
        outage[0].join()
        assert completed.size_bytes == path.stat().st_size
        assert completed.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        job = client.wait(completed.job.id)
    assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error.message
    assert job.ingest.row_count == 1_500_000
