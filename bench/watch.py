"""The WatchJob fan-out benchmark: from a worker's commit to the event at every watcher, at 1,000 streams.

The stack is `server.dev.dev_stack` (embedded PostgreSQL and Redis, one datamill-server) with no worker:
this process is the worker. It creates JOBS Generate jobs through the RPC, claims each with
`JobStore.claim`, and then, once every watcher is subscribed, commits progress with `JobStore.checkpoint`,
one transaction per update, each job every INTERVAL_SECONDS, the jobs staggered over the interval so the
load is steady. The last update of each job ends it (CANCELLED, as when a worker honours a cancel), which
ends its subscriptions. Each commit is one job_events row and one NOTIFY (the migrations' triggers), which
the server's EventHub fans out to that job's watchers.

STREAMS WatchJob streams, one subscription each (after the claim's event, so nothing is replayed), are
spread evenly over the jobs and over CLIENT_PROCESSES processes of their own (grpc.aio on uvloop, a few
channels each), so that one client's GIL does not cap what the server shows. `time.monotonic()` is
CLOCK_MONOTONIC, one clock for every process of the machine: the commit is stamped right after COMMIT
returns here, each event right after `read()` returns it in a client, and a latency is their difference.

Reported: commit → each watcher (one sample per watcher and event), commit → the last of an event's
watchers (the issue's "every watcher"), and as the baseline one stream on one job. Events a watcher never
received count as errors. Around the update phase the server's CPU and RSS (VmHWM reset before), the
client processes' CPU (a client near a full core means the client, not the server, bounds the latency),
and PostgreSQL's CPU.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import psycopg

from bench.common import (
    MIB,
    OPEN_LIMITS,
    Latency,
    Options,
    Section,
    console,
    cpu_seconds,
    load_average,
    percentile,
    process_cpu_seconds,
    reset_peak_rss,
    server_pid,
    status_bytes,
    tree_cpu_seconds,
)
from client._requests import CHANNEL_OPTIONS, generate_request
from datamill.v1 import job_service_pb2, job_service_pb2_grpc
from server.core.models import JobState
from server.core.store import JobStore, cancelled_error, drop_pending_dataset, open_pool
from server.dev import dev_stack
from server.devstack import free_port

NAME = "watch"
#: The issue's load: STREAMS watchers spread over JOBS jobs (--quick: the QUICK_ ones).
STREAMS, JOBS = 1000, 50
QUICK_STREAMS, QUICK_JOBS = 200, 10
#: Progress updates per job before its terminal event, one every INTERVAL_SECONDS per job. At 50 jobs that
#: is 100 events/s, 2,000 deliveries/s: well within one core of the server on a 2-CPU machine, so the figures
#: are latency, not a growing backlog (the note on server CPU per delivery tells how far the ceiling is).
UPDATES, QUICK_UPDATES = 30, 16
INTERVAL_SECONDS = 0.5
#: The baseline: one stream on one job, updated more often so that its p99 rests on a few hundred samples.
BASELINE_UPDATES, QUICK_BASELINE_UPDATES = 200, 60
BASELINE_INTERVAL_SECONDS = 0.05
CLIENT_PROCESSES, QUICK_CLIENT_PROCESSES = 4, 2
#: Channels (HTTP/2 connections) per client process.
CHANNELS_PER_PROCESS = 4
P99_TARGET_MS = 100.0
#: Far above the benchmark's length: the sweeper must not take a job back while its watchers subscribe.
LEASE_SECONDS = 600.0
SUBSCRIBE_TIMEOUT_SECONDS = 60.0
#: How long a client keeps reading after the last scheduled update before it gives up on the rest.
FOLLOW_GRACE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class _Load:
    label: str
    jobs: int
    streams: int
    processes: int
    updates: int
    interval: float

    @property
    def events(self) -> int:
        """Events committed per job: its updates and the terminal one."""
        return self.updates + 1

    @property
    def seconds(self) -> float:
        return self.updates * self.interval


# --- matching arrivals with commits (pure) -----------------------------------------------------------


@dataclass(slots=True)
class StreamResult:
    """What one WatchJob stream of a client saw: (sequence, monotonic seconds) per event, and how it ended."""

    job_id: str
    arrivals: list[tuple[int, float]] = field(default_factory=list)
    #: The WatchEndReason name, an RPC status code name, "EOF" (closed without `ended`) or "TIMEOUT".
    end: str = ""
    subscribed: bool = False


@dataclass(frozen=True, slots=True)
class Matched:
    #: commit → arrival for every (watcher, event) that arrived, in ms.
    samples_ms: list[float]
    #: The commit (monotonic seconds) of each sample's event, in the same order.
    committed: list[float]
    #: Per event that reached all of its job's watchers: commit → the last of them, in ms.
    last_ms: list[float]
    expected: int
    missed: int
    duplicates: int
    unexpected: int


def match_arrivals(commits: Mapping[tuple[str, int], float], streams: Sequence[StreamResult]) -> Matched:
    """Pair each stream's arrivals with the commits of its job, keyed by (job id, event sequence).

    Every commit of a job is expected once on each of the job's streams; an arrival of an event that
    was not committed in the measured phase is `unexpected`, a second one of the same event `duplicates`.
    """
    sequences: dict[str, list[int]] = defaultdict(list)
    for job_id, seq in commits:
        sequences[job_id].append(seq)
    watchers = Counter(stream.job_id for stream in streams)
    samples: list[float] = []
    committed_at: list[float] = []
    latest: dict[tuple[str, int], float] = {}
    reached: Counter[tuple[str, int]] = Counter()
    missed = duplicates = unexpected = 0
    for stream in streams:
        seen: set[int] = set()
        for seq, arrived in stream.arrivals:
            key = (stream.job_id, seq)
            committed = commits.get(key)
            if committed is None:
                unexpected += 1
            elif seq in seen:
                duplicates += 1
            else:
                seen.add(seq)
                samples.append((arrived - committed) * 1000)
                committed_at.append(committed)
                latest[key] = max(latest.get(key, arrived), arrived)
                reached[key] += 1
        missed += len(sequences.get(stream.job_id, ())) - len(seen)
    last = [(latest[key] - commits[key]) * 1000 for key, count in reached.items() if count == watchers[key[0]]]
    expected = sum(len(sequences.get(stream.job_id, ())) for stream in streams)
    return Matched(samples, committed_at, last, expected, missed, duplicates, unexpected)


def drift(matched: Matched, start: float, seconds: float) -> tuple[float, float]:
    """Median latency (ms) of the events committed in the first and in the last quarter of the phase.

    A server that keeps up shows about the same in both; one that falls behind, a growing backlog.
    """
    quarter = seconds / 4
    early = [ms for ms, at in zip(matched.samples_ms, matched.committed, strict=True) if at - start < quarter]
    late = [ms for ms, at in zip(matched.samples_ms, matched.committed, strict=True) if at - start >= 3 * quarter]
    return statistics.median(early or [math.nan]), statistics.median(late or [math.nan])


def split_round_robin(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """`items` dealt into `parts` lists like cards: their sizes differ by at most one."""
    return [list(items[index::parts]) for index in range(parts)]


# --- the benchmark -------------------------------------------------------------------------------------


def run(options: Options) -> Section:
    quick = options.quick
    fan_out = _Load(
        "commit → each watcher",
        jobs=QUICK_JOBS if quick else JOBS,
        streams=QUICK_STREAMS if quick else STREAMS,
        processes=QUICK_CLIENT_PROCESSES if quick else CLIENT_PROCESSES,
        updates=QUICK_UPDATES if quick else UPDATES,
        interval=INTERVAL_SECONDS,
    )
    baseline_load = _Load(
        "1 stream on 1 job (baseline)",
        jobs=1,
        streams=1,
        processes=1,
        updates=QUICK_BASELINE_UPDATES if quick else BASELINE_UPDATES,
        interval=BASELINE_INTERVAL_SECONDS,
    )
    section = Section(
        NAME, f"WatchJob fan-out: {fan_out.streams:,} streams over {fan_out.jobs} jobs with progress updates"
    )
    load_start = load_average()
    with (
        tempfile.TemporaryDirectory(prefix="datamill-bench-watch-") as tmp,
        dev_stack(Path(tmp), port=free_port(), workers=0, extra_env=OPEN_LIMITS) as (target, env),
    ):
        server = server_pid()
        postgres = _postmaster(Path(tmp))
        with psycopg.connect(env["DATAMILL_DATABASE_URL"]) as conn:
            version = conn.execute("SHOW server_version").fetchone()
        section.environment["postgres"] = {"server_version": str(version[0]) if version else "?"}
        import uvloop  # noqa: PLC0415  # a dependency of the server on Linux

        baseline = uvloop.run(_measure(baseline_load, target, env["DATAMILL_DATABASE_URL"], server, postgres))
        main = uvloop.run(_measure(fan_out, target, env["DATAMILL_DATABASE_URL"], server, postgres))

    base_line = _latency(baseline_load.label, baseline, baseline.matched.samples_ms)
    each = _latency(fan_out.label, main, main.matched.samples_ms)
    every = _latency("commit → last of its watchers", main, main.matched.last_ms)
    each.baseline = every.baseline = base_line
    section.latencies = [base_line, each, every]
    section.notes = _notes(fan_out, main, each, every)
    section.data = {
        "load_average_start": load_start,
        "limits": OPEN_LIMITS,
        "channels_per_process": CHANNELS_PER_PROCESS,
        "p99_target_ms": P99_TARGET_MS,
        "runs": {"baseline": baseline.to_json(), "fan_out": main.to_json()},
    }
    return section


@dataclass(slots=True)
class _Outcome:
    load: _Load
    matched: Matched
    #: From the first scheduled update to the last arrival.
    seconds: float
    subscribe_seconds: float
    ends: dict[str, int]
    #: Commit time minus scheduled time, per commit: whether this process kept its own pace.
    lateness_ms: list[float]
    #: Median latency (ms) of the events committed in the phase's first and last quarter.
    drift_ms: tuple[float, float]
    server: dict[str, Any]
    postgres_cpu_seconds: float | None
    clients: list[dict[str, Any]]

    def to_json(self) -> dict[str, Any]:
        matched = self.matched
        return {
            "load": asdict(self.load),
            "events_committed": self.load.jobs * self.load.events,
            "deliveries_expected": matched.expected,
            "deliveries": len(matched.samples_ms),
            "missed": matched.missed,
            "duplicates": matched.duplicates,
            "unexpected": matched.unexpected,
            "events_at_every_watcher": len(matched.last_ms),
            "seconds": round(self.seconds, 3),
            "subscribe_seconds": round(self.subscribe_seconds, 3),
            "stream_ends": self.ends,
            "median_ms_first_last_quarter": [round(ms, 3) for ms in self.drift_ms],
            "commit_lateness_ms": {
                "p50": round(percentile(self.lateness_ms, 0.5), 3),
                "p99": round(percentile(self.lateness_ms, 0.99), 3),
                "max": round(max(self.lateness_ms), 3),
            },
            "server": self.server,
            "postgres_cpu_seconds": None if self.postgres_cpu_seconds is None else round(self.postgres_cpu_seconds, 3),
            "clients": self.clients,
        }


def _latency(label: str, outcome: _Outcome, samples: list[float]) -> Latency:
    if not samples:
        raise RuntimeError(f"{label}: no event reached a watcher ({outcome.ends})")
    load = outcome.load
    note = f"{load.jobs} job{'s' if load.jobs > 1 else ''} × {load.streams // load.jobs} watchers"
    return Latency(label, load.streams, samples, outcome.seconds, errors=outcome.matched.missed, note=note)


def _notes(load: _Load, outcome: _Outcome, each: Latency, every: Latency) -> list[str]:
    matched, server = outcome.matched, outcome.server
    p99 = every.p(0.99)
    rate = load.jobs / load.interval
    client_cpu = sum(client["cpu_seconds"] for client in outcome.clients)
    busiest = max(client["cpu_seconds"] / client["follow_seconds"] for client in outcome.clients)
    notes = [
        f"commit → every watcher p99 {p99:.1f} ms, p50 {every.p(0.5):.1f} ms (target p99 < {P99_TARGET_MS:.0f} ms:"
        f" {'met' if p99 < P99_TARGET_MS else 'NOT met'}); commit → each watcher p99 {each.p(0.99):.1f} ms,"
        f" p50 {each.p(0.5):.1f} ms; median of the events committed in the first quarter of the updates"
        f" {outcome.drift_ms[0]:.1f} ms, in the last {outcome.drift_ms[1]:.1f} ms"
        + (" (a growing backlog)" if outcome.drift_ms[1] > 2 * outcome.drift_ms[0] + 5 else " (no growing backlog)"),
        f"load: {load.jobs} jobs × {load.updates} progress updates + 1 terminal event, one every"
        f" {load.interval * 1000:.0f} ms per job, staggered: {rate:,.0f} events/s committed, each to"
        f" {load.streams // load.jobs} watchers ({rate * load.streams / load.jobs:,.0f} deliveries/s); this process"
        f" is the worker, its commits {percentile(outcome.lateness_ms, 0.99):.1f} ms late at p99 against their"
        " schedule",
        f"missed {matched.missed:,} of {matched.expected:,} expected deliveries (the errors column), duplicates"
        f" {matched.duplicates:,}, unexpected {matched.unexpected:,}; {len(every.samples_ms):,} of"
        f" {load.jobs * load.events:,} events reached every watcher; stream ends: {outcome.ends}",
        f"subscribing {load.streams:,} streams took {outcome.subscribe_seconds:.2f} s (every one answered"
        f" `subscribed` before the first update), the server {server['subscribe_cpu_seconds']:.2f} CPU-s of it",
        f"server CPU: {server['cpu_seconds']:.2f} CPU-s over {server['wall_seconds']:.1f} s of updates"
        f" ({server['cpu_seconds'] / server['wall_seconds']:.0%} of one core,"
        f" {server['cpu_seconds'] / max(len(matched.samples_ms), 1) * 1e6:,.0f} µs per delivery); RSS"
        f" {server['rss_idle_bytes'] / MIB:,.0f} MiB idle, {server['rss_before_bytes'] / MIB:,.0f} MiB with the"
        f" streams open, peak {server['peak_rss_bytes'] / MIB:,.0f} MiB"
        f"{'' if server['peak_reset'] else ' (since start: not resettable here)'}, after"
        f" {server['rss_after_bytes'] / MIB:,.0f} MiB",
        f"client processes ({load.processes} × {load.streams // load.processes} streams, up to"
        f" {CHANNELS_PER_PROCESS} channels each): {client_cpu:.2f} CPU-s in all while following, the busiest at"
        f" {busiest:.0%} of one core"
        + (" (the client, not the server, may bound the latency)" if busiest > 0.8 else " (not the bottleneck)"),
    ]
    if outcome.postgres_cpu_seconds is not None:
        notes.append(
            f"PostgreSQL CPU (every backend): {outcome.postgres_cpu_seconds:.2f} CPU-s over the updates,"
            f" on the same {os.cpu_count()} CPUs"
        )
    return notes


async def _measure(load: _Load, target: str, database_url: str, server: int, postgres: int | None) -> _Outcome:
    console.log(f"{load.label}: {load.jobs} jobs, {load.streams} streams in {load.processes} client processes")
    pool = await open_pool(database_url, min_size=2, max_size=8, name="bench-watch")
    store = JobStore(pool)
    try:
        jobs = [await _claim(store, job_id) for job_id in await _create_jobs(target, load)]
        streams = [
            (str(jobs[index % load.jobs].id), jobs[index % load.jobs].event_seq) for index in range(load.streams)
        ]
        server_cpu, rss_idle = cpu_seconds(server), status_bytes(server, "VmRSS")
        follow = load.seconds + load.interval + FOLLOW_GRACE_SECONDS
        with _Clients(target, streams, load.processes, follow) as clients:
            subscribe_seconds = await clients.ready()
            console.log(f"{load.streams} streams subscribed in {subscribe_seconds:.2f} s; updating")
            subscribe_cpu = cpu_seconds(server) - server_cpu
            peak_reset = reset_peak_rss(server)
            server_cpu, rss_before = cpu_seconds(server), status_bytes(server, "VmRSS")
            pg_before = None if postgres is None else tree_cpu_seconds(postgres)
            commits: dict[tuple[str, int], float] = {}
            lateness: list[float] = []
            first = time.monotonic() + 0.05
            await asyncio.gather(
                *(
                    _drive(store, job, first + load.interval * index / load.jobs, load, commits, lateness)
                    for index, job in enumerate(jobs)
                )
            )
            reports = await clients.reports()
            wall = time.monotonic() - first
            server_facts = {
                "cpu_seconds": round(cpu_seconds(server) - server_cpu, 3),
                "wall_seconds": round(wall, 3),
                "subscribe_cpu_seconds": round(subscribe_cpu, 3),
                "rss_idle_bytes": rss_idle,
                "rss_before_bytes": rss_before,
                "peak_rss_bytes": status_bytes(server, "VmHWM"),
                "peak_reset": peak_reset,
                "rss_after_bytes": status_bytes(server, "VmRSS"),
            }
            pg_after = None if postgres is None else tree_cpu_seconds(postgres)
    finally:
        await pool.close()
    results = [stream for report in reports for stream in report.streams]
    matched = match_arrivals(commits, results)
    last_arrival = max((arrived for stream in results for _, arrived in stream.arrivals), default=first)
    return _Outcome(
        load=load,
        matched=matched,
        seconds=max(last_arrival - first, load.seconds),
        subscribe_seconds=subscribe_seconds,
        ends=dict(Counter(stream.end for stream in results)),
        lateness_ms=[seconds * 1000 for seconds in lateness],
        drift_ms=drift(matched, first, load.seconds),
        server=server_facts,
        postgres_cpu_seconds=None if pg_before is None or pg_after is None else pg_after - pg_before,
        clients=[report.to_json() for report in reports],
    )


# --- the worker's side: jobs, claims, updates --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Claimed:
    id: uuid.UUID
    lease_token: uuid.UUID
    dataset_id: uuid.UUID | None
    #: The claim's STARTED event: watchers subscribe after it, so the first event they get is a checkpoint's.
    event_seq: int


async def _create_jobs(target: str, load: _Load) -> list[uuid.UUID]:
    """Generate jobs through the RPC, as users make them; they stay QUEUED (no worker) until claimed here."""
    schema = {"rows": load.updates, "seed": 1, "fields": [{"name": "id", "type": "uuid4"}]}
    prefix = f"watch_{uuid.uuid4().hex[:8]}"
    async with grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        responses = await asyncio.gather(
            *(
                stub.Generate(generate_request(f"{prefix}_{index}", schema=schema, request_id=None))
                for index in range(load.jobs)
            )
        )
    return [uuid.UUID(response.job.id) for response in responses]


async def _claim(store: JobStore, job_id: uuid.UUID) -> _Claimed:
    lease_token = uuid.uuid4()
    job = await store.claim(job_id, lease_token, LEASE_SECONDS)
    if job is None:
        raise RuntimeError(f"job {job_id} could not be claimed")
    return _Claimed(job.id, lease_token, job.dataset_id, job.event_seq)


async def _drive(
    store: JobStore,
    job: _Claimed,
    first: float,
    load: _Load,
    commits: dict[tuple[str, int], float],
    lateness: list[float],
) -> None:
    """Commit the job's updates on schedule, then its end; stamp each right after COMMIT returns."""
    final = None
    for step in range(load.events):
        due = first + step * load.interval
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        async with store.pool.connection() as conn:
            async with conn.transaction():
                if step < load.updates:
                    await JobStore.checkpoint(conn, job.id, job.lease_token, done=step + 1, lease_seconds=LEASE_SECONDS)
                else:
                    # As a worker ends a job whose cancel it honours: its (empty) dataset goes with it.
                    final = await JobStore.finish(
                        conn, job.id, job.lease_token, state=JobState.CANCELLED, error=cancelled_error()
                    )
                    if job.dataset_id is not None:
                        await drop_pending_dataset(conn, job.dataset_id)
            committed = time.monotonic()
        commits[(str(job.id), job.event_seq + step + 1)] = committed
        lateness.append(committed - due)
    # Another writer's event would shift the sequences, and every key above would be wrong.
    if final is None or final.event_seq != job.event_seq + load.events:
        raise RuntimeError(
            f"job {job.id} ended at event {final and final.event_seq}, not {job.event_seq + load.events}"
        )


# --- processes ---------------------------------------------------------------------------------------


def _postmaster(data_dir: Path) -> int | None:
    """PostgreSQL's postmaster (pg_ctl detaches it from us), from its postmaster.pid; None if not found."""
    for path in data_dir.rglob("postmaster.pid"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(path.read_text().split()[0])
    return None


@dataclass(frozen=True, slots=True)
class _Share:
    target: str
    #: (job id, after_sequence): one stream each.
    subscriptions: list[tuple[str, int]]
    follow_seconds: float


@dataclass(slots=True)
class _ClientReport:
    streams: list[StreamResult]
    subscribe_seconds: float
    #: CPU this process used from all subscribed until every stream ended (or the follow time ran out).
    cpu_seconds: float
    follow_seconds: float
    max_rss_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "streams": len(self.streams),
            "subscribe_seconds": round(self.subscribe_seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "follow_seconds": round(self.follow_seconds, 3),
            "max_rss_bytes": self.max_rss_bytes,
        }


class _Clients:
    """Client processes holding the streams; each reports "ready" once all of its streams are subscribed."""

    def __init__(self, target: str, subscriptions: list[tuple[str, int]], processes: int, follow: float) -> None:
        context = multiprocessing.get_context("spawn")  # gRPC is not fork-safe
        self._pipes: list[Connection] = []
        self._processes: list[BaseProcess] = []
        self._follow = follow
        for share in split_round_robin(subscriptions, min(processes, len(subscriptions))):
            parent, child = context.Pipe()
            process = context.Process(target=_client_main, args=(_Share(target, share, follow), child), daemon=True)
            self._processes.append(process)
            self._pipes.append(parent)
            process.start()
            child.close()

    def __enter__(self) -> _Clients:
        return self

    def __exit__(self, *_: object) -> None:
        for process in self._processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)

    async def ready(self) -> float:
        """Seconds until the slowest process had all of its streams subscribed."""
        answers = [await self._receive(pipe, "ready", SUBSCRIBE_TIMEOUT_SECONDS + 30) for pipe in self._pipes]
        failed = sum(count for _, count in answers)
        if failed:
            raise RuntimeError(f"{failed} WatchJob streams failed to subscribe")
        return float(max(seconds for seconds, _ in answers))

    async def reports(self) -> list[_ClientReport]:
        return [await self._receive(pipe, "done", self._follow + 30) for pipe in self._pipes]

    @staticmethod
    async def _receive(pipe: Connection, kind: str, within: float) -> Any:
        def receive() -> Any:
            if not pipe.poll(within):
                raise TimeoutError(f"a client process sent no {kind!r} within {within:.0f} s")
            return pipe.recv()

        try:
            answer, payload = await asyncio.to_thread(receive)
        except EOFError:
            raise RuntimeError(f"a client process exited before {kind!r}") from None
        if answer != kind:
            raise RuntimeError(f"a client process failed: {payload}")
        return payload


def _client_main(share: _Share, pipe: Connection) -> None:
    import uvloop  # noqa: PLC0415

    try:
        report = uvloop.run(_client(share, pipe))
    except Exception as exc:
        pipe.send(("failed", repr(exc)))
        raise
    pipe.send(("done", report))


async def _client(share: _Share, pipe: Connection) -> _ClientReport:
    started = time.monotonic()
    channels = [
        grpc.aio.insecure_channel(share.target, options=[*CHANNEL_OPTIONS, ("grpc.channel_id", index)])
        for index in range(min(CHANNELS_PER_PROCESS, len(share.subscriptions)))
    ]
    stubs = [job_service_pb2_grpc.JobServiceStub(channel) for channel in channels]
    results = [StreamResult(job_id) for job_id, _ in share.subscriptions]
    pending = len(results)
    all_subscribed = asyncio.Event()

    def settled() -> None:  # subscribed, or failed before it: either way no longer awaited
        nonlocal pending
        pending -= 1
        if pending == 0:
            all_subscribed.set()

    async def watch(stub: job_service_pb2_grpc.JobServiceAsyncStub, result: StreamResult, after: int) -> None:
        call = stub.WatchJob()
        subscribe = job_service_pb2.WatchSubscribe(job_id=result.job_id, after_sequence=after)
        try:
            await call.write(job_service_pb2.WatchJobRequest(subscribe=subscribe))
            await call.done_writing()  # the server ends the stream once the subscription has ended
            first = await call.read()
            if not isinstance(first, job_service_pb2.WatchJobResponse):
                result.end = "EOF"
                return
            if not first.HasField("subscribed"):
                result.end = f"NOT_SUBSCRIBED:{first.WhichOneof('message')}"
                return
            result.subscribed = True
            settled()
            while isinstance(response := await call.read(), job_service_pb2.WatchJobResponse):
                arrived = time.monotonic()
                kind = response.WhichOneof("message")
                if kind == "event":
                    result.arrivals.append((response.event.sequence, arrived))
                elif kind == "ended":
                    result.end = job_service_pb2.WatchEndReason.Name(response.ended.reason)
            result.end = result.end or "EOF"  # closed by the server without `ended`
        except grpc.aio.AioRpcError as exc:
            result.end = exc.code().name
        except asyncio.InvalidStateError:  # a write to a call that had already ended
            result.end = result.end or "ENDED_BEFORE_WRITE"
        finally:
            if not result.subscribed:
                settled()
            call.cancel()

    tasks = [
        asyncio.create_task(watch(stubs[index % len(stubs)], result, after))
        for index, (result, (_, after)) in enumerate(zip(results, share.subscriptions, strict=True))
    ]
    await asyncio.wait_for(all_subscribed.wait(), SUBSCRIBE_TIMEOUT_SECONDS)
    subscribe_seconds = time.monotonic() - started
    cpu_before = process_cpu_seconds()
    pipe.send(("ready", (subscribe_seconds, sum(not result.subscribed for result in results))))
    followed = time.monotonic()
    _, unfinished = await asyncio.wait(tasks, timeout=share.follow_seconds)
    for task in unfinished:
        task.cancel()
    await asyncio.gather(*unfinished, return_exceptions=True)
    report = _ClientReport(
        streams=results,
        subscribe_seconds=subscribe_seconds,
        cpu_seconds=process_cpu_seconds() - cpu_before,
        follow_seconds=time.monotonic() - followed,
        max_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    )
    for result in results:
        result.end = result.end or "TIMEOUT"
    for channel in channels:
        await channel.close()
    return report
