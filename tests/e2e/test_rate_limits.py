"""Per-tenant rate limits on a real server, Redis and worker: RESOURCE_EXHAUSTED with RetryInfo and QuotaFailure."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from client import Client
from client.errors import DatamillError
from tests.e2e.test_auth import AUDIENCE, SCHEMA, SECRET, token


def test_a_tenant_over_its_write_rate_is_told_when_to_retry_and_others_are_not_slowed(stack_factory: Any) -> None:
    stack = stack_factory(
        settings={
            "DATAMILL_AUTH": "required",
            "DATAMILL_JWT_SECRET": SECRET,
            "DATAMILL_JWT_AUDIENCE": AUDIENCE,
            "DATAMILL_RATE_LIMIT_WRITE_PER_SECOND": "0.5",
            "DATAMILL_RATE_LIMIT_WRITE_BURST": "2",
        }
    )
    acme = [("authorization", f"Bearer {token(tenant='acme')}")]
    rival = [("authorization", f"Bearer {token(tenant='rival')}")]
    with Client.connect(stack.target, metadata=acme) as client, Client.connect(stack.target, metadata=rival) as other:
        first = client.generate("one", schema=SCHEMA)
        client.generate("two", schema=SCHEMA)
        with pytest.raises(DatamillError) as exc:
            client.generate("three", schema=SCHEMA)
        error = exc.value
        assert error.code is grpc.StatusCode.RESOURCE_EXHAUSTED and error.reason == "RATE_LIMITED"
        assert error.retry_delay is not None and 0 < error.retry_delay <= 2.0
        assert error.status is not None
        failure = error_details_pb2.QuotaFailure()
        assert sum(detail.Unpack(failure) for detail in error.status.details) == 1
        assert [v.subject for v in failure.violations] == ["tenant:acme"]

        assert client.get_job(first.id).id == first.id  # reads have a bucket of their own
        assert other.generate("theirs", schema=SCHEMA).id  # another tenant is not slowed down

        time.sleep(error.retry_delay + 0.1)
        assert client.generate("three", schema=SCHEMA).id  # after the advised delay
    log = (stack.logs / "server.log").read_text()
    assert '"outcome": "RESOURCE_EXHAUSTED"' in log  # audited
