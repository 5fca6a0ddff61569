"""The Upload benchmark: one file of random bytes into S3 through datamill, against minio sending it directly.

Every measurement sends the same file (os.urandom: SeaweedFS compresses, so
the data must not) to the same bucket of one real S3 endpoint (SeaweedFS,
`server.devstack.SeaweedS3`):

- a, datamill CLI: `datamill --target … --json upload FILE --dataset NAME
  --format csv --no-wait` as a process of its own, timed from its start to
  its exit. It exits once datamill-server has stored the file (a multipart
  upload, part by part), checked its size and SHA-256 and created the ingest
  job. That job is never run (no worker is started): the bytes are not CSV.
- a', datamill Python API: the same upload through `Client.upload` in this
  process; CLI seconds minus these are the CLI's start-up and exit.
- b, minio `fput_object`: the file put by the SDK with its defaults (its part
  size for the file, its parallel part uploads), the ceiling of anything that
  writes the file into this store.

The rounds alternate the three; a/b is taken within each round, then the
median. During each datamill upload a thread samples the server process's
VmRSS every 50 ms, and its VmHWM is reset before and read after, for its
peak RSS against its idle RSS before. The CPU seconds of the client, the
server and SeaweedFS during each transfer show who was busy on the shared CPUs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import inspect
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
import urllib3
from minio import Minio
from minio.helpers import get_part_info
from rich.console import Console
from rich.table import Table

from bench.common import (
    MIB,
    Section,
    cmdline,
    console,
    cpu_seconds,
    descendants,
    machine_busy_seconds,
    reset_peak_rss,
    status_bytes,
    timed,
)
from client import Client, UploadOptions
from datamill.v1 import job_pb2
from server.core.uploads import PARTS_IN_FLIGHT
from server.dev import ServiceProcess, server_process, service_env, wait_for_serving
from server.devstack import (
    EmbeddedPostgres,
    EmbeddedRedis,
    S3Endpoint,
    SeaweedS3,
    create_owned_database,
    free_port,
    weed_binary,
)

NAME = "upload"
DEFAULT_SIZE_MIB = 1024
DEFAULT_REPEATS = 3
#: Throughputs are in MB/s, 10^6 bytes a second; sizes in MiB.
MB = 1_000_000
#: The issue's targets: the CLI at least this fraction of minio's MB/s, and the server's RSS growth below this.
TARGETS = {"a/b": 0.7}
RSS_GROWTH_TARGET = 100 * MIB
SAMPLE_SECONDS = 0.05
#: CPUs kept busy by others during a transfer beyond which the run is flagged noisy.
BUSY_OTHERS = 0.25
#: Pieces of os.urandom written to the file.
WRITE_CHUNK = 16 * MIB
#: The warm-up file (each path once, untimed): two of datamill's 8 MiB parts.
WARMUP_BYTES = 16 * MIB
BUCKET = "datamill-bench"
#: fput_object's default number of parts in flight (its `num_parallel_uploads`).
MINIO_PARALLEL_UPLOADS: int = inspect.signature(Minio.fput_object).parameters["num_parallel_uploads"].default
CLI_HELP_SAMPLES = 5
#: The CLI is the console script installed next to this interpreter, as users run it.
CLI = Path(sys.executable).with_name("datamill")
#: Free disk the run needs beyond what it writes (SeaweedFS's metadata, PostgreSQL, logs).
DISK_MARGIN = 2 * 1024 * MIB


@dataclass(frozen=True, slots=True)
class UploadBenchOptions:
    size_bytes: int
    repeats: int

    def to_json(self) -> dict[str, Any]:
        return {"benchmark": NAME, "size_bytes": self.size_bytes, "repeats": self.repeats}


@dataclass(frozen=True, slots=True)
class CpuSeconds:
    """CPU time (user + system) used during one transfer, by whom."""

    client: float
    server: float
    s3: float
    #: The machine's busy time minus the three above: PostgreSQL, Redis, and whatever else runs on the machine.
    others: float

    def __sub__(self, other: CpuSeconds) -> CpuSeconds:
        return CpuSeconds(
            *(round(mine - theirs, 3) for mine, theirs in zip(astuple(self), astuple(other), strict=True))
        )

    @classmethod
    def median(cls, samples: Sequence[CpuSeconds]) -> CpuSeconds:
        return cls(*(statistics.median(column) for column in zip(*map(astuple, samples), strict=True)))

    def text(self) -> str:
        return " / ".join(f"{x:.1f}" for x in astuple(self))


@dataclass(slots=True)
class Transfer:
    """One line of the table: the file sent one way, once per round."""

    key: str
    label: str
    size_bytes: int
    seconds: list[float] = field(default_factory=list)
    cpu: list[CpuSeconds] = field(default_factory=list)
    #: Median over rounds of this line's MB/s ÷ the baseline's MB/s in the same round.
    ratio: float | None = None

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def mb_per_second(self) -> float:
        return self.size_bytes / self.median_seconds / MB

    def round_mb_per_second(self) -> list[float]:
        return [self.size_bytes / s / MB for s in self.seconds]

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median: how much the rounds disagree."""
        return (max(self.seconds) - min(self.seconds)) / self.median_seconds

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "size_bytes": self.size_bytes,
            "seconds": [round(s, 6) for s in self.seconds],
            "mb_per_second": [round(x, 2) for x in self.round_mb_per_second()],
            "median_seconds": round(self.median_seconds, 6),
            "median_mb_per_second": round(self.mb_per_second, 2),
            "spread": round(self.spread, 4),
            "ratio_to_baseline": None if self.ratio is None else round(self.ratio, 4),
            "cpu_seconds": [asdict(c) for c in self.cpu],
            "median_cpu_seconds": asdict(CpuSeconds.median(self.cpu)),
        }


def paired_ratio(subject: Transfer, baseline: Transfer) -> float:
    """Median over rounds of subject MB/s ÷ baseline MB/s, each pair measured in the same round."""
    return statistics.median(b / s for s, b in zip(subject.seconds, baseline.seconds, strict=True))


# --- the server's memory ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerMemory:
    """The server's RSS around one upload."""

    label: str
    round: int
    #: VmRSS just before the upload started.
    idle_bytes: int
    #: The largest VmRSS sampled during the upload.
    sampled_peak_bytes: int
    #: VmHWM after the upload, reset just before it; None where the kernel refused the reset.
    hwm_bytes: int | None
    #: VmRSS just after the upload returned.
    after_bytes: int
    samples: int

    @property
    def peak_bytes(self) -> int:
        return max(self.sampled_peak_bytes, self.hwm_bytes or 0)

    @property
    def growth_bytes(self) -> int:
        return self.peak_bytes - self.idle_bytes

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "peak_bytes": self.peak_bytes, "growth_bytes": self.growth_bytes}


class RssSampler:
    """Samples a process's VmRSS every `interval` seconds in a thread, between `with` and its end.

    Entering also resets the process's VmHWM, so that the peak read at the end
    covers this stretch only and catches a spike between two samples.
    """

    def __init__(self, pid: int, *, interval: float = SAMPLE_SECONDS) -> None:
        self.pid = pid
        self.interval = interval
        self.idle_bytes = 0
        self.peak_bytes = 0
        self.samples = 0
        self.hwm_reset = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def __enter__(self) -> RssSampler:
        self.hwm_reset = reset_peak_rss(self.pid)
        self.idle_bytes = self.peak_bytes = status_bytes(self.pid, "VmRSS")
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def result(self, label: str, round_index: int) -> ServerMemory:
        hwm = status_bytes(self.pid, "VmHWM") if self.hwm_reset else None
        return ServerMemory(
            label=label,
            round=round_index + 1,
            idle_bytes=self.idle_bytes,
            sampled_peak_bytes=self.peak_bytes,
            hwm_bytes=hwm,
            after_bytes=status_bytes(self.pid, "VmRSS"),
            samples=self.samples,
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                rss = status_bytes(self.pid, "VmRSS")
            except (OSError, KeyError):  # the process is gone: the upload will fail and say why
                return
            self.samples += 1
            self.peak_bytes = max(self.peak_bytes, rss)


# --- the stack ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stack:
    target: str
    database_url: str
    s3: S3Endpoint
    server: ServiceProcess
    weed_pid: int
    minio: Minio


def _s3_settings(s3: S3Endpoint) -> dict[str, str]:
    return {
        "DATAMILL_OBJECT_STORE": "s3",
        "DATAMILL_S3_ENDPOINT": s3.endpoint,
        "DATAMILL_S3_ACCESS_KEY": s3.access_key,
        "DATAMILL_S3_SECRET_KEY": s3.secret_key,
        "DATAMILL_S3_BUCKET": BUCKET,
        "DATAMILL_S3_REGION": s3.region,
    }


def _minio_client(s3: S3Endpoint, stack: contextlib.ExitStack) -> Minio:
    # minio's default pool (10 connections, enough for its 3 parallel parts), with the
    # server's short timeouts instead of minio's five-minute ones (PITFALLS.md).
    http = urllib3.PoolManager(
        maxsize=10,
        timeout=urllib3.Timeout(connect=5.0, read=60.0),
        retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
    )
    stack.callback(http.clear)
    return Minio(s3.endpoint, s3.access_key, s3.secret_key, secure=s3.secure, region=s3.region, http_client=http)


@contextlib.contextmanager
def _upload_stack(root: Path) -> Iterator[_Stack]:
    """PostgreSQL, Redis, SeaweedFS and one datamill-server on S3, and no worker; all stopped on the way out."""
    with contextlib.ExitStack() as stack:
        console.log("starting PostgreSQL, Redis and SeaweedFS")
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
            extra={"DATAMILL_LOG_FORMAT": "json", **_s3_settings(s3)},
        )
        console.log("starting datamill-server on S3 (no worker: the ingest jobs stay queued)")
        server = server_process(env, root / "logs" / "server.log").start()
        stack.callback(server.stop)
        try:
            wait_for_serving(target, process=server)
            yield _Stack(target, database_url, s3, server, _find_weed(), _minio_client(s3, stack))
        except Exception:
            console.print(f"[red]datamill-server log, last lines:[/]\n{server.log_tail()}")
            raise


def _find_weed() -> int:
    """The `weed mini` process SeaweedS3 started (it does not hand out its pid), for its CPU time."""
    found = [pid for pid in descendants(os.getpid()) if Path(next(iter(cmdline(pid)), "")).name == "weed"]
    if len(found) != 1:
        raise RuntimeError(f"expected one weed process under this one, found {found}")
    return found[0]


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM and SIGHUP end the run as Ctrl-C does, through every `with`, so no service outlives it."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# --- the file -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _File:
    path: Path
    size: int
    sha256: str


def _random_file(path: Path, size: int) -> _File:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        remaining = size
        while remaining:
            block = os.urandom(min(WRITE_CHUNK, remaining))
            digest.update(block)
            out.write(block)
            remaining -= len(block)
    return _File(path, size, digest.hexdigest())


def _check_disk(directory: Path, needed: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed + DISK_MARGIN:
        raise RuntimeError(
            f"{directory} has {free / MIB:,.0f} MiB free; this run writes about {needed / MIB:,.0f} MiB"
            f" (the file, and every copy the rounds store in SeaweedFS) and keeps {DISK_MARGIN / MIB:,.0f} MiB spare"
        )


# --- the three ways to send the file ------------------------------------------------------------------


#: Sends the file one way: (seconds, the ingest job's id for a datamill upload, else None).
Send = Callable[[_Stack, _File], tuple[float, str | None]]


def _dataset_name() -> str:
    return f"bench_upload_{uuid.uuid4().hex[:12]}"


def _cli_env() -> dict[str, str]:
    # No DATAMILL_* of the caller's (a target, a token) reaches the CLI: --target says where.
    return {k: v for k, v in os.environ.items() if not k.startswith("DATAMILL_")}


def _cli_upload(stack: _Stack, file: _File) -> tuple[float, str]:
    """Seconds the `datamill upload` process ran, and the id of the ingest job it printed."""
    argv = [str(CLI), "--target", stack.target, "--json", "upload", str(file.path)]
    argv += ["--dataset", _dataset_name(), "--format", "csv", "--no-wait"]
    env = _cli_env()
    started = time.perf_counter()
    timeout = 120 + file.size / (2 * MB)  # a generous 2 MB/s; run() kills the CLI beyond it
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"`datamill upload` exited with {done.returncode}:\n{done.stderr.strip()[-2000:]}")
    lines = done.stdout.strip().splitlines()
    try:
        job = json.loads(lines[-1])
    except (IndexError, ValueError) as exc:
        raise RuntimeError(f"`datamill upload --json` printed no job:\n{done.stdout[-2000:]}") from exc
    if job.get("kind") != job_pb2.JobKind.Name(job_pb2.JOB_KIND_INGEST):
        raise RuntimeError(f"`datamill upload` printed a job that is not an ingest job: {job}")
    return elapsed, str(job["id"])


def _cli_help() -> None:
    """The CLI's start-up and exit with nothing to do (it imports all it needs at start)."""
    subprocess.run([str(CLI), "--help"], env=_cli_env(), capture_output=True, timeout=60, check=True)


def _api_upload(stack: _Stack, file: _File) -> tuple[float, str]:
    """Seconds from `Client.connect` until `upload` returned and the channel closed, and the job's id."""
    started = time.perf_counter()
    with Client.connect(stack.target) as client:
        completed = client.upload(file.path, _dataset_name(), options=UploadOptions(format="csv"))
    elapsed = time.perf_counter() - started
    if completed.size_bytes != file.size or completed.sha256 != file.sha256:
        raise RuntimeError(f"Upload completed with {completed.size_bytes} bytes, sha256 {completed.sha256}")
    return elapsed, completed.job.id


def _minio_upload(stack: _Stack, file: _File) -> tuple[float, None]:
    key = f"bench/minio/{uuid.uuid4().hex}"
    elapsed = timed(lambda: stack.minio.fput_object(BUCKET, key, str(file.path)))
    stored = stack.minio.stat_object(BUCKET, key).size
    if stored != file.size:
        raise RuntimeError(f"minio stored {stored} bytes of {file.size} under {key}")
    return elapsed, None


def _check_stored(stack: _Stack, job_id: str, file: _File) -> int:
    """Check that the upload behind the job is complete in PostgreSQL and S3; its part size."""
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT state, object_key, size_bytes, sha256, part_size FROM uploads WHERE job_id = %s", (job_id,)
        ).fetchone()
    if row is None:
        raise RuntimeError(f"no upload names job {job_id}")
    state, key, size, sha256, part_size = row
    if (state, size, sha256) != ("COMPLETED", file.size, file.sha256):
        raise RuntimeError(f"upload for job {job_id}: {state}, {size} bytes, sha256 {sha256}")
    stored = stack.minio.stat_object(BUCKET, key).size
    if stored != file.size:
        raise RuntimeError(f"S3 holds {stored} bytes of {file.size} under {key}")
    return int(part_size)


# --- the run ----------------------------------------------------------------------------------------------


def run(options: UploadBenchOptions) -> Section:
    size = options.size_bytes
    section = Section(NAME, f"Upload {size / MIB:,.0f} MiB of random bytes into S3 (SeaweedFS)")
    with (
        _stop_on_sigterm(),
        tempfile.TemporaryDirectory(prefix="datamill-bench-upload-") as tmp,
    ):
        root = Path(tmp)
        warmup_size = min(size, WARMUP_BYTES)
        # The file, then each round's three stored copies and the warm-up's.
        _check_disk(root, size + 3 * (size * options.repeats + warmup_size))
        console.log(f"writing {size / MIB:,.0f} MiB of random bytes")
        file = _random_file(root / "random.bin", size)
        warmup = _random_file(root / "warmup.bin", warmup_size)
        with _upload_stack(root / "stack") as stack:
            section.environment.update(_environment(stack))
            rounds = _Rounds(stack, file)
            rounds.warm_up(warmup)
            rounds.run(options.repeats)
            rounds.report(section)
    return section


class _Rounds:
    """The three transfers of the file, round after round, with the server's RSS and everyone's CPU."""

    def __init__(self, stack: _Stack, file: _File) -> None:
        self.stack = stack
        self.file = file
        self.cli = Transfer("CLI", "a: datamill CLI, upload --no-wait", file.size)
        self.api = Transfer("API", "a': datamill Python API, Client.upload", file.size)
        self.minio = Transfer("minio", "b: minio fput_object, defaults", file.size)
        self.sends: list[tuple[Transfer, Send]] = [
            (self.cli, _cli_upload),
            (self.api, _api_upload),
            (self.minio, _minio_upload),
        ]
        self.memory: list[ServerMemory] = []
        self.part_sizes: set[int] = set()
        self.idle_cold = self.idle_warm = status_bytes(stack.server.pid, "VmRSS")
        self.cli_help: list[float] = []

    def warm_up(self, warmup: _File) -> None:
        """Each way once with a small file, untimed: the server's first upload pays for imports and buffers."""
        console.log(f"warm-up: {warmup.size / MIB:,.0f} MiB each way, not timed")
        for _, send in self.sends:
            _, job_id = send(self.stack, warmup)
            if job_id is not None:
                _check_stored(self.stack, job_id, warmup)
        self.cli_help = [timed(_cli_help) for _ in range(CLI_HELP_SAMPLES)]
        time.sleep(1.0)
        self.idle_warm = status_bytes(self.stack.server.pid, "VmRSS")

    def run(self, repeats: int) -> None:
        for index in range(repeats):
            shift = index % len(self.sends)  # rotate: no way always goes first or after the same one
            for transfer, send in (*self.sends[shift:], *self.sends[:shift]):
                console.log(f"round {index + 1}/{repeats}: {transfer.label}")
                self._take(transfer, send, index)
                console.log(
                    f"  {transfer.round_mb_per_second()[-1]:,.0f} MB/s; CPU s {transfer.cpu[-1].text()}"
                    " (client, server, SeaweedFS, others)"
                )

    def _take(self, transfer: Transfer, send: Send, index: int) -> None:
        # Each upload starts with no dirty pages of the one before still being written back.
        os.sync()
        before = self._cpu()
        with RssSampler(self.stack.server.pid) as sampler:
            elapsed, job_id = send(self.stack, self.file)
        transfer.cpu.append(self._cpu() - before)
        transfer.seconds.append(elapsed)
        if job_id is not None:  # a datamill upload
            self.memory.append(sampler.result(transfer.key, index))
            self.part_sizes.add(_check_stored(self.stack, job_id, self.file))

    def _cpu(self) -> CpuSeconds:
        # This process (the API and minio run here) and its waited-for children (the CLI).
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        client = time.process_time() + children.ru_utime + children.ru_stime
        server = cpu_seconds(self.stack.server.pid)
        s3 = cpu_seconds(self.stack.weed_pid)
        return CpuSeconds(client, server, s3, machine_busy_seconds() - client - server - s3)

    def report(self, section: Section) -> None:
        cli, api, minio, memory = self.cli, self.api, self.minio, self.memory
        cli.ratio, api.ratio, minio.ratio = paired_ratio(cli, minio), paired_ratio(api, minio), 1.0
        cli_startup = statistics.median(c - a for c, a in zip(cli.seconds, api.seconds, strict=True))
        peak = max(memory, key=lambda m: m.peak_bytes)
        worst = max(memory, key=lambda m: m.growth_bytes)
        growth = peak.peak_bytes - self.idle_warm
        minio_part, minio_parts = get_part_info(self.file.size, 0)
        hwm = all(m.hwm_bytes is not None for m in memory)
        children = descendants(self.stack.server.pid)

        section.notes += [
            _ratio_note("a/b", "datamill CLI MB/s ÷ minio MB/s", cli, minio, TARGETS["a/b"]),
            _ratio_note("a'/b", "datamill Python API MB/s ÷ minio MB/s", api, minio, None),
            f"CLI start-up and exit: `datamill --help` takes {statistics.median(self.cli_help):.2f} s (median of"
            f" {len(self.cli_help)}); CLI seconds − API seconds: {cli_startup:.2f} s (median of paired rounds)",
            f"server RSS: {self.idle_cold / MIB:,.0f} MiB idle before any upload, {self.idle_warm / MIB:,.0f} MiB"
            f" idle after the warm-up; peak {peak.peak_bytes / MIB:,.0f} MiB ({peak.label}, round {peak.round}),"
            f" so growth {growth / MIB:,.1f} MiB over the warm idle (target < {RSS_GROWTH_TARGET / MIB:,.0f} MiB:"
            f" {'met' if growth < RSS_GROWTH_TARGET else 'NOT met'}); the largest growth within one upload over"
            f" the RSS just before it: {worst.growth_bytes / MIB:,.0f} MiB ({worst.label}, round {worst.round})",
            f"peaks are the larger of VmRSS sampled every {SAMPLE_SECONDS * 1000:.0f} ms and "
            + ("VmHWM reset before each upload" if hwm else "nothing else: the kernel refused to reset VmHWM"),
            f"parts: datamill {_sizes(self.part_sizes)}, {PARTS_IN_FLIGHT} at once; minio {minio_part / MIB:,.0f} MiB ×"
            f" {minio_parts} parts, {MINIO_PARALLEL_UPLOADS} uploaded at once (its defaults)",
            f"CPU s: client is the CLI process, or this process for the API and minio; others is the rest of the"
            f" machine's busy time (PostgreSQL, Redis, anything else running); all share {os.cpu_count()} CPUs",
        ]
        if children:
            section.notes.append(f"datamill-server has child processes {children}: their RSS is not counted")
        others = [c.others / s for t, _ in self.sends for c, s in zip(t.cpu, t.seconds, strict=True)]
        if max(others) > BUSY_OTHERS:
            section.notes.append(
                f"the machine was busy: other processes kept up to {max(others):.0%} of a CPU busy during a"
                " transfer (median "
                f"{statistics.median(others):.0%}); the figures are noisier than on a quiet machine"
            )
        section.data = {
            "transfers": {t.key: t.to_json() for t, _ in self.sends},
            "ratios": {"a/b": round(paired_ratio(cli, minio), 4), "a'/b": round(paired_ratio(api, minio), 4)},
            "ratios_by_round": {
                "a/b": [round(b / c, 4) for c, b in zip(cli.seconds, minio.seconds, strict=True)],
                "a'/b": [round(b / a, 4) for a, b in zip(api.seconds, minio.seconds, strict=True)],
            },
            "targets": {**TARGETS, "rss_growth_bytes_below": RSS_GROWTH_TARGET},
            "cli_minus_api_seconds": round(cli_startup, 4),
            "cli_help_seconds": [round(x, 4) for x in self.cli_help],
            "server_rss": {
                "idle_cold_bytes": self.idle_cold,
                "idle_after_warmup_bytes": self.idle_warm,
                "peak_bytes": peak.peak_bytes,
                "growth_bytes": growth,
                "max_growth_within_one_upload_bytes": worst.growth_bytes,
                "hwm_reset": hwm,
                "sample_seconds": SAMPLE_SECONDS,
                "per_upload": [m.to_json() for m in memory],
            },
            "datamill_part_bytes": sorted(self.part_sizes),
            "minio_part_bytes": minio_part,
            "minio_parts": minio_parts,
            "minio_parallel_uploads": MINIO_PARALLEL_UPLOADS,
        }


def _ratio_note(name: str, meaning: str, subject: Transfer, baseline: Transfer, target: float | None) -> str:
    rounds = ", ".join(f"{b / s:.2f}" for s, b in zip(subject.seconds, baseline.seconds, strict=True))
    ratio = paired_ratio(subject, baseline)
    verdict = "" if target is None else f"; target ≥ {target:g}: {'met' if ratio >= target else 'NOT met'}"
    return f"{name} = {ratio:.2f} ({meaning}, median of {len(subject.seconds)} paired rounds: {rounds}{verdict})"


def _sizes(sizes: set[int]) -> str:
    return " and ".join(f"{s / MIB:,.0f} MiB" for s in sorted(sizes)) or "?"


def _environment(stack: _Stack) -> dict[str, Any]:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    weed = subprocess.run([str(weed_binary()), "version"], capture_output=True, text=True, timeout=30, check=False)
    return {
        "postgres": {"server_version": str(row[0]) if row else "?"},
        "seaweedfs": weed.stdout.splitlines()[0].strip().removeprefix("version ") if weed.stdout else "?",
        "minio": importlib.metadata.version("minio"),
        "upload_bench_cli": str(CLI),
    }


# --- the report ---------------------------------------------------------------------------------------------


def render_table(section: Section) -> Table:
    transfers = section.data["transfers"]
    table = Table(title=f"datamill benchmarks: {section.title}", title_justify="left")
    table.add_column("measurement")
    table.add_column("MiB", justify="right")
    table.add_column("median s", justify="right")
    table.add_column("spread", justify="right")
    table.add_column("MB/s", justify="right")
    table.add_column("MB/s by round", justify="right")
    table.add_column("÷ b", justify="right")
    table.add_column("CPU s: client/server/S3/others", justify="right")
    for line in transfers.values():
        table.add_row(
            line["label"],
            f"{line['size_bytes'] / MIB:,.0f}",
            f"{line['median_seconds']:.2f}",
            f"±{line['spread'] / 2:.0%}" if len(line["seconds"]) > 1 else "n=1",
            f"{line['median_mb_per_second']:,.0f}",
            ", ".join(f"{x:,.0f}" for x in line["mb_per_second"]),
            f"{line['ratio_to_baseline']:.2f}",
            " / ".join(f"{x:.1f}" for x in line["median_cpu_seconds"].values()),
        )
    return table


def render_memory(section: Section) -> Table:
    rss = section.data["server_rss"]
    table = Table(title="datamill-server RSS during each datamill upload (MiB)", title_justify="left")
    for name in ("round", "upload", "idle before", "peak", "growth", "after"):
        table.add_column(name, justify="left" if name == "upload" else "right")
    for m in rss["per_upload"]:
        table.add_row(
            str(m["round"]),
            m["label"],
            f"{m['idle_bytes'] / MIB:,.1f}",
            f"{m['peak_bytes'] / MIB:,.1f}",
            f"{m['growth_bytes'] / MIB:,.1f}",
            f"{m['after_bytes'] / MIB:,.1f}",
        )
    return table


def print_report(section: Section, machine: Mapping[str, Any]) -> None:
    out = Console(highlight=False, width=max(Console().width, 140))
    env = section.environment
    out.print(
        f"{machine['cpu_count']} CPUs ({machine['cpu_model']}), Python {machine['python']},"
        f" SeaweedFS {env.get('seaweedfs', '?')}, minio {env.get('minio', '?')},"
        f" load average {machine['load_average_start']} at start"
    )
    out.print(render_table(section))
    out.print(render_memory(section))
    for note in section.notes:
        out.print(f"[bold]{section.name}[/]: {note}")
