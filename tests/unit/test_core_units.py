"""Unit tests of core pieces that need no services: page tokens, retry delays,
the error → status mapping and the watch inbox."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2

from server.api.errors import GRPC_CODES, stored_error_to_status, to_status
from server.core import paging
from server.core.errors import Code, FieldViolation, InvalidArgument, NotFound, Unavailable
from server.core.events import RESYNC, Inbox
from server.core.models import EventRow
from server.core.retry import backoff_seconds


def test_page_token_round_trip_and_rejection() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    item = uuid.uuid4()
    assert paging.decode_token(paging.encode_token(created, item)) == (created, item)
    assert paging.decode_token("") is None
    with pytest.raises(InvalidArgument) as caught:
        paging.decode_token("not-a-token")
    assert caught.value.violations[0].field == "page_token"
    assert paging.page_size(0) == paging.DEFAULT_PAGE_SIZE
    with pytest.raises(InvalidArgument):
        paging.page_size(paging.MAX_PAGE_SIZE + 1)


def test_backoff_grows_exponentially_within_jitter_bounds() -> None:
    for attempt, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (10, 60.0)]:
        delays = [backoff_seconds(attempt, base=2.0, cap=60.0) for _ in range(200)]
        assert all(1.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spreads over the range


def test_every_code_maps_to_a_grpc_status_code() -> None:
    assert set(GRPC_CODES) == set(Code)
    assert GRPC_CODES[Code.NOT_FOUND] is grpc.StatusCode.NOT_FOUND


def _details(status: object) -> dict[str, object]:
    found: dict[str, object] = {}
    for any_detail in status.details:  # type: ignore[attr-defined]
        for cls in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
            if any_detail.Is(cls.DESCRIPTOR):
                message = cls()
                any_detail.Unpack(message)
                found[cls.__name__] = message
    return found


def test_invalid_argument_carries_every_field_violation() -> None:
    exc = InvalidArgument([FieldViolation("schema.rows", "too small"), FieldViolation("schema.fields[2].type", "bad")])
    status = to_status(exc)
    assert status.code == code_pb2.INVALID_ARGUMENT
    details = _details(status)
    violations = details["BadRequest"].field_violations  # type: ignore[attr-defined]
    assert [(v.field, v.description) for v in violations] == [
        ("schema.rows", "too small"),
        ("schema.fields[2].type", "bad"),
    ]
    assert details["ErrorInfo"].domain == "datamill.dev"  # type: ignore[attr-defined]


def test_retryable_errors_carry_retry_info_and_not_found_names_the_resource() -> None:
    details = _details(to_status(Unavailable("db down", retry_after=1.5)))
    assert details["RetryInfo"].retry_delay.ToNanoseconds() == 1_500_000_000  # type: ignore[attr-defined]
    info = _details(to_status(NotFound("job", "abc")))["ErrorInfo"]
    assert dict(info.metadata) == {"resource_type": "job", "resource_name": "abc"}  # type: ignore[attr-defined]


def test_stored_job_error_becomes_status() -> None:
    status = stored_error_to_status(
        {"code": "UNAVAILABLE", "message": "lease", "reason": "LEASE_EXPIRED", "metadata": {}}
    )
    assert status.code == code_pb2.UNAVAILABLE and status.message == "lease"
    assert _details(status)["ErrorInfo"].reason == "LEASE_EXPIRED"  # type: ignore[attr-defined]


def _event(seq: int) -> EventRow:
    now = datetime.now(UTC).isoformat()
    job_id = "6a1f5a0e-0000-4000-8000-000000000001"
    snapshot = {
        "id": job_id,
        "tenant": "t",
        "kind": "GENERATE",
        "state": "RUNNING",
        "request_id": None,
        "dataset_id": None,
        "dataset_name": "d",
        "progress_done": seq,
        "progress_total": 10,
        "progress_unit": "ROWS",
        "attempt": 1,
        "max_attempts": 3,
        "cancel_requested": False,
        "result": None,
        "error": None,
        "event_seq": seq,
        "created_at": now,
        "started_at": now,
        "updated_at": now,
        "finished_at": None,
    }
    return EventRow.from_row(
        {"job_id": job_id, "seq": seq, "type": "PROGRESS", "created_at": now, "snapshot": snapshot}
    )


async def test_inbox_delivers_in_order_and_overflows_into_a_resync() -> None:
    inbox = Inbox(maxsize=3)
    for seq in (1, 2):
        inbox.push(_event(seq))
    assert (await inbox.get()).seq == 1  # type: ignore[union-attr]
    assert (await inbox.get()).seq == 2  # type: ignore[union-attr]
    for seq in range(3, 10):  # more than fit: the inbox gives up on them and asks for a resync
        inbox.push(_event(seq))
    assert await inbox.get() is RESYNC
    # What arrived after the overflow is kept, in order; the resync replay dedupes by sequence.
    assert [(await inbox.get()).seq for _ in range(3)] == [7, 8, 9]  # type: ignore[union-attr]
    waiter = asyncio.ensure_future(inbox.get())
    await asyncio.sleep(0)
    assert not waiter.done()
    inbox.push(_event(10))
    assert (await asyncio.wait_for(waiter, 1)).seq == 10  # type: ignore[union-attr]
