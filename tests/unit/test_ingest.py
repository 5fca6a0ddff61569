from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Generator, Sequence
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from worker.engines.ingest import (
    ARROW_TYPES,
    IngestColumn,
    IngestOptions,
    IngestReader,
    MalformedFile,
    UnsupportedColumn,
    column_names,
)
from worker.engines.pgcopy import encode_copy_tuples

U1 = uuid.UUID("123e4567-e89b-12d3-a456-426614174000")
U2 = uuid.UUID("00000000-0000-0000-0000-0000000000ff")


def read(
    data: bytes,
    fmt: str = "csv",
    columns: Sequence[IngestColumn] | None = None,
    *,
    block_size: int = 4 * 1024 * 1024,
    **options: Any,
) -> tuple[IngestReader, pa.Table]:
    reader = IngestReader(io.BytesIO(data), IngestOptions(fmt, **options), columns, block_size=block_size)  # type: ignore[arg-type]
    batches = list(reader.batches())
    schema = pa.schema(pa.field(c.name, ARROW_TYPES[c.logical_type], c.nullable) for c in reader.columns)
    for batch in batches:
        assert batch.schema == schema
        assert batch.num_rows > 0
    return reader, pa.Table.from_batches(batches, schema=schema)


def rows(
    data: bytes, fmt: str = "csv", columns: Sequence[IngestColumn] | None = None, **kw: Any
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = read(data, fmt, columns, **kw)[1].to_pylist()
    return found


def types_of(reader: IngestReader) -> dict[str, str]:
    return {c.name: c.logical_type for c in reader.columns}


def malformed(data: bytes, fmt: str = "csv", columns: Sequence[IngestColumn] | None = None, **kw: Any) -> MalformedFile:
    with pytest.raises(MalformedFile) as caught:
        read(data, fmt, columns, **kw)
    return caught.value


def parquet_bytes(table: pa.Table, **kw: Any) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, **kw)
    return sink.getvalue()


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


# --- inference -------------------------------------------------------------------------------------------------

CSV_ALL_TYPES = (
    b"Id,Score,Name,Active,Born,Seen At,Key,Opens,Zip,Big,Blank\n"
    b"1,1.5,alice,true,2024-01-02,2024-01-02 03:04:05,123e4567-e89b-12d3-a456-426614174000,08:30,02134,"
    b"99999999999999999999,\n"
    b'-2,2e3,"bob, jr",No,1999-12-31,2024-01-02T03:04:05.25+02:00,00000000-0000-0000-0000-0000000000FF,'
    b"23:59:59.5,10001,1,\n"
    b"3,,,F,,,,,,,\n"
)


def test_csv_inference_of_every_type() -> None:
    reader, table = read(CSV_ALL_TYPES)
    assert types_of(reader) == {
        "id": "integer",
        "score": "float",
        "name": "text",
        "active": "boolean",
        "born": "date",
        "seen_at": "timestamp",
        "key": "uuid",
        "opens": "time",
        "zip": "text",  # leading zero: not a number
        "big": "text",  # beyond 64 bits: a float would lose digits
        "blank": "text",
    }
    assert all(c.nullable for c in reader.columns)
    assert [c.pg_type for c in reader.columns][:8] == [
        "bigint", "double precision", "text", "boolean", "date", "timestamptz", "uuid", "time"
    ]  # fmt: skip
    assert table.to_pylist() == [
        {
            "id": 1, "score": 1.5, "name": "alice", "active": True, "born": date(2024, 1, 2),
            "seen_at": utc(2024, 1, 2, 3, 4, 5), "key": U1.bytes, "opens": time(8, 30), "zip": "02134",
            "big": "99999999999999999999", "blank": "",
        },
        {
            "id": -2, "score": 2000.0, "name": "bob, jr", "active": False, "born": date(1999, 12, 31),
            "seen_at": utc(2024, 1, 2, 1, 4, 5, 250000), "key": U2.bytes, "opens": time(23, 59, 59, 500000),
            "zip": "10001", "big": "1", "blank": "",
        },
        {
            "id": 3, "score": None, "name": "", "active": False, "born": None, "seen_at": None, "key": None,
            "opens": None, "zip": "", "big": "", "blank": "",
        },
    ]  # fmt: skip


def test_csv_inference_looks_at_the_first_block_only() -> None:
    data = b"n\n" + b"1\n" * 200 + b"x\n"
    reader = IngestReader(io.BytesIO(data), IngestOptions("csv"), block_size=64)
    assert types_of(reader) == {"n": "integer"}
    with pytest.raises(MalformedFile) as caught:
        list(reader.batches())
    assert (caught.value.row, caught.value.column) == (201, "n")
    assert str(caught.value) == "row 201, column 'n': 'x' is not a 64-bit integer"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["1", "-7", " 12 "], "integer"),
        (["1", "2.5", "nan"], "float"),
        (["yes", "N", "TRUE", "off"], "boolean"),
        (["0", "1"], "integer"),
        (["2024-02-29"], "date"),
        (["2024-02-30"], "text"),
        (["2024-01-01", "2024-01-01 10:00"], "timestamp"),
        (["2024-01-01T10:00:00Z", "2024-01-01 10:00:00"], "timestamp"),
        (["10:00", "23:59:59.123456789"], "time"),
        (["0x1f", "12"], "text"),
        (["1e5", "007"], "text"),
        (["123e4567-e89b-12d3-a456-42661417400"], "text"),
        (["abc"], "text"),
    ],
)
def test_csv_inference_cases(values: list[str], expected: str) -> None:
    reader, _ = read(("v\n" + "\n".join(values) + "\n").encode())
    assert types_of(reader) == {"v": expected}


def test_jsonl_inference_of_every_type() -> None:
    lines = [
        {"Id": 1, "score": 1, "name": "a", "ok": True, "born": "2024-01-02", "at": "2024-01-02T03:04:05Z",
         "key": str(U1), "opens": "08:30:00", "tags": ["x"], "meta": {"k": 1}, "mixed": 1, "none": None},
        {"Id": 2, "score": 2.5, "name": "b", "ok": False, "born": "2024-01-03", "at": "2024-01-02 03:04:05",
         "key": str(U2), "opens": "09:00", "tags": [], "meta": None, "mixed": "one"},
        {"Id": None},
    ]  # fmt: skip
    data = "\n".join(json.dumps(line) for line in lines).encode() + b"\n"
    reader, table = read(data, "jsonl")
    assert types_of(reader) == {
        "id": "integer",
        "score": "float",
        "name": "text",
        "ok": "boolean",
        "born": "date",
        "at": "timestamp",
        "key": "uuid",
        "opens": "time",
        "tags": "json",
        "meta": "json",
        "mixed": "json",
        "none": "text",
    }
    assert table.to_pylist() == [
        {"id": 1, "score": 1.0, "name": "a", "ok": True, "born": date(2024, 1, 2), "at": utc(2024, 1, 2, 3, 4, 5),
         "key": U1.bytes, "opens": time(8, 30), "tags": '["x"]', "meta": '{"k":1}', "mixed": "1", "none": None},
        {"id": 2, "score": 2.5, "name": "b", "ok": False, "born": date(2024, 1, 3), "at": utc(2024, 1, 2, 3, 4, 5),
         "key": U2.bytes, "opens": time(9), "tags": "[]", "meta": None, "mixed": '"one"', "none": None},
        dict.fromkeys(["id", "score", "name", "ok", "born", "at", "key", "opens", "tags", "meta", "mixed", "none"]),
    ]  # fmt: skip


def test_jsonl_strings_that_look_like_numbers_stay_text() -> None:
    reader, table = read(b'{"a": "1", "b": "true"}\n', "jsonl")
    assert types_of(reader) == {"a": "text", "b": "text"}
    assert table.to_pylist() == [{"a": "1", "b": "true"}]


def test_jsonl_without_keys_in_the_first_block() -> None:
    assert "no columns" in malformed(b"\n{}\n", "jsonl").reason


def test_column_names_are_normalized_and_distinct() -> None:
    raw = ["First Name", "first_name", "2nd", "", "Café (€)", "a", "A", "_ok", "x" * 70, "x" * 70, "ID"]
    assert column_names(raw) == [
        "First Name".lower().replace(" ", "_"),
        "first_name_2",
        "_2nd",
        "col_4",
        "cafe",
        "a",
        "a_2",
        "_ok",
        "x" * 63,
        "x" * 61 + "_2",
        "id",
    ]


def test_header_names_are_normalized() -> None:
    reader, _ = read(b"User ID,user id,%\n1,2,3\n")
    assert [c.name for c in reader.columns] == ["user_id", "user_id_2", "col_3"]


# --- given columns ---------------------------------------------------------------------------------------------


def test_given_columns_match_header_names_in_any_order() -> None:
    data = b"Name,Age,Joined At\nann,41,2020-01-01\nbo,,2021-06-30T12:00:00-05:00\n"
    columns = [
        IngestColumn("joined_at", "timestamp"),
        IngestColumn("age", "float"),
        IngestColumn("name", "text", nullable=False),
    ]
    reader, table = read(data, columns=columns)
    assert [(c.name, c.logical_type, c.pg_type, c.nullable) for c in reader.columns] == [
        ("joined_at", "timestamp", "timestamptz", True),
        ("age", "float", "double precision", True),
        ("name", "text", "text", False),
    ]
    assert table.to_pylist() == [
        {"joined_at": utc(2020, 1, 1), "age": 41.0, "name": "ann"},
        {"joined_at": utc(2021, 6, 30, 17), "age": None, "name": "bo"},
    ]


def test_given_column_missing_from_the_header() -> None:
    exc = malformed(b"a,b\n1,2\n", columns=[IngestColumn("a", "integer"), IngestColumn("c", "integer")])
    assert exc.row is None
    assert exc.column == "c"
    assert "no column 'c'" in exc.reason


def test_file_column_that_was_not_given() -> None:
    exc = malformed(b"a,b,Extra One\n1,2,3\n", columns=[IngestColumn("a", "integer"), IngestColumn("b", "integer")])
    assert exc.row is None
    assert "'Extra One'" in exc.reason


def test_headerless_csv_names_and_positions() -> None:
    reader, table = read(b"1,x\n2,y", header=False)
    assert types_of(reader) == {"col_1": "integer", "col_2": "text"}
    assert table.to_pylist() == [{"col_1": 1, "col_2": "x"}, {"col_1": 2, "col_2": "y"}]
    given = [IngestColumn("n", "integer"), IngestColumn("s", "text")]
    assert rows(b"1,x\n2,y\n", columns=given, header=False) == [{"n": 1, "s": "x"}, {"n": 2, "s": "y"}]
    exc = malformed(b"1,x\n", columns=given[:1], header=False)
    assert "2 fields per record, but 1 columns" in exc.reason


def test_unsupported_and_invalid_given_columns_fail_before_reading() -> None:
    class Unreadable(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise AssertionError("must not read")

    def build(columns: list[IngestColumn]) -> None:
        IngestReader(Unreadable(), IngestOptions("csv"), columns)  # type: ignore[arg-type]

    with pytest.raises(UnsupportedColumn, match="'interval'"):
        build([IngestColumn("a", "interval")])
    with pytest.raises(ValueError, match="lower-case identifier"):
        build([IngestColumn("Bad Name", "text")])
    with pytest.raises(ValueError, match="twice"):
        build([IngestColumn("a", "text"), IngestColumn("a", "integer")])
    with pytest.raises(ValueError, match="delimiter"):
        IngestReader(Unreadable(), IngestOptions("csv", delimiter=";;"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="encoding"):
        IngestReader(Unreadable(), IngestOptions("csv", encoding="klingon"))  # type: ignore[arg-type]


def test_jsonl_given_columns_missing_keys_are_null_and_keys_match_normalized() -> None:
    data = b'{"id": 1, "Full Name": "a"}\n{"id": 2}\n'
    columns = [IngestColumn("id", "integer", nullable=False), IngestColumn("full_name", "text")]
    assert rows(data, "jsonl", columns) == [{"id": 1, "full_name": "a"}, {"id": 2, "full_name": None}]


def test_jsonl_unknown_key_is_a_malformed_row() -> None:
    data = b'{"id": 1}\n\n{"id": 2, "zzz": 3}\n'
    exc = malformed(data, "jsonl", [IngestColumn("id", "integer")])
    assert exc.row == 3
    assert "key 'zzz' is unknown" in exc.reason


# --- CSV options -----------------------------------------------------------------------------------------------


def test_delimiter_and_quote() -> None:
    data = b"a;b\n'x;y';'it''s'\n1;\n"
    assert rows(data, delimiter=";", quote="'") == [{"a": "x;y", "b": "it's"}, {"a": "1", "b": ""}]
    assert rows(b'a\tb\n"q"\t2\n', delimiter="\t", quote="") == [{"a": '"q"', "b": 2}]


def test_latin1_and_utf16_encodings() -> None:
    text = "name,city\nJosé,Zürich\nRenée,Köln\n"
    expected = [{"name": "José", "city": "Zürich"}, {"name": "Renée", "city": "Köln"}]
    assert rows(text.encode("latin-1"), encoding="latin-1") == expected
    assert rows(text.encode("utf-16"), encoding="utf-16", block_size=16) == expected
    assert rows(b'{"name": "Jos\xe9"}\n', "jsonl", encoding="latin-1") == [{"name": "José"}]


def test_invalid_utf8_is_a_malformed_row_and_bom_is_ignored() -> None:
    assert rows(b"\xef\xbb\xbfa\nx\n") == [{"a": "x"}]
    exc = malformed(b"a,b\nok,1\nbad\xff,2\n")
    assert (exc.row, exc.column) == (2, "a")
    assert "UTF-8" in exc.reason
    _, table = read(b"a,b\nok,1\nbad\xff,2\n", skip_malformed_rows=True)
    assert table.to_pylist() == [{"a": "ok", "b": 1}]


def test_quoted_newlines_and_blank_lines_are_not_records() -> None:
    data = b'a,b\n"line\none",1\n\n\n"x",2\n3\n'
    exc = malformed(data)
    assert exc.row == 3
    assert exc.reason == "has 1 fields, expected 2"


def test_last_line_without_newline() -> None:
    assert rows(b"a,b\n1,2") == [{"a": 1, "b": 2}]
    assert rows(b"1,2", header=False) == [{"col_1": 1, "col_2": 2}]


def test_empty_files() -> None:
    assert "empty" in malformed(b"").reason
    assert "empty" in malformed(b"\n\n").reason
    reader, table = read(b"a,b\n")
    assert types_of(reader) == {"a": "text", "b": "text"}
    assert table.num_rows == 0
    _, table = read(b"", columns=[IngestColumn("a", "integer")], header=False)
    assert table.num_rows == 0
    _, table = read(b"", "jsonl", [IngestColumn("a", "integer")])
    assert table.num_rows == 0


# --- compression -----------------------------------------------------------------------------------------------


def zstd(data: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as out:
        out.write(data)
    return bytes(sink.getvalue())


@pytest.mark.parametrize("compress", [gzip.compress, zstd, lambda d: gzip.compress(d[:10]) + gzip.compress(d[10:])])
@pytest.mark.parametrize("explicit", [False, True])
def test_compressed_csv_and_jsonl(compress: Any, explicit: bool) -> None:
    csv = b"a,b\n" + b"".join(b"%d,x%d\n" % (i, i) for i in range(1000))
    codec = "zstd" if compress is zstd else "gzip"
    compression = codec if explicit else None
    reader, table = read(compress(csv), compression=compression, block_size=512)
    assert table.to_pylist() == [{"a": i, "b": f"x{i}"} for i in range(1000)]
    assert reader.bytes_read == len(compress(csv))
    jsonl = b"".join(b'{"a": %d}\n' % i for i in range(1000))
    assert rows(compress(jsonl), "jsonl", compression=compression, block_size=512) == [{"a": i} for i in range(1000)]


def test_empty_compression_means_detect() -> None:
    assert rows(gzip.compress(b"a\n1\n"), compression="") == [{"a": 1}]


def test_compression_none_reads_gzip_bytes_as_is() -> None:
    with pytest.raises(MalformedFile):
        read(gzip.compress(b"a\n1\n"), "jsonl", compression="none")


def test_corrupt_and_truncated_compressed_files() -> None:
    data = gzip.compress(b"a,b\n" + b"1,2\n" * 100_000)
    exc = malformed(data[: len(data) // 2], block_size=4096)
    assert exc.row is None
    assert "cannot" in exc.reason or "not valid" in exc.reason
    assert "cannot be read" in malformed(data[:4] + b"\x00" * 50).reason
    malformed(zstd(b"a\n1\n")[:-3], "jsonl")


def test_whole_file_compression_of_parquet_is_an_error() -> None:
    data = parquet_bytes(pa.table({"a": [1]}))
    assert "compressed as a whole" in malformed(gzip.compress(data), "parquet").reason
    assert "compressed as a whole" in malformed(zstd(data), "parquet").reason
    assert "gzip-compressed" in malformed(data, "parquet", compression="gzip").reason


# --- Parquet ---------------------------------------------------------------------------------------------------


def all_types_table() -> pa.Table:
    paris = timezone(timedelta(hours=1))
    return pa.table(
        {
            "I8": pa.array([1, None, -3], pa.int8()),
            "i32": pa.array([1, 2, 3], pa.int32()),
            "u32": pa.array([1, 2, 4_000_000_000], pa.uint32()),
            "i64": pa.array([2**62, 0, -1], pa.int64()),
            "f32": pa.array([1.5, None, -0.25], pa.float32()),
            "f64": pa.array([1e300, float("nan"), 0.0], pa.float64()),
            "s": pa.array(["a", "", None], pa.string()),
            "ls": pa.array(["x", "y", "z"], pa.large_string()),
            "dict": pa.array(["p", "q", "p"]).dictionary_encode(),
            "b": pa.array([True, False, None]),
            "d": pa.array([date(2024, 1, 2), date(1, 1, 1), None], pa.date32()),
            "ts_naive_s": pa.array([datetime(2024, 1, 2, 3, 4, 5), None, datetime(1970, 1, 1)], pa.timestamp("s")),
            "ts_ms": pa.array([datetime(2024, 1, 2, 3, 4, 5, 6000, tzinfo=paris)] * 3, pa.timestamp("ms", "+01:00")),
            "ts_ns": pa.array([1_700_000_000_123_456_789, None, 0], pa.timestamp("ns", "UTC")),
            "t32": pa.array([time(1, 2, 3), None, time(23, 59, 59)], pa.time32("s")),
            "t64": pa.array([3_600_000_000_123, 0, None], pa.time64("ns")),
            "u": pa.array([U1.bytes, U2.bytes, None], pa.uuid()),
            "nested": pa.array([{"k": 1, "l": [1, 2]}, None, {"k": None, "l": []}]),
            "lst": pa.array([[1, 2], [], None], pa.list_(pa.int64())),
            "m": pa.array([[("a", 1)], None, []], pa.map_(pa.string(), pa.int64())),
            "j": pa.array(['{"a": [1]}', None, "2"], pa.json_(pa.string())),
            "nothing": pa.nulls(3),
        }
    )


def test_parquet_round_trip_of_every_type() -> None:
    data = parquet_bytes(all_types_table())
    reader, table = read(data, "parquet", block_size=64)
    assert 0 < reader.bytes_read <= len(data)
    assert types_of(reader) == {
        "i8": "integer", "i32": "integer", "u32": "integer", "i64": "integer", "f32": "float", "f64": "float",
        "s": "text", "ls": "text", "dict": "text", "b": "boolean", "d": "date", "ts_naive_s": "timestamp",
        "ts_ms": "timestamp", "ts_ns": "timestamp", "t32": "time", "t64": "time", "u": "uuid", "nested": "json",
        "lst": "json", "m": "json", "j": "json", "nothing": "text",
    }  # fmt: skip
    got = table.to_pydict()
    assert got["i8"] == [1, None, -3]
    assert got["u32"] == [1, 2, 4_000_000_000]
    assert got["i64"] == [2**62, 0, -1]
    assert got["f32"] == [1.5, None, -0.25]
    assert got["f64"][0] == 1e300
    assert got["s"] == ["a", "", None]
    assert got["dict"] == ["p", "q", "p"]
    assert got["b"] == [True, False, None]
    assert got["d"] == [date(2024, 1, 2), date(1, 1, 1), None]
    assert got["ts_naive_s"] == [utc(2024, 1, 2, 3, 4, 5), None, utc(1970, 1, 1)]
    assert got["ts_ms"] == [utc(2024, 1, 2, 2, 4, 5, 6000)] * 3
    assert got["ts_ns"] == [datetime.fromtimestamp(1_700_000_000.123456, UTC), None, utc(1970, 1, 1)]
    assert got["t32"] == [time(1, 2, 3), None, time(23, 59, 59)]
    assert got["t64"] == [time(1, 0, 0, 0), time(0), None]
    assert got["u"] == [U1.bytes, U2.bytes, None]
    assert [json.loads(v) if v else v for v in got["nested"]] == [{"k": 1, "l": [1, 2]}, None, {"k": None, "l": []}]
    assert got["lst"] == ["[1,2]", "[]", None]
    assert got["m"] == ['{"a":1}', None, "{}"]
    assert got["j"] == ['{"a": [1]}', None, "2"]
    assert got["nothing"] == [None, None, None]


def test_parquet_given_columns_cast_by_name() -> None:
    table = pa.table(
        {
            "Price": pa.array([Decimal("1.25"), None], pa.decimal128(10, 2)),
            "n": pa.array([1, 2], pa.int32()),
            "when": pa.array(["2024-01-02 03:04:05+01", "2024-01-02"]),
            "raw": pa.array([b"text", b"more"], pa.binary()),
            "k": pa.array([U1.bytes, U2.bytes], pa.binary(16)),
        }
    )
    columns = [
        IngestColumn("price", "float"),
        IngestColumn("n", "text"),
        IngestColumn("when", "timestamp"),
        IngestColumn("raw", "text"),
        IngestColumn("k", "uuid"),
    ]
    assert rows(parquet_bytes(table), "parquet", columns) == [
        {"price": 1.25, "n": "1", "when": utc(2024, 1, 2, 2, 4, 5), "raw": "text", "k": U1.bytes},
        {"price": None, "n": "2", "when": utc(2024, 1, 2), "raw": "more", "k": U2.bytes},
    ]


def test_parquet_unsupported_and_mismatched_types() -> None:
    data = parquet_bytes(pa.table({"price": pa.array([Decimal("1.25")], pa.decimal128(10, 2))}))
    exc = malformed(data, "parquet")
    assert exc.column == "price"
    assert "decimal128(10, 2)" in exc.reason
    data = parquet_bytes(pa.table({"s": pa.array([{"a": 1}])}))
    exc = malformed(data, "parquet", [IngestColumn("s", "integer")])
    assert (exc.row, exc.column) == (None, "s")
    assert "cannot be imported as integer" in exc.reason
    exc = malformed(data, "parquet", [IngestColumn("t", "json")])
    assert "no column 't'" in exc.reason


def test_parquet_bad_values_have_their_row_numbers() -> None:
    table = pa.table({"n": pa.array([*range(10), 2**64 - 1, None], pa.uint64())})
    data = parquet_bytes(table, row_group_size=4)
    exc = malformed(data, "parquet", block_size=16)
    assert (exc.row, exc.column) == (11, "n")
    exc = malformed(data, "parquet", [IngestColumn("n", "integer", nullable=False)], skip_malformed_rows=False)
    assert exc.row == 11
    reader, got = read(data, "parquet", [IngestColumn("n", "integer", nullable=False)], skip_malformed_rows=True)
    assert got.column("n").to_pylist() == list(range(10))
    assert (reader.rows, reader.skipped) == (10, 2)


def test_parquet_dates_beyond_postgresql() -> None:
    data = parquet_bytes(pa.table({"d": pa.array([0, -(2**31)], pa.date32())}))
    exc = malformed(data, "parquet")
    assert (exc.row, exc.column) == (2, "d")
    assert "out of PostgreSQL's date range" in exc.reason


@pytest.mark.parametrize("cut", [0, 3, 100, -8, -1])
def test_truncated_or_garbage_parquet(cut: int) -> None:
    data = parquet_bytes(pa.table({"a": list(range(1000))}))
    exc = malformed(data[:cut] if cut else b"garbage, not parquet at all", "parquet")
    assert exc.row is None


def test_parquet_with_corrupt_pages() -> None:
    data = bytearray(parquet_bytes(pa.table({"a": [f"value {i}" for i in range(5000)]}), compression="snappy"))
    data[100:4000] = b"\x07" * 3900
    with pytest.raises(MalformedFile):
        read(bytes(data), "parquet")


# --- malformed rows --------------------------------------------------------------------------------------------

INT_AND_DATE = [IngestColumn("n", "integer", nullable=False), IngestColumn("d", "date")]


def test_csv_malformed_rows_and_skipping() -> None:
    data = b"n,d\n1,2024-01-01\n2,not a date\n3\n,2024-01-04\n5,2024-01-05\n6,2024-01-06,x\n"
    exc = malformed(data, columns=INT_AND_DATE)
    assert str(exc) == "row 2, column 'd': 'not a date' is not a date (YYYY-MM-DD)"
    reader, table = read(data, columns=INT_AND_DATE, skip_malformed_rows=True)
    assert table.to_pylist() == [{"n": 1, "d": date(2024, 1, 1)}, {"n": 5, "d": date(2024, 1, 5)}]
    assert (reader.rows, reader.skipped) == (2, 4)


def test_first_problem_wins_across_kinds() -> None:
    assert malformed(b"n,d\n1,2024-01-01\n2\nx,2024-01-01\n", columns=INT_AND_DATE).row == 2
    assert malformed(b"n,d\n1,2024-01-01\nx,2024-01-01\n2\n", columns=INT_AND_DATE).row == 2
    exc = malformed(b"n,d\nx,y\n", columns=INT_AND_DATE)
    assert exc.column == "n"
    exc = malformed(b"n,d\n1,2024-01-01\n1,2024-01-01\n1,2024-01-01,extra\n")
    assert (exc.row, exc.column, exc.reason) == (3, None, "has 3 fields, expected 2")
    assert str(exc) == "row 3: has 3 fields, expected 2"


def test_non_nullable_column_with_an_empty_value() -> None:
    exc = malformed(b"n,d\n1,\n,2024-01-01\n", columns=INT_AND_DATE)
    assert str(exc) == "row 2, column 'n': no value, but the column is not nullable"
    exc = malformed(b'{"n": 1}\n{"d": "2024-01-01"}\n', "jsonl", INT_AND_DATE)
    assert (exc.row, exc.column) == (2, "n")
    # An empty text value is the empty string, not NULL.
    assert rows(b"t\n\n", columns=[IngestColumn("t", "text", nullable=False)], header=True) == []
    assert rows(b't,n\n"",1\n', columns=[IngestColumn("t", "text", nullable=False), IngestColumn("n", "integer")]) == [
        {"t": "", "n": 1}
    ]


def test_values_that_do_not_convert() -> None:
    cases = [
        ("integer", "1.5", "'1.5' is not a 64-bit integer"),
        ("integer", "9223372036854775808", "is not a 64-bit integer"),
        ("float", "one", "'one' is not a number"),
        ("boolean", "maybe", "'maybe' is not a boolean"),
        ("date", "2024-13-01", "is not a date"),
        ("time", "25:00", "is not a time"),
        ("timestamp", "yesterday", "is not a timestamp"),
        ("uuid", "123e4567-e89b-12d3-a456-42661417400g", "is not a UUID"),
        ("json", "{bad", "is not valid JSON"),
        ("json", "NaN", "is not valid JSON"),
        ("json", '"\\u0000"', "\\u0000"),
        ("json", '["\\ud800"]', "lone UTF-16 surrogate"),
        ("text", "a\x00b", "NUL"),
    ]
    for logical, value, reason in cases:
        data = b'v\nok\n"' + value.replace('"', '""').encode() + b'"\n'
        given = [IngestColumn("v", logical)]
        good = {"integer": "1", "float": "1", "boolean": "t", "date": "2024-01-01", "time": "10:00",
                "timestamp": "2024-01-01", "uuid": str(U1), "json": "1", "text": "x"}[logical]  # fmt: skip
        exc = malformed(data.replace(b"ok", good.encode()), columns=given)
        assert (exc.row, exc.column) == (2, "v"), logical
        assert reason in exc.reason, (logical, exc.reason)


def test_json_column_values_are_valid_json_text() -> None:
    data = b'j\n"{""a"": [1, 2.50]}"\n  \n"null"\n'
    assert rows(data, columns=[IngestColumn("j", "json")]) == [{"j": '{"a": [1, 2.50]}'}, {"j": None}, {"j": "null"}]


def test_jsonl_malformed_lines_and_skipping() -> None:
    data = (
        b'{"n": 1, "d": "2024-01-01"}\n'
        b"\n"
        b'{"n": 2, "d": "bad"}\n'  # line 3
        b"not json\n"  # line 4
        b'{"n": 1.5}\n'  # line 5
        b"[1, 2]\n"  # line 6
        b'{"n": 7} {"n": 8}\n'  # line 7: two objects
        b'{"n": "9"}\n'  # line 8
        b'{"n": 10, "d": "2024-01-10"}\n'
    )
    exc = malformed(data, "jsonl", INT_AND_DATE)
    assert str(exc) == "row 3, column 'd': 'bad' is not a date (YYYY-MM-DD)"
    reader, table = read(data, "jsonl", INT_AND_DATE, skip_malformed_rows=True)
    assert table.to_pylist() == [{"n": 1, "d": date(2024, 1, 1)}, {"n": 10, "d": date(2024, 1, 10)}]
    assert (reader.rows, reader.skipped) == (2, 6)
    errors = []
    for line in data.split(b"\n")[2:8]:
        errors.append(malformed(b"\n\n" + line + b"\n", "jsonl", INT_AND_DATE))
    assert [e.row for e in errors] == [3] * 6
    assert "not valid JSON" in errors[1].reason
    assert "1.5 is not a 64-bit integer" in errors[2].reason
    assert "not an object" in errors[3].reason
    assert "not valid JSON" in errors[4].reason
    assert "'9' is not a 64-bit integer" in errors[5].reason


def test_jsonl_bad_json_values_in_a_json_column() -> None:
    columns = [IngestColumn("j", "json")]
    assert rows(b'{"j": {"a": [1, 2.5, "x"]}}\n{"j": null}\n', "jsonl", columns) == [
        {"j": '{"a":[1,2.5,"x"]}'},
        {"j": None},
    ]
    exc = malformed(b'{"j": 1}\n{"j": [NaN]}\n', "jsonl", columns)
    assert (exc.row, exc.column) == (2, "j")
    assert "NaN" in exc.reason
    exc = malformed(b'{"j": {"k": "\\u0000"}}\n', "jsonl", columns)
    assert "\\u0000" in exc.reason


def test_jsonl_text_with_nul_and_lone_surrogates() -> None:
    columns = [IngestColumn("t", "text")]
    assert malformed(b'{"t": "a\\u0000"}\n', "jsonl", columns).column == "t"
    assert malformed(b'{"t": "\\ud800"}\n', "jsonl", columns).row == 1


# --- blocks and row numbers ------------------------------------------------------------------------------------


def messy_csv(count: int) -> tuple[bytes, set[int]]:
    """Records with quoted newlines, blank lines and bad rows; returns the file and its bad data rows."""
    lines = [b"id,note,when"]
    bad = set()
    for row in range(1, count + 1):
        if row % 37 == 0:
            lines.append(b"%d,too,many,fields" % row)
            bad.add(row)
        elif row % 41 == 0:
            lines.append(b"%d,bad date,2024-02-31" % row)
            bad.add(row)
        elif row % 5 == 0:
            lines.append(b'%d,"two\nlines, and ""quotes""",2024-01-01 10:00:00+01' % row)
        else:
            lines.append(b"%d,plain %d,2024-01-%02d" % (row, row, row % 28 + 1))
        if row % 11 == 0:
            lines.append(b"")
    return b"\n".join(lines) + b"\n", bad


COLUMNS = [IngestColumn("id", "integer"), IngestColumn("note", "text"), IngestColumn("when", "timestamp")]


@pytest.mark.parametrize("block_size", [200, 1000, 4096])
def test_many_blocks_give_the_same_rows_and_row_numbers(block_size: int) -> None:
    data, bad = messy_csv(3000)
    _, whole = read(data, columns=COLUMNS, skip_malformed_rows=True)
    reader, blocks = read(data, columns=COLUMNS, skip_malformed_rows=True, block_size=block_size)
    assert blocks.equals(whole)
    assert blocks.column("id").to_pylist() == [i for i in range(1, 3001) if i not in bad]
    assert (reader.rows, reader.skipped) == (3000 - len(bad), len(bad))
    # Without skipping, each bad row is reported in turn once the ones before it are fixed.
    for row in sorted(bad)[:6]:
        exc = malformed(data, columns=COLUMNS, block_size=block_size)
        assert exc.row == row
        data = data.replace(b"\n%d,too,many,fields\n" % row, b"\n%d,fixed,\n" % row)
        data = data.replace(b"\n%d,bad date,2024-02-31\n" % row, b"\n%d,fixed,\n" % row)


@pytest.mark.parametrize("block_size", [100, 333, 5000])
def test_jsonl_blocks_give_the_same_rows_and_line_numbers(block_size: int) -> None:
    lines = []
    for i in range(1, 2001):
        if i % 7 == 0:
            lines.append("")
        elif i % 97 == 0:
            lines.append(json.dumps({"id": i, "note": 5}))
        else:
            lines.append(json.dumps({"id": i, "note": f"n{i}", "when": "2024-01-01T00:00:00Z"}))
    data = "\n".join(lines).encode()
    _, whole = read(data, "jsonl", COLUMNS, skip_malformed_rows=True)
    reader, blocks = read(data, "jsonl", COLUMNS, skip_malformed_rows=True, block_size=block_size)
    assert blocks.equals(whole)
    expected = [i for i in range(1, 2001) if i % 7 and i % 97]
    assert blocks.column("id").to_pylist() == expected
    assert reader.skipped == len([i for i in range(1, 2001) if i % 7 and not i % 97])
    exc = malformed(data, "jsonl", COLUMNS, block_size=block_size)
    assert (exc.row, exc.column) == (97, "note")


def test_a_record_longer_than_the_block() -> None:
    data = b"a\n" + b"x" * 5000 + b"\n"
    exc = malformed(data, block_size=1024)
    assert "block size" in exc.reason
    assert rows(b'{"a": "' + b"x" * 5000 + b'"}\n', "jsonl", block_size=1024) == [{"a": "x" * 5000}]


# --- the caller's errors, progress and COPY --------------------------------------------------------------------


def test_errors_of_the_source_are_not_malformed_files() -> None:
    class Flaky(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)
            self.reads = 0

        def readable(self) -> bool:
            return True

        def read(self, size: int = -1) -> bytes:
            self.reads += 1
            if self.reads > 3:
                raise ConnectionResetError("storage went away")
            return self.data.read(size)

    csv = b"a\n" + b"1\n" * 100_000
    jsonl = b'{"a": 1}\n' * 100_000
    for data, fmt in [(csv, "csv"), (gzip.compress(csv), "csv"), (jsonl, "jsonl")]:
        reader = IngestReader(Flaky(data), IngestOptions(fmt), block_size=1024)  # type: ignore[arg-type]
        with pytest.raises(ConnectionResetError):
            list(reader.batches())


def test_the_file_is_read_only_by_the_consuming_thread() -> None:
    """pyarrow's CSV reader has an I/O thread; the caller's file must not be read from it (the worker's
    file waits on its event loop, and a reader being dropped waits for that thread)."""
    readers: set[int] = set()

    class Recording(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            readers.add(threading.get_ident())
            return super().read(size)

    data = b"a,b\n" + b"".join(b"%d,row %d\n" % (i, i) for i in range(50_000))
    table = pa.table({"a": range(50_000), "b": [f"row {i}" for i in range(50_000)]})
    sources = [(data, "csv"), (gzip.compress(data), "csv"), (parquet_bytes(table, row_group_size=5000), "parquet")]
    for source, fmt in sources:
        reader = IngestReader(Recording(source), IngestOptions(fmt), block_size=16 * 1024)  # type: ignore[arg-type]
        assert sum(batch.num_rows for batch in reader.batches()) == 50_000
    assert readers == {threading.get_ident()}


def test_abandoning_the_batches_midway_does_not_hang() -> None:
    data = b"a\n" + b"1\n" * 200_000
    done = threading.Event()

    def abandon() -> None:
        reader = IngestReader(io.BytesIO(data), IngestOptions("csv"), block_size=4096)
        batches = reader.batches()
        assert isinstance(batches, Generator)
        next(batches)
        batches.close()
        bad = IngestReader(io.BytesIO(data + b"x\n" + data), IngestOptions("csv"), block_size=4096)
        with pytest.raises(MalformedFile):
            list(bad.batches())
        done.set()

    worker = threading.Thread(target=abandon, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert done.is_set()


def test_a_process_ends_cleanly_with_half_read_batches() -> None:
    """Batches dropped unclosed (kept until exit, as by a traceback cycle) must not hang or crash the exit."""
    script = (
        "import io\n"
        "from worker.engines.ingest import IngestOptions, IngestReader\n"
        "reader = IngestReader(io.BytesIO(b'a\\n' + b'1\\n' * 1_000_000), IngestOptions('csv'), block_size=4096)\n"
        "LEAKED = reader.batches()\n"
        "next(LEAKED)\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-c", script], cwd=root, timeout=60, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]


def test_bytes_read_and_drain_to_the_end() -> None:
    data = b"a\n" + b"1\n" * 10_000
    source = io.BytesIO(data)
    reader = IngestReader(source, IngestOptions("csv"), block_size=1000)
    assert 0 < reader.bytes_read < len(data)
    assert sum(b.num_rows for b in reader.batches()) == 10_000
    assert reader.rows == 10_000
    assert reader.bytes_read == len(data) == source.tell()
    with pytest.raises(RuntimeError):
        list(reader.batches())


def test_every_type_encodes_for_copy() -> None:
    """Every batch of every source, for every type, is accepted by the binary COPY encoder."""
    sources = [
        read(CSV_ALL_TYPES, block_size=256),
        read(b'{"j": {"a": 1}, "n": 1, "t": "x"}\n{"j": [1], "n": null}\n', "jsonl"),
        read(parquet_bytes(all_types_table()), "parquet", block_size=64),
        read(b"j,t\n[1],x\n,\n", columns=[IngestColumn("j", "json"), IngestColumn("t", "text")]),
    ]
    seen = set()
    for reader, table in sources:
        for batch in table.to_batches():
            assert len(encode_copy_tuples(batch)) > 0
        seen |= {c.logical_type for c in reader.columns}
    assert seen == set(ARROW_TYPES)


# --- memory ----------------------------------------------------------------------------------------------------


class GeneratedCsv(io.RawIOBase):
    """A large CSV made on the fly: the same chunk of rows over and over, never held whole."""

    def __init__(self, size: int) -> None:
        self.chunk = b"".join(b"%d,%d.25,name %d,true,2024-01-%02d\n" % (i, i, i, i % 28 + 1) for i in range(20_000))
        self.header = b"id,amount,name,flag,day\n"
        self.left = size - (size - len(self.header)) % len(self.chunk)  # whole rows only
        self.offset = 0
        self.header_sent = False

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if not self.header_sent:
            self.header_sent = True
            self.left -= len(self.header)
            return self.header
        size = min(size if size >= 0 else self.left, self.left)
        out = []
        while size > 0:
            piece = self.chunk[self.offset : self.offset + size]
            out.append(piece)
            self.offset = (self.offset + len(piece)) % len(self.chunk)
            size -= len(piece)
            self.left -= len(piece)
        return b"".join(out)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_large_file_streams_in_bounded_memory() -> None:
    # A first, small read loads what any first read does (library pages, compute kernels): not per-file memory.
    warm_up = IngestReader(GeneratedCsv(16 * 1024 * 1024), IngestOptions("csv"))  # type: ignore[arg-type]
    assert sum(batch.num_rows for batch in warm_up.batches()) > 0
    size = 200 * 1024 * 1024
    start = rss_bytes()
    reader = IngestReader(GeneratedCsv(size), IngestOptions("csv"))  # type: ignore[arg-type]
    peak = start
    count = 0
    for batch in reader.batches():
        count += batch.num_rows
        peak = max(peak, rss_bytes())
    assert reader.bytes_read > size - 2 * 1024 * 1024
    assert count == reader.rows > 4_000_000
    assert peak - start < 80 * 1024 * 1024, f"RSS grew by {(peak - start) / 2**20:.0f} MiB"
