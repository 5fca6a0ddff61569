"""Statuses the server builds: NUL characters refused up front, and echoed input clipped to a safe size."""

from __future__ import annotations

import pytest
from google.rpc import error_details_pb2

from datamill.v1 import job_service_pb2
from server.api.errors import MAX_DETAIL_CHARS, MAX_MESSAGE_CHARS, check_text, nul_violations, to_status
from server.core.errors import FieldViolation, InvalidArgument, NotFound


def test_nul_characters_are_found_in_nested_and_repeated_strings() -> None:
    request = job_service_pb2.ExportRequest(dataset="ok", columns=["a", "b\x00"], request_id="r\x00")
    request.csv_options.delimiter = "\x00"
    fields = [v.field for v in nul_violations(request)]
    assert sorted(fields) == ["columns[1]", "csv_options.delimiter", "request_id"]
    with pytest.raises(InvalidArgument) as exc:
        check_text(request)
    assert [v.field for v in exc.value.violations] == fields


def test_a_request_without_nul_passes() -> None:
    check_text(job_service_pb2.ExportRequest(dataset="données", columns=["名前"]))
    check_text(object())  # not a message (a request stream): nothing to check


def test_echoed_input_is_clipped_so_the_status_fits_in_trailers() -> None:
    huge = "x" * 10_000
    status = to_status(NotFound("dataset", huge))
    assert len(status.message) <= MAX_MESSAGE_CHARS
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert all(len(value) <= MAX_DETAIL_CHARS for value in info.metadata.values())
    assert status.ByteSize() < 4096

    bad = to_status(InvalidArgument([FieldViolation(huge, huge)], huge))
    request = error_details_pb2.BadRequest()
    assert bad.details[1].Unpack(request)
    violation = request.field_violations[0]
    assert len(violation.field) <= MAX_DETAIL_CHARS and len(violation.description) <= MAX_DETAIL_CHARS
    assert violation.description.endswith("…")
