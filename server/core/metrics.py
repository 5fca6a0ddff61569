"""Prometheus metrics of the server and the workers (prometheus-client), served when DATAMILL_METRICS_LISTEN is set.

The server serves the default registry. `datamill-worker` sets PROMETHEUS_MULTIPROC_DIR before its processes import
this module, so every worker process writes its samples to files there and the parent serves their sum
(`serve_worker_metrics`). Recording a sample is a dictionary lookup and an add: with metrics off the samples are
still counted, in memory, and nobody reads them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from server.core.models import ProgressUnit

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from server.core.models import JobRow

log = structlog.get_logger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds: from a cached GetJob (~1 ms) to a long export (~1 h).
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_DURATION = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600)

# --- server ---
GRPC_REQUESTS = Counter("datamill_grpc_requests", "RPCs handled, by method and status code", ["method", "code"])
GRPC_SECONDS = Histogram("datamill_grpc_seconds", "RPC latency, by method", ["method"], buckets=_LATENCY)
OPEN_STREAMS = Gauge(
    "datamill_grpc_open_streams", "Streams open now (Upload, WatchJob)", ["method"], multiprocess_mode="livesum"
)
JOBS_CREATED = Counter("datamill_jobs_created", "Jobs created, by kind", ["kind"])
JOBS_LIVE = Gauge("datamill_jobs", "Jobs queued or running now, by state", ["state"], multiprocess_mode="livesum")
UPLOAD_BYTES = Counter("datamill_upload_bytes", "Bytes of uploads durably stored")
POOL_CONNECTIONS = Gauge(
    "datamill_db_pool_connections", "Database pool connections, by state", ["state"], multiprocess_mode="livesum"
)
POOL_WAITING = Gauge(
    "datamill_db_pool_waiting", "Requests waiting for a pooled connection", multiprocess_mode="livesum"
)

# --- workers ---
JOBS_FINISHED = Counter("datamill_jobs_finished", "Attempts that ended, by kind and outcome", ["kind", "outcome"])
QUEUE_WAIT = Histogram(
    "datamill_job_queue_wait_seconds", "From creation to the first claim, by kind", ["kind"], buckets=_DURATION
)
RUN_SECONDS = Histogram(
    "datamill_job_run_seconds", "Duration of an attempt, by kind and outcome", ["kind", "outcome"], buckets=_DURATION
)
ATTEMPTS = Counter("datamill_job_attempts", "Attempts started, by kind", ["kind"])
ROWS = Counter("datamill_rows", "Rows written by succeeded jobs, by kind", ["kind"])
BYTES = Counter("datamill_bytes", "Bytes read or written by succeeded jobs, by kind", ["kind"])


def job_claimed(job: JobRow) -> None:
    kind = job.kind.value
    ATTEMPTS.labels(kind).inc()
    if job.attempt == 1 and job.started_at is not None:
        QUEUE_WAIT.labels(kind).observe(max(0.0, (job.started_at - job.created_at).total_seconds()))


def job_ended(job: JobRow, outcome: str, seconds: float, final: JobRow | None = None) -> None:
    """An attempt ended: SUCCEEDED, FAILED, CANCELLED, REQUEUED, RELEASED or LEASE_LOST."""
    kind = job.kind.value
    JOBS_FINISHED.labels(kind, outcome).inc()
    RUN_SECONDS.labels(kind, outcome).observe(seconds)
    if final is not None:
        (BYTES if final.progress_unit is ProgressUnit.BYTES else ROWS).labels(kind).inc(final.progress_done)


async def refresh_server_gauges(pool: AsyncConnectionPool, interval: float) -> None:
    """Every `interval` seconds: the live jobs by state and the pool's use. Runs until cancelled."""
    while True:
        with contextlib.suppress(Exception):  # a database blip leaves the last values
            stats = pool.get_stats()
            POOL_CONNECTIONS.labels("open").set(stats.get("pool_size", 0))
            POOL_CONNECTIONS.labels("idle").set(stats.get("pool_available", 0))
            POOL_WAITING.set(stats.get("requests_waiting", 0))
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT state, count(*) AS n FROM jobs WHERE state IN ('QUEUED', 'RUNNING') GROUP BY state"
                )
                rows: list[Any] = await cur.fetchall()
                counts = {row["state"]: row["n"] for row in rows}
            for state in ("QUEUED", "RUNNING"):
                JOBS_LIVE.labels(state).set(counts.get(state, 0))
        await asyncio.sleep(interval)


def parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104 - the operator chose to listen on all interfaces


def serve(listen: str, registry: Any = None) -> None:
    """Serve /metrics on `listen` (host:port) from a daemon thread."""
    host, port = parse_listen(listen)
    kwargs = {"registry": registry} if registry is not None else {}
    start_http_server(port, addr=host, **kwargs)
    log.info("metrics_listening", listen=listen)


def serve_worker_metrics(listen: str) -> None:
    """In `datamill-worker`'s parent: serve the sum of its processes' samples (PROMETHEUS_MULTIPROC_DIR)."""
    from prometheus_client import multiprocess  # noqa: PLC0415  # only in multiprocess mode

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=os.environ[MULTIPROC_ENV])  # type: ignore[no-untyped-call]
    serve(listen, registry)
