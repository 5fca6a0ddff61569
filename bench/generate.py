"""The Generate benchmark: datamill end to end against its baselines, in the same rounds.

Every measurement makes the rows of one schema, the standard 8 columns (uuid,
full name, email, integer range, float, timestamp, weighted choice, sentence):

- a, datamill end to end: the real stack (`server.dev.dev_stack`: embedded
  PostgreSQL and Redis, datamill-server, one datamill-worker process), timed
  from the Generate call until the watched job is SUCCEEDED.
- b, raw binary COPY: the same rows, made and encoded beforehand, copied by
  psycopg into an identical table of the same PostgreSQL in one transaction.
  Nothing that writes these rows can be faster: this is the ceiling.
- c, Faker and d, Mimesis: the same 8 values per row made in a Python loop
  (fewer rows: they are slow; rows/s compares), with no encoding and no
  database at all, so they only flatter the baselines.
- the engine alone: `generate_chunk` + `encode_copy_tuples` in this process,
  chunk by chunk as the worker makes them, with no database (where a's time goes).

The table gives a's rows/s divided by each one's, the median over rounds of
the ratio within a round. Then, outside the rounds: the worker's peak RSS
during a job of 5× the rows, the fixed cost of a one-row job, and two jobs at
once on two worker processes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import statistics
import tempfile
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, Self, cast

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
    reset_peak_rss,
    run_rounds,
    status_bytes,
    timed,
)
from client import Client
from datamill.v1 import job_pb2
from server.core.fieldtypes.core import ChoiceParams, FloatParams, IntegerParams, TimestampParams
from server.core.fieldtypes.text import SentenceParams
from server.core.jobs import shard_ranges
from server.core.schema import SchemaSpec, columns, field_params, validate_schema
from server.core.settings import Settings
from server.dev import dev_stack, worker_process
from server.devstack import free_port
from worker.engines.generate import generate_chunk
from worker.engines.pgcopy import COPY_HEADER, COPY_TRAILER, copy_sql, create_table_sql, encode_copy_tuples
from worker.jobs.generate import BATCH_ROWS

NAME = "generate"
#: Rows Faker and Mimesis make a round (fewer with --quick); their rows/s is what compares.
BASELINE_ROWS = 50_000
QUICK_BASELINE_ROWS = 10_000
#: The larger job, for the worker's peak RSS: bounded by the shards a worker process runs at once, not by rows.
BIG_JOB_FACTOR = 5
LATENCY_SAMPLES = 5
#: The worker's chunk and shard sizes (dev_stack passes no DATAMILL_ settings, so the defaults hold).
CHUNK_ROWS: int = Settings.model_fields["generate_chunk_rows"].default
SHARD_ROWS: int = Settings.model_fields["generate_shard_rows"].default
MAX_SHARDS: int = Settings.model_fields["generate_max_shards"].default
#: datamill-worker's default --max-async-tasks: the jobs (shards) one worker process runs at once.
JOBS_PER_PROCESS = 4
BASELINE_SCHEMA = "bench"
#: The issue's targets: a/b (datamill ÷ raw COPY) and a/c (datamill ÷ Faker) at least these.
TARGETS = {"a/b": 0.7, "a/c": 50.0}

#: The standard 8-column schema of the benchmark.
STANDARD_SCHEMA: dict[str, Any] = {
    "seed": 42,
    "fields": [
        {"name": "id", "type": "uuid4"},
        {"name": "name", "type": "full_name"},
        {"name": "email", "type": "email"},
        {"name": "age", "type": "integer", "params": {"min": 18, "max": 90}},
        {"name": "score", "type": "float", "params": {"min": 0, "max": 100, "decimals": 2}},
        {
            "name": "created_at",
            "type": "timestamp",
            "params": {"start": "2024-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        },
        {
            "name": "plan",
            "type": "choice",
            "params": {"values": ["free", "pro", "team", "enterprise"], "weights": [70, 20, 8, 2]},
        },
        {"name": "note", "type": "sentence", "params": {"min_words": 3, "max_words": 12}, "null_rate": 0.1},
    ],
}


def _validated(schema: dict[str, Any], rows: int) -> SchemaSpec:
    # Limits far above any benchmark size: validation here only normalizes, as the server does.
    return validate_schema(SchemaSpec.from_json({**schema, "rows": rows}), max_rows=10**12, max_fields=10**6)


def run(options: Options) -> Section:
    rows = options.rows
    spec = _validated(STANDARD_SCHEMA, rows)
    baseline_rows = min(rows, QUICK_BASELINE_ROWS if options.quick else BASELINE_ROWS)
    section = Section(NAME, f"Generate {rows:,} rows of the standard {len(spec.fields)} columns")
    faker = _python_baseline(section, "c: Faker", "faker", _faker_row_maker, spec, baseline_rows)
    mimesis = _python_baseline(section, "d: Mimesis", "mimesis", _mimesis_row_maker, spec, baseline_rows)
    python_baselines = [baseline for baseline in (faker, mimesis) if baseline is not None]

    console.log(f"encoding {rows:,} rows for the raw COPY baseline (not timed)")
    payload = _CopyPayload.build(spec)

    with tempfile.TemporaryDirectory(prefix="datamill-bench-") as tmp:
        console.log("starting the embedded stack (PostgreSQL, Redis, server, 1 worker process)")
        with _Stack.running(Path(tmp), workers=1) as (stack, env):
            admin = stack.admin
            section.environment["postgres"] = _postgres_facts(admin)
            workers = _worker_processes(_find_worker(os.getpid()))

            console.log("warm-up job")
            warmup_rows = 2 * CHUNK_ROWS
            stack.run_job(warmup_rows)
            rss_warm = _peak_rss(workers)
            latency = [stack.run_job(1) for _ in range(LATENCY_SAMPLES)]

            datamill = Result("a: datamill end to end, 1 worker process", rows)
            raw = Result("b: raw binary COPY, 1 transaction", rows)
            engine = Result("engine alone: generate + encode, no database", rows)
            measurements: list[tuple[Result, Callable[[int], float]]] = [
                (datamill, lambda _: stack.run_job(rows)),
                (raw, lambda index: stack.raw_copy(payload, f"raw_{index}")),
                (engine, lambda _: timed(lambda: _engine(spec))),
                *python_baselines,
            ]
            # Each phase's own peak where the kernel lets us reset it (else: the peak since start).
            per_phase = _reset_peak_rss(workers)
            run_rounds(measurements, options.repeats)
            datamill.peak_rss_bytes = _peak_rss(workers)
            payload.release()  # the whole COPY stream: free it before the larger job

            big_rows = BIG_JOB_FACTOR * rows
            console.log(f"datamill job of {big_rows:,} rows")
            _reset_peak_rss(workers)
            big = Result(f"datamill end to end, 1 worker process, {BIG_JOB_FACTOR}× rows", big_rows)
            big.seconds.append(stack.run_job(big_rows))
            big.peak_rss_bytes = _peak_rss(workers)

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

    compared = [raw, engine, *(result for result, _ in python_baselines)]
    for result in compared:
        result.ratio = paired_ratio(datamill, result)
    datamill.ratio = 1.0
    for result in (big, pair):
        result.ratio = datamill.rows_per_second / result.rows_per_second
    section.results = [datamill, *compared, big, pair]

    ratios = {
        "a/b": raw.ratio,
        "a/c": faker[0].ratio if faker else None,
        "a/d": mimesis[0].ratio if mimesis else None,
    }
    scale = pair.rows_per_second / datamill.rows_per_second
    rss_since = "each phase's own" if per_phase else "since the process started (not resettable here)"
    section.notes += [_ratio_note(name, ratio, options.repeats) for name, ratio in ratios.items() if ratio]
    if python_baselines:
        section.notes.append(
            f"Faker and Mimesis make {baseline_rows:,} rows a round, the others {rows:,}: rows/s compare"
        )
    section.notes += [
        f"end to end runs at {paired_ratio(datamill, engine):.0%} of the engine alone's rows/s: the rest is"
        " PostgreSQL, COPY and the job's bookkeeping, on the same CPUs",
        f"worker peak RSS, {rss_since}: {rss_warm / MIB:,.0f} MiB after a {warmup_rows:,}-row job and imports,"
        f" {_mib(datamill)} over the {rows:,}-row jobs ({_plural(len(_shards(rows)), 'shard')} each),"
        f" {_mib(big)} over the {big_rows:,}-row job",
        _shards_note(big_rows),
        f"2 worker processes, 2 jobs of {rows:,} rows at once, vs 1 job on 1 process: {scale:.2f}× the rows/s"
        f" (CPU seconds per worker process: {cpu}, sharing {os.cpu_count()} CPUs with PostgreSQL)",
        f"fixed cost of a 1-row job (Generate → SUCCEEDED): median {statistics.median(latency) * 1000:.0f} ms"
        f" of {LATENCY_SAMPLES}",
    ]
    section.data = {
        "schema": STANDARD_SCHEMA,
        "chunk_rows": CHUNK_ROWS,
        "batch_rows": BATCH_ROWS,
        "shard_rows": SHARD_ROWS,
        "jobs_per_worker_process": JOBS_PER_PROCESS,
        "baseline_rows": baseline_rows,
        "copy_payload_bytes": payload.size,
        "ratios": {name: None if ratio is None else round(ratio, 4) for name, ratio in ratios.items()},
        "targets": TARGETS,
        "one_row_job_seconds": [round(s, 6) for s in latency],
        "worker_peak_rss_per_phase": per_phase,
        "worker_peak_rss_bytes": {
            str(warmup_rows): rss_warm,
            str(rows): datamill.peak_rss_bytes,
            str(big_rows): big.peak_rss_bytes,
        },
        "big_job_shards": len(_shards(big_rows)),
        "two_process_scaling": scale,
        "two_process_worker_cpu_seconds": cpu,
    }
    return section


def _ratio_note(name: str, ratio: float, repeats: int) -> str:
    target = TARGETS.get(name)
    verdict = "" if target is None else f"; target ≥ {target:g}: {'met' if ratio >= target else 'NOT met'}"
    shown = f"{ratio:.2f}" if ratio < 10 else f"{ratio:,.0f}"
    return f"{name} = {shown} (datamill rows/s ÷ baseline rows/s, median of {repeats} paired rounds{verdict})"


def _mib(result: Result) -> str:
    return "?" if result.peak_rss_bytes is None else f"{result.peak_rss_bytes / MIB:,.0f} MiB"


def _shards_note(rows: int) -> str:
    shards = len(_shards(rows))
    if shards == 1:
        return f"the {rows:,}-row job is not sharded (above {SHARD_ROWS:,} rows it would be): one pipeline of chunks"
    return (
        f"the {rows:,}-row job runs as {shards} shards of at most {SHARD_ROWS:,} rows, up to {JOBS_PER_PROCESS} at"
        f" once in the one worker process (--max-async-tasks); they share its {BATCH_ROWS:,} batch rows, so the"
        " batches they hold cost what one job's do"
    )


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _shards(rows: int) -> list[tuple[int, int]]:
    return shard_ranges(rows, shard_rows=SHARD_ROWS, max_shards=MAX_SHARDS, align=CHUNK_ROWS)


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

    @classmethod
    @contextlib.contextmanager
    def running(cls, data_dir: Path, *, workers: int) -> Iterator[tuple[Self, dict[str, str]]]:
        """The embedded stack (`dev_stack`) with `workers` worker processes and one of these on it: (stack, env)."""
        with (
            dev_stack(data_dir, port=free_port(), workers=workers) as (target, env),
            Client.connect(target) as client,
            psycopg.connect(env["DATAMILL_DATABASE_URL"], autocommit=True) as admin,
        ):
            yield cls(client, admin, env["DATAMILL_DATABASE_URL"], STANDARD_SCHEMA), env

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
            self.check_succeeded(final, name, rows)
        return elapsed

    def check_succeeded(self, final: job_pb2.Job, name: str, rows: int) -> None:
        """RuntimeError unless the job SUCCEEDED and its dataset `name` holds `rows` rows."""
        if final.state != job_pb2.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"job {final.id} ended {job_pb2.JobState.Name(final.state)}: {final.error.message}")
        found = self.admin.execute("SELECT table_name FROM datasets WHERE name = %s", (name,)).fetchone()
        if found is None:
            raise RuntimeError(f"dataset {name} is missing")
        self._check_rows(sql.Identifier("datasets", found[0]), rows)

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


def _reset_peak_rss(pids: list[int]) -> bool:
    reset = [reset_peak_rss(pid) for pid in pids]  # every one, even after a refusal
    return all(reset)


def _wait_for_log(path: Path, text: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{path} did not show {text!r} within {timeout:.0f}s")


# --- baselines ----------------------------------------------------------------------------------------


def _chunks(spec: SchemaSpec) -> Iterator[tuple[int, int]]:
    for start in range(0, spec.rows, BATCH_ROWS):  # as the worker makes them
        yield start, min(BATCH_ROWS, spec.rows - start)


class _CopyPayload:
    """One binary COPY stream of all the rows: the encoder's batches of tuples between one header and trailer."""

    def __init__(self, spec: SchemaSpec, bodies: list[memoryview]) -> None:
        self.spec = spec
        self.bodies = bodies
        self.size = len(COPY_HEADER) + sum(len(body) for body in bodies) + len(COPY_TRAILER)

    @classmethod
    def build(cls, spec: SchemaSpec) -> _CopyPayload:
        return cls(spec, [encode_copy_tuples(generate_chunk(spec, start, count)) for start, count in _chunks(spec)])

    def release(self) -> None:
        self.bodies = []

    def pieces(self) -> Iterator[bytes | memoryview]:
        yield COPY_HEADER
        yield from self.bodies
        yield COPY_TRAILER


def _engine(spec: SchemaSpec) -> None:
    for start, count in _chunks(spec):  # what the worker does for each batch
        encode_copy_tuples(generate_chunk(spec, start, count))


# Faker and Mimesis: one Python call per value, the way these libraries are used. Each field maps to the
# library's closest equivalent of the field type; the values differ from datamill's, the work per row is alike.

RowMaker = Callable[[], tuple[Any, ...]]


def _python_baseline(
    section: Section, label: str, module: str, row_maker: Callable[[SchemaSpec], RowMaker], spec: SchemaSpec, rows: int
) -> tuple[Result, Callable[[int], float]] | None:
    """A measurement making `rows` rows of the spec with `row_maker`, or None (and a note) if `module` is missing."""
    if importlib.util.find_spec(module) is None:  # optional: the `bench` extra
        section.notes.append(f"baseline {label} skipped: {module} is not installed (pip install -e '.[bench]')")
        return None
    row_maker(spec)  # fail now, not in the middle of the rounds, on a type with no equivalent

    def measure(_: int) -> float:
        make_row = row_maker(spec)  # seeded afresh: every round makes the same rows
        return timed(lambda: [make_row() for _ in range(rows)])

    return Result(f"{label}, Python loop, no encoding, no database", rows), measure


def _row_maker(
    spec: SchemaSpec, value_maker: Callable[[str, Any], Callable[[], Any]], random: Callable[[], float]
) -> RowMaker:
    makers: list[Callable[[], Any]] = []
    for field in spec.fields:
        maker = value_maker(field.type, field_params(field))
        if field.null_rate > 0:
            maker = _with_nulls(maker, field.null_rate, random)
        makers.append(maker)
    return lambda: tuple(make() for make in makers)


def _with_nulls(maker: Callable[[], Any], null_rate: float, random: Callable[[], float]) -> Callable[[], Any]:
    return lambda: None if random() < null_rate else maker()


def _no_equivalent(library: str, field_type: str) -> TypeError:
    return TypeError(f"no {library} equivalent for field type {field_type!r} in this benchmark")


def _faker_row_maker(spec: SchemaSpec) -> RowMaker:
    from faker import Faker  # noqa: PLC0415  # optional: the `bench` extra

    fake = Faker("en_US")
    fake.seed_instance(spec.seed)

    def value_maker(field_type: str, params: Any) -> Callable[[], Any]:
        fixed: dict[str, Callable[[], Any]] = {
            "uuid4": fake.uuid4,
            "full_name": fake.name,
            "email": fake.email,
            "word": fake.word,
        }
        if field_type in fixed:
            return fixed[field_type]
        if field_type == "integer":
            integer = cast(IntegerParams, params)
            return lambda: fake.random_int(integer.min, integer.max)
        if field_type == "float":
            floats = cast(FloatParams, params)
            return lambda: fake.pyfloat(min_value=floats.min, max_value=floats.max, right_digits=floats.decimals)
        if field_type == "timestamp":
            instants = cast(TimestampParams, params)
            return lambda: fake.date_time_between(start_date=instants.start, end_date=instants.end, tzinfo=UTC)
        if field_type == "choice":
            choice = cast(ChoiceParams, params)
            # Faker wants an OrderedDict of value -> weight, for results that do not depend on PYTHONHASHSEED.
            weighted = OrderedDict(zip(choice.values, choice.weights or [1.0] * len(choice.values), strict=True))
            return lambda: fake.random_element(weighted)
        if field_type == "sentence":
            words = cast(SentenceParams, params)
            return lambda: fake.sentence(
                nb_words=fake.random_int(words.min_words, words.max_words), variable_nb_words=False
            )
        raise _no_equivalent("Faker", field_type)

    return _row_maker(spec, value_maker, fake.random.random)


def _mimesis_row_maker(spec: SchemaSpec) -> RowMaker:
    from mimesis import Cryptographic, Datetime, Numeric, Person, Text  # noqa: PLC0415  # optional: `bench` extra
    from mimesis.locales import Locale  # noqa: PLC0415

    person = Person(Locale.EN, seed=spec.seed)
    dates = Datetime(Locale.EN, seed=spec.seed)
    text = Text(Locale.EN, seed=spec.seed)
    numeric = Numeric(seed=spec.seed)
    crypto = Cryptographic(seed=spec.seed)

    def value_maker(field_type: str, params: Any) -> Callable[[], Any]:
        fixed: dict[str, Callable[[], Any]] = {
            "uuid4": crypto.uuid,
            "full_name": person.full_name,
            "email": person.email,
            "word": text.word,
        }
        if field_type in fixed:
            return fixed[field_type]
        if field_type == "integer":
            integer = cast(IntegerParams, params)
            return lambda: numeric.integer_number(integer.min, integer.max)
        if field_type == "float":
            floats = cast(FloatParams, params)
            digits = 15 if floats.decimals is None else floats.decimals
            return lambda: numeric.float_number(floats.min, floats.max, precision=digits)
        if field_type == "timestamp":
            instants = cast(TimestampParams, params)
            # Mimesis draws instants between whole years: those of start and end (end itself excluded).
            first, last = instants.start.year, (instants.end - timedelta(microseconds=1)).year
            return lambda: dates.datetime(first, last).replace(tzinfo=UTC)
        if field_type == "choice":
            choice = cast(ChoiceParams, params)
            weighted = dict(zip(choice.values, choice.weights or [1.0] * len(choice.values), strict=True))
            return lambda: numeric.random.weighted_choice(weighted)
        if field_type == "sentence":
            # Text.sentence() quotes a whole sentence of its corpus; words() makes one of a chosen length.
            words = cast(SentenceParams, params)

            def sentence() -> str:
                count = text.random.randint(words.min_words, words.max_words)
                return (" ".join(text.words(quantity=count)) + ".").capitalize()

            return sentence
        raise _no_equivalent("Mimesis", field_type)

    return _row_maker(spec, value_maker, numeric.random.random)
