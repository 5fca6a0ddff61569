"""The control-plane benchmark: Generate and GetJob latency and throughput at 1, 50 and 200 concurrent callers.

The stack is `server.dev.dev_stack` (embedded PostgreSQL and Redis, one datamill-server) with no worker: what
is measured is the RPC, not the job. Each Generate is a one-row job into a new dataset, so the server does all
of a real submission: authentication, the Redis rate-limit round trip, validation, the job's insert with its
quota admission under the tenant's lock, the event row and NOTIFY its trigger makes, and the taskiq message
on Redis. Rate limits and quotas are raised so that they admit everything, but they still run.

The baseline is the gRPC health service's unary Check, measured the same way right before: the transport,
the interceptors' bypass and the client's own cost, nothing of datamill's. The table gives each line's
p99 and calls/s divided by Check's at the same concurrency.

The callers run in CLIENT_PROCESSES processes of their own (grpc.aio on uvloop, a few channels each) so that
one client's GIL does not cap what the server shows; they share the machine's CPUs with the server,
PostgreSQL and Redis, which is what limits the throughput figures on a small machine (see the notes: the
server's CPU share per line). A call counts when it starts and ends inside the measurement window, after
a warm-up; every Generate the callers saw succeed is then counted in `jobs`, so a call that returned
without creating a job would show.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import psycopg
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import (
    OPEN_LIMITS,
    Latency,
    Meters,
    Options,
    Section,
    console,
    process_cpu_seconds,
    server_pid,
    status_bytes,
)
from client._requests import CHANNEL_OPTIONS, to_schema
from datamill.v1 import job_service_pb2, job_service_pb2_grpc
from server.dev import dev_stack
from server.devstack import free_port

NAME = "control"
CONCURRENCY = (1, 50, 200)
SECONDS, QUICK_SECONDS = 5.0, 1.5
WARMUP_SECONDS = 0.5
CLIENT_PROCESSES = 2
#: Channels (HTTP/2 connections) per client process, at most one per caller.
CHANNELS_PER_PROCESS = 4
#: Targets from the issue, at 200 callers on 2 CPUs.
GENERATE_P99_TARGET_MS = 25.0
GENERATE_RATE_TARGET = 500.0
SMALL_SCHEMA: dict[str, Any] = {
    "rows": 1,
    "seed": 7,
    "fields": [
        {"name": "id", "type": "uuid4"},
        {"name": "amount", "type": "float", "params": {"min": 0, "max": 100}},
    ],
}
METHODS = ("Check", "GetJob", "Generate")
#: The paced lines: PACED_CALLERS callers offering PACED_RATE calls/s in all, each on a fixed schedule.
PACED_CALLERS = 200
PACED_RATE = 500.0
#: Lines measured again with DATAMILL_SERVER_PROCESSES (not with --quick), against the one-process line.
SERVER_PROCESSES = 2
SERVER_PROCESSES_LINES = (("GetJob", 50), ("Generate", 50), ("Generate", 200))


@dataclass(frozen=True, slots=True)
class _Plan:
    target: str
    method: str
    callers: int
    seconds: float
    job_id: str
    #: Calls per second offered by all callers together; 0: closed loop (each caller calls again at once).
    rate: float = 0.0
    #: This process's first caller and the callers of all processes (to spread the paced schedules).
    first_caller: int = 0
    all_callers: int = 0


@dataclass(slots=True)
class _Outcome:
    samples_ms: list[float]
    errors: int
    codes: dict[str, int]
    cpu_seconds: float
    #: CPU seconds inside the measurement window by party: server, postgres, redis, machine (filled in by the parent).
    parties: dict[str, float] = field(default_factory=dict)

    @property
    def server_cpu_seconds(self) -> float:
        return self.parties.get("server", 0.0)


def run(options: Options) -> Section:
    section = Section(NAME, "control plane: unary RPC latency and throughput over a real server")
    seconds = QUICK_SECONDS if options.quick else SECONDS
    counts = {"generated": 0, "created": 0}
    with _stack(OPEN_LIMITS, counts) as (target, meters, job_id, server):
        for concurrency in CONCURRENCY:
            baseline: Latency | None = None
            for method in METHODS:
                plan = _Plan(target, method, concurrency, seconds, job_id)
                latency = _line(section, plan, meters, baseline, counts)
                baseline = baseline or latency
        baseline = None
        for method in METHODS:
            plan = _Plan(target, method, PACED_CALLERS, seconds, job_id, rate=PACED_RATE)
            latency = _line(section, plan, meters, baseline, counts, label=f"{method}, paced {PACED_RATE:,.0f}/s")
            baseline = baseline or latency
        section.data["server_peak_rss_bytes"] = status_bytes(server, "VmHWM")
    if not options.quick:  # the same lines with the server's CPU ceiling lifted: ratios to 1 process's
        one_process = {(x.label, x.concurrency): x for x in section.latencies}
        settings = {**OPEN_LIMITS, "DATAMILL_SERVER_PROCESSES": str(SERVER_PROCESSES)}
        with _stack(settings, counts) as (target, meters, job_id, _):
            for method, concurrency in SERVER_PROCESSES_LINES:
                plan = _Plan(target, method, concurrency, seconds, job_id)
                label = f"{method}, {SERVER_PROCESSES} server processes"
                _line(section, plan, meters, one_process[(method, concurrency)], counts, label=label)
    section.data.update(
        {"seconds_per_line": seconds, "warmup_seconds": WARMUP_SECONDS, "client_processes": CLIENT_PROCESSES}
    )
    section.data.update({"generate_ok_calls": counts["generated"], "jobs_created": counts["created"]})
    section.notes.extend(_notes(section, counts["generated"], counts["created"], seconds))
    return section


@contextlib.contextmanager
def _stack(settings: dict[str, str], counts: dict[str, int]) -> Iterator[tuple[str, Meters, str, int]]:
    """A stack with no worker; yields (target, meters, a job for GetJob, the server's pid); counts the jobs made."""
    with (
        tempfile.TemporaryDirectory(prefix="datamill-bench-control-") as tmp,
        dev_stack(Path(tmp), port=free_port(), workers=0, extra_env=settings) as (target, env),
        psycopg.connect(env["DATAMILL_DATABASE_URL"]) as admin,  # closed before the stack stops PostgreSQL
    ):
        job_id = _one_job(target)
        before = _count_jobs(admin)
        yield target, Meters(admin), job_id, server_pid()
        counts["created"] += _count_jobs(admin) - before


def _line(
    section: Section,
    plan: _Plan,
    meters: Meters,
    baseline: Latency | None,
    counts: dict[str, int],
    *,
    label: str | None = None,
) -> Latency:
    """Measure one line, add it to the section with its CPU note, codes and CPU figures; count Generate's OKs."""
    label = label or plan.method
    console.log(f"{label} at {plan.callers} callers for {plan.seconds:.1f} s")
    latency, outcome = _measure(plan, meters)
    latency.label, latency.baseline, latency.note = label, baseline, _cpu_note(latency, outcome)
    section.latencies.append(latency)
    key = f"{label}@{plan.callers}"
    section.data.setdefault("codes", {})[key] = outcome.codes
    section.data.setdefault("cpu_seconds", {})[key] = outcome.parties
    if plan.method == "Generate":
        counts["generated"] += outcome.codes.get("OK", 0)
    return latency


def _notes(section: Section, generated: int, created: int, seconds: float) -> list[str]:
    closed = {(x.label, x.concurrency): x for x in section.latencies if x.label in METHODS}
    paced = next(x for x in section.latencies if x.label.startswith("Generate, paced"))
    best = max((x for (label, _), x in closed.items() if label == "Generate"), key=lambda x: x.calls_per_second)
    p99 = paced.p(0.99)
    saturated = closed[("Generate", max(CONCURRENCY))]
    return [
        f"Generate p99 with {paced.concurrency} callers offering {PACED_RATE:,.0f}/s: {p99:.1f} ms "
        f"(target < {GENERATE_P99_TARGET_MS:.0f} ms: {_met(p99 < GENERATE_P99_TARGET_MS)}); "
        f"{paced.errors} errors",
        f"Generate submissions: {best.calls_per_second:,.0f}/s at best, at {best.concurrency} callers back to back "
        f"(target ≥ {GENERATE_RATE_TARGET:,.0f}/s: {_met(best.calls_per_second >= GENERATE_RATE_TARGET)})",
        "back to back, latency is callers ÷ throughput once the server is saturated: "
        f"{saturated.concurrency} callers at {saturated.calls_per_second:,.0f}/s wait {saturated.p(0.5):.0f} ms "
        "at p50; the paced lines show the latency of a load the server can carry, counted from each call's "
        "scheduled time",
        f"every Generate answered OK made a job: {created:,} jobs for {generated:,} OK answers (calls outside the"
        " measurement windows included)" + ("" if created >= generated else " — MISMATCH"),
        f"each line: {seconds:.1f} s measured after {WARMUP_SECONDS:.1f} s of warm-up, callers in "
        f"{CLIENT_PROCESSES} client processes on the same CPUs; ratios are to Check at the same concurrency and pace; "
        "rate limits raised and quotas off (0), so the limiter's Redis call and the quota's lock still run",
        f"server peak RSS {section.data['server_peak_rss_bytes'] / 2**20:,.0f} MiB",
        *(
            f"{x.label} at {x.concurrency} callers: {x.calls_per_second:,.0f} calls/s, "
            f"{x.calls_per_second / x.baseline.calls_per_second:.2f}× one process's, p99 {x.p(0.99):.0f} ms "
            f"against {x.baseline.p(0.99):.0f} (the ratio columns of these lines are to one process's line)"
            for x in section.latencies
            if "server processes" in x.label and x.baseline is not None
        ),
    ]


def _cpu_note(latency: Latency, outcome: _Outcome) -> str:
    """CPU milliseconds per call of the server, PostgreSQL, Redis and the clients, and how busy the machine was."""
    calls = max(1, len(latency.samples_ms))
    per_call = {key: outcome.parties[key] * 1000 / calls for key in ("server", "postgres", "redis")}
    clients = outcome.cpu_seconds * 1000 / calls
    busy = outcome.parties["machine"] / latency.seconds
    return (
        f"CPU ms/call: server {per_call['server']:.2f}, PostgreSQL {per_call['postgres']:.2f}, "
        f"Redis {per_call['redis']:.2f}, clients {clients:.2f}; {busy:.1f} CPUs busy"
    )


def _met(met: bool) -> str:
    return "met" if met else "not met"


def _one_job(target: str) -> str:
    """A job for GetJob to read (it stays QUEUED: there is no worker)."""
    with grpc.insecure_channel(target) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        response = stub.Generate(_generate_request(to_schema(SMALL_SCHEMA), "control_getjob"))
        return str(response.job.id)


def _count_jobs(admin: psycopg.Connection[Any]) -> int:
    row = admin.execute("SELECT count(*) FROM jobs WHERE kind = 'GENERATE'").fetchone()
    assert row is not None
    return int(row[0])


def _generate_request(schema: Any, name: str) -> job_service_pb2.GenerateRequest:
    return job_service_pb2.GenerateRequest(dataset_name=name, schema=schema, request_id=str(uuid.uuid4()))


# --- the load: client processes -----------------------------------------------------------------


def _measure(plan: _Plan, meters: Meters) -> tuple[Latency, _Outcome]:
    """Run plan.callers callers over CLIENT_PROCESSES processes for one window; also the server's CPU in it."""
    context = multiprocessing.get_context("spawn")
    processes = min(CLIENT_PROCESSES, plan.callers)
    shares = [plan.callers // processes + (1 if i < plan.callers % processes else 0) for i in range(processes)]
    pipes: list[Connection] = []
    children = []
    for index, callers in enumerate(shares):
        parent, child = context.Pipe()
        share = _Plan(
            plan.target, plan.method, callers, plan.seconds, plan.job_id, plan.rate, sum(shares[:index]), plan.callers
        )
        process = context.Process(target=_client_main, args=(share, index, child), daemon=True)
        process.start()
        child.close()
        pipes.append(parent)
        children.append(process)
    try:
        for pipe in pipes:
            if pipe.recv() != "ready":
                raise RuntimeError("a client process failed to connect")
        start = time.monotonic() + 0.1
        for pipe in pipes:
            pipe.send(start)
        time.sleep(max(0.0, start + WARMUP_SECONDS - time.monotonic()))
        before = meters.read([])
        time.sleep(max(0.0, start + WARMUP_SECONDS + plan.seconds - time.monotonic()))
        used = meters.since(before, [], plan.seconds)
        outcomes: list[_Outcome] = [pipe.recv() for pipe in pipes]
    finally:
        for process in children:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    codes: dict[str, int] = {}
    for outcome in outcomes:
        for code, count in outcome.codes.items():
            codes[code] = codes.get(code, 0) + count
    merged = _Outcome(
        samples_ms=[ms for outcome in outcomes for ms in outcome.samples_ms],
        errors=sum(outcome.errors for outcome in outcomes),
        codes=codes,
        cpu_seconds=sum(outcome.cpu_seconds for outcome in outcomes),
        parties={key: used[key] for key in ("server", "postgres", "redis", "machine")},
    )
    if not merged.samples_ms:
        raise RuntimeError(f"{plan.method} at {plan.callers} callers: no call completed ({codes})")
    latency = Latency(plan.method, plan.callers, merged.samples_ms, plan.seconds, errors=merged.errors)
    return latency, merged


def _client_main(plan: _Plan, index: int, pipe: Connection) -> None:
    import uvloop  # noqa: PLC0415  # a dependency of the server on Linux

    pipe.send(uvloop.run(_client(plan, index, pipe)))


async def _client(plan: _Plan, index: int, pipe: Connection) -> _Outcome:

    channels = [
        grpc.aio.insecure_channel(plan.target, options=[*CHANNEL_OPTIONS, ("grpc.channel_id", i)])
        for i in range(min(CHANNELS_PER_PROCESS, plan.callers))
    ]
    calls = [_call_maker(plan, channel, index, i) for i, channel in enumerate(channels)]
    for call in calls:  # connect every channel before the clock starts
        await call()
    pipe.send("ready")
    start: float = await asyncio.get_running_loop().run_in_executor(None, pipe.recv)
    measure_from = start + WARMUP_SECONDS
    measure_to = measure_from + plan.seconds
    samples: list[float] = []
    codes: dict[str, int] = {}
    errors = 0
    window: list[float] = []  # this process's CPU seconds at the window's start and end

    async def meter() -> None:
        for moment in (measure_from, measure_to):
            await asyncio.sleep(max(0.0, moment - time.monotonic()))
            window.append(process_cpu_seconds())

    # Paced: caller k starts its calls at start + (k / all callers + n) × interval, n = 0, 1, ..., and its latency
    # is counted from that scheduled time, so a slow server cannot hide its queueing by slowing the callers down.
    interval = plan.all_callers / plan.rate if plan.rate else 0.0

    async def caller(number: int, call: Callable[[], Awaitable[object]]) -> None:
        nonlocal errors
        scheduled = start + (plan.first_caller + number) / max(1, plan.all_callers) * interval
        await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
        while (began := time.monotonic()) < measure_to:
            if interval:
                await asyncio.sleep(max(0.0, scheduled - began))
                began, scheduled = scheduled, scheduled + interval
            code = "OK"
            try:
                await call()
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
            ended = time.monotonic()
            codes[code] = codes.get(code, 0) + 1
            if began >= measure_from and ended <= measure_to:
                if code == "OK":
                    samples.append((ended - began) * 1000)
                else:
                    errors += 1

    await asyncio.gather(meter(), *(caller(i, calls[i % len(calls)]) for i in range(plan.callers)))
    for channel in channels:
        await channel.close()
    return _Outcome(samples, errors, codes, window[1] - window[0])


def _call_maker(plan: _Plan, channel: grpc.aio.Channel, process: int, index: int) -> Callable[[], Awaitable[object]]:
    if plan.method == "Check":
        health = health_pb2_grpc.HealthStub(channel)
        check = health_pb2.HealthCheckRequest()
        return lambda: health.Check(check)
    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    if plan.method == "GetJob":
        get = job_service_pb2.GetJobRequest(job_id=plan.job_id)
        return lambda: jobs.GetJob(get)
    schema = to_schema(SMALL_SCHEMA)
    prefix = f"control_{uuid.uuid4().hex[:8]}_{process}_{index}_"
    counter = iter(range(1 << 62))

    def generate() -> Awaitable[object]:
        return jobs.Generate(_generate_request(schema, f"{prefix}{next(counter)}"))

    return generate
