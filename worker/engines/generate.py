"""Make a chunk of a dataset's rows as an Arrow RecordBatch.

Every value is a pure function of (field key, row number): each field draws
from a counter-based `Rand` keyed by the schema seed and the field's name (or
the field's own seed), with the row number as the counter. So a chunk, a
shard, a retry or another worker makes exactly the rows any other layout
would. Nulls come from their own stream, so changing a field's null_rate
never changes its non-null values, and a field's key does not depend on its
position, so adding or moving other fields leaves it alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from server.core.schema import FieldSpec, SchemaSpec, field_params, generation_order
from worker.engines.rand import Rand, derive_key
from worker.engines.types import Block
from worker.engines.types.base import make_values


def generate_chunk(spec: SchemaSpec, start_row: int, count: int) -> pa.RecordBatch:
    """Rows [start_row, start_row + count) of a validated spec."""
    if start_row < 0 or count < 0:
        raise ValueError(f"bad row range: start_row={start_row}, count={count}")
    made = generate_columns(spec, np.arange(start_row, start_row + count, dtype=np.int64))
    arrays = [made[f.name] for f in spec.fields]
    schema = pa.schema(
        pa.field(f.name, array.type, nullable=f.null_rate > 0) for f, array in zip(spec.fields, arrays, strict=True)
    )
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def generate_columns(
    spec: SchemaSpec, rows: npt.NDArray[np.int64], names: Sequence[str] | None = None
) -> dict[str, pa.Array]:
    """The named fields (all by default) at any row numbers, with the fields they are computed from."""
    wanted = None if names is None else _with_inputs(spec, names)
    made: dict[str, pa.Array] = {}
    for index in generation_order(spec):
        field = spec.fields[index]
        if wanted is None or field.name in wanted:
            made[field.name] = make_column(field, rows, field_key(spec, index), spec.locale, made)
    return made


def _with_inputs(spec: SchemaSpec, names: Sequence[str]) -> set[str]:
    by_name = {f.name: f for f in spec.fields}
    needed: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed.add(name)
            todo.extend(field_params(by_name[name]).inputs())
    return needed


def field_key(spec: SchemaSpec, index: int) -> int:
    """The field's random key: from its own seed, or from the schema's seed and its name."""
    field = spec.fields[index]
    if field.seed is not None:
        return derive_key("field-seed", field.seed)
    if spec.seed is None:
        raise ValueError("the spec has no seed: generate from the spec validate_schema returned")
    return derive_key("field", spec.seed, field.name)


def make_column(
    field: FieldSpec, rows: npt.NDArray[np.int64], key: int, locale: str, inputs: Mapping[str, pa.Array] | None = None
) -> pa.Array:
    """One field's values (with its nulls) for the given row numbers."""
    params = field_params(field)
    rand = Rand.for_rows(key, rows)
    given = {name: (inputs or {})[name] for name in params.inputs()}
    return make_values(field.type, params, Block(rows, rand, locale, field.unique, given), null_rate=field.null_rate)
