"""Small schemas of one field, and the checks every field type gets."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from server.core.errors import InvalidArgument
from server.core.fieldtypes import FIELD_TYPES
from server.core.schema import SchemaSpec, field_params, validate_schema
from worker.engines.generate import generate_chunk
from worker.engines.types.base import arrow_type_of

ROWS = 1_000_000


def make_spec(*fields: dict[str, Any], rows: int = ROWS, seed: int = 42, locale: str = "") -> SchemaSpec:
    spec = SchemaSpec.from_json({"fields": list(fields), "rows": rows, "seed": seed, "locale": locale})
    return validate_schema(spec, max_rows=10**9, max_fields=100)


def field(type_name: str, params: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": "c", "type": type_name, "params": params or {}, **extra}


def column(
    type_name: str, params: dict[str, Any] | None = None, count: int = 2_000, *, start: int = 0, **extra: Any
) -> pa.Array:
    """`count` values of a one-field schema from row `start` (extra: unique, rows, locale, ...)."""
    spec_options = {k: extra.pop(k) for k in ("rows", "locale", "seed") if k in extra}
    spec = make_spec(field(type_name, params, **extra), **spec_options)
    return generate_chunk(spec, start, count).column(0)


def values(type_name: str, params: dict[str, Any] | None = None, count: int = 2_000, **extra: Any) -> list[Any]:
    made: list[Any] = column(type_name, params, count, **extra).to_pylist()
    return made


def violations(type_name: str, params: dict[str, Any], *, rows: int = 100, unique: bool = False) -> dict[str, str]:
    """Violations of one field, by path below the field's params (or 'unique')."""
    spec = SchemaSpec.from_json({"fields": [field(type_name, params, unique=unique)], "rows": rows, "seed": 1})
    with pytest.raises(InvalidArgument) as info:
        validate_schema(spec, max_rows=10**9, max_fields=10)
    prefix = "schema.fields[0]."
    return {v.field.removeprefix(prefix).removeprefix("params."): v.description for v in info.value.violations}


def expected_arrow_type(logical: str, pg_type: str) -> pa.DataType:
    """`arrow_type_of`, but a `timestamp without time zone` is a timestamp without a zone in Arrow too.

    arrow_type_of maps every "timestamp" to timestamp[us, UTC]; timestamp_local's
    wall-clock values are not UTC instants, so they are timestamp[us] (pgcopy
    writes both the same way).
    """
    if logical.endswith("[]"):
        return pa.list_(expected_arrow_type(logical[:-2], pg_type.removesuffix("[]")))
    if logical == "timestamp" and pg_type == "timestamp without time zone":
        return pa.timestamp("us")
    return arrow_type_of(logical, pg_type)


def check_arrow_type(type_name: str, params: dict[str, Any]) -> None:
    """The generator makes the Arrow type its declared column type stands for, even for zero rows."""
    spec = make_spec(field(type_name, params))
    declared = FIELD_TYPES[type_name].column(field_params(spec.fields[0]))
    for count in (0, 50):
        assert generate_chunk(spec, 0, count).column(0).type == expected_arrow_type(declared.logical, declared.pg)


def check_chunking(type_name: str, params: dict[str, Any], *, rows: int = ROWS, **extra: Any) -> None:
    """Rows do not depend on how they are split into chunks."""
    spec = make_spec(field(type_name, params, **extra), rows=rows)
    start = min(5_000, rows - 1_000)
    whole = generate_chunk(spec, start, 1_000).column(0)
    parts = [generate_chunk(spec, start, 400).column(0), generate_chunk(spec, start + 400, 600).column(0)]
    assert pa.concat_arrays(parts).equals(whole)
    assert generate_chunk(spec, start, 1_000).column(0).equals(whole)


def check_unique(type_name: str, params: dict[str, Any], domain: int | None) -> None:
    """A unique field of min(domain, 20000) rows has distinct values; one more row than the domain is rejected."""
    rows = min(domain or 20_000, 20_000)
    spec = make_spec(field(type_name, params, unique=True), rows=rows)
    split = rows // 3
    made = (
        generate_chunk(spec, 0, split).column(0).to_pylist()
        + generate_chunk(spec, split, rows - split).column(0).to_pylist()
    )
    assert len(set(made)) == rows
    if domain is not None and domain < 10**8:  # more rows than the limit of `violations` otherwise
        found = violations(type_name, params, rows=domain + 1, unique=True)
        assert list(found) == ["unique"]
        assert f"only {domain:,} distinct values" in found["unique"]
