"""Per-tenant quotas on a real server: set with the CLI, refused with RESOURCE_EXHAUSTED and QuotaFailure."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from google.rpc import error_details_pb2

from client import Client, RetryPolicy
from client.cli import cli
from client.errors import DatamillError
from datamill.v1 import job_service_pb2 as pb
from datamill.v1 import job_service_pb2_grpc
from tests.e2e.conftest import Stack
from tests.e2e.test_auth import AUDIENCE, SCHEMA, SECRET, token

AUTH = {"DATAMILL_AUTH": "required", "DATAMILL_JWT_SECRET": SECRET, "DATAMILL_JWT_AUDIENCE": AUDIENCE}


def quotas_cli(stack: Stack, *args: str) -> list[dict[str, Any]]:
    result = CliRunner().invoke(cli, ["--json", "quotas", "--database-url", stack.database_url, *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def violation(error: DatamillError) -> list[str]:
    assert error.status is not None
    failure = error_details_pb2.QuotaFailure()
    assert sum(detail.Unpack(failure) for detail in error.status.details) == 1
    return [v.subject for v in failure.violations]


def test_quotas_set_with_the_cli_refuse_generates_and_uploads_of_that_tenant_only(
    stack_factory: Any, tmp_path: Path
) -> None:
    # No worker: a submitted job stays QUEUED, so it holds its place in concurrent_jobs.
    stack: Stack = stack_factory(settings={**AUTH, "DATAMILL_QUOTA_GENERATE_ROWS": "20"}, workers=0)
    assert quotas_cli(stack, "set", "acme", "--concurrent-jobs", "1", "--upload-bytes", "1000") == [
        {"tenant": "acme", "concurrent_jobs": 1, "generate_rows": None, "upload_bytes": 1000, "datasets": None}
    ]
    assert [row["tenant"] for row in quotas_cli(stack, "list")] == ["acme"]
    acme = [("authorization", f"Bearer {token(tenant='acme')}")]
    rival = [("authorization", f"Bearer {token(tenant='rival')}")]
    once = RetryPolicy(max_attempts=1)
    with (
        Client.connect(stack.target, metadata=acme, retry=once) as client,
        Client.connect(stack.target, metadata=rival, retry=once) as other,
    ):
        with pytest.raises(DatamillError) as rows:  # the server's default: 20 rows per Generate
            client.generate("big", schema={**SCHEMA, "rows": 21})
        assert rows.value.code is grpc.StatusCode.RESOURCE_EXHAUSTED and rows.value.reason == "QUOTA_EXCEEDED"
        assert rows.value.metadata["quota"] == "generate_rows" and rows.value.retry_delay is None
        assert violation(rows.value) == ["tenant:acme/generate_rows"]

        client.generate("one", schema=SCHEMA)
        with pytest.raises(DatamillError) as busy:
            client.generate("two", schema=SCHEMA)
        assert busy.value.metadata == {"tenant": "acme", "quota": "concurrent_jobs", "limit": "1", "requested": "2"}
        assert busy.value.retry_delay == pytest.approx(1.0)
        assert violation(busy.value) == ["tenant:acme/concurrent_jobs"]
        assert other.generate("theirs", schema=SCHEMA).id  # rival keeps the default of 1000

        quotas_cli(stack, "set", "acme", "--concurrent-jobs", "default")
        path = tmp_path / "big.csv"
        path.write_text("n\n" + "1\n" * 1000)
        with pytest.raises(DatamillError) as declared:
            client.upload(path, "up", options=None)
        assert declared.value.metadata["quota"] == "upload_bytes" and declared.value.metadata["requested"] == "2002"
    assert stack.sql("SELECT count(*) FROM uploads") == [(0,)]  # refused before any byte was stored
    assert stack.sql("SELECT tenant, count(*) FROM jobs GROUP BY tenant ORDER BY tenant") == [("acme", 1), ("rival", 1)]


def test_an_upload_that_declares_no_size_is_stopped_at_the_quota(stack_factory: Any) -> None:
    stack: Stack = stack_factory(settings={**AUTH, "DATAMILL_QUOTA_UPLOAD_BYTES": "1000"}, workers=0)

    def requests() -> Iterator[pb.UploadRequest]:
        yield pb.UploadRequest(header=pb.UploadHeader(dataset_name="raw", format=pb.FILE_FORMAT_CSV, file_name="f.csv"))
        for offset in range(0, 1200, 600):
            yield pb.UploadRequest(chunk=pb.UploadChunk(write_offset=offset, data=b"n\n" * 300))

    with grpc.insecure_channel(stack.target) as channel:
        call = job_service_pb2_grpc.JobServiceStub(channel).Upload(
            requests(), metadata=(("authorization", f"Bearer {token(tenant='acme')}"),), timeout=30
        )
        with pytest.raises(grpc.RpcError) as refused:
            list(call)
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "upload_bytes quota: 1200 > 1000" in (refused.value.details() or "")
    assert stack.sql("SELECT state FROM uploads") == [("ABORTED",)]
