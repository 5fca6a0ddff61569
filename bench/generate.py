"""The Generate benchmark: datamill end to end against three baselines, in the same rounds.

- datamill end to end: the real stack (`server.dev.dev_stack`: embedded
  PostgreSQL and Redis, datamill-server, one datamill-worker process), timed
  from the Generate call until the watched job is SUCCEEDED.
- A, raw binary COPY: the same rows, made and encoded beforehand, copied by
  psycopg into an identical table of the same PostgreSQL in one transaction.
  Nothing that writes these rows can be faster: this is the ceiling.
- B, the engine alone: `generate_chunk` + `encode_copy_binary` in this
  process, chunk by chunk as the worker makes them, with no database.
- C, Faker: the same six values per row made by Faker in a Python loop (a
  smaller row count; it is slow), with no encoding and no database at all.

Then, outside the rounds: a job of twice the rows on the same worker (its peak
RSS must not grow with the row count, because rows go in chunks), the fixed
cost of a one-row job, and two jobs at once on two worker processes.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import statistics
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench.common import (
    MIB,
    Options,
    Result,
    Section,
    cmdline,
    console,
    cpu_seconds,
    descendants,
    paired_ratio,
    run_rounds,
    status_bytes,
    timed,
)
from client import Client
from datamill.v1 import job_pb2
from server.core.fieldtypes import (
    FIELD_TYPES,
    ChoiceParams,
    FloatParams,
    IntegerParams,
    TextParams,
    TimestampParams,
)
from server.core.schema import SchemaSpec, columns, validate_schema
from server.core.settings import Settings
from server.dev import DEMO_SCHEMA, dev_stack, worker_process
from server.devstack import free_port
from worker.engines.generate import generate_chunk
from worker.engines.pgcopy import copy_sql, create_table_sql, encode_copy_binary

NAME = "generate"
FAKER_ROWS = 20_000
LATENCY_SAMPLES = 5
#: The worker's chunk size, so the in-process baselines make rows the way the worker does.
CHUNK_ROWS: int = Settings.model_fields["generate_chunk_rows"].default
BASELINE_SCHEMA = "bench"


def bench_schema() -> dict[str, Any]:
    """The demo's 6-column schema, with text of 3 to 12 words (the text type's default range)."""
    schema = copy.deepcopy(DEMO_SCHEMA)
    for spec in schema["fields"]:
        if spec["type"] == "text":
            spec["params"].update(min_words=3, max_words=12)
    return schema


def _validated(schema: dict[str, Any], rows: int) -> SchemaSpec:
    # Limits far above any benchmark size: validation here only normalizes, as the server does.
    return validate_schema(SchemaSpec.from_json({**schema, "rows": rows}), max_rows=10**12, max_fields=10**6)


def run(options: Options) -> Section:
    rows = options.rows
    schema = bench_schema()
    spec = _validated(schema, rows)
    faker_rows = min(rows, FAKER_ROWS // 2 if options.quick else FAKER_ROWS)
    section = Section(NAME, f"Generate {rows:,} rows of 6 columns")

    console.log(f"encoding {rows:,} rows for the raw COPY baseline (not timed)")
    payload = _CopyPayload.build(spec)

    with tempfile.TemporaryDirectory(prefix="datamill-bench-") as tmp:
        console.log("starting the embedded stack (PostgreSQL, Redis, server, 1 worker process)")
        with (
            dev_stack(Path(tmp), port=free_port(), workers=1) as (target, env),
            Client.connect(target) as client,
            psycopg.connect(env["DATAMILL_DATABASE_URL"], autocommit=True) as admin,
        ):
            section.environment["postgres"] = _postgres_facts(admin)
            stack = _Stack(client, admin, env["DATAMILL_DATABASE_URL"], schema)
            workers = _worker_processes(_find_worker(os.getpid()))

            console.log("warm-up job")
            warmup_rows = 2 * CHUNK_ROWS
            stack.run_job(warmup_rows)
            rss_warm = _peak_rss(workers)
            latency = [stack.run_job(1) for _ in range(LATENCY_SAMPLES)]

            datamill = Result("datamill end to end, 1 worker process", rows)
            raw = Result("A: raw binary COPY, 1 transaction", rows)
            engine = Result("B: engine alone, generate + encode", rows)
            measurements: list[tuple[Result, Callable[[int], float]]] = [
                (datamill, lambda _: stack.run_job(rows)),
                (raw, lambda index: stack.raw_copy(payload, f"raw_{index}")),
                (engine, lambda _: timed(lambda: _engine(spec))),
            ]
            faker = _faker_result(spec, faker_rows, section)
            if faker is not None:
                measurements.append((faker, lambda _: timed(lambda: _faker(spec, faker_rows))))
            run_rounds(measurements, options.repeats)
            datamill.peak_rss_bytes = _peak_rss(workers)
            payload.release()  # ~100 bytes a row: free it before the larger jobs

            console.log(f"datamill job of {2 * rows:,} rows")
            double = Result("datamill end to end, 1 worker process, 2×", 2 * rows, [stack.run_job(2 * rows)])
            double.peak_rss_bytes = _peak_rss(workers)

            console.log(f"two jobs of {rows:,} rows on two worker processes")
            extra = worker_process(env, Path(tmp) / "logs" / "worker-extra.log", name="worker-extra").start()
            try:
                _wait_for_log(extra.log_path, "worker_started", timeout=60.0)
                everyone = workers + _worker_processes(extra.pid)
                before = {pid: cpu_seconds(pid) for pid in everyone}
                pair = Result("datamill, 2 worker processes, 2 jobs at once", 2 * rows, [stack.run_jobs(rows, 2)])
                cpu = [round(cpu_seconds(pid) - before[pid], 2) for pid in everyone]
            finally:
                extra.stop()

    for result in (raw, engine, *([faker] if faker else [])):
        result.ratio = paired_ratio(datamill, result)
    datamill.ratio = 1.0
    for result in (double, pair):
        result.ratio = datamill.rows_per_second / result.rows_per_second
    section.results = [datamill, raw, engine, *([faker] if faker else []), double, pair]

    ceiling = paired_ratio(datamill, raw)
    scale = pair.rows_per_second / double.rows_per_second
    section.notes += [
        f"datamill writes at {ceiling:.0%} of the raw binary COPY ceiling (median of {options.repeats} paired rounds)",
        f"2 worker processes vs 1 on {2 * rows:,} rows: {scale:.2f}× (CPU seconds per worker process: {cpu},"
        f" sharing {os.cpu_count()} CPUs with PostgreSQL)",
        f"worker peak RSS: {rss_warm / MIB:,.0f} MiB after {warmup_rows:,} rows, "
        f"{datamill.peak_rss_bytes / MIB:,.0f} MiB after {rows:,}-row jobs, "
        f"{double.peak_rss_bytes / MIB:,.0f} MiB after a {2 * rows:,}-row job",
        f"fixed cost of a 1-row job (Generate → SUCCEEDED): median {statistics.median(latency) * 1000:.0f} ms"
        f" of {LATENCY_SAMPLES}",
    ]
    section.data = {
        "schema": schema,
        "chunk_rows": CHUNK_ROWS,
        "copy_payload_bytes": payload_size(spec),
        "one_row_job_seconds": [round(s, 6) for s in latency],
        "worker_peak_rss_bytes": {
            str(warmup_rows): rss_warm,
            str(rows): datamill.peak_rss_bytes,
            str(2 * rows): double.peak_rss_bytes,
        },
        "two_process_scaling": scale,
        "two_process_worker_cpu_seconds": cpu,
    }
    return section


# --- datamill ---------------------------------------------------------------------------------------


class _Stack:
    """Jobs on the running stack, and the raw COPY baseline in its PostgreSQL."""

    def __init__(
        self, client: Client, admin: psycopg.Connection[Any], database_url: str, schema: dict[str, Any]
    ) -> None:
        self.client = client
        self.admin = admin
        self.database_url = database_url
        self.schema = schema
        admin.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(BASELINE_SCHEMA)))

    def run_job(self, rows: int) -> float:
        """Seconds from the Generate call until the job is SUCCEEDED; then check the table's rows."""
        return self.run_jobs(rows, 1)

    def run_jobs(self, rows: int, count: int) -> float:
        names = [f"bench_{uuid.uuid4().hex[:12]}" for _ in range(count)]
        self._checkpoint()
        started = time.perf_counter()
        jobs = [self.client.generate(name, schema={**self.schema, "rows": rows}) for name in names]
        finals = [self.client.wait(job.id) for job in jobs]
        elapsed = time.perf_counter() - started
        for name, final in zip(names, finals, strict=True):
            if final.state != job_pb2.JOB_STATE_SUCCEEDED:
                raise RuntimeError(f"job {final.id} ended {job_pb2.JobState.Name(final.state)}: {final.error.message}")
            found = self.admin.execute("SELECT table_name FROM datasets WHERE name = %s", (name,)).fetchone()
            if found is None:
                raise RuntimeError(f"dataset {name} is missing")
            self._check_rows(sql.Identifier("datasets", found[0]), rows)
        return elapsed

    def raw_copy(self, payload: _CopyPayload, table: str) -> float:
        """Seconds to create the table and COPY the pre-encoded rows into it, committed."""
        cols = columns(payload.spec)
        create = create_table_sql(BASELINE_SCHEMA, table, cols)
        statement = copy_sql(BASELINE_SCHEMA, table, cols)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            self._checkpoint()
            started = time.perf_counter()
            with conn.transaction(), conn.cursor() as cur:
                cur.execute(create)
                with cur.copy(statement) as pipe:
                    for piece in payload.pieces():
                        pipe.write(piece)
            elapsed = time.perf_counter() - started
        self._check_rows(sql.Identifier(BASELINE_SCHEMA, table), payload.spec.rows)
        return elapsed

    def _checkpoint(self) -> None:
        # Start every timed write with no dirty pages or WAL left by the one before.
        self.admin.execute("CHECKPOINT")

    def _check_rows(self, table: sql.Identifier, rows: int) -> None:
        counted = self.admin.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        if counted is None or counted[0] != rows:
            raise RuntimeError(f"{table.as_string()} holds {counted} rows, not {rows}")


def _postgres_facts(conn: psycopg.Connection[Any]) -> dict[str, str]:
    facts = {}
    for name in ("server_version", "fsync", "synchronous_commit", "shared_buffers", "max_wal_size", "wal_level"):
        row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
        facts[name] = str(row[0]) if row else "?"
    return facts


def _find_worker(root: int) -> int:
    """The datamill-worker started under `root` (`dev_stack` does not hand out its processes)."""
    # taskiq forks its worker processes, so they show the same command line as their parent.
    matches = [pid for pid in descendants(root) if any("datamill-worker" in part for part in cmdline(pid)[:2])]
    tops = [pid for pid in matches if not any(pid in descendants(other) for other in matches)]
    if len(tops) != 1:
        raise RuntimeError(f"expected one datamill-worker under process {root}, found {tops}")
    return tops[0]


def _worker_processes(worker: int) -> list[int]:
    """The processes a datamill-worker forked to run tasks."""
    found = descendants(worker)
    if not found:
        raise RuntimeError(f"datamill-worker {worker} has no worker processes")
    return found


def _peak_rss(pids: list[int]) -> int:
    return max(status_bytes(pid, "VmHWM") for pid in pids)


def _wait_for_log(path: Path, text: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{path} did not show {text!r} within {timeout:.0f}s")


# --- baselines ----------------------------------------------------------------------------------------


def _chunks(spec: SchemaSpec) -> Iterator[tuple[int, int]]:
    for start in range(0, spec.rows, CHUNK_ROWS):
        yield start, min(CHUNK_ROWS, spec.rows - start)


class _CopyPayload:
    """One binary COPY stream of all the rows, kept as the encoder's chunks without their framing."""

    def __init__(self, spec: SchemaSpec, header: bytes, bodies: list[memoryview], trailer: bytes) -> None:
        self.spec = spec
        self.header = header
        self.bodies = bodies
        self.trailer = trailer

    @classmethod
    def build(cls, spec: SchemaSpec) -> _CopyPayload:
        # An empty batch encodes to exactly the stream's header and trailer.
        framing = encode_copy_binary(generate_chunk(spec, 0, 0))
        header, trailer = framing[:-2], framing[-2:]
        bodies = []
        for start, count in _chunks(spec):
            encoded = memoryview(encode_copy_binary(generate_chunk(spec, start, count)))
            bodies.append(encoded[len(header) : len(encoded) - len(trailer)])
        return cls(spec, header, bodies, trailer)

    def release(self) -> None:
        self.bodies = []

    def pieces(self) -> Iterator[bytes | memoryview]:
        yield self.header
        yield from self.bodies
        yield self.trailer


def payload_size(spec: SchemaSpec) -> int:
    """Bytes of one chunk's COPY payload, scaled to the spec's rows (for the JSON; cheap)."""
    sample = min(spec.rows, CHUNK_ROWS)
    return len(encode_copy_binary(generate_chunk(spec, 0, sample))) * spec.rows // sample


def _engine(spec: SchemaSpec) -> None:
    for start, count in _chunks(spec):
        encode_copy_binary(generate_chunk(spec, start, count))


def _faker_result(spec: SchemaSpec, rows: int, section: Section) -> Result | None:
    if importlib.util.find_spec("faker") is None:  # optional: the `bench` extra
        section.notes.append("baseline C skipped: faker is not installed (pip install -e '.[bench]')")
        return None
    _faker_row_maker(spec)  # fail now, not in the middle of the rounds, on a type with no Faker equivalent
    return Result("C: Faker, Python loop, no encoding", rows)


def _faker(spec: SchemaSpec, rows: int) -> list[tuple[Any, ...]]:
    make_row = _faker_row_maker(spec)
    return [make_row() for _ in range(rows)]


def _faker_row_maker(spec: SchemaSpec) -> Callable[[], tuple[Any, ...]]:
    """A function making one row of the spec's field types with Faker, as the engine would (values differ)."""
    from faker import Faker  # noqa: PLC0415  # optional: the `bench` extra

    fake = Faker("en_US")
    fake.seed_instance(spec.seed)
    makers: list[Callable[[], Any]] = []
    for field in spec.fields:
        params = FIELD_TYPES[field.type].params.model_validate(field.params)
        maker = _faker_value_maker(fake, field.type, params)
        if field.null_rate > 0:
            maker = _with_nulls(fake, maker, field.null_rate)
        makers.append(maker)
    return lambda: tuple(make() for make in makers)


def _faker_value_maker(fake: Any, field_type: str, params: Any) -> Callable[[], Any]:
    if field_type == "uuid4":
        return fake.uuid4  # type: ignore[no-any-return]
    if isinstance(params, IntegerParams):
        low, high = params.min, params.max
        return lambda: fake.random_int(low, high)
    if isinstance(params, FloatParams):
        low_f, high_f = params.min, params.max
        return lambda: fake.pyfloat(min_value=low_f, max_value=high_f)
    if isinstance(params, ChoiceParams):
        weighted = OrderedDict(zip(params.values, params.weights or [1.0] * len(params.values), strict=True))
        return lambda: fake.random_element(weighted)
    if isinstance(params, TextParams):
        fewest, most = params.min_words, params.max_words
        return lambda: fake.sentence(nb_words=fake.random_int(fewest, most), variable_nb_words=False)
    if isinstance(params, TimestampParams):
        start, end = params.start, params.end
        return lambda: fake.date_time_between(start_date=start, end_date=end, tzinfo=UTC)
    raise TypeError(f"no Faker equivalent for field type {field_type!r} in this benchmark")


def _with_nulls(fake: Any, maker: Callable[[], Any], null_rate: float) -> Callable[[], Any]:
    return lambda: None if fake.random.random() < null_rate else maker()
