"""The export engine against a real PostgreSQL: every format and compression, read back and compared.

The dataset has every column type a dataset can have (made by the Generate
engine) plus hand-written rows with the values that break naive writers:
NULLs, empty strings, quotes, delimiters, line breaks, backslashes, control
bytes, NaN and infinities, and `24:00:00`. Each file is read back with the
module a user would use (csv, json, pyarrow) or, for SQL, run by PostgreSQL
itself, and compared with the table's rows as psycopg reads them.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import json
import math
import threading
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from server.core.exports import ExportPlan
from server.core.models import DATASET_SCHEMA
from server.core.schema import ColumnDef, SchemaSpec, columns, validate_schema
from worker.engines.export import SESSION_SETTINGS, ExportOutcome, ExportStopped, FileOutput, run_export
from worker.engines.generate import generate_chunk
from worker.engines.pgcopy import COPY_HEADER, COPY_TRAILER, copy_sql, create_table_sql, encode_copy_tuples

pytestmark = pytest.mark.integration

TABLE = "ds_export_test"
ROWS = 3000
SCHEMA = {
    "seed": 7,
    "fields": [
        {"name": "id", "type": "uuid4"},
        {"name": "n", "type": "integer", "null_rate": 0.1},
        {"name": "x", "type": "normal", "null_rate": 0.1},
        {"name": "ok", "type": "boolean", "null_rate": 0.1},
        {"name": "words", "type": "sentence", "null_rate": 0.1},
        {"name": "day", "type": "date", "null_rate": 0.1},
        {"name": "at", "type": "time", "null_rate": 0.1},
        {"name": "ts", "type": "timestamp", "null_rate": 0.1},
        {"name": "local", "type": "timestamp_local", "params": {"timezone": "Europe/Paris"}, "null_rate": 0.1},
        {"name": "price", "type": "money", "null_rate": 0.1},
        {"name": "amount", "type": "decimal", "null_rate": 0.1},
        {"name": "span", "type": "interval", "null_rate": 0.1},
        {"name": "doc", "type": "json_object", "null_rate": 0.1},
        {"name": "counts", "type": "array", "null_rate": 0.1},
        {"name": "names", "type": "array", "params": {"element": {"type": "first_name"}}, "null_rate": 0.1},
    ],
}
NASTY_TEXT = [
    "",
    "a,b",
    'say "hi"',
    "two\nlines",
    "cr\r\nlf",
    "back\\slash",
    "\x01\x02 bytes",
    "\\.",
    "é ü 漢字 🙂",
    "\t",
]
SPECIAL_FLOATS = ["NaN", "Infinity", "-Infinity"]


@pytest.fixture
async def dataset(pg_conninfo: str) -> tuple[str, tuple[ColumnDef, ...]]:
    spec = validate_schema(SchemaSpec.from_json({**SCHEMA, "rows": ROWS}), max_rows=10**6, max_fields=100)
    cols = tuple(columns(spec))
    await asyncio.to_thread(_load, pg_conninfo, spec, cols)
    return pg_conninfo, cols


def _load(conninfo: str, spec: SchemaSpec, cols: tuple[ColumnDef, ...]) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(create_table_sql(DATASET_SCHEMA, TABLE, list(cols)))
        with conn.cursor().copy(copy_sql(DATASET_SCHEMA, TABLE, list(cols))) as copy:
            copy.write(COPY_HEADER)
            copy.write(encode_copy_tuples(generate_chunk(spec, 0, ROWS)))
            copy.write(COPY_TRAILER)
        table = sql.Identifier(DATASET_SCHEMA, TABLE)
        for index, text in enumerate(NASTY_TEXT):
            conn.execute(
                sql.SQL("INSERT INTO {} (id, words, x, at, names) VALUES (%s, %s, %s, %s, %s)").format(table),
                (uuid.uuid4(), text, SPECIAL_FLOATS[index % 3], "24:00:00" if index == 0 else None, [text, None]),
            )
        conn.execute(sql.SQL("INSERT INTO {} (id) VALUES (%s)").format(table), (uuid.uuid4(),))


def _plan(cols: tuple[ColumnDef, ...], format: str, **options: Any) -> ExportPlan:
    return ExportPlan(
        format=format, compression=options.pop("compression", "none"), table=TABLE, columns=cols, **options
    )


async def _export(conninfo: str, plan: ExportPlan, *, part_size: int = 64 * 1024) -> tuple[bytes, ExportOutcome]:
    parts: list[memoryview] = []
    out = FileOutput(plan.compression, parts.append, lambda number: part_size)
    outcome = await asyncio.to_thread(run_export, conninfo, plan, out, threading.Event())
    data = b"".join(parts)
    assert outcome.size == len(data)
    assert outcome.parts == len(parts)
    assert all(len(p) == part_size for p in parts[:-1])
    assert outcome.sha256 == hashlib.sha256(data).hexdigest()
    if plan.compression == "gzip":
        return gzip.decompress(data), outcome
    if plan.compression == "zstd":
        return pa.CompressedInputStream(pa.BufferReader(data), "zstd").read(), outcome
    return data, outcome


def _rows(
    conninfo: str, cols: tuple[ColumnDef, ...], *, as_text: bool, limit: int | None = None
) -> list[tuple[Any, ...]]:
    """The table's rows in storage order (the export's order), as text or as psycopg's Python values."""
    with psycopg.connect(conninfo) as conn:
        for statement in SESSION_SETTINGS[:4]:
            conn.execute(statement)
        exprs = [
            sql.SQL("{}::text").format(sql.Identifier(c.name))
            if as_text or c.logical_type == "interval"
            else sql.Identifier(c.name)
            for c in cols
        ]
        query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(exprs), sql.Identifier(DATASET_SCHEMA, TABLE))
        if limit is not None:
            query += sql.SQL(" LIMIT {}").format(sql.Literal(limit))
        return conn.execute(query).fetchall()


def _time_is_python(value: Any) -> bool:
    return not isinstance(value, str) or value != "24:00:00"


# --- CSV -----------------------------------------------------------------------------------------------


def _csv_expected(conninfo: str, cols: tuple[ColumnDef, ...], limit: int | None = None) -> list[list[str]]:
    rows = _rows(conninfo, cols, as_text=True, limit=limit)
    booleans = {"true": "true", "false": "false"}
    return [
        [
            "" if v is None else booleans.get(v, v) if c.logical_type == "boolean" else v
            for c, v in zip(cols, row, strict=True)
        ]
        for row in rows
    ]


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
async def test_csv_holds_every_value_as_postgresql_renders_it(
    dataset: tuple[str, tuple[ColumnDef, ...]], compression: str
) -> None:
    conninfo, cols = dataset
    text, outcome = await _export(conninfo, _plan(cols, "csv", compression=compression))
    records = list(csv.reader(io.StringIO(text.decode(), newline="")))
    assert records[0] == [c.name for c in cols]
    expected = await asyncio.to_thread(_csv_expected, conninfo, cols)
    assert records[1:] == expected
    assert outcome.rows == len(expected) == ROWS + len(NASTY_TEXT) + 1


async def test_csv_options_delimiter_quote_no_header_encoding(dataset: tuple[str, tuple[ColumnDef, ...]]) -> None:
    conninfo, cols = dataset
    chosen = tuple(c for c in cols if c.name in ("words", "n", "ok"))
    plan = _plan(chosen, "csv", delimiter=";", quote="'", header=False, encoding="LATIN1", row_limit=500)
    with pytest.raises(psycopg.Error, match="no equivalent in encoding"):  # 漢字 has no Latin-1 form
        await _export(conninfo, _plan(chosen, "csv", encoding="LATIN1"))
    text, outcome = await _export(conninfo, plan)
    records = list(csv.reader(io.StringIO(text.decode("latin-1"), newline=""), delimiter=";", quotechar="'"))
    assert records == await asyncio.to_thread(_csv_expected, conninfo, chosen, 500)
    assert outcome.rows == 500


# --- JSONL and Parquet: compared as Python values --------------------------------------------------------


def _canonical(column: ColumnDef, value: Any) -> Any:
    """One comparable form for a value read by psycopg, json or pyarrow."""
    if value is None:
        return None
    logical = column.logical_type
    if logical == "float":
        number = float(value)
        return "nan" if math.isnan(number) else number
    if logical == "uuid":
        return (
            value
            if isinstance(value, uuid.UUID)
            else uuid.UUID(bytes=value)
            if isinstance(value, bytes)
            else uuid.UUID(value)
        )
    if logical == "date":
        return value if isinstance(value, date) else date.fromisoformat(value)
    if logical == "time":
        return value if isinstance(value, time) else time.fromisoformat(value)
    if logical == "timestamp":
        return value if isinstance(value, datetime) else datetime.fromisoformat(value)
    if logical == "decimal":
        return Decimal(str(value))
    if logical == "json":
        return json.loads(value) if isinstance(value, str) else value
    if logical.endswith("[]"):
        return list(value)
    return value


def _python_expected(conninfo: str, cols: tuple[ColumnDef, ...]) -> list[list[Any]]:
    usable = [c for c in cols if c.logical_type != "time"]  # psycopg cannot load 24:00:00
    rows = _rows(conninfo, tuple(usable), as_text=False)
    times = _rows(conninfo, tuple(c for c in cols if c.logical_type == "time"), as_text=True)
    out = []
    for row, time_row in zip(rows, times, strict=True):
        values = dict(zip((c.name for c in usable), row, strict=True))
        values.update({c.name: v for c, v in zip((c for c in cols if c.logical_type == "time"), time_row, strict=True)})
        out.append([_canonical(c, values[c.name]) if _time_is_python(values[c.name]) else values[c.name] for c in cols])
    return out


@pytest.mark.parametrize("compression", ["none", "zstd"])
async def test_jsonl_lines_are_the_rows(dataset: tuple[str, tuple[ColumnDef, ...]], compression: str) -> None:
    conninfo, cols = dataset
    text, outcome = await _export(conninfo, _plan(cols, "jsonl", compression=compression))
    lines = text.decode().split("\n")
    assert lines[-1] == ""
    records = [json.loads(line, parse_float=Decimal) for line in lines[:-1]]
    assert all(list(r) == [c.name for c in cols] for r in records)
    got = [[_canonical(c, r[c.name]) if _time_is_python(r[c.name]) else r[c.name] for c in cols] for r in records]
    # JSON has no interval type: PostgreSQL writes ISO 8601 text, which the expected rows hold too.
    expected = await asyncio.to_thread(_python_expected, conninfo, cols)
    assert got == expected
    assert outcome.rows == len(expected)


@pytest.mark.parametrize("options", [{}, {"row_group_size": 1000, "parquet_compression": "snappy"}])
async def test_parquet_reads_back_with_pyarrow(
    dataset: tuple[str, tuple[ColumnDef, ...]], options: dict[str, Any]
) -> None:
    conninfo, cols = dataset
    data, outcome = await _export(conninfo, _plan(cols, "parquet", **options))
    parquet = pq.ParquetFile(pa.BufferReader(data))
    table = parquet.read()
    types = {f.name: f.type for f in table.schema}
    assert types["id"] == pa.uuid() and types["doc"] == pa.json_(pa.string())
    assert types["ts"] == pa.timestamp("us", tz="UTC") and types["local"] == pa.timestamp("us")
    assert types["at"] == pa.time64("us") and types["price"] == pa.decimal128(12, 2)
    assert types["counts"] == pa.list_(pa.int64()) and types["names"] == pa.list_(pa.string())
    if options:
        assert parquet.metadata.num_row_groups == -(-table.num_rows // 1000)
        assert parquet.metadata.row_group(0).column(0).compression == "SNAPPY"
    else:
        assert parquet.metadata.row_group(0).column(0).compression == "ZSTD"
    expected = await asyncio.to_thread(_python_expected, conninfo, cols)
    at = [c.name for c in cols].index("at")
    got = []
    for index, record in enumerate(table.to_pylist()):
        if expected[index][at] == "24:00:00":  # Arrow's time64 holds it as 86,400,000,000 microseconds
            assert table.column("at")[index].cast(pa.int64()).as_py() == 86_400_000_000
            record["at"] = "24:00:00"
        got.append([_canonical(c, record[c.name]) if record[c.name] != "24:00:00" else "24:00:00" for c in cols])
    assert got == expected
    assert outcome.rows == table.num_rows


# --- SQL: run by PostgreSQL --------------------------------------------------------------------------------


def _run_sql_file(conninfo: str, text: str, schema: str) -> None:
    """Run an exported SQL file as psql would: statements, and COPY blocks fed from the file."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path = {}").format(sql.Identifier(schema)))
        head, sep, rest = text.partition(" FROM stdin;\n")
        if not sep:
            conn.execute(text)  # our own file: several statements, no parameters
            return
        statements, _, copy_line = head.rpartition("\n")
        conn.execute(statements)
        data, end, tail = rest.partition("\\.\n")
        assert end and tail == ""
        with conn.cursor().copy(copy_line + " FROM stdin") as copy:
            copy.write(data)


@pytest.mark.parametrize(
    "options",
    [
        {"sql_style": "insert", "rows_per_statement": 7, "sql_create_table": True},
        {"sql_style": "insert", "sql_create_table": True, "compression": "gzip"},
        {"sql_style": "copy", "sql_create_table": True},
    ],
    ids=["insert", "insert-gzip", "copy"],
)
async def test_sql_file_recreates_the_table(
    dataset: tuple[str, tuple[ColumnDef, ...]], options: dict[str, Any]
) -> None:
    conninfo, cols = dataset
    plan = _plan(cols, "sql", sql_table_name='restored "table"', **options)
    text, outcome = await _export(conninfo, plan)
    decoded = text.decode()
    if options["sql_style"] == "insert":
        assert decoded.count("INSERT INTO") == -(-outcome.rows // plan.rows_per_statement)
    await asyncio.to_thread(_run_sql_file, conninfo, decoded, "restored")
    with psycopg.connect(conninfo) as conn:
        original = sql.Identifier(DATASET_SCHEMA, TABLE)
        restored = sql.Identifier("restored", 'restored "table"')
        for left, right in ((original, restored), (restored, original)):
            missing = conn.execute(sql.SQL("SELECT count(*) FROM (TABLE {} EXCEPT ALL TABLE {}) d").format(left, right))
            assert missing.fetchone() == (0,)
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(restored)).fetchone()
    assert count == (outcome.rows,)


# --- limits, columns, empties, stop ---------------------------------------------------------------------


async def test_column_subset_and_order_with_row_limit(dataset: tuple[str, tuple[ColumnDef, ...]]) -> None:
    conninfo, cols = dataset
    chosen = tuple(c for name in ("price", "id", "words") for c in cols if c.name == name)
    text, outcome = await _export(conninfo, _plan(chosen, "csv", row_limit=10))
    records = list(csv.reader(io.StringIO(text.decode(), newline="")))
    assert records[0] == ["price", "id", "words"]
    assert records[1:] == await asyncio.to_thread(_csv_expected, conninfo, chosen, 10)
    assert outcome.rows == 10


@pytest.mark.parametrize("format", ["csv", "jsonl", "parquet", "sql"])
async def test_zero_rows_make_a_valid_empty_file(dataset: tuple[str, tuple[ColumnDef, ...]], format: str) -> None:
    conninfo, cols = dataset
    data, outcome = await _export(conninfo, _plan(cols, format, row_limit=0, header=False))
    assert outcome.rows == 0 and outcome.parts == 1
    if format == "parquet":
        assert pq.read_table(pa.BufferReader(data)).num_rows == 0
    elif format == "sql":
        assert "INSERT" not in data.decode()
    else:
        assert data == b""


async def test_stop_event_ends_the_export(dataset: tuple[str, tuple[ColumnDef, ...]]) -> None:
    conninfo, cols = dataset
    stop = threading.Event()
    out = FileOutput("none", lambda part: stop.set(), lambda number: 1024)  # stop once a part is out
    with pytest.raises(ExportStopped):
        await asyncio.to_thread(run_export, conninfo, _plan(cols, "csv"), out, stop)
    with pytest.raises(ExportStopped):  # and an export asked to stop before it starts never connects
        await asyncio.to_thread(run_export, "host=/nonexistent", _plan(cols, "csv"), out, stop)
