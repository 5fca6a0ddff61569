"""The field-type catalogue: what each type is called, accepts and stores.

These are declarations only, so that the server validates a schema without the
worker's numpy code. `worker.engines.fieldtypes` registers one generator per
name here. Adding a type means a params model and a `FieldType` entry below,
and a generator there.

Params models are strict (no "5" for 5, no true for 1) except that an integral
float becomes an int, because protobuf's Struct carries every number as a double.
A model's `problems` reports checks that span several params, each naming the
param to blame, so that a violation's path points at it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def _integral_float_to_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _require_iso_string(value: Any) -> Any:
    if not isinstance(value, str | datetime):
        raise ValueError("must be an ISO-8601 string with a timezone, e.g. 2024-01-01T00:00:00Z")
    return value


Int64 = Annotated[int, BeforeValidator(_integral_float_to_int), Field(ge=INT64_MIN, le=INT64_MAX)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_require_iso_string), Field(strict=False)]


class FieldParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        """Checks across params (or against the row count), as (param name, description)."""
        return iter(())


class NoParams(FieldParams):
    pass


class IntegerParams(FieldParams):
    """Uniform integers in [min, max]."""

    min: Int64 = 0
    max: Int64 = 1_000_000

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.min > self.max:
            yield "max", f"must be >= min ({self.min})"


class FloatParams(FieldParams):
    """Uniform floats in [min, max), rounded to `decimals` places when given."""

    min: float = 0.0
    max: float = 1.0
    decimals: Annotated[int, BeforeValidator(_integral_float_to_int), Field(ge=0, le=15)] | None = None

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.min > self.max:
            yield "max", f"must be >= min ({self.min})"
        elif self.max - self.min == float("inf"):
            yield "max", "max - min must be a finite float"


class BooleanParams(FieldParams):
    """True with the given probability."""

    probability: Annotated[float, Field(ge=0.0, le=1.0)] = 0.5


class SequenceParams(FieldParams):
    """start, start + step, start + 2*step, ... by row number."""

    start: Int64 = 1
    step: Int64 = 1

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.step == 0:
            yield "step", "must not be 0"
        elif not INT64_MIN <= self.start + self.step * (rows - 1) <= INT64_MAX:
            yield "step", f"the sequence overflows a 64-bit integer within {rows} rows"


class ChoiceParams(FieldParams):
    """One of `values`, drawn uniformly or by `weights`."""

    values: Annotated[list[str], Field(min_length=1, max_length=10_000)]
    weights: list[Annotated[float, Field(ge=0.0)]] | None = None

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.weights is None:
            return
        if len(self.weights) != len(self.values):
            yield "weights", f"has {len(self.weights)} entries but values has {len(self.values)}"
        elif not sum(self.weights) > 0:
            yield "weights", "must have a positive sum"


class TextParams(FieldParams):
    """A sentence of English words, between min_words and max_words long."""

    min_words: Annotated[int, BeforeValidator(_integral_float_to_int), Field(ge=1, le=200)] = 3
    max_words: Annotated[int, BeforeValidator(_integral_float_to_int), Field(ge=1, le=200)] = 12

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.min_words > self.max_words:
            yield "max_words", f"must be >= min_words ({self.min_words})"


class TimestampParams(FieldParams):
    """Uniform instants in [start, end], to the microsecond."""

    start: Timestamp = datetime(2020, 1, 1, tzinfo=UTC)
    end: Timestamp = datetime(2025, 1, 1, tzinfo=UTC)

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.start > self.end:
            yield "end", f"must not be before start ({self.start.isoformat()})"


@dataclass(frozen=True, slots=True)
class FieldType:
    name: str
    params: type[FieldParams]
    logical_type: str  # as in the proto's Column.type
    pg_type: str
    # Only types that guarantee distinct values by construction; others reject unique.
    supports_unique: bool = False


FIELD_TYPES: Mapping[str, FieldType] = {
    t.name: t
    for t in (
        FieldType("integer", IntegerParams, "integer", "bigint"),
        FieldType("float", FloatParams, "float", "double precision"),
        FieldType("boolean", BooleanParams, "boolean", "boolean"),
        FieldType("uuid4", NoParams, "uuid", "uuid", supports_unique=True),
        FieldType("sequence", SequenceParams, "integer", "bigint", supports_unique=True),
        FieldType("choice", ChoiceParams, "text", "text"),
        FieldType("text", TextParams, "text", "text"),
        FieldType("word", NoParams, "text", "text"),
        FieldType("timestamp", TimestampParams, "timestamp", "timestamp with time zone"),
    )
}
