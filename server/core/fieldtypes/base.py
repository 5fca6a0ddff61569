"""What a field type declares: its params model, its column type, its domain.

Declarations only, so that the server validates a schema without the
worker's numpy code; `worker.engines.types` registers one generator per name.

Params models are strict (no "5" for 5, no true for 1) except that an integral
float becomes an int, because protobuf's Struct carries every number as a
double. Each param's `Field(description=...)` is its documentation: the
catalogue in docs/field-types.md is generated from these models. A model's
hooks say what depends on the values of its params:
- `problems`: checks across params (or against the row count), each naming the param to blame;
- `domain`: how many distinct values the type can make, for `unique` (None: more than any row count);
- `column_type`: when the stored type depends on params (decimal scale, array element);
- `inputs`, `input_problems`: other fields this one is computed from, and checks of their types.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from server.core import vocab

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


def integral_float_to_int(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _require_iso_string(value: Any) -> Any:
    if not isinstance(value, str | datetime):
        raise ValueError("must be an ISO-8601 string with a timezone, e.g. 2024-01-01T00:00:00Z")
    return value


Int64 = Annotated[int, BeforeValidator(integral_float_to_int), Field(ge=INT64_MIN, le=INT64_MAX)]
Timestamp = Annotated[AwareDatetime, BeforeValidator(_require_iso_string), Field(strict=False)]


# An int param that also accepts an integral float (protobuf's Struct has only doubles).
IntParam = Annotated[int, BeforeValidator(integral_float_to_int)]


@dataclass(frozen=True, slots=True)
class ColumnType:
    logical: str  # as in the proto's Column.type
    pg: str


class FieldParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        """Checks across params (or against the row count), as (param name, description)."""
        return iter(())

    def domain(self, locale: str) -> int | None:
        """The number of distinct values, when the type supports unique; None: unbounded."""
        return None

    def column_type(self) -> ColumnType | None:
        """The stored type when it depends on the params; None: the FieldType's."""
        return None

    def inputs(self) -> tuple[str, ...]:
        """Names of the fields this one is computed from."""
        return ()

    def input_problems(self, input_types: Mapping[str, str]) -> Iterator[tuple[str, str]]:
        """Checks of the inputs' logical types (name -> type), as (param name, description)."""
        return iter(())


class NoParams(FieldParams):
    pass


class ListParams(NoParams):
    """No params: an entry of the vocabulary list `list_name`; unique draws each entry once."""

    list_name: ClassVar[str] = ""

    def list_locale(self, locale: str) -> str:
        """The vocabulary the list is read from, for a schema in `locale`."""
        return locale

    def domain(self, locale: str) -> int | None:
        return len(vocab.load(self.list_locale(locale), self.list_name).values)


class LocaleListParams(ListParams):
    """An entry of the schema locale's list `list_name`."""


class GlobalListParams(ListParams):
    """An entry of the global (locale-independent) list `list_name`."""

    def list_locale(self, locale: str) -> str:
        return vocab.GLOBAL


@dataclass(frozen=True, slots=True)
class FieldType:
    name: str
    category: str  # a heading of the catalogue
    summary: str  # one line for the catalogue
    params: type[FieldParams]
    logical_type: str
    pg_type: str
    # The generator honours `unique` (distinct values while rows <= domain);
    # others reject unique at validation.
    supports_unique: bool = False

    def column(self, params: FieldParams) -> ColumnType:
        return params.column_type() or ColumnType(self.logical_type, self.pg_type)


_REGISTRY: dict[str, FieldType] = {}
FIELD_TYPES: Mapping[str, FieldType] = _REGISTRY


def declare(*types: FieldType) -> None:
    """Add types to the catalogue (at import of their category's module)."""
    for field_type in types:
        if field_type.name in _REGISTRY:
            raise ValueError(f"field type {field_type.name!r} is declared twice")
        _REGISTRY[field_type.name] = field_type
