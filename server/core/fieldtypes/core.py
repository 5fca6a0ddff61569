"""The first types: integers, floats, booleans, sequences, uuid4, choices and timestamps."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import Field

from server.core.fieldtypes.base import (
    INT64_MAX,
    INT64_MIN,
    FieldParams,
    FieldType,
    Int64,
    IntParam,
    NoParams,
    Timestamp,
    declare,
)

_MICROSECOND = timedelta(microseconds=1)


class IntegerParams(FieldParams):
    """Uniform integers in [min, max]."""

    min: Int64 = Field(0, description="smallest value")
    max: Int64 = Field(1_000_000, description="largest value")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.min > self.max:
            yield "max", f"must be >= min ({self.min})"

    def domain(self, locale: str) -> int | None:
        return self.max - self.min + 1


class FloatParams(FieldParams):
    """Uniform floats in [min, max), rounded to `decimals` places when given."""

    min: float = Field(0.0, description="lower bound (included)")
    max: float = Field(1.0, description="upper bound (excluded)")
    decimals: Annotated[IntParam, Field(ge=0, le=15, description="round to this many decimal places")] | None = None

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.min > self.max:
            yield "max", f"must be >= min ({self.min})"
        elif self.max - self.min == float("inf"):
            yield "max", "max - min must be a finite float"


class BooleanParams(FieldParams):
    probability: Annotated[float, Field(ge=0.0, le=1.0, description="chance of true")] = 0.5

    def domain(self, locale: str) -> int | None:
        return 2


class SequenceParams(FieldParams):
    start: Int64 = Field(1, description="value of the first row")
    step: Int64 = Field(1, description="difference between consecutive rows; not 0")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.step == 0:
            yield "step", "must not be 0"
        elif not INT64_MIN <= self.start + self.step * (rows - 1) <= INT64_MAX:
            yield "step", f"the sequence overflows a 64-bit integer within {rows} rows"


class ChoiceParams(FieldParams):
    values: Annotated[list[str], Field(min_length=1, max_length=10_000, description="the values to pick from")]
    weights: list[Annotated[float, Field(ge=0.0)]] | None = Field(
        None, description="relative weight of each value (same length as values); uniform when absent"
    )

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if len(set(self.values)) != len(self.values):
            yield "values", "must not repeat a value"
        if self.weights is None:
            return
        if len(self.weights) != len(self.values):
            yield "weights", f"has {len(self.weights)} entries but values has {len(self.values)}"
        elif not sum(self.weights) > 0:
            yield "weights", "must have a positive sum"

    def domain(self, locale: str) -> int | None:
        return len(self.values)


class TimestampParams(FieldParams):
    start: Timestamp = Field(datetime(2020, 1, 1, tzinfo=UTC), description="earliest instant (ISO-8601 with zone)")
    end: Timestamp = Field(datetime(2025, 1, 1, tzinfo=UTC), description="latest instant (ISO-8601 with zone)")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.start > self.end:
            yield "end", f"must not be before start ({self.start.isoformat()})"

    def domain(self, locale: str) -> int | None:
        return (self.end - self.start) // _MICROSECOND + 1


declare(
    FieldType("integer", "numbers", "uniform integers in a range", IntegerParams, "integer", "bigint", True),
    FieldType("float", "numbers", "uniform floats in a range", FloatParams, "float", "double precision"),
    FieldType("boolean", "numbers", "true with a probability", BooleanParams, "boolean", "boolean", True),
    FieldType("uuid4", "identifiers", "random UUID version 4", NoParams, "uuid", "uuid", True),
    FieldType("sequence", "identifiers", "start + step * row number", SequenceParams, "integer", "bigint", True),
    FieldType("choice", "choice", "one of a list, optionally weighted", ChoiceParams, "text", "text", True),
    FieldType(
        "timestamp",
        "dates and times",
        "uniform instants in a range",
        TimestampParams,
        "timestamp",
        "timestamp with time zone",
        True,
    ),
)
