from __future__ import annotations

import re
import zoneinfo
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pyarrow as pa
import pytest

from server.core import vocab
from tests.unit.types.helpers import check_arrow_type, check_chunking, check_unique, column, values, violations

CASES: list[tuple[str, dict[str, Any]]] = [
    ("date", {}),
    ("time", {}),
    ("time", {"start": "08:00:00.5", "end": "08:00:01", "precision": "microsecond"}),
    ("interval", {}),
    ("interval", {"min": "-PT1H", "max": "P400D", "precision": "millisecond"}),
    ("timestamp_local", {}),
    ("timestamp_local", {"timezone": "Asia/Kolkata"}),
    ("unix_time", {}),
    ("unix_time", {"unit": "millisecond"}),
    ("date_of_birth", {}),
    ("year", {}),
    ("month_name", {}),
    ("weekday_name", {"abbreviated": True}),
    ("timezone", {}),
    ("iso_date_string", {}),
]


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_makes_its_declared_arrow_type(type_name: str, params: dict[str, Any]) -> None:
    check_arrow_type(type_name, params)


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_rows_do_not_depend_on_the_chunking(type_name: str, params: dict[str, Any]) -> None:
    check_chunking(type_name, params)


@pytest.mark.parametrize(
    ("type_name", "params", "path", "message"),
    [
        ("date", {"start": "2024-02-30"}, "start", "date"),
        ("date", {"start": 20240101}, "start", "ISO-8601 date string"),
        ("date", {"start": "2025-01-01", "end": "2024-01-01"}, "end", "must not be before start (2025-01-01)"),
        ("time", {"start": "25:00"}, "start", "time"),
        ("time", {"start": "10:00", "end": "09:00"}, "end", "must be after start"),
        ("time", {"start": "10:00:00.5", "end": "10:00:00.9"}, "end", "at least one second"),
        ("time", {"end": "10:00:00+02:00"}, "end", "UTC offset"),
        ("time", {"precision": "minute"}, "precision", "'second', 'millisecond' or 'microsecond'"),
        ("interval", {"max": "forever"}, "max", "valid timedelta"),
        ("interval", {"max": 3600}, "max", "ISO-8601 duration string"),
        ("interval", {"min": "P2D", "max": "P1D"}, "max", "must not be shorter than min"),
        ("timestamp_local", {"timezone": "Mars/Olympus_Mons"}, "timezone", "unknown IANA time zone"),
        ("timestamp_local", {"timezone": "../etc/passwd"}, "timezone", "unknown IANA time zone"),
        ("timestamp_local", {"start": "2026-01-01T00:00:00Z"}, "end", "must not be before start"),
        ("unix_time", {"unit": "day"}, "unit", "'second'"),
        ("unix_time", {"start": "2024-01-01T00:00:00.2Z", "end": "2024-01-01T00:00:00.7Z"}, "end", "one second"),
        ("date_of_birth", {"min_age": 50, "max_age": 40}, "max_age", "must be >= min_age (50)"),
        ("date_of_birth", {"max_age": 151}, "max_age", "less than or equal to 150"),
        ("date_of_birth", {"reference_date": "0050-01-01"}, "reference_date", "too early"),
        ("year", {"min": 2000, "max": 1999}, "max", "must be >= min (2000)"),
        ("year", {"max": 10_000}, "max", "less than or equal to 9999"),
        ("month_name", {"abbreviated": "yes"}, "abbreviated", "valid boolean"),
        ("timezone", {"region": "Europe"}, "region", "unknown parameter"),
        ("iso_date_string", {"end": "1999-01-01"}, "end", "must not be before start"),
    ],
)
def test_bad_params_are_rejected_on_the_param(type_name: str, params: dict[str, Any], path: str, message: str) -> None:
    found = violations(type_name, params)
    assert list(found) == [path]
    assert message in found[path]


@pytest.mark.parametrize(
    ("type_name", "params", "domain"),
    [
        ("date", {"start": "2024-01-01", "end": "2024-12-31"}, 366),
        ("iso_date_string", {"start": "2024-02-01", "end": "2024-02-29"}, 29),
        ("time", {"start": "10:00", "end": "10:59:59"}, 3_600),
        ("time", {"start": "10:00", "end": "10:00:01", "precision": "millisecond"}, 1_001),
        ("unix_time", {"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T01:00:00Z"}, 3_601),
        ("date_of_birth", {"min_age": 30, "max_age": 30, "reference_date": "2024-03-01"}, 365),
        ("year", {"min": 1900, "max": 1999}, 100),
        ("month_name", {}, 12),
        ("weekday_name", {"abbreviated": True}, 7),
        ("timezone", {}, len(vocab.load("_global", "timezone").values)),
    ],
)
def test_unique_values_are_distinct(type_name: str, params: dict[str, Any], domain: int | None) -> None:
    check_unique(type_name, params, domain)


def test_dates_cover_their_inclusive_range() -> None:
    made = values("date", {"start": "2024-02-27", "end": "2024-03-01"})
    assert set(made) == {date(2024, 2, 27), date(2024, 2, 28), date(2024, 2, 29), date(2024, 3, 1)}


def test_iso_date_strings_are_iso_dates_in_range() -> None:
    made = values("iso_date_string", {"start": "1999-12-30", "end": "2000-01-02"})
    assert set(made) == {"1999-12-30", "1999-12-31", "2000-01-01", "2000-01-02"}


@pytest.mark.parametrize(
    ("params", "step"),
    [
        ({"start": "09:00", "end": "17:00"}, timedelta(seconds=1)),
        ({"start": "23:59:59.998", "end": "23:59:59.999999", "precision": "millisecond"}, timedelta(milliseconds=1)),
        ({"start": "00:00:00.000001", "end": "00:00:00.000003", "precision": "microsecond"}, timedelta(microseconds=1)),
    ],
)
def test_times_are_multiples_of_the_precision_in_range(params: dict[str, Any], step: timedelta) -> None:
    made = values("time", params)
    start, end = time.fromisoformat(params["start"]), time.fromisoformat(params["end"])
    assert start <= min(made) <= max(made) <= end
    midnight = datetime(2000, 1, 1)
    assert all((datetime.combine(midnight, t) - midnight) % step == timedelta(0) for t in made)


def test_intervals_are_in_range_with_whole_days_in_the_day_field() -> None:
    made = column("interval", {"min": "-PT36H", "max": "P2DT1H"}, 5_000).to_pylist()
    assert all(v.months == 0 for v in made)
    spans = [timedelta(days=v.days, microseconds=v.nanoseconds // 1000) for v in made]
    assert timedelta(hours=-36) <= min(spans) <= max(spans) <= timedelta(days=2, hours=1)
    assert all(abs(v.nanoseconds) < 86_400 * 10**9 and v.nanoseconds % 10**9 == 0 for v in made)
    assert all(v.days * v.nanoseconds >= 0 for v in made)  # same sign: -1h is not -1 day + 23h


@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"])
def test_local_timestamps_are_the_wall_clock_of_the_zone(zone: str) -> None:
    params = {"start": "2024-03-01T00:00:00Z", "end": "2024-12-01T00:00:00Z", "timezone": zone}
    local = column("timestamp_local", params, 3_000)
    assert local.type == pa.timestamp("us")
    # The same rows of the plain timestamp type are the instants; zoneinfo converts them.
    instants = values("timestamp", {"start": params["start"], "end": params["end"]}, 3_000)
    expected = [i.astimezone(zoneinfo.ZoneInfo(zone)).replace(tzinfo=None) for i in instants]
    assert local.to_pylist() == expected


@pytest.mark.parametrize(("unit", "factor"), [("second", 1), ("millisecond", 1_000), ("microsecond", 1_000_000)])
def test_unix_time_counts_units_since_1970(unit: str, factor: int) -> None:
    params = {"start": "2024-01-01T00:00:00Z", "end": "2024-01-02T00:00:00Z", "unit": unit}
    made = values("unix_time", params)
    start = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
    assert start * factor <= min(made) <= max(made) <= (start + 86_400) * factor


def _age(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


@pytest.mark.parametrize(
    ("reference", "low", "high"), [("2025-01-01", 18, 80), ("2024-02-29", 0, 1), ("2023-03-01", 5, 5)]
)
def test_dates_of_birth_give_ages_in_range_on_the_reference_date(reference: str, low: int, high: int) -> None:
    params = {"min_age": low, "max_age": high, "reference_date": reference}
    made = values("date_of_birth", params, 5_000)
    ages = {_age(born, date.fromisoformat(reference)) for born in made}
    assert ages == set(range(low, high + 1))


def test_years_cover_their_range() -> None:
    assert set(values("year", {"min": 1999, "max": 2001})) == {1999, 2000, 2001}


@pytest.mark.parametrize(
    ("type_name", "abbreviated", "first"), [("month_name", False, "January"), ("weekday_name", True, "Mon")]
)
def test_calendar_names(type_name: str, abbreviated: bool, first: str) -> None:
    counts = Counter(values(type_name, {"abbreviated": abbreviated}, 7_000))
    assert first in counts
    assert len(counts) == (12 if type_name == "month_name" else 7)
    assert all(len(name) == 3 for name in counts) == abbreviated


def test_time_zones_are_known_to_zoneinfo() -> None:
    made = set(values("timezone", {}, 5_000))
    assert len(made) > 300
    for name in made:
        zoneinfo.ZoneInfo(name)
        assert re.fullmatch(r"[A-Za-z_]+(/[A-Za-z0-9_+-]+)*", name)
