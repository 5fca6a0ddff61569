"""PostgreSQL binary COPY of Arrow data, and the DDL of a dataset's table.

Binary COPY is the fastest way in (see PITFALLS.md), and psycopg's `write_row`
costs a Python call per row. So `encode_copy_binary` builds the whole payload
with Arrow and numpy: each column becomes two binary arrays, the big-endian
length words and the values, and one `binary_join_element_wise` concatenates
them row by row in C++. A NULL value joins as nothing after its -1 length,
which is exactly COPY's encoding of NULL.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from server.core.schema import ColumnDef

_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4) + (0).to_bytes(4)  # signature, flags, no extension
_TRAILER = (-1).to_bytes(2, signed=True)
_PG_EPOCH_MICROS = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
_PG_EPOCH_DAYS = 10_957
_PIECE = pa.large_binary()  # 64-bit offsets: one batch may exceed 2 GiB of text
_VARIABLE_WIDTH = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
# pg_type is spliced into DDL as raw SQL; allow only type-name shapes: "double precision", "numeric(10,2)", "text[]".
_PG_TYPE_RE = re.compile(r"[a-z][a-z0-9_ ]*(\(\d+(, ?\d+)?\))?(\[\])*")


def create_table_sql(schema_name: str, table_name: str, columns: Sequence[ColumnDef]) -> sql.Composed:
    column_defs = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(c.name), sql.SQL(_checked_pg_type(c)), sql.SQL("" if c.nullable else " NOT NULL")
        )
        for c in columns
    ]
    return sql.SQL("CREATE TABLE {}.{} ({})").format(
        sql.Identifier(schema_name), sql.Identifier(table_name), sql.SQL(", ").join(column_defs)
    )


def copy_sql(schema_name: str, table_name: str, columns: Sequence[ColumnDef]) -> sql.Composed:
    return sql.SQL("COPY {}.{} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(schema_name),
        sql.Identifier(table_name),
        sql.SQL(", ").join(sql.Identifier(c.name) for c in columns),
    )


def encode_copy_binary(batch: pa.RecordBatch) -> bytes:
    """A complete binary COPY payload (header, one tuple per row, trailer) for the batch's columns in order.

    Raises TypeError for a column type with no binary COPY encoding here.
    """
    rows = batch.num_rows
    if rows == 0:
        return _HEADER + _TRAILER
    pieces = [_fixed_width(np.full(rows, batch.num_columns, dtype=">i2"), validity=None)]
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        pieces.extend(_field_pieces(name, column))
    tuples = pc.binary_join_element_wise(*pieces, pa.scalar(b"", _PIECE), null_handling="skip")
    offsets = np.frombuffer(tuples.buffers()[1], dtype=np.int64, count=rows + 1, offset=tuples.offset * 8)
    data = memoryview(tuples.buffers()[2])[offsets[0] : offsets[-1]]
    return b"".join((_HEADER, data, _TRAILER))


def _field_pieces(name: str, column: pa.Array) -> tuple[pa.Array, pa.Array]:
    """The column's length words, and its values in COPY's binary format (NULL where the column is)."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _field_pieces(name, column.dictionary_decode())
    if any(is_kind(kind) for is_kind in _VARIABLE_WIDTH):
        lengths = pc.fill_null(pc.binary_length(column), -1).to_numpy()
        return _fixed_width(lengths.astype(">i4"), validity=None), column.cast(_PIECE)

    values = _big_endian_values(name, column)
    lengths = np.full(len(column), values.dtype.itemsize, dtype=">i4")
    validity = None
    if column.null_count:
        valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
        lengths[~valid] = -1
        validity = pa.py_buffer(np.packbits(valid, bitorder="little"))
    return _fixed_width(lengths, validity=None), _fixed_width(values, validity=validity)


def _big_endian_values(name: str, column: pa.Array) -> npt.NDArray[np.generic]:
    kind = column.type
    if pa.types.is_boolean(kind):
        return np.asarray(pc.fill_null(column, False).to_numpy(zero_copy_only=False), dtype=np.uint8)
    if pa.types.is_timestamp(kind):
        micros = _raw(column.cast(pa.timestamp("us", kind.tz)), np.int64)
        return (micros - _PG_EPOCH_MICROS).astype(">i8")
    if pa.types.is_date32(kind):
        return (_raw(column, np.int32) - _PG_EPOCH_DAYS).astype(">i4")
    if pa.types.is_fixed_size_binary(kind):
        return _raw(column, np.dtype((np.void, kind.byte_width)))
    if pa.types.is_integer(kind) and kind.bit_width in (16, 32, 64) and pa.types.is_signed_integer(kind):
        return _raw(column, kind.to_pandas_dtype()).astype(f">i{kind.bit_width // 8}")
    if pa.types.is_float32(kind) or pa.types.is_float64(kind):
        return _raw(column, kind.to_pandas_dtype()).astype(f">f{kind.bit_width // 8}")
    raise TypeError(f"column {name!r} has type {kind}, which has no binary COPY encoding here")


def _raw(column: pa.Array, dtype: npt.DTypeLike) -> npt.NDArray[np.generic]:
    """The column's value buffer as numpy, without a copy; NULL slots hold arbitrary values."""
    start = column.offset
    return np.frombuffer(column.buffers()[1], dtype=dtype, count=start + len(column))[start:]


def _fixed_width(values: npt.NDArray[np.generic], *, validity: pa.Buffer | None) -> pa.Array:
    """A binary array whose i-th value is the bytes of values[i]."""
    width = values.dtype.itemsize
    offsets = np.arange(0, (len(values) + 1) * width, width, dtype=np.int64)
    buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(values))]
    return pa.Array.from_buffers(_PIECE, len(values), buffers)


def _checked_pg_type(column: ColumnDef) -> str:
    if not _PG_TYPE_RE.fullmatch(column.pg_type):
        raise ValueError(f"column {column.name!r} has an unsafe pg_type {column.pg_type!r}")
    return column.pg_type
