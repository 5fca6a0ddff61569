"""Binary COPY payloads into a real PostgreSQL, read back and compared with the Arrow data."""

from __future__ import annotations

import math
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

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
                    {"name": "body", "type": "text", "null_rate": 0.2},
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
