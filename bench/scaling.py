"""The scaling benchmark: Generate jobs on one, two and four worker processes, in the same rounds.

The real stack (`server.dev.dev_stack` with no worker: embedded PostgreSQL and
Redis, datamill-server) stays up; each round starts one `datamill-worker
--workers P` for each P in WORKER_PROCESSES (in a rotating order), waits until
its P processes have started, warms them up with a few one-row jobs, measures,
and stops it. Two measurements per P, each timed from the first Generate call
until every job is SUCCEEDED:

- bulk: BULK_JOBS jobs of rows/4 rows each (the standard 8 columns of the
  Generate benchmark), all submitted at once: rows/s.
- small jobs: SMALL_JOBS one-row jobs (fewer with --quick) submitted at once,
  so a line's rows are its jobs and its rows/s is jobs/s.

Over each timed measurement it also reads the CPU seconds of every worker
process, of PostgreSQL (all its processes), the server and Redis, and of the
whole machine (/proc/stat), so the notes can say where the curve's ceiling is.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import Meters, Options, Result, Section, console, paired_ratio, run_rounds
from bench.generate import STANDARD_SCHEMA, _peak_rss, _postgres_facts, _Stack, _worker_processes
from server.dev import ServiceProcess, worker_process

NAME = "scaling"
WORKER_PROCESSES = (1, 2, 4)
#: Jobs of the bulk measurement, each of rows/4 rows: more jobs than the most worker processes, so that each
#: process can get work even when one of them claims several (a process runs up to 4 at once, --max-async-tasks).
BULK_JOBS = 8
SMALL_JOBS = 200
QUICK_SMALL_JOBS = 50
#: Rounds: every round restarts each worker pool, so fewer than the other benchmarks' default 5.
MAX_ROUNDS = 3
#: Threads submitting the Generate calls, so that submission is not one RPC after another.
SUBMITTERS = 16
WARMUP_JOBS_PER_PROCESS = 4
STARTUP_TIMEOUT = 120.0


@dataclass(slots=True)
class _Point:
    """One worker-process count: its two table lines and the CPU use of each of its rounds."""

    processes: int
    bulk: Result
    small: Result
    bulk_cpu: list[dict[str, Any]] = field(default_factory=list)
    small_cpu: list[dict[str, Any]] = field(default_factory=list)
    small_submit_seconds: list[float] = field(default_factory=list)


class _ScalingStack(_Stack):
    """The Generate benchmark's stack, with jobs submitted in parallel and watched on one stream.

    `_Stack.run_jobs` submits and waits for one job after another: with hundreds of jobs that costs the client
    seconds a round, a cost that does not shrink with more worker processes and would flatten the curve.
    """

    def run_at_once(self, rows: int, count: int, meters: Meters, workers: list[int]) -> _Run:
        """Submit `count` jobs of `rows` rows at once and watch them until all are SUCCEEDED; then check their rows."""
        names = [f"bench_{uuid.uuid4().hex[:12]}" for _ in range(count)]
        schema = {**self.schema, "rows": rows}
        self._checkpoint()
        with ThreadPoolExecutor(max_workers=min(SUBMITTERS, count)) as pool:
            before = meters.read(workers)
            started = time.perf_counter()
            jobs = list(pool.map(lambda name: self.client.generate(name, schema=schema), names))
            submitted = time.perf_counter() - started
            finals = {event.job.id: event.job for event in self.client.watch([job.id for job in jobs])}
            elapsed = time.perf_counter() - started
            cpu = meters.since(before, workers, elapsed)
        for name, job in zip(names, jobs, strict=True):
            self.check_succeeded(finals.get(job.id) or self.client.get_job(job.id), name, rows)
        return _Run(elapsed, submitted, cpu)


@dataclass(frozen=True, slots=True)
class _Run:
    seconds: float  # from the first Generate call until every job was SUCCEEDED
    submit_seconds: float  # from the first Generate call until every one had returned
    cpu: dict[str, Any]  # CPU seconds over `seconds`, from `Meters.since`


def run(options: Options) -> Section:
    job_rows = max(1, options.rows // 4)
    small_jobs = QUICK_SMALL_JOBS if options.quick else SMALL_JOBS
    rounds = min(options.repeats, MAX_ROUNDS)
    section = Section(
        NAME,
        f"Worker processes {', '.join(map(str, WORKER_PROCESSES))}: {BULK_JOBS} jobs of {job_rows:,} rows at once,"
        f" and {small_jobs:,} one-row jobs at once",
    )
    points = [
        _Point(
            processes,
            Result(f"bulk: {BULK_JOBS} jobs at once, {_plural(processes, 'worker process')}", BULK_JOBS * job_rows),
            Result(f"small: {small_jobs} one-row jobs at once, {_plural(processes, 'worker process')}", small_jobs),
        )
        for processes in WORKER_PROCESSES
    ]

    with tempfile.TemporaryDirectory(prefix="datamill-bench-") as tmp:
        console.log("starting the embedded stack (PostgreSQL, Redis, server; no worker yet)")
        with _ScalingStack.running(Path(tmp), workers=0) as (stack, env):
            section.environment["postgres"] = _postgres_facts(stack.admin)
            meters = Meters(stack.admin)
            logs = Path(tmp) / "logs"

            def measure(point: _Point) -> Callable[[int], float]:
                def one_round(index: int) -> float:
                    pool = worker_process(
                        env, logs / f"worker-{point.processes}p-{index}.log", processes=point.processes
                    ).start()
                    try:
                        workers = _start(pool, point.processes)
                        stack.run_at_once(1, WARMUP_JOBS_PER_PROCESS * point.processes, meters, workers)
                        bulk = stack.run_at_once(job_rows, BULK_JOBS, meters, workers)
                        point.bulk_cpu.append(bulk.cpu)
                        rss = _peak_rss(workers)
                        point.bulk.peak_rss_bytes = max(rss, point.bulk.peak_rss_bytes or 0)
                        small = stack.run_at_once(1, small_jobs, meters, workers)
                        point.small_cpu.append(small.cpu)
                        point.small.seconds.append(small.seconds)
                        point.small_submit_seconds.append(small.submit_seconds)
                    finally:
                        pool.stop()
                    return bulk.seconds

                return one_round

            run_rounds([(point.bulk, measure(point)) for point in points], rounds)

    _fill(section, points, rounds=rounds, job_rows=job_rows, small_jobs=small_jobs)
    return section


def _fill(section: Section, points: list[_Point], *, rounds: int, job_rows: int, small_jobs: int) -> None:
    """Ratios, notes and data from the measured points."""
    base = points[0]
    for point in points:
        point.bulk.ratio = paired_ratio(base.bulk, point.bulk)
        point.small.ratio = paired_ratio(base.small, point.small)
        if point is not base:
            point.bulk.note = f"{paired_ratio(point.bulk, base.bulk):.2f}× the rows/s of {base.processes}"
            point.small.note = f"{paired_ratio(point.small, base.small):.2f}× the jobs/s of {base.processes}"
    section.results = [point.bulk for point in points] + [point.small for point in points]

    cpus, usable = os.cpu_count(), len(os.sched_getaffinity(0))
    section.notes += [
        f"{rounds} paired rounds (each round restarts every worker pool, in a rotating order; median shown); the"
        f" ratio column is {_plural(base.processes, 'worker process')}'s rows/s ÷ this line's, of the same kind"
        " (bulk or small), so below 1 means faster; the speed-up over 1 process is in each line's brackets",
        f"small-job lines: each job makes 1 row, so rows/s is jobs/s; Generate calls from {SUBMITTERS} client"
        " threads, then one WatchJob stream for all the jobs",
        f"this machine has {cpus} CPUs ({usable} usable) for everything measured: the worker processes, PostgreSQL,"
        " the server and Redis",
        "bulk peak RSS: the largest of the worker processes' peaks since they started (warm-up and bulk jobs)",
    ]
    for point in points:
        section.notes.append(_cpu_note(point, "bulk", point.bulk, point.bulk_cpu))
    section.notes.append(_ceiling_note(points, "bulk", usable))
    for point in points:
        submit, total = statistics.median(point.small_submit_seconds), point.small.median_seconds
        section.notes.append(
            _cpu_note(point, "small", point.small, point.small_cpu)
            + f"; submitting the {small_jobs} Generate calls took {submit:.2f} s of the {total:.2f} (medians)"
        )
    section.notes.append(_ceiling_note(points, "small", usable))
    section.data = {
        "schema": STANDARD_SCHEMA,
        "worker_processes": list(WORKER_PROCESSES),
        "bulk_jobs": BULK_JOBS,
        "bulk_job_rows": job_rows,
        "small_jobs": small_jobs,
        "submitter_threads": SUBMITTERS,
        "warmup_jobs_per_process": WARMUP_JOBS_PER_PROCESS,
        "cpu_count": cpus,
        "cpus_usable": usable,
        "points": {
            str(point.processes): {
                "bulk_rows_per_second": round(point.bulk.rows_per_second, 1),
                "bulk_speedup": round(paired_ratio(point.bulk, base.bulk), 4),
                "small_jobs_per_second": round(point.small.rows_per_second, 2),
                "small_speedup": round(paired_ratio(point.small, base.small), 4),
                "small_submit_seconds": [round(s, 4) for s in point.small_submit_seconds],
                "bulk_cpu_per_round": point.bulk_cpu,
                "small_cpu_per_round": point.small_cpu,
            }
            for point in points
        },
    }


def _cpu_note(point: _Point, kind: str, result: Result, cpu: list[dict[str, Any]]) -> str:
    """Mean CPU seconds per round of each party, and the CPUs they kept busy (CPU seconds ÷ wall seconds)."""
    wall = sum(round_["seconds"] for round_ in cpu)
    workers = [round(statistics.mean(column), 2) for column in zip(*(r["workers"] for r in cpu), strict=True)]

    def mean(key: str) -> float:
        return float(statistics.mean(r[key] for r in cpu))

    ours = sum(r["ours"] for r in cpu) / wall
    machine = sum(r["machine"] for r in cpu) / wall
    speed = f"{result.rows_per_second:,.0f} rows/s" if kind == "bulk" else f"{result.rows_per_second:,.1f} jobs/s"
    return (
        f"{kind}, {_plural(point.processes, 'worker process')}: {speed}; CPU s per round (mean): worker processes"
        f" {workers} (busiest first), PostgreSQL {mean('postgres'):.2f}, server {mean('server'):.2f}, Redis"
        f" {mean('redis'):.2f}, this client {mean('client'):.2f}; together they kept {ours:.2f} CPUs busy"
        f" (CPU s ÷ wall s), the whole machine {machine:.2f} (/proc/stat, other load included)"
    )


def _ceiling_note(points: list[_Point], kind: str, cpus: int) -> str:
    """The rate each point's CPU cost per round would allow if its processes had every CPU, beside the measured one."""
    costs, bounds, measured, machine = [], [], [], []
    for point in points:
        result, cpu = (point.bulk, point.bulk_cpu) if kind == "bulk" else (point.small, point.small_cpu)
        cost = statistics.mean(r["ours"] for r in cpu)
        costs.append(f"{cost:.2f}")
        bounds.append(f"{result.rows / (cost / cpus):,.0f}")
        measured.append(f"{result.rows_per_second:,.0f}")
        machine.append(f"{sum(r['machine'] for r in cpu) / sum(r['seconds'] for r in cpu):.2f}")
    unit = "rows/s" if kind == "bulk" else "jobs/s"
    return (
        f"{kind} ceiling, {', '.join(str(p.processes) for p in points)} worker processes: the measured processes"
        f" spent {', '.join(costs)} CPU s a round (mean), which on {cpus} CPUs allows at most {', '.join(bounds)}"
        f" {unit}; measured {', '.join(measured)} {unit}, with the whole machine {', '.join(machine)} CPUs busy"
    )


def _plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 'es' if noun.endswith('s') else 's'}"


def _start(pool: ServiceProcess, processes: int) -> list[int]:
    """Wait until each of the pool's worker processes has logged worker_started; return their pids."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if not pool.alive():
            raise RuntimeError(f"{pool.name} exited early:\n{pool.log_tail()}")
        if pool.log_path.exists() and pool.log_path.read_text(errors="replace").count("worker_started") >= processes:
            workers = _worker_processes(pool.pid)
            if len(workers) != processes:
                raise RuntimeError(f"{pool.name} runs {len(workers)} worker processes, not {processes}")
            return workers
        time.sleep(0.1)
    raise TimeoutError(f"{pool.name} did not start {processes} worker processes within {STARTUP_TIMEOUT:.0f}s")
