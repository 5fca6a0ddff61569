from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.unit.types.helpers import check_arrow_type, check_chunking, check_unique, values, violations

CASES: list[tuple[str, dict[str, Any]]] = [
    ("uuid7", {}),
    ("uuid7", {"start": "2030-06-01T12:00:00+02:00", "step_ms": 0.25}),
    ("ulid", {}),
    ("hex", {}),
    ("hex", {"length": 64, "uppercase": True}),
    ("object_id", {}),
    ("random_string", {}),
    ("random_string", {"alphabet": "αβγ✓", "min_length": 0, "max_length": 3}),
    ("nanoid", {}),
]
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_makes_its_declared_arrow_type(type_name: str, params: dict[str, Any]) -> None:
    check_arrow_type(type_name, params)


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_rows_do_not_depend_on_the_chunking(type_name: str, params: dict[str, Any]) -> None:
    check_chunking(type_name, params)


@pytest.mark.parametrize(
    ("type_name", "params", "path", "message"),
    [
        ("uuid7", {"step_ms": -1}, "step_ms", "greater than or equal to 0"),
        ("uuid7", {"start": "1969-12-31T23:59:59Z"}, "start", "must not be before 1970"),
        ("ulid", {"start": "2000-01-01T00:00:00Z", "step_ms": 1e12}, "step_ms", "48-bit millisecond clock"),
        ("ulid", {"start": "2024-01-01T00:00:00"}, "start", "timezone"),
        ("hex", {"length": 0}, "length", "greater than or equal to 1"),
        ("hex", {"length": 16.5}, "length", "valid integer"),
        ("object_id", {"end": "2019-01-01T00:00:00Z"}, "end", "must not be before start"),
        ("object_id", {"end": "2107-01-01T00:00:00Z"}, "end", "32-bit seconds"),
        ("random_string", {"alphabet": "abca"}, "alphabet", "must not repeat a character"),
        ("random_string", {"alphabet": ""}, "alphabet", "at least 1 character"),
        ("random_string", {"min_length": 5, "max_length": 4}, "max_length", "must be >= min_length (5)"),
        ("nanoid", {"size": 1}, "size", "greater than or equal to 2"),
        ("nanoid", {"alphabet": "ab"}, "alphabet", "unknown parameter"),
    ],
)
def test_bad_params_are_rejected_on_the_param(type_name: str, params: dict[str, Any], path: str, message: str) -> None:
    found = violations(type_name, params, rows=1_000)
    assert list(found) == [path]
    assert message in found[path]


@pytest.mark.parametrize(
    ("type_name", "params", "domain"),
    [
        ("uuid7", {"step_ms": 0}, None),
        ("ulid", {"step_ms": 0}, None),
        ("object_id", {"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T00:00:00Z"}, None),
        ("hex", {"length": 3}, 16**3),
        ("hex", {}, None),
        ("nanoid", {"size": 2}, 64**2),
        ("nanoid", {}, None),
    ],
)
def test_unique_values_are_distinct(type_name: str, params: dict[str, Any], domain: int | None) -> None:
    check_unique(type_name, params, domain)


def test_uuid7_is_a_version_7_uuid_whose_time_follows_the_row() -> None:
    start = datetime(2024, 5, 1, tzinfo=UTC)
    made = [uuid.UUID(bytes=b) for b in values("uuid7", {"start": start.isoformat(), "step_ms": 2.5}, start=100)]
    assert {u.version for u in made} == {7}
    assert {u.variant for u in made} == {uuid.RFC_4122}
    start_ms = int(start.timestamp() * 1000)
    assert [u.int >> 80 for u in made] == [start_ms + int(row * 2.5) for row in range(100, 2_100)]
    assert made == sorted(made, key=lambda u: u.int >> 80)


def test_ulid_is_crockford_base32_in_row_order() -> None:
    made = values("ulid", {"start": "2024-05-01T00:00:00Z", "step_ms": 1000})
    assert all(re.fullmatch(f"[0-7][{CROCKFORD}]{{25}}", v) for v in made)
    assert made == sorted(made)  # one row per second: the time prefix orders them
    millis = [sum(CROCKFORD.index(c) * 32 ** (9 - i) for i, c in enumerate(v[:10])) for v in made[:3]]
    start_ms = int(datetime(2024, 5, 1, tzinfo=UTC).timestamp() * 1000)
    assert millis == [start_ms, start_ms + 1000, start_ms + 2000]


@pytest.mark.parametrize(("length", "uppercase"), [(1, False), (32, False), (40, True), (64, False), (100, True)])
def test_hex_has_the_length_and_case(length: int, uppercase: bool) -> None:
    made = values("hex", {"length": length, "uppercase": uppercase})
    digits = "[0-9A-F]" if uppercase else "[0-9a-f]"
    assert all(re.fullmatch(f"{digits}{{{length}}}", v) for v in made)
    assert len(set("".join(made))) == 16  # every digit occurs


def test_object_id_starts_with_its_creation_time() -> None:
    params = {"start": "2021-03-04T05:06:07Z", "end": "2021-03-05T00:00:00Z"}
    made = values("object_id", params)
    assert all(re.fullmatch("[0-9a-f]{24}", v) for v in made)
    seconds = [int(v[:8], 16) for v in made]
    assert min(seconds) >= int(datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC).timestamp())
    assert max(seconds) <= int(datetime(2021, 3, 5, tzinfo=UTC).timestamp())


@pytest.mark.parametrize(("alphabet", "low", "high"), [("ab", 0, 3), ("0123456789", 5, 5), ("é✓漢", 1, 4)])
def test_random_string_draws_from_its_alphabet(alphabet: str, low: int, high: int) -> None:
    made = values("random_string", {"alphabet": alphabet, "min_length": low, "max_length": high})
    assert {len(v) for v in made} == set(range(low, high + 1))
    assert set("".join(made)) == set(alphabet)


def test_nanoid_is_url_safe() -> None:
    made = values("nanoid", {"size": 30})
    assert all(re.fullmatch("[A-Za-z0-9_-]{30}", v) for v in made)
    assert len(set("".join(made))) == 64
