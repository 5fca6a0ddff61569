"""Export requests: validation and planning (server.core.exports), and the engine's file output (unit)."""

from __future__ import annotations

import gzip
import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pytest

from server.core.errors import InvalidArgument
from server.core.exports import (
    DEFAULT_ROW_GROUP_SIZE,
    DEFAULT_ROWS_PER_STATEMENT,
    ExportPlan,
    ExportRequestSpec,
    ParquetSpec,
    SqlSpec,
    export_key,
    plan_export,
    request_violations,
)
from server.core.fileformats import CsvSpec
from server.core.models import DatasetRow, JobKind, JobRow, JobState, ProgressUnit
from worker.engines.export import FileOutput, parquet_schema, quote_identifier
from worker.jobs.export import MAX_PART_BYTES, part_size

MiB = 1024 * 1024


def _dataset(**overrides: Any) -> DatasetRow:
    values: dict[str, Any] = {
        "id": uuid.uuid4(),
        "tenant": "default",
        "name": "orders",
        "table_name": "ds_x",
        "columns": [
            {"name": "id", "type": "uuid", "pg_type": "uuid", "nullable": False},
            {"name": "qty", "type": "integer", "pg_type": "bigint", "nullable": True},
            {"name": "note", "type": "text", "pg_type": "text", "nullable": True},
        ],
        "row_count": 10,
        "ready": True,
        "job_id": uuid.uuid4(),
        "created_at": datetime.now(UTC),
    }
    return DatasetRow(**{**values, **overrides})


def _fields(request: ExportRequestSpec) -> list[str]:
    return [v.field for v in request_violations(request)]


def test_a_minimal_request_is_valid_and_planned_with_every_default() -> None:
    request = ExportRequestSpec(dataset="orders", format="csv")
    assert request_violations(request) == []
    plan = plan_export(request, _dataset())
    assert [c.name for c in plan.columns] == ["id", "qty", "note"]
    assert (plan.delimiter, plan.quote, plan.header, plan.encoding, plan.compression) == (
        ",",
        '"',
        True,
        "UTF8",
        "none",
    )
    assert plan.row_group_size == DEFAULT_ROW_GROUP_SIZE and plan.rows_per_statement == DEFAULT_ROWS_PER_STATEMENT
    assert plan.sql_table_name == "orders" and plan.table == "ds_x"
    assert ExportPlan.from_json(plan.to_json()) == plan


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (ExportRequestSpec(dataset="", format="csv"), "dataset"),
        (ExportRequestSpec(dataset="d", format=""), "format"),
        (ExportRequestSpec(dataset="d", format="#9"), "format"),
        (ExportRequestSpec(dataset="d", format="csv", compression="#7"), "compression"),
        (ExportRequestSpec(dataset="d", format="parquet", compression="zstd"), "compression"),
        (ExportRequestSpec(dataset="d", format="csv", parquet=ParquetSpec()), "parquet_options"),
        (ExportRequestSpec(dataset="d", format="sql", csv=CsvSpec()), "csv_options"),
        (ExportRequestSpec(dataset="d", format="csv", sql=SqlSpec()), "sql_options"),
        (ExportRequestSpec(dataset="d", format="csv", csv=CsvSpec(delimiter="\n")), "csv_options.delimiter"),
        (ExportRequestSpec(dataset="d", format="csv", csv=CsvSpec(delimiter="é")), "csv_options.delimiter"),
        (ExportRequestSpec(dataset="d", format="csv", csv=CsvSpec(delimiter="'", quote="'")), "csv_options.quote"),
        (ExportRequestSpec(dataset="d", format="csv", csv=CsvSpec(delimiter='"')), "csv_options.quote"),
        (ExportRequestSpec(dataset="d", format="csv", csv=CsvSpec(encoding="klingon")), "csv_options.encoding"),
        (ExportRequestSpec(dataset="d", format="csv", csv=CsvSpec(encoding="utf-16")), "csv_options.encoding"),
        (
            ExportRequestSpec(dataset="d", format="parquet", parquet=ParquetSpec(row_group_size=-1)),
            "parquet_options.row_group_size",
        ),
        (
            ExportRequestSpec(dataset="d", format="parquet", parquet=ParquetSpec(row_group_size=2**21)),
            "parquet_options.row_group_size",
        ),
        (
            ExportRequestSpec(dataset="d", format="parquet", parquet=ParquetSpec(compression="brotli")),
            "parquet_options.compression",
        ),
        (ExportRequestSpec(dataset="d", format="sql", sql=SqlSpec(style="#5")), "sql_options.style"),
        (ExportRequestSpec(dataset="d", format="sql", sql=SqlSpec(table_name="x" * 64)), "sql_options.table_name"),
        (
            ExportRequestSpec(dataset="d", format="sql", sql=SqlSpec(rows_per_statement=100_001)),
            "sql_options.rows_per_statement",
        ),
        (
            ExportRequestSpec(dataset="d", format="sql", sql=SqlSpec(style="copy", rows_per_statement=5)),
            "sql_options.rows_per_statement",
        ),
        (ExportRequestSpec(dataset="d", format="csv", row_limit=-1), "row_limit"),
        (ExportRequestSpec(dataset="d", format="csv", request_id="r" * 200), "request_id"),
    ],
)
def test_each_invalid_field_is_named(request_: ExportRequestSpec, field: str) -> None:
    assert field in _fields(request_)


def test_every_violation_is_reported_at_once() -> None:
    request = ExportRequestSpec(dataset="", format="parquet", compression="gzip", row_limit=-5)
    assert set(_fields(request)) == {"dataset", "compression", "row_limit"}


def test_valid_options_of_each_format() -> None:
    for request in (
        ExportRequestSpec(
            dataset="d", format="csv", compression="gzip", csv=CsvSpec(delimiter="\t", header=False, encoding="latin1")
        ),
        ExportRequestSpec(dataset="d", format="parquet", parquet=ParquetSpec(row_group_size=10, compression="LZ4")),
        ExportRequestSpec(
            dataset="d", format="sql", compression="zstd", sql=SqlSpec(style="insert", table_name='we"ird; name')
        ),
    ):
        assert request_violations(request) == [], request


def test_plan_keeps_the_chosen_columns_in_order_and_the_options() -> None:
    request = ExportRequestSpec(
        dataset="orders",
        format="csv",
        columns=("note", "id"),
        row_limit=3,
        csv=CsvSpec(delimiter=";", header=False, encoding="Latin-1"),
    )
    plan = plan_export(request, _dataset())
    assert [(c.name, c.nullable) for c in plan.columns] == [("note", True), ("id", False)]
    assert (plan.delimiter, plan.header, plan.encoding, plan.row_limit) == (";", False, "LATIN1", 3)
    assert plan.content_type == "text/csv" and plan.extension == ".csv"
    parquet = plan_export(
        ExportRequestSpec(dataset="orders", format="parquet", parquet=ParquetSpec(compression="SNAPPY")), _dataset()
    )
    assert parquet.parquet_compression == "snappy" and parquet.content_type == "application/vnd.apache.parquet"
    zipped = plan_export(ExportRequestSpec(dataset="orders", format="jsonl", compression="gzip"), _dataset())
    assert zipped.content_type == "application/gzip" and zipped.extension == ".jsonl.gz"


def test_unknown_and_repeated_columns_are_violations() -> None:
    with pytest.raises(InvalidArgument) as raised:
        plan_export(ExportRequestSpec(dataset="orders", format="csv", columns=("qty", "nope", "qty")), _dataset())
    assert [v.field for v in raised.value.violations] == ["columns[1]", "columns[2]"]


def test_fingerprint_ignores_the_request_id_only() -> None:
    a = ExportRequestSpec(dataset="d", format="csv", request_id="one")
    assert a.fingerprint() == ExportRequestSpec(dataset="d", format="csv", request_id="two").fingerprint()
    assert a.fingerprint() != ExportRequestSpec(dataset="d", format="csv", row_limit=1).fingerprint()


def test_each_attempt_writes_a_key_of_its_own() -> None:
    now = datetime.now(UTC)
    job = JobRow(
        id=uuid.uuid4(), tenant="acme", kind=JobKind.EXPORT, state=JobState.RUNNING, request_id=None,
        dataset_id=None, dataset_name="orders", progress_done=0, progress_total=0, progress_unit=ProgressUnit.ROWS,
        attempt=2, max_attempts=3, cancel_requested=False, result=None, error=None, event_seq=2,
        created_at=now, started_at=now, updated_at=now, finished_at=None,
    )  # fmt: skip
    assert export_key(job, ".csv.gz") == f"acme/exports/{job.id}/2/orders.csv.gz"


def test_part_sizes_grow_so_that_ten_thousand_parts_hold_terabytes() -> None:
    base = 8 * MiB
    assert part_size(base, 1) == part_size(base, 1000) == base
    assert part_size(base, 1001) == 2 * base
    assert part_size(base, 10_000) == 512 * base
    assert part_size(64 * MiB, 10_000) == MAX_PART_BYTES  # S3's largest part
    assert sum(part_size(base, n) for n in range(1, 10_001)) > 5 * 1024**4


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
def test_file_output_hashes_counts_and_cuts_parts(compression: str) -> None:
    parts: list[memoryview] = []
    out = FileOutput(compression, parts.append, lambda number: 64 * 1024)
    source = b"".join(f"{i},{uuid.UUID(int=i)}\n".encode() for i in range(50_000))
    for start in range(0, len(source), 10_000):
        out.write(source[start : start + 10_000])
    outcome = out.close()
    data = b"".join(parts)
    assert outcome.size == len(data) and outcome.sha256 == hashlib.sha256(data).hexdigest()
    assert outcome.parts == len(parts) and all(len(p) == 64 * 1024 for p in parts[:-1])
    if compression == "gzip":
        data = gzip.decompress(data)
    elif compression == "zstd":
        data = pa.CompressedInputStream(pa.BufferReader(data), "zstd").read()
    assert data == source


def test_an_empty_file_is_one_empty_part() -> None:
    parts: list[memoryview] = []
    outcome = FileOutput("none", parts.append, lambda number: MiB).close()
    assert parts == [b""] and outcome.parts == 1 and outcome.size == 0


def test_identifiers_in_sql_files_are_always_quoted() -> None:
    assert quote_identifier('we"ird; DROP TABLE x') == '"we""ird; DROP TABLE x"'


def test_parquet_schema_of_every_dataset_type() -> None:
    from server.core.schema import ColumnDef  # noqa: PLC0415

    columns = [
        ColumnDef("u", "uuid", "uuid", False),
        ColumnDef("j", "json", "jsonb", True),
        ColumnDef("t", "time", "time", True),
        ColumnDef("z", "timestamp", "timestamp with time zone", True),
        ColumnDef("l", "timestamp", "timestamp without time zone", True),
        ColumnDef("d", "decimal", "numeric(12,2)", True),
        ColumnDef("n", "decimal", "numeric", True),
        ColumnDef("i", "interval", "interval", True),
        ColumnDef("a", "integer[]", "bigint[]", True),
        ColumnDef("s", "text[]", "text[]", True),
    ]
    schema = parquet_schema(columns)
    assert [f.type for f in schema] == [
        pa.uuid(),
        pa.json_(pa.string()),
        pa.time64("us"),
        pa.timestamp("us", tz="UTC"),
        pa.timestamp("us"),
        pa.decimal128(12, 2),
        pa.string(),
        pa.string(),
        pa.list_(pa.int64()),
        pa.list_(pa.string()),
    ]
    assert not schema.field("u").nullable and schema.field("j").nullable


class _FakeExports:
    def __init__(self, pending: bool) -> None:
        self.still_pending = pending
        self.discarded: list[Any] = []

    async def is_pending(self, pending: Any) -> bool:
        return self.still_pending

    async def discard(self, objects: Any, pending: Any) -> None:
        self.discarded.append(pending)


@pytest.mark.parametrize("committed", [False, True])
async def test_unwinding_keeps_the_object_of_a_success_that_committed(committed: bool) -> None:
    """A cancel that lands just after the success commit must not delete the job's result."""
    import asyncio  # noqa: PLC0415

    from server.core.exports import PendingUpload  # noqa: PLC0415
    from server.core.settings import Settings  # noqa: PLC0415
    from worker.jobs.export import ExportJob, _PartUploader  # noqa: PLC0415

    exports = _FakeExports(pending=not committed)
    job = ExportJob(None, exports, Settings(database_url="x", redis_url="redis://x"))  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    uploader = _PartUploader(None, "k", "h", loop)  # type: ignore[arg-type]
    done: asyncio.Future[Any] = loop.create_future()
    done.set_result(None)
    pending = PendingUpload(uuid.uuid4(), 1, "k", "h")
    await job._unwind(done, uploader, pending)
    assert exports.discarded == ([] if committed else [pending])
