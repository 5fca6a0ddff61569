"""PostgreSQL binary COPY of Arrow data, and the DDL of a dataset's table.

Binary COPY is the fastest way in (see PITFALLS.md), and psycopg's `write_row`
costs a Python call per row. So `encode_copy_binary` builds the whole payload
with Arrow and numpy: each column becomes two binary arrays, the big-endian
length words and the values, and one `binary_join_element_wise` concatenates
them row by row in C++. A NULL value joins as nothing after its -1 length,
which is exactly COPY's encoding of NULL.

Composite encodings follow the same idea. A numeric has one fixed layout per
column (its decimal128 precision and scale decide how many base-10000 digits
it sends; numeric_recv strips the zero ones). A list becomes a PostgreSQL
array: its elements are encoded like columns, joined per list with Arrow's
binary_join, behind a header of dimensions and element type.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from server.core.schema import ColumnDef

COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4) + (0).to_bytes(4)  # signature, flags, no extension
COPY_TRAILER = (-1).to_bytes(2, signed=True)
_PG_EPOCH_MICROS = 946_684_800_000_000  # 2000-01-01 in Unix microseconds
_PG_EPOCH_DAYS = 10_957
_PIECE = pa.large_binary()  # 64-bit offsets: one batch may exceed 2 GiB of text
_EMPTY = pa.scalar(b"", _PIECE)
_VARIABLE_WIDTH = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
_JSONB_VERSION = pa.scalar(b"\x01", _PIECE)
_NUMERIC_NEGATIVE = 0x4000
_NBASE = 10_000  # numeric's digits are base 10000
_LOW32 = np.uint64(0xFFFF_FFFF)
_INTERVAL = np.dtype([("months", "<i4"), ("days", "<i4"), ("nanos", "<i8")])
_PG_INTERVAL = np.dtype([("micros", ">i8"), ("days", ">i4"), ("months", ">i4")])
_ARRAY_HEADER = np.dtype([("ndim", ">i4"), ("has_null", ">i4"), ("oid", ">u4"), ("size", ">i4"), ("lower", ">i4")])
_EMPTY_ARRAY_HEADER = 12  # ndim 0: no dimension, so no size and lower bound
# pg_type is spliced into DDL as raw SQL; allow only type-name shapes: "double precision", "numeric(10,2)", "text[]".
_PG_TYPE_RE = re.compile(r"[a-z][a-z0-9_ ]*(\(\d+(, ?\d+)?\))?(\[\])*")


def create_table_sql(
    schema_name: str, table_name: str, columns: Sequence[ColumnDef], *, if_not_exists: bool = False
) -> sql.Composed:
    column_defs = [
        sql.SQL("{} {}{}").format(
            sql.Identifier(c.name), sql.SQL(_checked_pg_type(c)), sql.SQL("" if c.nullable else " NOT NULL")
        )
        for c in columns
    ]
    create = "CREATE TABLE IF NOT EXISTS" if if_not_exists else "CREATE TABLE"
    return sql.SQL(create + " {}.{} ({})").format(
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
    return b"".join((COPY_HEADER, encode_copy_tuples(batch), COPY_TRAILER))


def encode_copy_tuples(batch: pa.RecordBatch) -> memoryview:
    """The batch's rows as binary COPY tuples, with no header or trailer: several batches' tuples,
    written one after the other between one COPY_HEADER and one COPY_TRAILER, make one COPY stream.
    """
    rows = batch.num_rows
    if rows == 0:
        return memoryview(b"")
    pieces: list[_Piece] = [np.full(rows, batch.num_columns, dtype=">i2")]
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        pieces.extend(_field_pieces(name, column))
    tuples = pc.binary_join_element_wise(*_joinable(pieces, rows), _EMPTY, null_handling="skip")
    offsets = np.frombuffer(tuples.buffers()[1], dtype=np.int64, count=rows + 1, offset=tuples.offset * 8)
    return memoryview(tuples.buffers()[2])[offsets[0] : offsets[-1]]


# A piece of every row: the same number of bytes in each (numpy, one value per row), or any
# bytes, NULL where the row has none (Arrow binary).
_Piece: TypeAlias = npt.NDArray[np.generic] | pa.Array


def _field_pieces(name: str, column: pa.Array) -> list[_Piece]:
    """The column's length words, and its values in COPY's binary format (none where the column is NULL)."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _field_pieces(name, column.dictionary_decode())
    variable = _variable_values(name, column)
    if variable is not None:
        lengths = pc.fill_null(pc.binary_length(variable), -1).to_numpy()
        return [lengths.astype(">i4"), variable]

    values = _big_endian_values(name, column)
    lengths = np.full(len(column), values.dtype.itemsize, dtype=">i4")
    if not column.null_count:
        return [lengths, values]
    valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
    lengths[~valid] = -1
    return [lengths, _fixed_width(values, validity=pa.py_buffer(np.packbits(valid, bitorder="little")))]


def _joinable(pieces: list[_Piece], rows: int) -> list[pa.Array]:
    """The pieces as Arrow binary arrays, each run of fixed-width ones merged into one: the row-wise
    join costs about the same per piece whatever its width, so fewer pieces make it faster.
    """
    joinable: list[pa.Array] = []
    run: list[npt.NDArray[np.uint8]] = []
    for piece in [*pieces, None]:
        if isinstance(piece, np.ndarray):
            run.append(np.ascontiguousarray(piece).view(np.uint8).reshape(rows, -1))
            continue
        if run:
            merged = np.hstack(run) if len(run) > 1 else run[0]
            joinable.append(
                _fixed_width(merged.view(np.dtype((np.void, merged.shape[1]))).reshape(rows), validity=None)
            )
            run = []
        if piece is not None:
            joinable.append(piece)
    return joinable


def _variable_values(name: str, column: pa.Array) -> pa.Array | None:
    """The values of a column of variable width (NULL where the column is), or None for fixed width."""
    kind = column.type
    if any(is_kind(kind) for is_kind in _VARIABLE_WIDTH):
        return column.cast(_PIECE)
    if isinstance(kind, pa.JsonType):  # to jsonb, whose binary form is a version byte and the text
        return pc.binary_join_element_wise(_JSONB_VERSION, column.storage.cast(_PIECE), _EMPTY)
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return _array_values(name, column)
    return None


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
    if pa.types.is_time(kind):
        return _raw(column.cast(pa.time64("us")), np.int64).astype(">i8")
    if kind == pa.month_day_nano_interval():
        return _interval_values(column)
    if pa.types.is_decimal128(kind) and kind.scale >= 0:
        return _numeric_values(column)
    raise TypeError(f"column {name!r} has type {kind}, which has no binary COPY encoding here")


def _interval_values(column: pa.Array) -> npt.NDArray[np.generic]:
    """PostgreSQL's interval: microseconds, days, months (sub-microsecond nanoseconds are truncated)."""
    raw = _records(column, _INTERVAL)
    values: npt.NDArray[np.void] = np.empty(len(raw), dtype=_PG_INTERVAL)
    nanos = raw["nanos"]
    values["micros"] = np.sign(nanos) * (np.abs(nanos) // 1000)
    values["days"] = raw["days"]
    values["months"] = raw["months"]
    return values


def _numeric_values(column: pa.Array) -> npt.NDArray[np.generic]:
    """numeric's binary form: ndigits, weight, sign, dscale and base-10000 digits, most significant first.

    Every value of the column gets the same digit layout, enough groups for
    the type's integer digits and its scale, aligned so that the decimal
    point falls between two groups.
    """
    kind = column.type
    words = _records(column, np.dtype([("lo", "<u8"), ("hi", "<u8")]))
    lo, hi = words["lo"].copy(), words["hi"].copy()
    negative = (hi >> np.uint64(63)) == 1
    # |value| of the 128-bit two's complement: invert and add one where negative.
    neg_lo = ~lo + np.uint64(1)
    neg_hi = ~hi + (neg_lo == 0).astype(np.uint64)
    lo, hi = np.where(negative, neg_lo, lo), np.where(negative, neg_hi, hi)
    # Base-10000 groups by long division of the four 32-bit limbs (each step stays below 2**46).
    limbs = [hi >> np.uint64(32), hi & _LOW32, lo >> np.uint64(32), lo & _LOW32]
    groups = []  # least significant first; ten groups hold 10**40 > 2**128
    for _ in range(10):
        remainder = np.zeros(len(lo), dtype=np.uint64)
        for index, limb in enumerate(limbs):
            current = (remainder << np.uint64(32)) | limb
            limbs[index], remainder = current // np.uint64(_NBASE), current % np.uint64(_NBASE)
        groups.append(remainder)
    # Shift by 10**(-scale mod 4) so that the group boundaries fall on the decimal point.
    shift = np.uint64(10 ** (-kind.scale % 4))
    carry = np.zeros(len(lo), dtype=np.uint64)
    for index, group in enumerate(groups):
        shifted = group * shift + carry
        groups[index], carry = shifted % np.uint64(_NBASE), shifted // np.uint64(_NBASE)
    groups.append(carry)
    fraction_groups = -(-kind.scale // 4)
    integer_groups = -(-(kind.precision - kind.scale) // 4)
    count = integer_groups + fraction_groups
    layout = [("ndigits", ">i2"), ("weight", ">i2"), ("sign", ">u2"), ("dscale", ">i2")]
    values: npt.NDArray[np.void] = np.empty(len(lo), dtype=np.dtype(layout + [(f"d{k}", ">i2") for k in range(count)]))
    values["ndigits"], values["weight"], values["dscale"] = count, integer_groups - 1, kind.scale
    values["sign"] = np.where(negative, _NUMERIC_NEGATIVE, 0)
    for k in range(count):
        values[f"d{k}"] = groups[count - 1 - k]
    return values


# Element type OIDs of PostgreSQL arrays, by Arrow type (checked by array_recv against the column's).
_OID_OF = [
    (pa.types.is_boolean, 16),
    (pa.types.is_int16, 21),
    (pa.types.is_int32, 23),
    (pa.types.is_int64, 20),
    (pa.types.is_float32, 700),
    (pa.types.is_float64, 701),
    (pa.types.is_string, 25),
    (pa.types.is_large_string, 25),
    (pa.types.is_binary, 17),
    (pa.types.is_large_binary, 17),
    (pa.types.is_date32, 1082),
    (pa.types.is_time, 1083),
    (pa.types.is_decimal128, 1700),
    (lambda kind: pa.types.is_fixed_size_binary(kind) and kind.byte_width == 16, 2950),  # uuid
    (lambda kind: kind == pa.month_day_nano_interval(), 1186),
    (lambda kind: isinstance(kind, pa.JsonType), 3802),  # jsonb
    (lambda kind: pa.types.is_timestamp(kind) and kind.tz is not None, 1184),  # timestamptz
    (pa.types.is_timestamp, 1114),
]


def _element_oid(name: str, kind: pa.DataType) -> int:
    if pa.types.is_dictionary(kind):
        return _element_oid(name, kind.value_type)
    for matches, oid in _OID_OF:
        if matches(kind):
            return oid
    raise TypeError(f"column {name!r} has type list<{kind}>, which has no binary COPY encoding here")


def _array_values(name: str, column: pa.Array) -> pa.Array:
    """One-dimensional PostgreSQL arrays (lower bound 1; ndim 0 when empty), NULL where the list is."""
    element_type = column.type.value_type
    if pa.types.is_list(element_type) or pa.types.is_large_list(element_type):
        raise TypeError(f"column {name!r} has type {column.type}: PostgreSQL arrays are rectangular, not nested")
    oid = _element_oid(name, element_type)
    offsets = column.offsets.to_numpy().astype(np.int64)
    elements = column.values.slice(offsets[0], offsets[-1] - offsets[0])
    offsets -= offsets[0]
    lengths = np.diff(offsets)
    # Each element as its length word and bytes (a NULL element: length -1 only), joined per list.
    element_pieces = _joinable(_field_pieces(name, elements), len(elements))
    encoded = pc.binary_join_element_wise(*element_pieces, _EMPTY, null_handling="skip")
    body = pc.binary_join(pa.LargeListArray.from_arrays(pa.array(offsets), encoded), _EMPTY)
    null_before = np.zeros(len(elements) + 1, dtype=np.int64)  # NULL elements before each element
    np.cumsum(elements.is_null().to_numpy(zero_copy_only=False), out=null_before[1:])
    header: npt.NDArray[np.void] = np.empty(len(lengths), dtype=_ARRAY_HEADER)
    header["ndim"] = lengths > 0
    header["has_null"] = null_before[offsets[1:]] > null_before[offsets[:-1]]
    header["oid"] = oid
    header["size"] = lengths
    header["lower"] = 1
    header_sizes = np.where(lengths > 0, _ARRAY_HEADER.itemsize, _EMPTY_ARRAY_HEADER)
    header_bytes = np.frombuffer(header.tobytes(), dtype=np.uint8).reshape(len(lengths), _ARRAY_HEADER.itemsize)
    keep = np.arange(_ARRAY_HEADER.itemsize) < header_sizes[:, None]
    header_offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(header_sizes, out=header_offsets[1:])
    headers = pa.Array.from_buffers(
        _PIECE, len(lengths), [None, pa.py_buffer(header_offsets), pa.py_buffer(header_bytes[keep])]
    )
    values = pc.binary_join_element_wise(headers, body, _EMPTY)
    return pc.if_else(column.is_valid(), values, pa.scalar(None, _PIECE))


def _records(column: pa.Array, dtype: np.dtype[np.void]) -> npt.NDArray[np.void]:
    """The column's value buffer as structured records, without a copy."""
    start = column.offset
    records: npt.NDArray[np.void] = np.frombuffer(column.buffers()[1], dtype=dtype, count=start + len(column))
    return records[start:]


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
