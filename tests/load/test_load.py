"""Load: many concurrent clients submit, watch and cancel jobs against real server and worker processes.

Outside the normal suite (marker `load`, deselected by addopts); run it with `make load`.
DATAMILL_LOAD_CLIENTS clients (default 200) run for DATAMILL_LOAD_SECONDS (default 60)
against one datamill-server and one datamill-worker with two processes, after a warm-up of
50 jobs. Each client has a connection of its own and loops: Generate 1,000 to 5,000 rows
into a new dataset, watch the job to its end, cancel about one job in five (half just after
the submit, half as soon as they run), and now and then GetJob or ListJobs.

Asserted, and printed as a report: no client error, no watched event lost or duplicated
(compared with `job_events`), no job left QUEUED or RUNNING, no job FAILED, and the RSS of
the server and of every worker process no more than `RSS_TOLERANCE` above its value after
the warm-up.

Two choices make the figures mean something:
- Jobs are watched on a raw `WatchJob` stream, not with `AsyncClient.watch`: its
  WatchTracker drops any event whose sequence it has seen and reconnects on UNAVAILABLE,
  which would hide exactly the duplicates and breaks counted here.
- The client never retries (`RetryPolicy(max_attempts=1)`): no fault is injected, so an
  UNAVAILABLE is a failure to report, not one to ride out.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import AsyncClient, RetryPolicy
from client._requests import CHANNEL_OPTIONS
from datamill.v1 import job_pb2, job_service_pb2
from tests.e2e.conftest import Stack, make_stack, stop_stack
from tests.e2e.helpers import process_children, schema, status_bytes

CLIENTS = int(os.environ.get("DATAMILL_LOAD_CLIENTS", "200"))
SECONDS = float(os.environ.get("DATAMILL_LOAD_SECONDS", "60"))
WORKER_PROCESSES = 2
WARMUP_JOBS = 50
# About one job in five is cancelled: half of them just after the submit (most are still
# QUEUED then), half as soon as the watch shows them RUNNING, so that both cancel paths run.
CANCEL_RATE = 0.2
MIN_ROWS, MAX_ROWS = 1_000, 5_000
# Submit to terminal event of one job. At the end of the run every client's last job can
# queue behind all the others: CLIENTS jobs at a few tens of jobs/s is seconds, not minutes.
WATCH_TIMEOUT = 120.0
SETTLE_TIMEOUT = 60.0  # after the clients stop, for work still in flight to end
# Every client connects and submits within the first second, so the server first meets a
# burst of CLIENTS Generates and watch subscriptions at once; it takes a few seconds to
# absorb. Submit latency is also reported without that start.
RAMP_UP_SECONDS = min(10.0, SECONDS / 3)
MiB = 1024 * 1024
# A leak grows with the work done; what else can grow does not. After the warm-up the
# processes have imported everything and run every code path, but the run reaches a higher
# concurrency than the warm-up (CLIENTS connections and streams in the server, a full
# --max-async-tasks of jobs in every worker process), and glibc malloc and pymalloc keep most
# of what that peak touched after it is freed. That high-water mark depends on concurrency,
# not on the number of jobs: measured at 200 clients, about +10 MiB in the server and up to
# +35 MiB in the worker process that was still at its idle 134 MiB after the warm-up,
# reached within the first 5 s and flat after. 64 MiB covers it with room for allocator
# noise. A leak of 45 KiB or more per job exceeds it over the ~1,500 jobs of a full run on a
# 2-core machine; smaller ones show in the report's growth per job and in the RSS series
# sampled every RSS_SAMPLE_SECONDS, where a leak is a slope, not a step.
RSS_TOLERANCE = 64 * MiB
RSS_SAMPLE_SECONDS = 5.0
NO_RETRY = RetryPolicy(max_attempts=1)

pytestmark = [pytest.mark.load, pytest.mark.timeout(int(SECONDS) + 900)]


class WatchFailed(Exception):
    """A subscription that did not end with the job's terminal event."""


@dataclass
class JobRecord:
    job_id: str
    client: int
    rows: int
    submit_latency: float
    submitted_at: float  # time.time() when the Generate call started
    warmup: bool
    cancel: str = ""  # "", "queued" (just after the submit) or "running" (once STARTED was watched)
    running: asyncio.Event = field(default_factory=asyncio.Event)
    sequences: list[int] = field(default_factory=list)
    final_job: job_pb2.Job | None = None  # as of the last watched event
    end_to_end: float | None = None


@dataclass
class LoadRun:
    jobs: dict[str, JobRecord] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)
    foreign_events: int = 0  # events of another job on a stream that subscribed to one job
    load_started_at: float = 0.0  # time.time()
    get_jobs: int = 0
    list_jobs: int = 0
    loop_lag: list[float] = field(default_factory=list)
    connect_latency: list[float] = field(default_factory=list)
    health_latency: list[float] = field(default_factory=list)
    # (time.time(), ms) of every Health.Check slower than 250 ms and every loop lag over 100 ms:
    # a stall seen by both at once is the machine, one seen only by the server is the server.
    stalls: dict[str, list[tuple[float, float]]] = field(default_factory=lambda: {"server": [], "generator": []})
    rss_series: dict[str, list[int]] = field(default_factory=lambda: collections.defaultdict(list))

    def error(self, where: str, exc: BaseException, job_id: str = "") -> None:
        self.errors.append({"where": where, "job_id": job_id, "error": f"{type(exc).__name__}: {exc}"[:400]})


async def _connect(target: str, run: LoadRun) -> AsyncClient:
    """A client on a connection of its own, already established (its time is reported apart)."""
    # Each simulated client gets its own connection, as separate processes would have:
    # otherwise grpc shares one subchannel between every channel with the same arguments.
    options = [*CHANNEL_OPTIONS, ("grpc.use_local_subchannel_pool", 1)]
    channel = grpc.aio.insecure_channel(target, options=options)
    started = time.perf_counter()
    try:
        await asyncio.wait_for(channel.channel_ready(), 30)
    except TimeoutError as exc:
        run.error("connect", exc)  # the client goes on: its first call reports what is wrong
    run.connect_latency.append(time.perf_counter() - started)
    return AsyncClient(channel, retry=NO_RETRY, watch_retry=NO_RETRY)


async def _watch_to_end(client: AsyncClient, run: LoadRun, record: JobRecord) -> None:
    async with client.watch_stream() as stream:
        await stream.subscribe(record.job_id)
        async for message in stream:
            kind = message.WhichOneof("message")
            if kind == "event":
                if message.event.job_id != record.job_id:
                    run.foreign_events += 1
                    continue
                record.sequences.append(message.event.sequence)
                record.final_job = message.event.job
                if message.event.job.state == job_pb2.JOB_STATE_RUNNING:
                    record.running.set()
            elif kind == "ended":
                reason = message.ended.reason
                if reason != job_service_pb2.WATCH_END_REASON_TERMINAL:
                    name = job_service_pb2.WatchEndReason.Name(reason)
                    raise WatchFailed(f"subscription ended {name}: {message.ended.status.message}")
                return
    raise WatchFailed("the stream ended before the subscription")


async def _one_job(client: AsyncClient, run: LoadRun, index: int, n: int, rng: random.Random) -> bool:
    """Submit, maybe cancel, and watch one job; False if the submit itself failed."""
    rows = rng.randint(MIN_ROWS, MAX_ROWS)
    submitted_at = time.time()
    started = time.perf_counter()
    try:
        # Dataset names are unique: the client's index (negative in the warm-up) and job number.
        job = await client.generate(f"load_c{index}_j{n}".replace("-", "w"), schema=schema(rows))
    except Exception as exc:
        run.error("generate", exc)
        return False
    record = JobRecord(job.id, index, rows, time.perf_counter() - started, submitted_at, warmup=index < 0)
    run.jobs[job.id] = record
    # Subscribe first, then cancel: the cancel lands while the job is watched, QUEUED or RUNNING.
    watcher = asyncio.create_task(_watch_to_end(client, run, record), name=f"watch-{job.id}")
    if rng.random() < CANCEL_RATE:
        record.cancel = "queued" if rng.random() < 0.5 else "running"
        if record.cancel == "queued":
            await asyncio.sleep(rng.uniform(0.0, 0.2))
        else:
            await _until_running(record, watcher)
        try:
            await client.cancel_job(job.id)
        except Exception as exc:
            run.error("cancel_job", exc, job.id)
    try:
        await asyncio.wait_for(watcher, WATCH_TIMEOUT)
    except Exception as exc:
        run.error("watch", exc, job.id)
        return True
    record.end_to_end = time.perf_counter() - started
    roll = rng.random()
    try:
        if roll < 0.1:
            run.get_jobs += 1
            got = await client.get_job(job.id)
            last = record.final_job
            if last is None or got.state != last.state or got.progress.done != last.progress.done:
                seen = "nothing" if last is None else f"{job_pb2.JobState.Name(last.state)} {last.progress.done} rows"
                run.errors.append(
                    {
                        "where": "get_job",
                        "job_id": job.id,
                        "error": f"GetJob says {job_pb2.JobState.Name(got.state)} {got.progress.done} rows, "
                        f"the watch's last event {seen}",
                    }
                )
        elif roll < 0.15:
            run.list_jobs += 1
            await client.list_jobs(page_size=20)
    except Exception as exc:
        run.error("get_job" if roll < 0.1 else "list_jobs", exc, job.id)
    return True


async def _until_running(record: JobRecord, watcher: asyncio.Task[None]) -> None:
    running = asyncio.create_task(record.running.wait())
    try:
        await asyncio.wait({running, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        running.cancel()


async def _client_loop(target: str, run: LoadRun, index: int, deadline: float) -> None:
    rng = random.Random(index)
    await asyncio.sleep(rng.uniform(0.0, 1.0))  # ramp up over a second rather than in one burst
    async with await _connect(target, run) as client:
        n = 0
        while time.monotonic() < deadline:
            if not await _one_job(client, run, index, n, rng):
                await asyncio.sleep(0.1)  # a failing submit must not spin
            n += 1


async def _warm_up(target: str, run: LoadRun) -> None:
    async def one(i: int) -> None:
        async with await _connect(target, run) as client:
            await _one_job(client, run, -1 - i, 0, random.Random(-1 - i))

    await asyncio.gather(*(one(i) for i in range(WARMUP_JOBS)))


async def _sample_loop_lag(run: LoadRun, stop: asyncio.Event) -> None:
    """How late the load generator's own loop wakes up: high values would mean it is the bottleneck."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.05)
        run.loop_lag.append(time.perf_counter() - before - 0.05)
        if run.loop_lag[-1] > 0.1:
            run.stalls["generator"].append((time.time(), round(run.loop_lag[-1] * 1000)))


async def _probe_health(target: str, run: LoadRun, stop: asyncio.Event) -> None:
    """Health Check round trips: the server answers them on its event loop, so they show how busy it is."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            started = time.perf_counter()
            try:
                await stub.Check(health_pb2.HealthCheckRequest(), timeout=30)
            except grpc.RpcError as exc:
                run.error("health", exc)
            run.health_latency.append(time.perf_counter() - started)
            if run.health_latency[-1] > 0.25:
                run.stalls["server"].append((time.time(), round(run.health_latency[-1] * 1000)))
            await asyncio.sleep(0.1)


async def _sample_rss(run: LoadRun, procs: dict[str, int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for name, pid in procs.items():
            run.rss_series[name].append(_rss(pid))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_SAMPLE_SECONDS)


async def _load(target: str, run: LoadRun, procs: dict[str, int]) -> float:
    """Run CLIENTS clients until SECONDS have passed and each has seen its last job end; return the wall time."""
    stop = asyncio.Event()
    monitors = [
        asyncio.create_task(_sample_loop_lag(run, stop), name="loop-lag"),
        asyncio.create_task(_sample_rss(run, procs, stop), name="rss"),
        asyncio.create_task(_probe_health(target, run, stop), name="health"),
    ]
    started = time.monotonic()
    run.load_started_at = time.time()
    deadline = started + SECONDS
    outcomes = await asyncio.gather(
        *(_client_loop(target, run, index, deadline) for index in range(CLIENTS)), return_exceptions=True
    )
    elapsed = time.monotonic() - started
    stop.set()
    await asyncio.gather(*monitors)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            run.error("client", outcome)
    return elapsed


# --- processes ------------------------------------------------------------------------------------


def _processes(stack: Stack) -> dict[str, int]:
    """The server, each worker's taskiq parent and its forked worker processes, by name."""
    procs = {"server": stack.server.pid}
    for w, worker in enumerate(stack.workers):
        procs[f"worker{w}"] = worker.pid
        for c, pid in enumerate(sorted(process_children(worker.pid))):
            procs[f"worker{w}.{c}"] = pid
    return procs


def _rss(pid: int) -> int:
    try:
        return status_bytes(pid, "VmRSS")
    except FileNotFoundError:
        return -1  # the process is gone; reported, and fails the RSS check by its absence


def _stat(pid: int) -> list[int]:
    """/proc/PID/stat fields 4 to 17: ppid at index 0, then utime, stime, cutime, cstime at 10 to 13."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return [int(f) for f in fields[1:15]]


def _cpu_seconds(pid: int) -> float:
    stat = _stat(pid)
    return (stat[10] + stat[11]) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _tree_cpu_seconds(pid: int) -> float:
    """CPU of a process, of its children that ended (cutime, cstime) and of those still running."""
    stat = _stat(pid)
    own = sum(stat[10:14]) / os.sysconf("SC_CLK_TCK")
    return own + sum(_cpu_seconds(child) for child in process_children(pid) if Path(f"/proc/{child}").exists())


def _postmaster_pid(stack: Stack) -> int:
    with psycopg.connect(stack.database_url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        return _stat(int(row[0]))[0]  # the backend's parent


def _machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def _wait_for_settled(stack: Stack) -> tuple[int, float]:
    """Wait up to SETTLE_TIMEOUT for no job to be QUEUED or RUNNING; return (still open, seconds waited)."""
    started = time.monotonic()
    while True:
        ((open_jobs,),) = stack.sql("SELECT count(*) FROM jobs WHERE state IN ('QUEUED', 'RUNNING')")
        waited = time.monotonic() - started
        if open_jobs == 0 or waited > SETTLE_TIMEOUT:
            return int(str(open_jobs)), waited
        time.sleep(0.5)


# --- checks and report ----------------------------------------------------------------------------


def _percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {"p50": values[0] if values else 0.0, "p95": 0.0, "p99": 0.0, "max": max(values, default=0.0)}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": cuts[49], "p95": cuts[94], "p99": cuts[98], "max": max(values)}


def _ms(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v * 1000, 1) for k, v in values.items()}


def _compare_events(stack: Stack, run: LoadRun) -> dict[str, Any]:
    """Each job's watched sequences against its rows in job_events."""
    stored: dict[str, list[int]] = {
        str(job_id): list(seqs)  # type: ignore[call-overload]
        for job_id, seqs in stack.sql("SELECT job_id, array_agg(seq ORDER BY seq) FROM job_events GROUP BY job_id")
    }
    lost = duplicated = unexpected = out_of_order = stored_gaps = 0
    bad: list[dict[str, Any]] = []
    for job_id, record in run.jobs.items():
        in_db = stored.get(job_id, [])
        seen = collections.Counter(record.sequences)
        job_lost = sorted(set(in_db) - set(seen))
        job_dup = sorted(s for s, n in seen.items() if n > 1)
        job_unexpected = sorted(set(seen) - set(in_db))
        job_disorder = record.sequences != sorted(record.sequences)
        if in_db != list(range(1, len(in_db) + 1)):
            stored_gaps += 1
        lost += len(job_lost)
        duplicated += sum(n - 1 for n in seen.values() if n > 1)
        unexpected += len(job_unexpected)
        out_of_order += job_disorder
        if job_lost or job_dup or job_unexpected or job_disorder:
            bad.append({"job_id": job_id, "watched": record.sequences, "stored": in_db})
    return {
        "events_watched": sum(len(r.sequences) for r in run.jobs.values()),
        "events_stored": sum(len(v) for k, v in stored.items() if k in run.jobs),
        "lost": lost,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "out_of_order_jobs": out_of_order,
        "stored_sequence_gaps": stored_gaps,
        "bad_jobs": bad[:20],
    }


def _watched_state(record: JobRecord) -> str:
    """The state of the last watched event, named as in the jobs table."""
    state = record.final_job.state if record.final_job is not None else job_pb2.JOB_STATE_UNSPECIFIED
    return job_pb2.JobState.Name(state).removeprefix("JOB_STATE_")


def _job_outcomes(stack: Stack, run: LoadRun) -> dict[str, Any]:
    states: dict[str, str] = {}
    attempts_over_one = 0
    failed: list[dict[str, Any]] = []
    for job_id, state, attempt, error in stack.sql("SELECT id, state, attempt, error FROM jobs"):
        states[str(job_id)] = str(state)
        attempts_over_one += int(str(attempt)) > 1
        if state == "FAILED":
            failed.append({"job_id": str(job_id), "error": error})
    load_jobs = [r for r in run.jobs.values() if not r.warmup]
    by_state = collections.Counter(states.get(r.job_id, "MISSING") for r in load_jobs)
    watched_mismatch = [
        r.job_id for r in run.jobs.values() if r.end_to_end is not None and _watched_state(r) != states.get(r.job_id)
    ]
    rows = {
        str(job_id): int(str(count))
        for job_id, count in stack.sql("SELECT job_id, row_count FROM datasets WHERE ready")
    }
    wrong_rows = [
        r.job_id for r in run.jobs.values() if states.get(r.job_id) == "SUCCEEDED" and rows.get(r.job_id) != r.rows
    ]
    cancels = {phase: [r for r in load_jobs if r.cancel == phase] for phase in ("queued", "running")}
    return {
        "submitted": len(load_jobs),
        "succeeded": by_state["SUCCEEDED"],
        "cancelled": by_state["CANCELLED"],
        "failed": by_state["FAILED"],
        "other": {k: v for k, v in by_state.items() if k not in ("SUCCEEDED", "CANCELLED", "FAILED")},
        "cancel_requested": {phase: len(records) for phase, records in cancels.items()},
        "cancel_requested_but_succeeded": {
            phase: sum(states.get(r.job_id) == "SUCCEEDED" for r in records) for phase, records in cancels.items()
        },
        "jobs_in_db_unknown_to_clients": len(set(states) - set(run.jobs)),
        "jobs_with_more_than_one_attempt": attempts_over_one,
        "watched_final_state_differs_from_db": watched_mismatch[:20],
        "succeeded_with_wrong_row_count": wrong_rows[:20],
        "failed_jobs": failed[:20],
        "all_failed": sum(s == "FAILED" for s in states.values()),
        "event_types": dict(stack.sql("SELECT type, count(*) FROM job_events GROUP BY type ORDER BY type")),  # type: ignore[arg-type]
    }


def _log_findings(stack: Stack) -> dict[str, Any]:
    """Warnings and errors in the service logs, counted by event."""
    found: dict[str, collections.Counter[str]] = {}
    samples: list[str] = []
    for proc in (stack.server, *stack.workers):
        counter: collections.Counter[str] = collections.Counter()
        for line in proc.log_path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                counter["(not json)"] += 1
                if len(samples) < 10:
                    samples.append(f"{proc.name}: {line[:300]}")
                continue
            level = str(entry.get("level", "")).lower()
            if level in ("warning", "error", "critical", "exception"):
                counter[f"{level}:{entry.get('event')}"] += 1
                if len(samples) < 10:
                    samples.append(f"{proc.name}: {line[:600]}")
        found[proc.name] = counter
    return {"by_process": {name: dict(c) for name, c in found.items()}, "samples": samples}


def _iter_report_lines(report: dict[str, Any]) -> Iterator[str]:
    jobs, events, rss = report["jobs"], report["events"], report["rss"]
    yield f"clients {report['clients']}, load {report['seconds']} s (wall {report['wall_seconds']} s)"
    yield (
        f"jobs: submitted {jobs['submitted']}, succeeded {jobs['succeeded']}, cancelled {jobs['cancelled']},"
        f" failed {jobs['failed']} (cancel requested {jobs['cancel_requested']},"
        f" of which finished first {jobs['cancel_requested_but_succeeded']})"
    )
    yield (
        f"throughput: {report['throughput_jobs_per_s']} jobs/s;"
        f" GetJob {report['get_jobs']}, ListJobs {report['list_jobs']}"
    )
    yield f"submit latency ms: {report['submit_latency_ms']}"
    yield f"submit latency ms after the first {RAMP_UP_SECONDS:.1f} s: {report['submit_latency_ms_after_ramp_up']}"
    yield f"server Health.Check round trip ms, every 0.1 s: {report['server_health_check_ms']}"
    yield f"connect latency ms (once per client, before its first submit): {report['connect_latency_ms']}"
    yield f"submit to terminal ms: {report['end_to_end_ms']}"
    yield (
        f"events watched {events['events_watched']} (stored {events['events_stored']}): lost {events['lost']},"
        f" duplicated {events['duplicated']}, unexpected {events['unexpected']},"
        f" out of order {events['out_of_order_jobs']}, foreign {report['foreign_events']}"
    )
    yield (
        f"errors {len(report['errors'])}; not terminal {report['not_terminal']}"
        f" (settled in {report['settle_seconds']} s)"
    )
    yield f"{'process':<12}{'pid':>8}{'RSS before':>14}{'RSS after':>14}{'growth':>12}{'CPU s':>9}"
    for name, row in rss.items():
        yield (
            f"{name:<12}{row['pid']:>8}{row['before_mib']:>10.1f} MiB{row['after_mib']:>10.1f} MiB"
            f"{row['growth_mib']:>+8.1f} MiB{row['cpu_seconds']:>9.1f}"
        )
    yield f"CPU in cores: {report['cpu_cores']}"
    yield f"load generator's event loop lag ms: {report['generator_loop_lag_ms']}"


def test_concurrent_clients_submit_watch_and_cancel(pg_server: str, redis_url: str, tmp_path: Path) -> None:
    stack = make_stack(pg_server, redis_url, tmp_path, workers=0)
    stack.start_worker(processes=WORKER_PROCESSES)
    try:
        _run_and_check(stack)
    finally:
        stop_stack(stack, pg_server)
        print(f"service logs: {stack.logs}")


async def _measured_load(stack: Stack, run: LoadRun) -> dict[str, Any]:
    """Warm up, then run the load between two readings of every process; one event loop for both."""
    await _warm_up(stack.target, run)
    await asyncio.to_thread(_wait_for_settled, stack)
    await asyncio.sleep(2)  # let the warm-up's last streams and connections close
    procs = _processes(stack)
    postmaster = await asyncio.to_thread(_postmaster_pid, stack)
    rss_before = {name: _rss(pid) for name, pid in procs.items()}
    cpu_before = {name: _cpu_seconds(pid) for name, pid in procs.items()}
    postgres_before = _tree_cpu_seconds(postmaster)
    machine_before = _machine_cpu()
    generator_before = time.process_time()
    wall = await _load(stack.target, run, procs)
    generator_cpu = time.process_time() - generator_before
    machine_busy, machine_total = (a - b for a, b in zip(_machine_cpu(), machine_before, strict=True))
    cpu = {name: _cpu_seconds(pid) - cpu_before[name] for name, pid in procs.items() if Path(f"/proc/{pid}").exists()}
    # Where the machine's CPU went, in cores: on a small machine the figures above are only
    # meaningful if the load generator is not what saturates it.
    cores = os.cpu_count() or 1
    used = {
        "server": cpu.get("server", 0.0) / wall,
        "workers": sum(v for k, v in cpu.items() if k.startswith("worker")) / wall,
        "postgres": (_tree_cpu_seconds(postmaster) - postgres_before) / wall,
        "load_generator": generator_cpu / wall,
    }
    machine = cores * machine_busy / max(machine_total, 1)
    cpu_cores = {**used, "everything_else": machine - sum(used.values()), "whole_machine": machine, "of": cores}
    not_terminal, settle = await asyncio.to_thread(_wait_for_settled, stack)
    await asyncio.sleep(2)  # as before the load: closed streams and connections released
    return {
        "procs": procs,
        "procs_after": _processes(stack),
        "rss_before": rss_before,
        "rss_after": {name: _rss(pid) for name, pid in procs.items()},
        "cpu": cpu,
        "wall": wall,
        "not_terminal": not_terminal,
        "settle": settle,
        "cpu_cores": {k: round(v, 2) for k, v in cpu_cores.items()},
        "generator_loop_lag_ms": _ms(_percentiles(run.loop_lag)),
    }


def _run_and_check(stack: Stack) -> None:
    run = LoadRun()
    measured = asyncio.run(_measured_load(stack, run))
    procs, rss_before, rss_after = measured["procs"], measured["rss_before"], measured["rss_after"]
    wall, not_terminal = measured["wall"], measured["not_terminal"]
    assert len(procs) == 2 + WORKER_PROCESSES, procs
    load_jobs = [r for r in run.jobs.values() if not r.warmup]
    finished = [r for r in load_jobs if r.end_to_end is not None]
    events = _compare_events(stack, run)
    jobs = _job_outcomes(stack, run)
    report: dict[str, Any] = {
        "clients": CLIENTS,
        "seconds": SECONDS,
        "wall_seconds": round(wall, 1),
        "warmup_jobs": sum(r.warmup for r in run.jobs.values()),
        "jobs": jobs,
        "throughput_jobs_per_s": round(len(finished) / wall, 1),
        "get_jobs": run.get_jobs,
        "list_jobs": run.list_jobs,
        "submit_latency_ms": _ms(_percentiles([r.submit_latency for r in load_jobs])),
        "submit_latency_ms_after_ramp_up": _ms(
            _percentiles(
                [r.submit_latency for r in load_jobs if r.submitted_at >= run.load_started_at + RAMP_UP_SECONDS]
            )
        ),
        "slowest_submits": [
            {"job_id": r.job_id, "client": r.client, "at": r.submitted_at, "ms": round(r.submit_latency * 1000)}
            for r in sorted(load_jobs, key=lambda r: r.submit_latency)[-10:]
        ],
        "server_health_check_ms": _ms(_percentiles(run.health_latency)),
        "stalls": {k: [(round(at, 2), ms) for at, ms in v] for k, v in run.stalls.items()},
        "connect_latency_ms": _ms(_percentiles(run.connect_latency[WARMUP_JOBS:])),
        "end_to_end_ms": _ms(_percentiles([r.end_to_end for r in finished if r.end_to_end is not None])),
        "events": events,
        "foreign_events": run.foreign_events,
        "errors": run.errors,
        "error_kinds": dict(collections.Counter(f"{e['where']}: {e['error'][:80]}" for e in run.errors)),
        "not_terminal": not_terminal,
        "settle_seconds": round(measured["settle"], 1),
        "rss": {
            name: {
                "pid": pid,
                "before_mib": rss_before[name] / MiB,
                "after_mib": rss_after[name] / MiB,
                "growth_mib": (rss_after[name] - rss_before[name]) / MiB,
                "growth_per_job_kib": round((rss_after[name] - rss_before[name]) / 1024 / max(len(load_jobs), 1), 2),
                "series_mib": [round(v / MiB) for v in run.rss_series[name]],
                "cpu_seconds": measured["cpu"].get(name, -1.0),
            }
            for name, pid in procs.items()
        },
        "processes_after": measured["procs_after"],
        "cpu_cores": measured["cpu_cores"],
        "generator_loop_lag_ms": measured["generator_loop_lag_ms"],
        "logs": _log_findings(stack),
    }
    print("\n" + json.dumps(report, indent=2, default=str))
    print("\n".join(["", "=== load report ===", *_iter_report_lines(report)]))

    assert not run.errors, report["error_kinds"]
    assert events["lost"] == 0, events["bad_jobs"]
    assert events["duplicated"] == 0, events["bad_jobs"]
    assert events["unexpected"] == 0 and events["out_of_order_jobs"] == 0, events["bad_jobs"]
    assert run.foreign_events == 0
    assert not_terminal == 0
    assert jobs["all_failed"] == 0, jobs["failed_jobs"]
    assert not jobs["watched_final_state_differs_from_db"]
    assert not jobs["succeeded_with_wrong_row_count"]
    assert measured["procs_after"] == procs, "a server or worker process was replaced during the load"
    grown = {n: r["growth_mib"] for n, r in report["rss"].items() if rss_after[n] > rss_before[n] + RSS_TOLERANCE}
    assert not grown, f"RSS grew by more than {RSS_TOLERANCE // MiB} MiB: {grown}"
