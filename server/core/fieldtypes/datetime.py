"""Dates, times of day, durations, local and Unix times, birth dates, and calendar names."""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator

from server.core import vocab
from server.core.fieldtypes.base import FieldParams, FieldType, IntParam, NoParams, Timestamp, declare

UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DAY = timedelta(days=1)
_MICROSECOND = timedelta(microseconds=1)
MICROS_PER_UNIT = {"second": 1_000_000, "millisecond": 1_000, "microsecond": 1}
Precision = Literal["second", "millisecond", "microsecond"]
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")  # fmt: skip
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _require_iso_date(value: Any) -> Any:
    if isinstance(value, datetime) or not isinstance(value, str | date):
        raise ValueError("must be an ISO-8601 date string, e.g. 2024-01-31")
    return value


def _require_iso_time(value: Any) -> Any:
    if not isinstance(value, str | time):
        raise ValueError("must be a time of day as an ISO-8601 string, e.g. 08:30:00")
    return value


def _require_iso_duration(value: Any) -> Any:
    if not isinstance(value, str | timedelta):
        raise ValueError("must be an ISO-8601 duration string, e.g. PT30M or P2DT12H")
    return value


IsoDate = Annotated[date, BeforeValidator(_require_iso_date), Field(strict=False)]
IsoTime = Annotated[time, BeforeValidator(_require_iso_time), Field(strict=False)]
IsoDuration = Annotated[timedelta, BeforeValidator(_require_iso_duration), Field(strict=False)]


def days_since_epoch(day: date) -> int:
    return (day - UNIX_EPOCH.date()).days


def epoch_micros(instant: datetime) -> int:
    return (instant - UNIX_EPOCH) // _MICROSECOND


def time_micros(value: time) -> int:
    return ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond


def years_before(day: date, years: int) -> date:
    """The same day `years` earlier; 29 February becomes the 28th in a common year."""
    try:
        return day.replace(year=day.year - years)
    except ValueError:
        return day.replace(year=day.year - years, day=28)


class DateParams(FieldParams):
    start: IsoDate = Field(date(2020, 1, 1), description="earliest date (ISO-8601, e.g. 2020-01-01)")
    end: IsoDate = Field(date(2024, 12, 31), description="latest date")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.start > self.end:
            yield "end", f"must not be before start ({self.start.isoformat()})"

    def domain(self, locale: str) -> int | None:
        return (self.end - self.start).days + 1


class TimeParams(FieldParams):
    """Times of day in [start, end], whole multiples of the precision."""

    start: IsoTime = Field(time(0, 0), description="earliest time of day (e.g. 08:00:00)")
    end: IsoTime = Field(time(23, 59, 59), description="latest time of day")
    precision: Precision = Field("second", description="second, millisecond or microsecond")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        for name in ("start", "end"):
            if getattr(self, name).tzinfo is not None:
                yield name, "must not have a UTC offset"
        low, high = self.steps
        if low > high:
            yield "end", f"must be after start ({self.start.isoformat()}) by at least one {self.precision}"

    @property
    def steps(self) -> tuple[int, int]:
        """The range in multiples of the precision."""
        unit = MICROS_PER_UNIT[self.precision]
        return -(-time_micros(self.start) // unit), time_micros(self.end) // unit

    def domain(self, locale: str) -> int | None:
        low, high = self.steps
        return high - low + 1


class IntervalParams(FieldParams):
    """Durations in [min, max], whole multiples of the precision; whole days go in the interval's days."""

    min: IsoDuration = Field(timedelta(0), description="shortest duration (ISO-8601, e.g. PT0S)")
    max: IsoDuration = Field(timedelta(days=7), description="longest duration (e.g. P7D, PT36H)")
    precision: Precision = Field("second", description="second, millisecond or microsecond")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        low, high = self.steps
        if self.min > self.max:
            yield "max", "must not be shorter than min"
        elif low > high:
            yield "max", f"must be longer than min by at least one {self.precision}"

    @property
    def steps(self) -> tuple[int, int]:
        unit = MICROS_PER_UNIT[self.precision]
        return -(-(self.min // _MICROSECOND) // unit), (self.max // _MICROSECOND) // unit


@cache
def _known_zone(name: str) -> bool:
    if name == "Factory":  # tzdata's placeholder for "no zone set"; Arrow's time zone library lacks it
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


class TimestampLocalParams(FieldParams):
    """Instants in [start, end], written as the wall-clock time of a time zone."""

    start: Timestamp = Field(datetime(2020, 1, 1, tzinfo=UTC), description="earliest instant (ISO-8601 with zone)")
    end: Timestamp = Field(datetime(2025, 1, 1, tzinfo=UTC), description="latest instant (ISO-8601 with zone)")
    timezone: str = Field("UTC", description="IANA time zone whose local time is stored, e.g. Europe/Paris")

    @field_validator("timezone")
    @classmethod
    def _known(cls, value: str) -> str:
        if not _known_zone(value):
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. Europe/Paris, America/New_York, UTC)")
        return value

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.start > self.end:
            yield "end", f"must not be before start ({self.start.isoformat()})"


class UnixTimeParams(FieldParams):
    start: Timestamp = Field(datetime(2020, 1, 1, tzinfo=UTC), description="earliest instant (ISO-8601 with zone)")
    end: Timestamp = Field(datetime(2025, 1, 1, tzinfo=UTC), description="latest instant (ISO-8601 with zone)")
    unit: Precision = Field("second", description="count seconds, milliseconds or microseconds since 1970")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        low, high = self.steps
        if self.start > self.end:
            yield "end", f"must not be before start ({self.start.isoformat()})"
        elif low > high:
            yield "end", f"must be after start by at least one {self.unit}"

    @property
    def steps(self) -> tuple[int, int]:
        unit = MICROS_PER_UNIT[self.unit]
        return -(-epoch_micros(self.start) // unit), epoch_micros(self.end) // unit

    def domain(self, locale: str) -> int | None:
        low, high = self.steps
        return high - low + 1


class DateOfBirthParams(FieldParams):
    """Birth dates of people aged min_age to max_age (in whole years) on reference_date."""

    min_age: IntParam = Field(18, ge=0, le=150, description="youngest age in whole years")
    max_age: IntParam = Field(80, ge=0, le=150, description="oldest age in whole years")
    reference_date: IsoDate = Field(
        date(2025, 1, 1), description="the day the ages hold on (fixed, so that rows do not change with the clock)"
    )

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.min_age > self.max_age:
            yield "max_age", f"must be >= min_age ({self.min_age})"
        elif self.reference_date.year - self.max_age - 1 < 1:
            yield "reference_date", "is too early for max_age"

    @property
    def dates(self) -> tuple[date, date]:
        """The earliest and latest birth dates."""
        return years_before(self.reference_date, self.max_age + 1) + _DAY, years_before(
            self.reference_date, self.min_age
        )

    def domain(self, locale: str) -> int | None:
        earliest, latest = self.dates
        return (latest - earliest).days + 1


class YearParams(FieldParams):
    min: IntParam = Field(1950, ge=1, le=9999, description="earliest year")
    max: IntParam = Field(2030, ge=1, le=9999, description="latest year")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.min > self.max:
            yield "max", f"must be >= min ({self.min})"

    def domain(self, locale: str) -> int | None:
        return self.max - self.min + 1


class MonthNameParams(FieldParams):
    abbreviated: bool = Field(False, description="three letters (Jan) instead of the full name (January)")

    def domain(self, locale: str) -> int | None:
        return len(MONTHS)


class WeekdayNameParams(FieldParams):
    abbreviated: bool = Field(False, description="three letters (Mon) instead of the full name (Monday)")

    def domain(self, locale: str) -> int | None:
        return len(WEEKDAYS)


class TimezoneParams(NoParams):
    def domain(self, locale: str) -> int | None:
        return len(vocab.load("_global", "timezone").values)


declare(
    FieldType("date", "dates and times", "uniform dates in a range", DateParams, "date", "date", True),
    FieldType("time", "dates and times", "uniform times of day in a range", TimeParams, "time", "time", True),
    FieldType("interval", "dates and times", "uniform durations in a range", IntervalParams, "interval", "interval"),
    FieldType(
        "timestamp_local", "dates and times", "instants as the local wall-clock time of a time zone",
        TimestampLocalParams, "timestamp", "timestamp without time zone",
    ),
    FieldType(
        "unix_time", "dates and times", "instants as whole seconds (or ms, us) since 1970", UnixTimeParams,
        "integer", "bigint", True,
    ),
    FieldType(
        "date_of_birth", "dates and times", "birth dates for an age range on a reference date", DateOfBirthParams,
        "date", "date", True,
    ),
    FieldType("year", "dates and times", "uniform years in a range", YearParams, "integer", "bigint", True),
    FieldType("month_name", "dates and times", "an English month name", MonthNameParams, "text", "text", True),
    FieldType("weekday_name", "dates and times", "an English weekday name", WeekdayNameParams, "text", "text", True),
    FieldType("timezone", "dates and times", "an IANA time zone name", TimezoneParams, "text", "text", True),
    FieldType(
        "iso_date_string", "dates and times", "dates in a range as ISO-8601 text (2024-01-31)", DateParams,
        "text", "text", True,
    ),
)  # fmt: skip
