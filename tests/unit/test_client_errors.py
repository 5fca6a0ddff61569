"""A gRPC status with google.rpc details becomes the right typed error, with every detail read."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.rpc import status_pb2

from client import errors
from client.errors import (
    CallCancelledError,
    DatamillError,
    FieldViolation,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
    from_rpc_error,
    from_status,
)
from datamill.v1 import job_service_pb2, job_service_pb2_grpc, schema_pb2
from tests.unit.test_client_fakes import FakeServer, rich_status


class _FakeRpcError(grpc.RpcError, grpc.Call):
    """What a failed sync call raises: an RpcError that is also a Call."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, str | bytes], ...] = ()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> Any:
        return self._trailing

    def initial_metadata(self):  # pragma: no cover - unused
        return ()

    def is_active(self) -> bool:  # pragma: no cover - unused
        return False

    def time_remaining(self) -> float:  # pragma: no cover - unused
        return 0.0

    def cancel(self) -> bool:  # pragma: no cover - unused
        return False

    def add_callback(self, callback) -> bool:  # pragma: no cover - unused
        return False


def _rpc_error(status: status_pb2.Status) -> _FakeRpcError:
    code = next(c for c in grpc.StatusCode if c.value[0] == status.code)
    return _FakeRpcError(code, status.message, (("grpc-status-details-bin", status.SerializeToString()),))


def test_invalid_argument_carries_field_violations_and_error_info() -> None:
    status = rich_status(
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid schema",
        reason="INVALID_SCHEMA",
        violations=[("schema.fields[2].type", "unknown type 'nope'"), ("schema.rows", "must be at least 1")],
        metadata={"dataset_name": "people"},
    )

    error = from_rpc_error(_rpc_error(status))

    assert isinstance(error, InvalidArgumentError)
    assert error.code is grpc.StatusCode.INVALID_ARGUMENT
    assert error.message == "invalid schema"
    assert error.reason == "INVALID_SCHEMA"
    assert error.domain == "datamill.dev"
    assert error.metadata == {"dataset_name": "people"}
    assert error.field_violations == [
        FieldViolation("schema.fields[2].type", "unknown type 'nope'"),
        FieldViolation("schema.rows", "must be at least 1"),
    ]
    assert error.retry_delay is None
    assert str(error) == "INVALID_ARGUMENT: invalid schema"


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
def test_retry_info_becomes_retry_delay(code: grpc.StatusCode) -> None:
    error = from_rpc_error(_rpc_error(rich_status(code, "busy", retry_delay=2.5)))

    assert isinstance(error, UnavailableError | ResourceExhaustedError)
    assert error.retry_delay == pytest.approx(2.5)


def test_every_code_but_ok_has_its_own_class() -> None:
    for code in grpc.StatusCode:
        if code is grpc.StatusCode.OK:
            continue
        cls = errors.error_class(code)
        assert cls is not DatamillError, code
        assert cls.code is code
        error = from_rpc_error(_FakeRpcError(code, "plain"))
        assert type(error) is cls
        assert error.code is code


def test_error_without_details_keeps_code_and_message() -> None:
    error = from_rpc_error(_FakeRpcError(grpc.StatusCode.NOT_FOUND, "job 'x' not found"))

    assert isinstance(error, NotFoundError)
    assert error.message == "job 'x' not found"
    assert error.reason == ""
    assert error.field_violations == []
    assert error.status is None


def test_malformed_details_do_not_hide_the_error() -> None:
    broken = _FakeRpcError(grpc.StatusCode.CANCELLED, "gone", (("grpc-status-details-bin", b"\xff\xff\xff"),))

    error = from_rpc_error(broken)

    assert isinstance(error, CallCancelledError)
    assert error.message == "gone"


def test_bare_rpc_error_becomes_unknown() -> None:
    error = from_rpc_error(grpc.RpcError())

    assert isinstance(error, errors.UnknownError)


def test_from_status_reads_a_job_error() -> None:
    error = from_status(rich_status(grpc.StatusCode.NOT_FOUND, "no such job", reason="JOB_NOT_FOUND"))

    assert isinstance(error, NotFoundError)
    assert error.reason == "JOB_NOT_FOUND"


async def test_aio_call_error_is_converted_with_details() -> None:
    """Through a real grpc.aio call, not a hand-made error."""
    server = FakeServer()
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.target) as channel:
            stub = job_service_pb2_grpc.JobServiceStub(channel)
            request = job_service_pb2.GenerateRequest(
                dataset_name="people", schema=schema_pb2.Schema(rows=1, fields=[schema_pb2.Field(name="a", type="?")])
            )
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Generate(request)
    finally:
        await server.stop()

    error = from_rpc_error(caught.value)

    assert isinstance(error, InvalidArgumentError)
    assert error.field_violations == [FieldViolation("schema.fields[0].type", "unknown type '?'")]
