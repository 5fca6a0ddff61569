"""Make a chunk of a dataset's rows as an Arrow RecordBatch.

Rows are a pure function of (spec, row number), whatever the chunking: each
column is made in fixed blocks of BLOCK_ROWS rows, each block from its own
random stream seeded by (field seed, block number), and a chunk takes the
slices it needs. So a retry, or a different chunk size, writes the same rows.
Nulls come from a second stream per block, so changing a field's null_rate
never changes its non-null values.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from server.core.fieldtypes import FIELD_TYPES
from server.core.schema import SchemaSpec
from worker.engines.fieldtypes import GENERATORS, Block

# Part of the data contract: changing it changes the rows of every seed. A
# multiple of it as the chunk size wastes nothing at chunk edges.
BLOCK_ROWS = 5_000
_VALUES_STREAM, _NULLS_STREAM = 0, 1


def generate_chunk(spec: SchemaSpec, start_row: int, count: int) -> pa.RecordBatch:
    """Rows [start_row, start_row + count) of a validated spec."""
    if start_row < 0 or count < 0:
        raise ValueError(f"bad row range: start_row={start_row}, count={count}")
    arrays = [_column(spec, index, start_row, count) for index in range(len(spec.fields))]
    schema = pa.schema(
        pa.field(f.name, array.type, nullable=f.null_rate > 0) for f, array in zip(spec.fields, arrays, strict=True)
    )
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def field_seed(spec: SchemaSpec, index: int) -> int:
    """The field's own seed, or one derived from the schema's seed and the field's position."""
    own = spec.fields[index].seed
    if own is not None:
        return own
    if spec.seed is None:
        raise ValueError("the spec has no seed: generate from the spec validate_schema returned")
    return int(np.random.SeedSequence([spec.seed, index]).generate_state(1, np.uint64)[0])


def _column(spec: SchemaSpec, index: int, start_row: int, count: int) -> pa.Array:
    field = spec.fields[index]
    params = FIELD_TYPES[field.type].params.model_validate(field.params)
    make = GENERATORS[field.type]
    seed = field_seed(spec, index)
    end = start_row + count
    pieces: list[pa.Array] = []
    null_masks: list[npt.NDArray[np.bool_]] = []
    for block in range(start_row // BLOCK_ROWS, -(-end // BLOCK_ROWS)):
        first = block * BLOCK_ROWS
        lo, hi = max(start_row, first) - first, min(end, first + BLOCK_ROWS) - first
        rows = np.arange(first, first + BLOCK_ROWS, dtype=np.int64)
        values = make(params, Block(np.random.default_rng([seed, block, _VALUES_STREAM]), rows, seed))
        pieces.append(values.slice(lo, hi - lo))
        if field.null_rate > 0:
            draws = np.random.default_rng([seed, block, _NULLS_STREAM]).random(BLOCK_ROWS)
            null_masks.append(draws[lo:hi] < field.null_rate)
    if not pieces:  # count == 0: still give the column its type
        empty = np.empty(0, dtype=np.int64)
        return make(params, Block(np.random.default_rng(seed), empty, seed))
    column = pa.concat_arrays(pieces)
    if null_masks:
        column = pc.if_else(np.concatenate(null_masks), pa.scalar(None, column.type), column)
    return column
