"""Composition root of `datamill-server`: build pools and clients, register the
services, run until SIGTERM, then drain.

Shutdown order: health goes NOT_SERVING (load balancers stop sending), then
`server.stop(grace)` lets in-flight RPCs finish, then background tasks stop and
pools close.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
import psycopg
import structlog
from grpc_health.v1 import health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from datamill.v1 import dataset_service_pb2, dataset_service_pb2_grpc, job_service_pb2, job_service_pb2_grpc
from server.api.auth import AuthInterceptor
from server.api.dataset_servicer import DatasetServicer
from server.api.health import HealthReporter
from server.api.interceptors import LoggingInterceptor, TracingInterceptor
from server.api.job_servicer import JobServicer
from server.api.readiness import ReadinessGate
from server.core import metrics, tracing
from server.core.apikeys import ApiKeyVerifier
from server.core.auth import TokenVerifier
from server.core.errors import Unavailable
from server.core.events import EventHub
from server.core.exports import ExportDomain, ExportStore
from server.core.jobs import JobDomain
from server.core.logging import configure_logging
from server.core.migrate import apply_migrations
from server.core.objects import open_object_store
from server.core.ratelimit import Limit, RateLimiter
from server.core.settings import AuthMode, Settings, load_settings
from server.core.store import JobStore
from server.core.sweeper import Sweeper
from server.core.uploads import UploadDomain, UploadStore
from worker.broker import TaskiqDispatcher, make_broker

log = structlog.get_logger(__name__)

MAX_MESSAGE_BYTES = 4 * 1024 * 1024 + 64 * 1024  # 1 MiB chunks plus headroom, and room for large schemas


async def _migrate_when_reachable(url: str, ready: asyncio.Event) -> None:
    """Apply migrations once PostgreSQL answers (compose and Kubernetes start things in any order)."""
    while True:
        try:
            applied = await apply_migrations(url)
        except psycopg.OperationalError as exc:
            log.warning("database_unreachable_retrying", error=str(exc).strip().splitlines()[0])
            await asyncio.sleep(1.0)
        else:
            log.info("migrations_checked", applied=applied)
            ready.set()
            return


async def serve(settings: Settings, *, stop: asyncio.Event | None = None, process_index: int = 0) -> None:
    """Listen at once with health NOT_SERVING; serve once migrated and PostgreSQL, Redis answer.

    With DATAMILL_SERVER_PROCESSES > 1 this is one of the processes `supervise` starts: each serves gRPC on the
    shared port, process 0 alone runs the sweeper and the dashboard, and process i serves metrics on the metrics
    port + i.
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    migrated = asyncio.Event()
    pool = AsyncConnectionPool(
        settings.database_url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        name="datamill-server",
        timeout=5.0,  # a request waits this long for a connection, then gets UNAVAILABLE
        open=False,
        check=AsyncConnectionPool.check_connection,
        kwargs={"row_factory": dict_row},
    )
    await pool.open(wait=False)  # connects in the background; requests wait up to the pool timeout
    dispatcher = TaskiqDispatcher(make_broker(settings.redis_url, settings.queue_name))
    store = JobStore(pool)
    hub = EventHub(settings.database_url)
    domain = JobDomain(store, dispatcher, settings)
    objects = open_object_store(settings)
    uploads = UploadDomain(UploadStore(store), domain, objects, settings)
    exports = ExportDomain(domain, ExportStore(store), objects)

    async def migrations_done() -> None:
        if not migrated.is_set():
            raise ConnectionError("migrations not applied yet")

    async def hub_connected() -> None:
        if not hub.connected.is_set():
            raise ConnectionError("event listener not connected")

    health = HealthReporter(
        [
            ("migrations", migrations_done),
            ("postgres", store.ping),
            ("redis", dispatcher.ping),
            ("listener", hub_connected),
            ("objects", objects.ensure_ready),
        ],
        interval=settings.health_interval_seconds,
    )
    limiter = rate_limiter(settings)
    server = grpc.aio.server(
        interceptors=[
            ReadinessGate(migrated),
            *([TracingInterceptor()] if tracing.configure(settings, "datamill-server") else []),
            LoggingInterceptor(),
            authenticator(settings, pool, limiter),
        ],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Off for one process, so that a port already taken fails loudly instead of being shared.
            ("grpc.so_reuseport", int(settings.server_processes > 1)),
        ],
    )
    job_service_pb2_grpc.add_JobServiceServicer_to_server(
        JobServicer(domain, uploads, exports, hub, keepalive_seconds=settings.watch_keepalive_seconds), server
    )
    dataset_service_pb2_grpc.add_DatasetServiceServicer_to_server(DatasetServicer(domain, exports), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.servicer, server)
    if settings.reflection:
        reflection.enable_server_reflection(
            (
                job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name,
                dataset_service_pb2.DESCRIPTOR.services_by_name["DatasetService"].full_name,
                "grpc.health.v1.Health",
                reflection.SERVICE_NAME,
            ),
            server,
        )
    credentials = server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(settings.listen)
    else:
        port = server.add_secure_port(settings.listen, credentials)
    if port == 0:
        raise Unavailable(f"cannot listen on {settings.listen}")
    await health.set_all(serving=False)
    if settings.metrics_listen:
        host, _, metrics_port = settings.metrics_listen.rpartition(":")
        metrics.serve(f"{host}:{int(metrics_port) + process_index}")
    await server.start()
    board = None
    if settings.dashboard_listen and process_index == 0:
        from server import dashboard  # noqa: PLC0415  # aiohttp is loaded only for the dashboard

        board = await dashboard.start(settings.dashboard_listen, loopback(settings.listen, port), pool)
    log.info("server_started", listen=settings.listen, port=port, process_index=process_index)

    sweeper = Sweeper(store, dispatcher, settings, uploads=uploads.store, exports=exports.store, objects=objects)
    tasks = [
        asyncio.create_task(_migrate_when_reachable(settings.database_url, migrated), name="migrate"),
        asyncio.create_task(hub.run(), name="event-hub"),
        *([asyncio.create_task(sweeper.run(migrated), name="sweeper")] if process_index == 0 else []),
        asyncio.create_task(health.run(), name="health"),
        asyncio.create_task(metrics.refresh_server_gauges(pool, settings.metrics_interval_seconds), name="metrics"),
    ]
    try:
        await stop.wait()
    finally:
        log.info("server_draining", grace_seconds=settings.shutdown_grace_seconds)
        await health.drain()
        # Let load balancers see NOT_SERVING and move away before new RPCs are refused.
        await asyncio.sleep(settings.shutdown_delay_seconds)
        if board is not None:
            await board[0].cleanup()
            await board[1].close()
        await server.stop(settings.shutdown_grace_seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await dispatcher.close()
        with contextlib.suppress(Exception):
            await limiter.close()
        await objects.close()
        await pool.close()
        log.info("server_stopped")


def rate_limiter(settings: Settings) -> RateLimiter:
    return RateLimiter(
        settings.redis_url,
        {
            "read": Limit(settings.rate_limit_read_per_second, settings.rate_limit_read_burst),
            "write": Limit(settings.rate_limit_write_per_second, settings.rate_limit_write_burst),
        },
        prefix=f"datamill:ratelimit:{settings.queue_name}",
    )


def authenticator(settings: Settings, pool: AsyncConnectionPool[Any], limiter: RateLimiter) -> AuthInterceptor:
    """Bearer JWTs (when a key is configured) and API keys; or nothing, loudly, when authentication is off."""
    if settings.auth is AuthMode.OFF:
        log.warning(
            "authentication_off",
            message="AUTHENTICATION IS OFF: every caller is an admin of tenant 'default'. For development only; "
            "set DATAMILL_AUTH=required to expose this server.",
        )
        return AuthInterceptor(enabled=False, limiter=limiter)
    return AuthInterceptor(tokens=TokenVerifier.from_settings(settings), keys=ApiKeyVerifier(pool), limiter=limiter)


DEFAULT_DASHBOARD = "127.0.0.1:8080"


def loopback(listen: str, port: int) -> str:
    """Where this process reaches its own gRPC server: `listen`'s host unless it is a wildcard."""
    host = listen.rpartition(":")[0]
    wildcard = host in ("0.0.0.0", "[::]", "::", "")  # noqa: S104 - recognised, not bound
    return f"{'127.0.0.1' if wildcard else host}:{port}"


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (mTLS with a client CA) from the configured PEM files, or None for plaintext; ValueError if unreadable."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None

    def read(path: Path, variable: str) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ValueError(f"{variable} cannot be read: {exc.strerror}") from None

    chain = read(settings.tls_cert_file, "DATAMILL_TLS_CERT_FILE")
    key = read(settings.tls_key_file, "DATAMILL_TLS_KEY_FILE")
    client_ca = None
    if settings.tls_client_ca_file is not None:
        client_ca = read(settings.tls_client_ca_file, "DATAMILL_TLS_CLIENT_CA_FILE")
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="datamill-server", description="The datamill gRPC server.")
    parser.add_argument(
        "--dashboard",
        nargs="?",
        const=DEFAULT_DASHBOARD,
        metavar="HOST:PORT",
        help=f"serve the web dashboard (default {DEFAULT_DASHBOARD}, or DATAMILL_DASHBOARD_LISTEN)",
    )
    parser.add_argument("--process-index", type=int, default=None, help=argparse.SUPPRESS)  # set by supervise
    args = parser.parse_args(argv)
    if args.dashboard and not os.environ.get("DATAMILL_DASHBOARD_LISTEN"):
        os.environ["DATAMILL_DASHBOARD_LISTEN"] = args.dashboard  # validated with the other settings
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format.value)
    try:  # fail fast, with the variable's name, before listening
        server_credentials(settings)
        if settings.auth is AuthMode.REQUIRED:
            TokenVerifier.from_settings(settings)
    except ValueError as exc:
        sys.stderr.write(f"datamill: invalid configuration\n  {exc}\n")
        raise SystemExit(2) from None
    if settings.server_processes > 1 and args.process_index is None:
        raise SystemExit(supervise(settings.server_processes, sys.argv[1:] if argv is None else argv))
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(settings, process_index=args.process_index or 0))
    else:
        uvloop.run(serve(settings, process_index=args.process_index or 0))


def supervise(count: int, argv: list[str]) -> int:
    """Run `count` server processes on the shared port; pass SIGTERM/SIGINT on; end when they have all ended.

    A process that ends by itself (a crash) stops the others, and the supervisor exits 1, so that the
    orchestrator restarts the whole set rather than serving on with fewer processes than configured.
    """
    command = [sys.executable, "-m", "server.app", *argv]
    children = [subprocess.Popen([*command, "--process-index", str(i)]) for i in range(count)]
    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, forward)
    log.info("server_supervising", processes=count, pids=[child.pid for child in children])
    failed = False
    while any(child.poll() is None for child in children):
        for child in children:
            if child.poll() is not None and not stopping:
                log.error("server_process_exited", pid=child.pid, returncode=child.returncode)
                failed = True
                forward(signal.SIGTERM, None)
        time.sleep(0.2)
    return 1 if failed or any(child.returncode for child in children) else 0


if __name__ == "__main__":
    main()
