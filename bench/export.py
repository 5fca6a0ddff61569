"""The Export benchmark: datamill writing a dataset into a file, against PostgreSQL's own COPY, in the same rounds.

Two datasets of the standard 8 columns (`bench.generate.STANDARD_SCHEMA`) are
made with datamill itself before anything is timed, `--rows` rows and 5× as
many, then vacuumed (FREEZE, ANALYZE) so that no read sets hint bits and no
autovacuum runs during the rounds. On the real stack (`server.dev.dev_stack`:
embedded PostgreSQL and Redis, the local object store, datamill-server, one
datamill-worker process; or SeaweedFS as S3 with `--s3`):

- a, datamill CSV export end to end: `Client.export(dataset, format="csv")`,
  timed from the call until the watched job is SUCCEEDED, which is when the
  file is whole (and fsynced) in the object store. Its result (row count, size,
  SHA-256) and the stored object are checked afterwards, untimed.
- b, raw COPY: `COPY (SELECT * FROM datasets.<table>) TO STDOUT WITH (FORMAT
  csv, HEADER)` read to the end on a synchronous psycopg connection of this
  process, counting bytes and nothing else: no hashing, no writing. Nothing
  that gets these rows out of PostgreSQL as CSV can be faster: the ceiling.
- the same export as JSONL, as Parquet and as gzip-compressed CSV, end to end.

Every measurement runs once per round, in an order that rotates from round to
round; a/b is taken within each round, then the median. Then, outside the
rounds, each format once on the 5× dataset: the worker's peak RSS (VmHWM, reset
before each export) must not grow with the rows. The fixed cost of an export
(a 1-row export, Export → SUCCEEDED) is measured before the rounds.

Each export's file is checked after its timing: size and SHA-256 as the job
reports them, rows (Parquet metadata, JSON lines), and for CSV the bytes
against raw COPY's CSV (the same lines in another order are told apart from
different lines). CPU seconds of the worker, PostgreSQL (postmaster and
backends), this process and the rest of the machine show where the time went.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import statistics
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import asdict, astuple, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import psycopg
import pyarrow.parquet as pq
from minio import Minio
from psycopg import sql

from bench.common import (
    MIB,
    RESULTS_DIR,
    Result,
    Section,
    console,
    cpu_seconds,
    machine_busy_seconds,
    paired_ratio,
    parent_pid,
    run_rounds,
    status_bytes,
    tree_cpu_seconds,
)
from bench.generate import (
    STANDARD_SCHEMA,
    _find_worker,
    _peak_rss,
    _postgres_facts,
    _reset_peak_rss,
    _worker_processes,
)
from bench.upload import _find_weed, _minio_client, _stop_on_sigterm
from client import Client
from datamill.v1 import job_pb2
from server.dev import dev_stack, server_process, service_env, wait_for_serving, worker_process
from server.devstack import EmbeddedPostgres, EmbeddedRedis, SeaweedS3, create_owned_database, free_port

NAME = "export"
DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 200_000
DEFAULT_REPEATS = 3
#: The larger dataset, for the worker's peak RSS: an export's memory is bounded by its parts, not by rows.
BIG_FACTOR = 5
#: The issue's target: datamill's CSV export at least this fraction of raw COPY's rows/s.
TARGETS = {"a/b": 0.8}
#: The 5×-rows peak RSS counts as flat when it is less than this above the peak at `rows`. Memory the allocator
#: keeps from one export to the next moves a peak by tens of MiB; an export that held its file, or a share of it
#: growing with the rows, would add hundreds (the CSV of 5,000,000 rows is 792 MiB).
RSS_FLAT_MARGIN = 64 * MIB
LATENCY_SAMPLES = 5
READ_CHUNK = 8 * MIB
#: CPUs kept busy by others (not the worker, PostgreSQL, this process or SeaweedFS) beyond which the run is noisy.
BUSY_OTHERS = 0.25
BUCKET = "datamill-bench-export"
#: Disk the run needs beyond its estimate (PostgreSQL's WAL, logs).
DISK_MARGIN = 2 * 1024 * MIB


@dataclass(frozen=True, slots=True)
class ExportBenchOptions:
    rows: int
    repeats: int
    quick: bool
    s3: bool
    #: Where a failed run leaves the services' logs.
    results_dir: Path = RESULTS_DIR

    def to_json(self) -> dict[str, Any]:
        return {"benchmark": NAME, "rows": self.rows, "repeats": self.repeats, "quick": self.quick, "s3": self.s3}


@dataclass(frozen=True, slots=True)
class _Format:
    """One way to export: a file format and a whole-file compression."""

    key: str
    label: str
    format: str
    compression: str | None = None


CSV = _Format("csv", "CSV", "csv")
FORMATS = (
    CSV,
    _Format("jsonl", "JSONL", "jsonl"),
    _Format("parquet", "Parquet", "parquet"),
    _Format("csv.gz", "CSV + gzip", "csv", "gzip"),
)


# --- the stack and its object store -------------------------------------------------------------------


class _Objects(ABC):
    """The object store the server and worker write into, seen from here: to check an export, then remove it."""

    kind = ""

    @abstractmethod
    def local_copy(self, key: str, scratch: Path) -> Path:
        """A file holding the object's bytes (the object itself where the store is local)."""

    @abstractmethod
    def remove(self, key: str, copy: Path) -> None:
        """Delete the object and the copy, to keep the disk bounded."""


class _LocalObjects(_Objects):
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def local_copy(self, key: str, scratch: Path) -> Path:
        path = self.root.joinpath(*key.split("/"))
        if not path.is_file():
            raise RuntimeError(f"the local object store has no file for {key}")
        return path

    def remove(self, key: str, copy: Path) -> None:
        # Only to keep the disk bounded: the `objects` row stays, nothing reads it in this run.
        copy.unlink()


class _S3Objects(_Objects):
    kind = "s3"

    def __init__(self, minio: Minio) -> None:
        self.minio = minio

    def local_copy(self, key: str, scratch: Path) -> Path:
        path = scratch / uuid.uuid4().hex
        self.minio.fget_object(BUCKET, key, str(path))
        return path

    def remove(self, key: str, copy: Path) -> None:
        copy.unlink()
        self.minio.remove_object(BUCKET, key)


@dataclass(frozen=True, slots=True)
class _Stack:
    target: str
    database_url: str
    objects: _Objects
    facts: dict[str, Any]


@contextlib.contextmanager
def _local_stack(root: Path) -> Iterator[_Stack]:
    with dev_stack(root, port=free_port(), workers=1) as (target, env):
        objects = _LocalObjects(Path(env["DATAMILL_LOCAL_OBJECT_DIR"]))
        yield _Stack(target, env["DATAMILL_DATABASE_URL"], objects, {"object_store": "local"})


@contextlib.contextmanager
def _s3_stack(root: Path) -> Iterator[_Stack]:
    """dev_stack's services with the object store on SeaweedFS (a real S3 endpoint); all stopped on the way out."""
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(EmbeddedPostgres(root / "postgres"))
        redis = stack.enter_context(EmbeddedRedis(root / "redis"))
        s3 = stack.enter_context(SeaweedS3(root / "seaweedfs")).connection
        database_url = create_owned_database(pg.conninfo, "datamill")  # an ordinary role: row-level security binds
        target = f"127.0.0.1:{free_port()}"
        env = service_env(
            database_url=database_url,
            redis_url=redis.url,
            listen=target,
            object_dir=root / "objects",  # unused: the store is S3
            extra={
                "DATAMILL_LOG_FORMAT": "json",
                "DATAMILL_OBJECT_STORE": "s3",
                "DATAMILL_S3_ENDPOINT": s3.endpoint,
                "DATAMILL_S3_ACCESS_KEY": s3.access_key,
                "DATAMILL_S3_SECRET_KEY": s3.secret_key,
                "DATAMILL_S3_BUCKET": BUCKET,
                "DATAMILL_S3_REGION": s3.region,
            },
        )
        server = server_process(env, root / "logs" / "server.log").start()
        stack.callback(server.stop)
        worker = worker_process(env, root / "logs" / "worker.log").start()
        stack.callback(worker.stop)
        wait_for_serving(target, process=server)
        objects = _S3Objects(_minio_client(s3, stack))
        yield _Stack(target, database_url, objects, {"object_store": "s3 (SeaweedFS)"})


# --- measurements ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Dataset:
    name: str
    table: str
    rows: int
    table_bytes: int = 0
    #: Size and SHA-256 of the raw COPY's CSV (TimeZone UTC, as the export sets it), read once untimed.
    csv_bytes: int = 0
    csv_sha256: str = ""
    #: The same CSV's lines as a multiset (`_lines_digest`): equal for the same lines in any order.
    csv_lines_digest: int = 0

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier("datasets", self.table)

    def copy_statement(self) -> sql.Composed:
        return sql.SQL("COPY (SELECT * FROM {}) TO STDOUT WITH (FORMAT csv, HEADER)").format(self.ident)


@dataclass(slots=True)
class _Checked:
    """What the untimed check of one export found."""

    size_bytes: int
    #: For CSV (after decompression for gzip), against raw COPY's CSV: SAME, REORDERED or DIFFERENT; None when
    #: not compared.
    copy_match: str | None = None


@dataclass(frozen=True, slots=True)
class _Cpu:
    """CPU seconds (user + system), by whom."""

    worker: float
    #: The postmaster and every backend, also those that ended meanwhile (their time is the postmaster's children's).
    postgres: float
    #: This process: the client waiting for the job, or reading the raw COPY.
    bench: float
    #: SeaweedFS (`--s3`); 0 with the local object store.
    s3: float = 0.0
    #: The rest of the machine's busy time (/proc/stat): datamill-server, Redis, and anything else running.
    others: float = 0.0

    def __sub__(self, other: _Cpu) -> _Cpu:
        return _Cpu(*(round(mine - theirs, 3) for mine, theirs in zip(astuple(self), astuple(other), strict=True)))

    @classmethod
    def median(cls, samples: list[_Cpu]) -> _Cpu:
        return cls(*(statistics.median(column) for column in zip(*map(astuple, samples), strict=True)))


@dataclass(slots=True)
class _Line:
    """A table line and what it does not hold: CPU seconds, sizes and the worker's RSS of each sample."""

    result: Result
    cpu: list[_Cpu] = field(default_factory=list)
    size_bytes: list[int] = field(default_factory=list)
    #: The worker's RSS just before each export, and its peak (VmHWM, reset just before) during it.
    rss_before_bytes: list[int] = field(default_factory=list)
    peak_rss_bytes: list[int] = field(default_factory=list)
    copy_match: list[str] = field(default_factory=list)
    #: The attempt that finished each export: above 1, the time includes failed attempts and their retry delays.
    attempts: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": [round(s, 6) for s in self.result.seconds],
            "cpu_seconds": [asdict(c) for c in self.cpu],
            "size_bytes": self.size_bytes,
            "worker_rss_before_bytes": self.rss_before_bytes,
            "worker_peak_rss_bytes": self.peak_rss_bytes,
            "csv_against_raw_copy": self.copy_match,
            "attempts": self.attempts,
        }

    @property
    def own_growth_bytes(self) -> int:
        """The most one export raised the worker's RSS above what it was just before."""
        return max(0, *(p - b for p, b in zip(self.peak_rss_bytes, self.rss_before_bytes, strict=True)))

    @property
    def mb_per_second(self) -> float | None:
        if not self.size_bytes:
            return None
        return statistics.median(self.size_bytes) / self.result.median_seconds / 1e6


class _Bench:
    """Exports and raw COPY reads on the running stack."""

    def __init__(self, stack: _Stack, client: Client, admin: psycopg.Connection[Any], scratch: Path) -> None:
        self.stack = stack
        self.client = client
        self.admin = admin
        self.scratch = scratch
        self.workers = _worker_processes(_find_worker(os.getpid()))
        self.rss_resettable = True
        backend = admin.execute("SELECT pg_backend_pid()").fetchone()
        self.postmaster = parent_pid(int(backend[0])) if backend else 0
        self.weed = _find_weed() if stack.objects.kind == "s3" else None

    # datasets

    def make_dataset(self, rows: int) -> _Dataset:
        """A dataset of `rows` rows made by a Generate job, vacuumed and checkpointed; not timed."""
        name = f"bench_export_{uuid.uuid4().hex[:12]}"
        job = self.client.generate(name, schema={**STANDARD_SCHEMA, "rows": rows})
        final = self.client.wait(job.id)
        if final.state != job_pb2.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"Generate {final.id} ended {job_pb2.JobState.Name(final.state)}: {final.error.message}")
        found = self.admin.execute("SELECT table_name FROM datasets WHERE name = %s", (name,)).fetchone()
        if found is None:
            raise RuntimeError(f"dataset {name} is missing")
        dataset = _Dataset(name, str(found[0]), rows)
        counted = self.admin.execute(sql.SQL("SELECT count(*) FROM {}").format(dataset.ident)).fetchone()
        if counted is None or counted[0] != rows:
            raise RuntimeError(f"{dataset.ident.as_string()} holds {counted} rows, not {rows}")
        # Set every hint bit and the visibility map now, so that neither the first read nor autovacuum does it
        # during the rounds.
        self.admin.execute(sql.SQL("VACUUM (FREEZE, ANALYZE) {}").format(dataset.ident))
        size = self.admin.execute("SELECT pg_total_relation_size(%s::regclass)", (dataset.ident.as_string(),))
        dataset.table_bytes = int(next(iter(size.fetchone() or (0,))))
        self._settle()
        return dataset

    def reference_read(self, dataset: _Dataset) -> None:
        """Raw COPY once, untimed: the table into the page cache, and its CSV's size and SHA-256 for the checks."""
        digest, lines = hashlib.sha256(), _LinesDigest()
        size = 0
        with self._copy_connection() as conn, conn.cursor().copy(dataset.copy_statement()) as copy:
            for data in copy:  # one message a row (one line: the values hold no line breaks)
                digest.update(data)
                lines.add(data)
                size += len(data)
        dataset.csv_bytes, dataset.csv_sha256, dataset.csv_lines_digest = size, digest.hexdigest(), lines.value

    # the measurements

    def raw_copy(self, dataset: _Dataset, line: _Line) -> float:
        """b: seconds to read the table's CSV to the end from COPY TO STDOUT, on a connection opened untimed."""
        with self._copy_connection() as conn:
            self._settle()
            cpu = self._cpu()
            started = time.perf_counter()
            size = 0
            with conn.cursor().copy(dataset.copy_statement()) as copy:
                for data in copy:
                    size += len(data)
            elapsed = time.perf_counter() - started
            line.cpu.append(self._cpu() - cpu)
        if size != dataset.csv_bytes:
            raise RuntimeError(f"raw COPY of {dataset.name} read {size} bytes, {dataset.csv_bytes} before")
        line.size_bytes.append(size)
        return elapsed

    def export(
        self, dataset: _Dataset, fmt: _Format, line: _Line | None = None, *, row_limit: int | None = None
    ) -> float:
        """Seconds from the Export call until the job is SUCCEEDED; then its result and object are checked."""
        expected = dataset.rows if row_limit is None else min(row_limit, dataset.rows)
        self._settle()
        self.rss_resettable = _reset_peak_rss(self.workers) and self.rss_resettable
        before = max(status_bytes(pid, "VmRSS") for pid in self.workers)
        cpu = self._cpu()
        started = time.perf_counter()
        job = self.client.export(dataset.name, format=fmt.format, compression=fmt.compression, row_limit=row_limit)
        final = self.client.wait(job.id)
        elapsed = time.perf_counter() - started
        cpu = self._cpu() - cpu
        peak = _peak_rss(self.workers)
        checked = self._check(dataset, fmt, final, expected, compare=row_limit is None)
        if line is not None:
            line.cpu.append(cpu)
            line.size_bytes.append(checked.size_bytes)
            line.rss_before_bytes.append(before)
            line.attempts.append(final.attempt)
            line.peak_rss_bytes.append(peak)
            line.result.peak_rss_bytes = max(line.peak_rss_bytes)
            if checked.copy_match is not None:
                line.copy_match.append(checked.copy_match)
        return elapsed

    # helpers

    def _check(self, dataset: _Dataset, fmt: _Format, job: job_pb2.Job, rows: int, *, compare: bool) -> _Checked:
        """The job SUCCEEDED with `rows` rows, and the stored object is the file it describes; then remove it."""
        if job.state != job_pb2.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"Export {job.id} ended {job_pb2.JobState.Name(job.state)}: {job.error.message}")
        if job.WhichOneof("result") != "export":
            raise RuntimeError(f"Export {job.id} SUCCEEDED with no export result")
        result = job.export
        if result.row_count != rows or result.size_bytes <= 0:
            raise RuntimeError(
                f"Export {job.id} wrote {result.row_count} rows in {result.size_bytes} bytes, not {rows}"
            )
        copy = self.stack.objects.local_copy(result.object_key, self.scratch)
        try:
            stored, content = _digest(copy, gzipped=fmt.compression == "gzip")
            if (stored.size, stored.sha256) != (result.size_bytes, result.sha256):
                raise RuntimeError(
                    f"object {result.object_key}: {stored.size} bytes, sha256 {stored.sha256}; the job says"
                    f" {result.size_bytes} bytes, sha256 {result.sha256}"
                )
            checked = _Checked(stored.size)
            if fmt.format == "csv" and compare:
                checked.copy_match = _compare_csv(copy, fmt, content, dataset)
            elif fmt.format == "jsonl" and content.lines != rows:
                raise RuntimeError(f"object {result.object_key} holds {content.lines} JSON lines, not {rows}")
            elif fmt.format == "parquet" and (parquet_rows := pq.read_metadata(copy).num_rows) != rows:
                raise RuntimeError(f"object {result.object_key} holds {parquet_rows} Parquet rows, not {rows}")
        finally:
            self.stack.objects.remove(result.object_key, copy)
        return checked

    def _copy_connection(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(self.stack.database_url, autocommit=True)
        conn.execute("SET TimeZone = 'UTC'")  # as the export's session: the same bytes for the checks
        return conn

    def _settle(self) -> None:
        # No write-back of the file before, and no dirty buffers, in any timed measurement.
        os.sync()
        self.admin.execute("CHECKPOINT")

    def _cpu(self) -> _Cpu:
        busy = machine_busy_seconds()
        worker = sum(cpu_seconds(pid) for pid in self.workers)
        postgres = tree_cpu_seconds(self.postmaster)
        bench = time.process_time()
        s3 = 0.0 if self.weed is None else cpu_seconds(self.weed)
        return _Cpu(worker, postgres, bench, s3, busy - worker - postgres - bench - s3)


@dataclass(frozen=True, slots=True)
class _Content:
    size: int
    sha256: str
    lines: int


def _digest(path: Path, *, gzipped: bool) -> tuple[_Content, _Content]:
    """The file's size, SHA-256 and line count, and its content's: decompressed if gzipped, else the same."""
    stored = _read_all(path.open("rb"))
    return stored, _read_all(gzip.open(path, "rb")) if gzipped else stored


def _read_all(stream: IO[bytes] | gzip.GzipFile) -> _Content:
    digest, size, lines = hashlib.sha256(), 0, 0
    with stream:
        while block := stream.read(READ_CHUNK):
            digest.update(block)
            size += len(block)
            lines += block.count(b"\n")
    return _Content(size, digest.hexdigest(), lines)


SAME, REORDERED, DIFFERENT = "same bytes", "same lines in another order", "different"


def _compare_csv(path: Path, fmt: _Format, content: _Content, dataset: _Dataset) -> str:
    """How an exported CSV compares with raw COPY's: the same bytes, the same lines in another order, or not."""
    if (content.size, content.sha256) == (dataset.csv_bytes, dataset.csv_sha256):
        return SAME
    lines = _LinesDigest()
    with gzip.open(path, "rb") if fmt.compression == "gzip" else path.open("rb") as stream:
        for line in stream:
            lines.add(line)
    return REORDERED if lines.value == dataset.csv_lines_digest else DIFFERENT


class _LinesDigest:
    """An order-independent digest of lines: the sum of their 128-bit BLAKE2b hashes, modulo 2^128."""

    MODULUS = 1 << 128

    def __init__(self) -> None:
        self.value = 0

    def add(self, line: bytes | bytearray | memoryview) -> None:
        digest = hashlib.blake2b(line, digest_size=16).digest()
        self.value = (self.value + int.from_bytes(digest, "big")) % self.MODULUS


def _check_disk(directory: Path, rows: int, s3: bool) -> None:
    # About 200 bytes a row in PostgreSQL and 350 in the largest file (JSONL), one file at a time (S3: and its copy).
    needed = (1 + BIG_FACTOR) * rows * 200 + BIG_FACTOR * rows * 350 * (2 if s3 else 1)
    free = shutil.disk_usage(directory).free
    if free < needed + DISK_MARGIN:
        raise RuntimeError(
            f"{directory} has {free / MIB:,.0f} MiB free; this run needs about {needed / MIB:,.0f} MiB"
            f" and keeps {DISK_MARGIN / MIB:,.0f} MiB spare"
        )


# --- the run ----------------------------------------------------------------------------------------------


def run(options: ExportBenchOptions) -> Section:
    store = "SeaweedFS (S3)" if options.s3 else "the local object store"
    section = Section(NAME, f"Export {options.rows:,} rows of the standard 8 columns into {store}")
    with _stop_on_sigterm(), tempfile.TemporaryDirectory(prefix="datamill-bench-export-") as tmp:
        root = Path(tmp)
        _check_disk(root, options.rows, options.s3)
        (root / "scratch").mkdir()
        console.log(f"starting the stack (PostgreSQL, Redis, server, 1 worker process, {store})")
        try:
            with (
                (_s3_stack if options.s3 else _local_stack)(root / "stack") as stack,
                Client.connect(stack.target) as client,
                psycopg.connect(stack.database_url, autocommit=True) as admin,
            ):
                section.environment.update({"postgres": _postgres_facts(admin), **stack.facts})
                bench = _Bench(stack, client, admin, root / "scratch")
                console.log(f"making the datasets with datamill: {options.rows:,} and {BIG_FACTOR}× rows (not timed)")
                big_rows = BIG_FACTOR * options.rows
                measured = _Run(bench, bench.make_dataset(options.rows), bench.make_dataset(big_rows))
                measured.warm_up()
                measured.rounds(options.repeats)
                measured.big_exports()
        except BaseException:
            _keep_logs(root / "stack" / "logs", options.results_dir, "failed")
            raise
        if measured.retried():
            measured.kept_logs = _keep_logs(root / "stack" / "logs", options.results_dir, "retried")
    measured.report(section)
    return section


def _keep_logs(logs: Path, results_dir: Path, why: str) -> Path | None:
    """Copy the services' logs beside the results, since the temporary directory goes; where they are."""
    if not logs.is_dir():
        return None
    kept = results_dir / f"export-{why}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-logs"
    shutil.copytree(logs, kept)
    console.print(f"[red]export {why}: the server's and worker's logs are in {kept}[/]")
    return kept


def _label(fmt: _Format, *, subject: bool = False, suffix: str = "") -> str:
    return f"{'a: ' if subject else ''}datamill {fmt.label} export, end to end{suffix}"


class _Run:
    """Every measurement of one run, in order, and the report."""

    def __init__(self, bench: _Bench, dataset: _Dataset, big: _Dataset) -> None:
        self.bench = bench
        self.dataset = dataset
        self.big = big
        rows, big_rows, suffix = dataset.rows, big.rows, f", {BIG_FACTOR}× rows"
        self.lines = {f.key: _Line(Result(_label(f, subject=f is CSV), rows)) for f in FORMATS}
        self.raw = _Line(Result("b: raw COPY TO STDOUT (csv, header), sync psycopg", rows))
        self.big_lines = {f.key: _Line(Result(_label(f, suffix=suffix), big_rows)) for f in FORMATS}
        self.big_raw = _Line(Result(f"raw COPY TO STDOUT (csv, header){suffix}", big_rows))
        self.rss_idle = self.rss_warm = 0
        self.latency: list[float] = []
        self.repeats = 0
        self.kept_logs: Path | None = None

    def retried(self) -> list[str]:
        """The lines with an export that took more than one attempt."""
        lines = (*self.lines.values(), *self.big_lines.values())
        return [_retried(line) for line in lines if any(attempt > 1 for attempt in line.attempts)]

    def warm_up(self) -> None:
        """Raw COPY once (its CSV is the reference), each format once, then the fixed cost; none of it timed.

        The worker's first export of each kind grows its heap by up to ~100 MiB (page faults, allocator arenas,
        pyarrow's pools) and ran up to 1.3× slower than the next ones: the rounds measure the exports after it.
        """
        console.log(f"warm-up: raw COPY once, each format once on all {self.dataset.rows:,} rows (not timed)")
        self.rss_idle = max(status_bytes(pid, "VmRSS") for pid in self.bench.workers)
        self.bench.reference_read(self.dataset)
        for fmt in FORMATS:
            self.bench.export(self.dataset, fmt)
        self.rss_warm = max(status_bytes(pid, "VmRSS") for pid in self.bench.workers)
        console.log(f"fixed cost: {LATENCY_SAMPLES} one-row CSV exports")
        self.latency = [self.bench.export(self.dataset, CSV, row_limit=1) for _ in range(LATENCY_SAMPLES)]

    def rounds(self, repeats: int) -> None:
        self.repeats = repeats
        measurements: list[tuple[Result, Callable[[int], float]]] = [
            (self.raw.result, lambda _: self.bench.raw_copy(self.dataset, self.raw)),
            *((self.lines[f.key].result, self._measure(f)) for f in FORMATS),
        ]
        measurements.insert(0, measurements.pop(1))  # a, b, then the other formats
        run_rounds(measurements, repeats)

    def _measure(self, fmt: _Format) -> Callable[[int], float]:
        return lambda _: self.bench.export(self.dataset, fmt, self.lines[fmt.key])

    def big_exports(self) -> None:
        """Each format once on the 5× dataset, for the worker's peak RSS; raw COPY once for a/b at that size."""
        console.log(f"{self.big.rows:,} rows: raw COPY once (not timed), then each format and raw COPY once")
        self.bench.reference_read(self.big)
        for fmt in FORMATS:
            console.log(f"{fmt.label} export of {self.big.rows:,} rows")
            line = self.big_lines[fmt.key]
            line.result.seconds.append(self.bench.export(self.big, fmt, line))
            if fmt is CSV:
                console.log(f"raw COPY of {self.big.rows:,} rows")
                self.big_raw.result.seconds.append(self.bench.raw_copy(self.big, self.big_raw))

    # the report

    def report(self, section: Section) -> None:
        a, raw, big_a, big_raw = self.lines[CSV.key], self.raw, self.big_lines[CSV.key], self.big_raw
        for line in (*self.lines.values(), raw):
            line.result.ratio = paired_ratio(a.result, line.result)
        for line in (*self.big_lines.values(), big_raw):  # single samples: ratio to a's median
            line.result.ratio = a.result.rows_per_second / line.result.rows_per_second
        others = [f.key for f in FORMATS[1:]]
        section.results = [a.result, raw.result, *(self.lines[k].result for k in others)]
        section.results += [big_a.result, big_raw.result, *(self.big_lines[k].result for k in others)]

        ratio = paired_ratio(a.result, raw.result)
        by_round = [b / s for s, b in zip(a.result.seconds, raw.result.seconds, strict=True)]
        big_ratio = big_raw.result.median_seconds / big_a.result.median_seconds
        target = TARGETS["a/b"]
        rows, big_rows = self.dataset.rows, self.big.rows
        # The worker's peak over all the exports of each size: what the process needs, whatever it exports.
        peak = max(max(line.peak_rss_bytes) for line in self.lines.values())
        big_peak = max(max(line.peak_rss_bytes) for line in self.big_lines.values())
        flat = big_peak - peak < RSS_FLAT_MARGIN
        matches = [m for line in (*self.lines.values(), *self.big_lines.values()) for m in line.copy_match]
        resettable = self.bench.rss_resettable
        cpu_a, cpu_b, s3 = _Cpu.median(a.cpu), _Cpu.median(raw.cpu), self.bench.weed is not None

        section.notes += [
            f"a/b = {ratio:.2f} (datamill CSV export rows/s ÷ raw COPY rows/s, median of {self.repeats} paired"
            f" rounds: {', '.join(f'{x:.2f}' for x in by_round)}; target ≥ {target:g}:"
            f" {'met' if ratio >= target else 'NOT met'}); at {big_rows:,} rows, one sample: {big_ratio:.2f}",
            "median rows/s and MB/s of the file written: "
            + "; ".join(_speed(f.label, self.lines[f.key]) for f in FORMATS)
            + f"; {_speed('raw COPY', raw)} of CSV",
            f"worker peak RSS over all exports: {_mib(peak)} at {rows:,} rows, {_mib(big_peak)} at {big_rows:,}"
            f" ({(big_peak - peak) / MIB:+,.0f} MiB; flat, less than {RSS_FLAT_MARGIN / MIB:,.0f} MiB more:"
            f" {'yes' if flat else 'NO'}); RSS {_mib(self.rss_idle)} before any export, {_mib(self.rss_warm)} after"
            " the warm-up ("
            + ("each export's own peak, VmHWM reset before it" if resettable else "VmHWM not resettable here")
            + ")",
            f"worker peak RSS by format, {rows:,} → {big_rows:,} rows (in brackets: the most one export rose above"
            " the RSS just before it): "
            + "; ".join(
                f"{f.label} {_mib(max(self.lines[f.key].peak_rss_bytes))} ({_mib(self.lines[f.key].own_growth_bytes)})"
                f" → {_mib(max(self.big_lines[f.key].peak_rss_bytes))}"
                f" ({_mib(self.big_lines[f.key].own_growth_bytes)})"
                for f in FORMATS
            ),
            f"CPU seconds, median, worker / PostgreSQL / this process{' / SeaweedFS' if s3 else ''} / others:"
            f" CSV export {_cpu_text(cpu_a, s3=s3)} in {a.result.median_seconds:.2f} s;"
            f" raw COPY {_cpu_text(cpu_b, s3=s3)} in {raw.result.median_seconds:.2f} s; {os.cpu_count()} CPUs shared",
            f"CSV exports (gzip: decompressed) against raw COPY's CSV, read before any other scan: {len(matches)}"
            " exports, " + ", ".join(f"{matches.count(kind)} {kind}" for kind in (SAME, REORDERED, DIFFERENT)),
            f"fixed cost of a 1-row CSV export (Export → SUCCEEDED): median"
            f" {statistics.median(self.latency) * 1000:.0f} ms of {LATENCY_SAMPLES}",
            f"tables {_mib(self.dataset.table_bytes)} and {_mib(self.big.table_bytes)}, vacuumed (FREEZE) before any"
            f" read; their CSV {_mib(self.dataset.csv_bytes)} and {_mib(self.big.csv_bytes)}",
        ]
        if retried := self.retried():
            section.notes.append(
                "retried exports (their time includes the failed attempts; the worker log says why): "
                + "; ".join(retried)
                + ("" if self.kept_logs is None else f"; logs kept in {self.kept_logs}")
            )
        busy = [
            c.others / seconds
            for line in (*self.lines.values(), raw, *self.big_lines.values(), big_raw)
            for c, seconds in zip(line.cpu, line.result.seconds, strict=True)
        ]
        if max(busy) > BUSY_OTHERS:
            section.notes.append(
                f"the machine was busy: other processes kept up to {max(busy):.0%} of a CPU busy during a measurement"
                f" (median {statistics.median(busy):.0%}); the figures are noisier than on a quiet machine"
            )
        section.data = {
            "schema": STANDARD_SCHEMA,
            "object_store": section.environment.get("object_store"),
            "datasets": {
                str(d.rows): {"table_bytes": d.table_bytes, "csv_bytes": d.csv_bytes, "csv_sha256": d.csv_sha256}
                for d in (self.dataset, self.big)
            },
            "ratios": {"a/b": round(ratio, 4), f"a/b at {big_rows} rows": round(big_ratio, 4)},
            "ratios_by_round": {"a/b": [round(x, 4) for x in by_round]},
            "targets": TARGETS,
            "formats": {
                f.key: {
                    "format": f.format,
                    "compression": f.compression,
                    "rows_per_second": round(self.lines[f.key].result.rows_per_second, 1),
                    "mb_per_second": _rounded(self.lines[f.key].mb_per_second),
                    str(rows): self.lines[f.key].to_json(),
                    str(big_rows): self.big_lines[f.key].to_json(),
                }
                for f in FORMATS
            },
            "raw_copy": {str(rows): raw.to_json(), str(big_rows): big_raw.to_json()},
            "worker_peak_rss_bytes": {str(rows): peak, str(big_rows): big_peak},
            "worker_rss_after_warmup_bytes": self.rss_warm,
            "worker_peak_rss_flat": flat,
            "worker_peak_rss_per_export": resettable,
            "rss_flat_margin_bytes": RSS_FLAT_MARGIN,
            "one_row_export_seconds": [round(s, 6) for s in self.latency],
            "worker_rss_idle_before_warmup_bytes": self.rss_idle,
            "retried": self.retried(),
            "kept_logs": None if self.kept_logs is None else str(self.kept_logs),
        }


def _retried(line: _Line) -> str:
    rounds = (f"sample {index + 1}: attempt {attempt}" for index, attempt in enumerate(line.attempts) if attempt > 1)
    return f"{line.result.label} ({', '.join(rounds)})"


def _cpu_text(cpu: _Cpu, *, s3: bool) -> str:
    shown = [cpu.worker, cpu.postgres, cpu.bench, *([cpu.s3] if s3 else []), cpu.others]
    return " / ".join(f"{x:.2f}" for x in shown)


def _speed(label: str, line: _Line) -> str:
    return f"{label} {line.result.rows_per_second:,.0f} rows/s, {line.mb_per_second or 0:,.0f} MB/s"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _growth(small: int, big: int) -> str:
    return f"{_mib(small)} → {_mib(big)} ({(big - small) / MIB:+,.0f})"


def _mib(value: int) -> str:
    return f"{value / MIB:,.0f} MiB"
