"""Binary COPY payloads into a real PostgreSQL, read back and compared with the Arrow data."""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql
from pydantic import ValidationError

from server.core.fieldtypes import FIELD_TYPES
from server.core.schema import ColumnDef, SchemaSpec, columns, validate_schema
from worker.engines.generate import generate_chunk
from worker.engines.pgcopy import copy_sql, create_table_sql, encode_copy_binary

pytestmark = pytest.mark.integration

SCHEMA = "copy_test"


def load(
    conninfo: str, table: str, cols: list[ColumnDef], *batches: pa.RecordBatch, order_by: str
) -> list[tuple[Any, ...]]:
    """Create the table, COPY each batch in, and read every row back."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
        conn.execute(create_table_sql(SCHEMA, table, cols))
        for batch in batches:
            with conn.transaction(), conn.cursor().copy(copy_sql(SCHEMA, table, cols)) as copy:
                copy.write(encode_copy_binary(batch))
        select = sql.SQL("SELECT {} FROM {}.{} ORDER BY {}").format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in cols),
            sql.Identifier(SCHEMA),
            sql.Identifier(table),
            sql.Identifier(order_by),
        )
        return conn.execute(select).fetchall()


def as_python(batch: pa.RecordBatch, uuid_columns: set[str]) -> list[tuple[Any, ...]]:
    rows = []
    for row in batch.to_pylist():
        rows.append(tuple(uuid.UUID(bytes=v) if k in uuid_columns and v is not None else v for k, v in row.items()))
    return rows


def test_every_encoding_round_trips(pg_conninfo: str) -> None:
    plus_five = timezone(timedelta(hours=5, minutes=30))
    batch = pa.record_batch(
        {
            "pos": pa.array([1, 2, 3, 4], pa.int64()),
            "big": pa.array([-(2**63), 2**63 - 1, None, 0], pa.int64()),
            "int": pa.array([-(2**31), None, 2**31 - 1, 5], pa.int32()),
            "small": pa.array([None, -(2**15), 2**15 - 1, 0], pa.int16()),
            "dbl": pa.array([math.pi, float("inf"), -0.0, None], pa.float64()),
            "real": pa.array([0.5, None, float("-inf"), 3.25], pa.float32()),
            "flag": pa.array([True, False, None, True]),
            "id": pa.array(
                [uuid.uuid4().bytes, None, uuid.UUID(int=0).bytes, uuid.UUID(int=2**128 - 1).bytes], pa.binary(16)
            ),
            "txt": pa.array(["plain", "héllo wörld", "日本語テキスト 🎉", None]),
            "big_txt": pa.array(["", None, "x" * 100_000, "tab\tnew\nline\\back"], pa.large_string()),
            "raw": pa.array([b"\x00\x01\xff", None, b"", b"\\x00"], pa.binary()),
            "at": pa.array(
                [
                    datetime(2000, 1, 1, tzinfo=UTC),
                    datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
                    None,
                    datetime(2038, 1, 19, 3, 14, 8, 999_999, tzinfo=plus_five),
                ],
                pa.timestamp("us", tz="UTC"),
            ),
            "local": pa.array([datetime(1999, 12, 31, 23, 59, 59), None, datetime(2100, 2, 28), datetime(1900, 3, 1)]),
            "day": pa.array([date(2000, 1, 1), date(1999, 12, 31), date(2400, 2, 29), None]),
        }
    )
    cols = [
        ColumnDef("pos", "integer", "bigint", nullable=False),
        ColumnDef("big", "integer", "bigint", nullable=True),
        ColumnDef("int", "integer", "integer", nullable=True),
        ColumnDef("small", "integer", "smallint", nullable=True),
        ColumnDef("dbl", "float", "double precision", nullable=True),
        ColumnDef("real", "float", "real", nullable=True),
        ColumnDef("flag", "boolean", "boolean", nullable=True),
        ColumnDef("id", "uuid", "uuid", nullable=True),
        ColumnDef("txt", "text", "text", nullable=True),
        ColumnDef("big_txt", "text", "text", nullable=True),
        ColumnDef("raw", "text", "bytea", nullable=True),
        ColumnDef("at", "timestamp", "timestamp with time zone", nullable=True),
        ColumnDef("local", "timestamp", "timestamp", nullable=True),
        ColumnDef("day", "date", "date", nullable=True),
    ]

    assert load(pg_conninfo, "every_type", cols, batch, order_by="pos") == as_python(batch, {"id"})


def test_generated_chunks_round_trip(pg_conninfo: str) -> None:
    spec = validate_schema(
        SchemaSpec.from_json(
            {
                "rows": 20_000,
                "seed": 7,
                "fields": [
                    {"name": "row_no", "type": "sequence", "unique": True},
                    {"name": "id", "type": "uuid4", "unique": True, "null_rate": 0.1},
                    {"name": "n", "type": "integer", "params": {"min": -5, "max": 5}, "null_rate": 0.2},
                    {"name": "x", "type": "float", "params": {"decimals": 3}, "null_rate": 0.2},
                    {"name": "ok", "type": "boolean", "null_rate": 0.2},
                    {"name": "kind", "type": "choice", "params": {"values": ["α", "β", "ünïcode ✓"]}, "null_rate": 0.2},
                    {"name": "body", "type": "sentence", "null_rate": 0.2},
                    {"name": "w", "type": "word"},
                    {"name": "at", "type": "timestamp", "null_rate": 0.2},
                ],
            }
        ),
        max_rows=1_000_000,
        max_fields=100,
    )
    chunks = [generate_chunk(spec, 0, 12_345), generate_chunk(spec, 12_345, 20_000 - 12_345)]

    rows = load(pg_conninfo, "generated", columns(spec), *chunks, order_by="row_no")

    expected = [row for chunk in chunks for row in as_python(chunk, {"id"})]
    assert len(rows) == 20_000
    assert rows == expected
    with psycopg.connect(pg_conninfo) as conn:
        nulls, distinct = conn.execute(
            f"SELECT count(*) FILTER (WHERE id IS NULL), count(DISTINCT id) FROM {SCHEMA}.generated"
        ).fetchone() or (None, None)
    assert distinct == 20_000 - nulls


def test_time_interval_numeric_and_jsonb_round_trip(pg_conninfo: str) -> None:
    numerics: dict[str, tuple[pa.DataType, list[str | None]]] = {
        "n_4_1": (pa.decimal128(4, 1), ["-999.9", "0.0", "1.5", None]),
        "n_10_4": (pa.decimal128(10, 4), ["-12345.6789", "0.0001", None, "999999.9999"]),
        "n_6_5": (pa.decimal128(6, 5), ["0.00001", "-9.99999", "0.00000", None]),
        "n_38_0": (pa.decimal128(38, 0), [str(10**38 - 1), str(-(10**38) + 1), "0", "10000"]),
        "n_38_38": (pa.decimal128(38, 38), ["0." + "0" * 37 + "1", "-0." + "9" * 38, None, "0." + "0" * 38]),
        "n_19_7": (pa.decimal128(19, 7), ["123456789012.3456789", "-0.0000001", "100000000000.0000000", None]),
    }
    batch = pa.record_batch(
        {
            "pos": pa.array([1, 2, 3, 4], pa.int64()),
            "t": pa.array([time(0), time(23, 59, 59, 999_999), None, time(12, 30, 1, 5)], pa.time64("us")),
            "i": pa.array(
                [
                    pa.MonthDayNano([0, 0, 0]),
                    pa.MonthDayNano([0, 3, 7_200_000_000_000]),
                    pa.MonthDayNano([0, -1, -1_000]),
                    None,
                ],
                pa.month_day_nano_interval(),
            ),
            **{name: pa.array([v and Decimal(v) for v in values], kind) for name, (kind, values) in numerics.items()},
            "j": pa.ExtensionArray.from_storage(
                pa.json_(pa.string()),
                pa.array(['{"a": [1, 2.5, null], "b": "é\\n\\"q\\""}', "[]", None, '"\\u00e9"']),
            ),
        }
    )
    cols = [
        ColumnDef("pos", "integer", "bigint", nullable=False),
        ColumnDef("t", "time", "time", nullable=True),
        ColumnDef("i", "interval", "interval", nullable=True),
        *(
            ColumnDef(n, "decimal", f"numeric({k.precision},{k.scale})", nullable=True)
            for n, (k, _) in numerics.items()
        ),
        ColumnDef("j", "json", "jsonb", nullable=True),
    ]

    rows = load(pg_conninfo, "scalars", cols, batch, order_by="pos")

    expected_intervals = [timedelta(0), timedelta(days=3, hours=2), timedelta(days=-1, microseconds=-1), None]
    expected_json: list[Any] = [{"a": [1, 2.5, None], "b": 'é\n"q"'}, [], None, "é"]
    for row_index, row in enumerate(rows):
        source = batch.slice(row_index, 1).to_pylist()[0]
        assert row[0:2] == (source["pos"], source["t"])
        assert row[2] == expected_intervals[row_index]
        for offset, name in enumerate(numerics, start=3):
            value = row[offset]
            # Same digits and the same scale (numeric keeps dscale), not just an equal number.
            assert (None if value is None else str(value)) == (None if source[name] is None else str(source[name]))
        assert row[-1] == expected_json[row_index]


def test_interval_months_round_trip(pg_conninfo: str) -> None:
    batch = pa.record_batch(
        {"pos": pa.array([1, 2]), "i": pa.array([pa.MonthDayNano([14, 2, 3_000]), None], pa.month_day_nano_interval())}
    )
    cols = [
        ColumnDef("pos", "integer", "bigint", nullable=False),
        ColumnDef("i", "interval", "interval", nullable=True),
    ]
    load(pg_conninfo, "months", cols, batch, order_by="pos")
    with psycopg.connect(pg_conninfo) as conn:
        text = conn.execute(f"SELECT i::text FROM {SCHEMA}.months ORDER BY pos").fetchall()
    assert text == [("1 year 2 mons 2 days 00:00:00.000003",), (None,)]


def test_arrays_round_trip(pg_conninfo: str) -> None:
    some_uuid = uuid.UUID("0190f5c2-3a4b-7c6d-8e9f-0123456789ab")
    jsonb = pa.ExtensionArray.from_storage(pa.json_(pa.string()), pa.array(['{"k": 1}', None, "2"]))
    arrays: dict[str, tuple[pa.Array, str]] = {
        "ints": (pa.array([[1, None, -(2**63)], [], None, [5]], pa.list_(pa.int64())), "bigint[]"),
        "texts": (pa.array([["a", "é ✓", ""], None, [None], []], pa.list_(pa.string())), "text[]"),
        "flags": (pa.array([[True, False], [None], [], None], pa.list_(pa.bool_())), "boolean[]"),
        "floats": (pa.array([[0.5, float("inf")], [], None, [-0.0]], pa.list_(pa.float64())), "double precision[]"),
        "days": (pa.array([[date(2000, 1, 1), date(1999, 12, 31)], None, [], [None]], pa.list_(pa.date32())), "date[]"),
        "times": (pa.array([[time(1, 2, 3)], [], None, [time(0)]], pa.list_(pa.time64("us"))), "time[]"),
        "ats": (
            pa.array(
                [[datetime(2024, 2, 29, 12, tzinfo=UTC)], None, [], [datetime(1970, 1, 1, tzinfo=UTC), None]],
                pa.list_(pa.timestamp("us", tz="UTC")),
            ),
            "timestamp with time zone[]",
        ),
        "ids": (pa.array([[some_uuid.bytes], [], [None], None], pa.list_(pa.binary(16))), "uuid[]"),
        "amounts": (
            pa.array([[Decimal("1.50"), Decimal("-0.01")], [], None, [None]], pa.list_(pa.decimal128(12, 2))),
            "numeric(12,2)[]",
        ),
        "spans": (
            pa.array([[pa.MonthDayNano([0, 1, 1_000])], None, [], []], pa.list_(pa.month_day_nano_interval())),
            "interval[]",
        ),
        "docs": (pa.ListArray.from_arrays(pa.array([0, 2, 2, 2, 3], pa.int32()), jsonb), "jsonb[]"),
    }
    batch = pa.record_batch({"pos": pa.array([1, 2, 3, 4]), **{name: array for name, (array, _) in arrays.items()}})
    cols = [
        ColumnDef("pos", "integer", "bigint", nullable=False),
        *(ColumnDef(name, "text[]", pg_type, nullable=True) for name, (_, pg_type) in arrays.items()),
    ]

    rows = load(pg_conninfo, "arrays", cols, batch, order_by="pos")

    expected = [
        [v if k != "ids" or v is None else [x and uuid.UUID(bytes=x) for x in v] for k, v in row.items()]
        for row in batch.select(["pos", *(n for n in arrays if n not in {"spans", "docs"})]).to_pylist()
    ]
    plain = [row[: len(arrays) - 1] for row in rows]
    assert [list(row) for row in plain] == expected
    assert [row[-2] for row in rows] == [[timedelta(days=1, microseconds=1)], None, [], []]
    assert [row[-1] for row in rows] == [[{"k": 1}, None], [], [], [2]]


def _as_postgres_returns(value: Any, logical: str) -> Any:
    """An Arrow value as psycopg reads the column back."""
    if value is None:
        return None
    if logical == "uuid":
        return uuid.UUID(bytes=value)
    if logical == "interval":
        return timedelta(days=value.days, microseconds=value.nanoseconds // 1000)
    if logical == "json":
        return json.loads(value)
    if logical.endswith("[]"):
        return [_as_postgres_returns(v, logical[:-2]) for v in value]
    return value


def test_generated_types_round_trip(pg_conninfo: str) -> None:
    fields: list[dict[str, Any]] = [
        {"name": "row_no", "type": "sequence", "unique": True},
        {"name": "u7", "type": "uuid7", "unique": True, "null_rate": 0.1},
        {"name": "amount", "type": "decimal", "params": {"min": -1e6, "max": 1e6, "scale": 3}, "null_rate": 0.1},
        {"name": "price", "type": "money", "null_rate": 0.1},
        {"name": "day", "type": "date", "params": {"start": "2000-01-01"}, "unique": True},
        {"name": "at_time", "type": "time", "params": {"precision": "microsecond"}, "null_rate": 0.1},
        {"name": "span", "type": "interval", "params": {"min": "-P3D", "max": "P40D"}, "null_rate": 0.1},
        {"name": "local", "type": "timestamp_local", "params": {"timezone": "America/New_York"}},
        {"name": "born", "type": "date_of_birth"},
        {
            "name": "doc",
            "type": "json_object",
            "params": {
                "fields": {
                    "id": {"type": "uuid4"},
                    "n": {"type": "decimal"},
                    "t": {"type": "pattern", "params": {"pattern": '["\\\\\\t]{3}'}},
                    "tags": {"type": "array", "params": {"element": {"type": "word"}}},
                    "d": {"type": "interval"},
                }
            },
        },
        {
            "name": "ints",
            "type": "array",
            "params": {"element": {"type": "integer", "null_rate": 0.2}},
            "null_rate": 0.1,
        },
        {"name": "ids", "type": "array", "params": {"element": {"type": "uuid7"}}},
        {"name": "cents", "type": "array", "params": {"element": {"type": "money"}, "max_length": 3}},
        {"name": "objs", "type": "array", "params": {"element": {"type": "json_object"}, "max_length": 2}},
    ]
    spec = validate_schema(
        SchemaSpec.from_json({"rows": 3_000, "seed": 11, "fields": fields}), max_rows=10_000, max_fields=100
    )
    chunks = [generate_chunk(spec, 0, 1_234), generate_chunk(spec, 1_234, 3_000 - 1_234)]
    cols = columns(spec)

    rows = load(pg_conninfo, "generated_types", cols, *chunks, order_by="row_no")

    logical = [c.logical_type for c in cols]
    expected = [
        tuple(_as_postgres_returns(v, t) for v, t in zip(row.values(), logical, strict=True))
        for chunk in chunks
        for row in chunk.to_pylist()
    ]
    assert len(rows) == 3_000
    assert rows == expected


def test_every_catalogue_type_loads_with_its_declared_column_type(pg_conninfo: str) -> None:
    fields: list[dict[str, Any]] = [{"name": "row_no", "type": "sequence", "unique": True}]
    for name, field_type in sorted(FIELD_TYPES.items()):
        try:
            params = field_type.params()
        except ValidationError:
            continue  # has required params (a derived or relational type)
        if params.inputs():
            continue
        # NULLs through make_column need if_else, which Arrow lacks for the json extension type.
        null_rate = 0.0 if field_type.logical_type == "json" else 0.1
        fields.append({"name": f"c_{name}", "type": name, "null_rate": null_rate})
    spec = validate_schema(
        SchemaSpec.from_json({"rows": 2_000, "seed": 5, "fields": fields}), max_rows=10_000, max_fields=200
    )
    batch = generate_chunk(spec, 0, 2_000)
    cols = columns(spec)

    rows = load(pg_conninfo, "catalogue", cols, batch, order_by="row_no")

    logical = [c.logical_type for c in cols]
    expected = [
        tuple(_as_postgres_returns(v, t) for v, t in zip(row.values(), logical, strict=True))
        for row in batch.to_pylist()
    ]
    assert rows == expected
