from __future__ import annotations

import struct
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from server.core.schema import ColumnDef
from worker.engines.pgcopy import copy_sql, create_table_sql, encode_copy_binary

HEADER = b"PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00"
TRAILER = b"\xff\xff"


def decode(payload: bytes) -> list[list[bytes | None]]:
    """A deliberately naive reader of binary COPY: the raw bytes of every field."""
    assert payload.startswith(HEADER)
    assert payload.endswith(TRAILER)
    rows: list[list[bytes | None]] = []
    pos, end = len(HEADER), len(payload) - len(TRAILER)
    while pos < end:
        (count,) = struct.unpack_from(">h", payload, pos)
        pos += 2
        row: list[bytes | None] = []
        for _ in range(count):
            (length,) = struct.unpack_from(">i", payload, pos)
            pos += 4
            row.append(None if length == -1 else payload[pos : pos + length])
            pos += max(length, 0)
        rows.append(row)
    assert pos == end
    return rows


def test_empty_batch_is_header_and_trailer() -> None:
    batch = pa.record_batch({"a": pa.array([], pa.int64())})
    assert encode_copy_binary(batch) == HEADER + TRAILER


def test_each_type_in_postgres_binary_format() -> None:
    some_uuid = uuid.UUID("12345678-1234-4234-8234-123456789abc")
    batch = pa.record_batch(
        {
            "int64": pa.array([-2, None], pa.int64()),
            "int32": pa.array([None, 7], pa.int32()),
            "int16": pa.array([-1, 1], pa.int16()),
            "float64": pa.array([1.5, None], pa.float64()),
            "float32": pa.array([None, -0.25], pa.float32()),
            "bool": pa.array([True, False], pa.bool_()),
            "uuid": pa.array([some_uuid.bytes, None], pa.binary(16)),
            "text": pa.array(["héllo ✓ 🎉", None], pa.string()),
            "large_text": pa.array([None, ""], pa.large_string()),
            "bytes": pa.array([b"\x00\xff", None], pa.binary()),
            "at": pa.array(
                [datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC), datetime(1999, 12, 31, 23, 59, 59, tzinfo=UTC)],
                pa.timestamp("us", tz="UTC"),
            ),
            "day": pa.array([date(1999, 12, 31), date(2000, 1, 2)], pa.date32()),
        }
    )
    assert decode(encode_copy_binary(batch)) == [
        [
            struct.pack(">q", -2),
            None,
            struct.pack(">h", -1),
            struct.pack(">d", 1.5),
            None,
            b"\x01",
            some_uuid.bytes,
            "héllo ✓ 🎉".encode(),
            None,
            b"\x00\xff",
            struct.pack(">q", 1),
            struct.pack(">i", -1),
        ],
        [
            None,
            struct.pack(">i", 7),
            struct.pack(">h", 1),
            None,
            struct.pack(">f", -0.25),
            b"\x00",
            None,
            None,
            b"",
            None,
            struct.pack(">q", -1_000_000),
            struct.pack(">i", 1),
        ],
    ]


def test_sliced_columns_encode_like_fresh_ones() -> None:
    batch = pa.record_batch(
        {
            "n": pa.array([1, None, 3, 4, None], pa.int64()),
            "b": pa.array([True, None, False, True, True]),
            "s": pa.array(["a", "bb", None, "dddd", "e"]),
            "u": pa.array([bytes([i]) * 16 for i in range(5)], pa.binary(16)),
        }
    )
    sliced = batch.slice(1, 3)
    fresh = pa.RecordBatch.from_pylist(sliced.to_pylist(), schema=batch.schema)
    assert encode_copy_binary(sliced) == encode_copy_binary(fresh)
    assert decode(encode_copy_binary(sliced))[0] == [None, None, b"bb", b"\x01" * 16]


def test_null_slots_that_hold_bytes_write_nothing() -> None:
    # Arrow allows a null string slot to span bytes; COPY must still see a bare NULL.
    offsets = pa.py_buffer(struct.pack("<3i", 0, 6, 8))
    validity = pa.py_buffer(bytes([0b10]))
    column = pa.Array.from_buffers(pa.string(), 2, [validity, offsets, pa.py_buffer(b"hiddenok")])
    assert decode(encode_copy_binary(pa.record_batch({"s": column}))) == [[None], [b"ok"]]


def test_dictionary_and_other_timestamp_units_are_converted() -> None:
    batch = pa.record_batch(
        {
            "kind": pa.array(["x", "y", "x", None]).dictionary_encode(),
            "at": pa.array([0, 1_000, None, 946_684_800_000], pa.timestamp("ms")),
        }
    )
    assert decode(encode_copy_binary(batch)) == [
        [b"x", struct.pack(">q", -946_684_800_000_000)],
        [b"y", struct.pack(">q", -946_684_799_000_000)],
        [b"x", None],
        [None, struct.pack(">q", 0)],
    ]


@pytest.mark.parametrize(
    "column",
    [
        pa.array([1], pa.uint64()),
        pa.array([1], pa.int8()),
        pa.array([[1]], pa.list_(pa.uint32())),
        pa.array([Decimal("1.5")], pa.decimal256(4, 1)),
        pa.array([Decimal("100")], pa.decimal128(3, -2)),
    ],
)
def test_unsupported_types_are_rejected(column: pa.Array) -> None:
    with pytest.raises(TypeError, match=r"column 'odd' has type .* no binary COPY encoding"):
        encode_copy_binary(pa.record_batch({"ok": pa.array([1]), "odd": column}))


def test_nested_lists_are_rejected() -> None:
    with pytest.raises(TypeError, match="arrays are rectangular"):
        encode_copy_binary(pa.record_batch({"odd": pa.array([[[1]]], pa.list_(pa.list_(pa.int64())))}))


def numeric(ndigits: int, weight: int, sign: int, dscale: int, *digits: int) -> bytes:
    return struct.pack(f">hhHh{len(digits)}h", ndigits, weight, sign, dscale, *digits)


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        (Decimal("1.5"), pa.decimal128(4, 1), numeric(2, 0, 0, 1, 1, 5000)),
        (Decimal("-12345.6789"), pa.decimal128(10, 4), numeric(3, 1, 0x4000, 4, 1, 2345, 6789)),
        (Decimal("0.00001"), pa.decimal128(6, 5), numeric(3, 0, 0, 5, 0, 0, 1000)),
        (Decimal("0"), pa.decimal128(3, 0), numeric(1, 0, 0, 0, 0)),
        (Decimal("-0.12"), pa.decimal128(2, 2), numeric(1, -1, 0x4000, 2, 1200)),
        (Decimal(10**38 - 1), pa.decimal128(38, 0), numeric(10, 9, 0, 0, 99, *[9999] * 9)),
        (Decimal(-(10**38) + 1), pa.decimal128(38, 0), numeric(10, 9, 0x4000, 0, 99, *[9999] * 9)),
        (Decimal("1E-38"), pa.decimal128(38, 38), numeric(10, -1, 0, 38, *[0] * 9, 100)),
    ],
)
def test_decimals_as_numeric(value: Decimal, kind: pa.DataType, expected: bytes) -> None:
    # A fixed digit layout per column: leading and trailing zero groups are allowed, numeric_recv strips them.
    batch = pa.record_batch({"n": pa.array([value, None], kind)})
    assert decode(encode_copy_binary(batch)) == [[expected], [None]]


def test_time_interval_and_json() -> None:
    batch = pa.record_batch(
        {
            "t": pa.array([time(0, 0, 0, 1), None, time(23, 59, 59)], pa.time64("us")),
            "t_ms": pa.array([1_500, None, 0], pa.time32("ms")),
            "i": pa.array(
                [pa.MonthDayNano([1, -2, 3_000]), pa.MonthDayNano([0, 0, -1_000_000]), None],
                pa.month_day_nano_interval(),
            ),
            "j": pa.ExtensionArray.from_storage(pa.json_(pa.string()), pa.array(['{"a": "é"}', "[]", None])),
        }
    )
    assert decode(encode_copy_binary(batch)) == [
        [struct.pack(">q", 1), struct.pack(">q", 1_500_000), struct.pack(">qii", 3, -2, 1), '\x01{"a": "é"}'.encode()],
        [None, None, struct.pack(">qii", -1_000, 0, 0), b"\x01[]"],
        [struct.pack(">q", 86_399_000_000), struct.pack(">q", 0), None, None],
    ]


def array_header(ndim: int, has_null: int, oid: int, *dims: int) -> bytes:
    return struct.pack(">iiI", ndim, has_null, oid) + b"".join(struct.pack(">ii", d, 1) for d in dims)


def test_lists_as_one_dimensional_arrays() -> None:
    column = pa.array([[1, None], [], None, [7]], pa.list_(pa.int32()))
    batch = pa.record_batch({"a": column.slice(0, 4), "s": pa.array([["x"], ["é", ""], [], None])})
    null = struct.pack(">i", -1)
    assert decode(encode_copy_binary(batch)) == [
        [
            array_header(1, 1, 23, 2) + struct.pack(">ii", 4, 1) + null,
            array_header(1, 0, 25, 1) + struct.pack(">i", 1) + b"x",
        ],
        [
            array_header(0, 0, 23),
            array_header(1, 0, 25, 2) + struct.pack(">i", 2) + "é".encode() + struct.pack(">i", 0),
        ],
        [None, array_header(0, 0, 25)],
        [array_header(1, 0, 23, 1) + struct.pack(">ii", 4, 7), None],
    ]


def test_sliced_lists_encode_like_fresh_ones() -> None:
    column = pa.array([[1, 2], None, [3], [], [4, 5, None]], pa.list_(pa.int64()))
    sliced = pa.record_batch({"a": column}).slice(1, 4)
    fresh = pa.record_batch({"a": pa.array(sliced.column(0).to_pylist(), pa.list_(pa.int64()))})
    assert encode_copy_binary(sliced) == encode_copy_binary(fresh)


@pytest.mark.parametrize(
    ("values", "kind", "oid"),
    [
        ([True], pa.bool_(), 16),
        ([1], pa.int16(), 21),
        ([1], pa.int64(), 20),
        ([1.0], pa.float32(), 700),
        ([1.0], pa.float64(), 701),
        ([b"x"], pa.binary(), 17),
        ([date(2000, 1, 1)], pa.date32(), 1082),
        ([time(1)], pa.time64("us"), 1083),
        ([Decimal("1.0")], pa.decimal128(3, 1), 1700),
        ([b"\x00" * 16], pa.binary(16), 2950),
        ([pa.MonthDayNano([0, 1, 0])], pa.month_day_nano_interval(), 1186),
        ([datetime(2000, 1, 1, tzinfo=UTC)], pa.timestamp("us", tz="UTC"), 1184),
        ([datetime(2000, 1, 1)], pa.timestamp("us"), 1114),
    ],
)
def test_array_element_type_oids(values: list[Any], kind: pa.DataType, oid: int) -> None:
    payload = decode(encode_copy_binary(pa.record_batch({"a": pa.array([values], pa.list_(kind))})))
    assert payload[0][0] is not None
    assert struct.unpack_from(">I", payload[0][0], 8) == (oid,)


def test_jsonb_arrays() -> None:
    elements = pa.ExtensionArray.from_storage(pa.json_(pa.string()), pa.array(["1", None]))
    column = pa.ListArray.from_arrays(pa.array([0, 2], pa.int32()), elements)
    assert decode(encode_copy_binary(pa.record_batch({"a": column}))) == [
        [array_header(1, 1, 3802, 2) + struct.pack(">i", 2) + b"\x011" + struct.pack(">i", -1)]
    ]


COLUMNS = [
    ColumnDef("id", "uuid", "uuid", nullable=False),
    ColumnDef("Mixed Case", "float", "double precision", nullable=True),
    ColumnDef("price", "decimal", "numeric(10,2)", nullable=True),
]


def test_create_table_sql_quotes_identifiers() -> None:
    assert create_table_sql("datasets", "t_1", COLUMNS).as_string() == (
        'CREATE TABLE "datasets"."t_1" ("id" uuid NOT NULL, "Mixed Case" double precision, "price" numeric(10,2))'
    )


def test_copy_sql_names_the_columns_in_order() -> None:
    assert copy_sql("datasets", "t_1", COLUMNS).as_string() == (
        'COPY "datasets"."t_1" ("id", "Mixed Case", "price") FROM STDIN (FORMAT BINARY)'
    )


@pytest.mark.parametrize("pg_type", ["text; DROP TABLE jobs", "text)", "", "int --"])
def test_create_table_sql_refuses_an_unsafe_type(pg_type: str) -> None:
    with pytest.raises(ValueError, match="unsafe pg_type"):
        create_table_sql("datasets", "t", [ColumnDef("a", "text", pg_type, nullable=True)])
