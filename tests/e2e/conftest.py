"""Real processes: a `datamill-server` and `datamill-worker`s on a fresh database.

Each test gets its own database (migrated by the server itself at start), its
own Redis stream and its own port, on the session's PostgreSQL and Redis.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from server.dev import ServiceProcess, server_process, service_env, wait_for_serving, worker_process
from server.devstack import APP_ROLE, S3Endpoint, create_owned_database, free_port


@dataclass
class Stack:
    target: str
    database_url: str
    env: dict[str, str]
    logs: Path
    server: ServiceProcess
    workers: list[ServiceProcess] = field(default_factory=list)
    server_args: tuple[str, ...] = ()

    def start_worker(self, processes: int = 1) -> ServiceProcess:
        proc = worker_process(
            self.env,
            self.logs / f"worker{len(self.workers)}.log",
            processes=processes,
            name=f"worker{len(self.workers)}",
        ).start()
        self.workers.append(proc)
        return proc

    def restart_server(self) -> None:
        self.server.stop()
        self.server = server_process(self.env, self.logs / "server.log", self.server_args).start()
        wait_for_serving(self.target, process=self.server)

    def sql(self, query: str, *params: object) -> list[tuple[object, ...]]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def dump_logs(self) -> str:
        procs = [self.server, *self.workers]
        return "\n".join(f"--- {p.name} ---\n{p.log_tail(60)}" for p in procs)


def stack_database(admin_conninfo: str, dbname: str, *, create: bool = True) -> str:
    """The conninfo of a stack's database (created unless `create` is false).

    On the embedded server it is owned by the ordinary role APP_ROLE, so that row-level security binds. An outside
    server's roles and passwords are its own, so there the admin role owns it (and skips row-level security, which
    tests/integration/test_row_security.py covers).
    """
    if os.environ.get("DATAMILL_TEST_DATABASE_URL"):
        if create:
            with psycopg.connect(admin_conninfo, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{dbname}"')
        return make_conninfo(admin_conninfo, dbname=dbname)
    if create:
        return create_owned_database(admin_conninfo, dbname)
    return make_conninfo(admin_conninfo, dbname=dbname, user=APP_ROLE, password="")


def make_stack(
    admin_conninfo: str,
    redis_url: str,
    tmp: Path,
    *,
    settings: dict[str, str] | None = None,
    workers: int = 1,
    create_database: bool = True,
    wait: bool = True,
    server_args: tuple[str, ...] = (),
) -> Stack:
    dbname = f"e2e_{uuid.uuid4().hex[:12]}"
    database_url = stack_database(admin_conninfo, dbname, create=create_database)
    target = f"127.0.0.1:{free_port()}"
    env = service_env(
        database_url=database_url,
        redis_url=redis_url,
        listen=target,
        object_dir=tmp / "objects",
        extra={
            "DATAMILL_QUEUE_NAME": f"e2e-{dbname}",
            "DATAMILL_LOG_FORMAT": "json",
            "DATAMILL_SWEEP_INTERVAL_SECONDS": "0.5",
            "DATAMILL_HEALTH_INTERVAL_SECONDS": "0.5",
            "DATAMILL_WATCH_KEEPALIVE_SECONDS": "2",
            **(settings or {}),
        },
    )
    logs = tmp / "logs"
    server = server_process(env, logs / "server.log", server_args).start()
    stack = Stack(target, database_url, env, logs, server, server_args=server_args)
    for _ in range(workers):
        stack.start_worker()
    if wait:
        wait_for_serving(target, process=stack.server)
    return stack


def stop_stack(stack: Stack, admin_conninfo: str) -> None:
    for proc in (*stack.workers, stack.server):
        proc.stop()
    dbname = psycopg.conninfo.conninfo_to_dict(stack.database_url)["dbname"]
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@pytest.fixture
def stack_factory(pg_server: str, redis_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[object]:
    stacks: list[Stack] = []

    def factory(*, redis: str | None = None, **options: Any) -> Stack:
        stack = make_stack(pg_server, redis or redis_url, tmp_path / f"stack{len(stacks)}", **options)
        stacks.append(stack)
        return stack

    yield factory
    failed = getattr(request.node, "rep_call", None)
    for stack in stacks:
        if failed is not None and failed.failed:
            print(stack.dump_logs())
        stop_stack(stack, pg_server)


@pytest.fixture
def stack(stack_factory: object) -> Stack:
    return stack_factory()  # type: ignore[operator, no-any-return]


def s3_settings(s3: S3Endpoint, bucket: str) -> dict[str, str]:
    """Settings that point a stack at a bucket of the session's S3 endpoint (SeaweedFS)."""
    return {
        "DATAMILL_OBJECT_STORE": "s3",
        "DATAMILL_S3_ENDPOINT": s3.endpoint,
        "DATAMILL_S3_ACCESS_KEY": s3.access_key,
        "DATAMILL_S3_SECRET_KEY": s3.secret_key,
        "DATAMILL_S3_BUCKET": bucket,
        "DATAMILL_S3_REGION": s3.region,
    }


@pytest.fixture
def s3_stack(stack_factory: Any, s3: S3Endpoint, s3_bucket: str) -> Stack:
    """A stack whose object store is a fresh bucket of the session's S3 endpoint."""
    return stack_factory(settings=s3_settings(s3, s3_bucket))  # type: ignore[no-any-return]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report: Any = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
