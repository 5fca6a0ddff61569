"""The embedded services start, answer, and go away again; and the conftest fixtures built on them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis
import urllib3
from minio import Minio
from minio.error import S3Error

from server.devstack import EmbeddedPostgres, EmbeddedRedis, SeaweedS3, free_port

pytestmark = pytest.mark.integration


def _select_one(conninfo: str) -> int:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT 1").fetchone()
    assert row is not None
    return int(row[0])


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _exits_soon(pid: int, timeout: float = 5.0) -> bool:
    # The postmaster deletes postmaster.pid (which is what `pg_ctl -w stop` waits for) just before it exits.
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_embedded_postgres_answers_shares_a_data_dir_and_stops(tmp_path: Path) -> None:
    with EmbeddedPostgres(tmp_path / "a") as first:
        assert _select_one(first.conninfo) == 1
        with psycopg.connect(first.conninfo, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (v int)")
        pid = _postmaster_pid(first.data_dir)

        # A second user of the same directory shares the server; its stop leaves the server up.
        with EmbeddedPostgres(tmp_path / "a") as second:
            assert second.conninfo == first.conninfo
        assert _select_one(first.conninfo) == 1

        # Another directory is another server, running at the same time.
        with EmbeddedPostgres(tmp_path / "b") as other:
            assert other.conninfo != first.conninfo
            with psycopg.connect(other.conninfo, autocommit=True) as conn:
                assert conn.execute("SELECT to_regclass('kept')").fetchone() == (None,)
        assert _alive(pid)

    assert not (first.data_dir / "postmaster.pid").exists()
    assert _exits_soon(pid)
    # Started again on the same directory, the data is still there.
    with EmbeddedPostgres(tmp_path / "a") as again, psycopg.connect(again.conninfo, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('kept')::text").fetchone() == ("kept",)


def test_embedded_redis_serves_other_processes_and_survives_restarts(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        url = server.url
        assert server.port is not None
        with redis.Redis.from_url(url) as client:
            assert client.ping()
            client.set("saved", "v")

        reader = "import redis, sys; c = redis.Redis.from_url(sys.argv[1]); print(c.get('saved').decode()); c.close()"
        out = subprocess.run(
            [sys.executable, "-c", reader, url], capture_output=True, text=True, timeout=30, check=True
        )
        assert out.stdout.strip() == "v"

        # A graceful restart keeps the URL and the data.
        server.restart()
        assert server.url == url
        with redis.Redis.from_url(url) as client:
            assert client.get("saved") == b"v"
            client.set("unsaved", "x")

        # A crash loses what was written since the last save, like a real Redis.
        server.restart(crash=True)
        assert server.url == url
        with redis.Redis.from_url(url) as client:
            assert client.get("saved") == b"v"
            assert client.get("unsaved") is None
        port = server.port

    assert not _port_open(port)


def test_seaweed_s3_serves_s3_and_checks_credentials(tmp_path: Path) -> None:
    with SeaweedS3(tmp_path) as server:
        assert server.endpoint == f"127.0.0.1:{server.port}"
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=10), retries=urllib3.Retry(total=0))
        try:
            good = Minio(server.endpoint, server.access_key, server.secret_key, secure=False, http_client=http)
            good.make_bucket("devstack-check")
            assert [b.name for b in good.list_buckets()] == ["devstack-check"]

            bad = Minio(server.endpoint, server.access_key, "not-" + server.secret_key, secure=False, http_client=http)
            with pytest.raises(S3Error) as exc:
                bad.list_buckets()
            assert exc.value.code == "SignatureDoesNotMatch"
        finally:
            http.clear()
        port = server.port
        assert port is not None
    assert not _port_open(port)


def test_seaweed_s3_credentials_are_random_per_server(tmp_path: Path) -> None:
    one, two = SeaweedS3(tmp_path / "1"), SeaweedS3(tmp_path / "2")
    assert one.access_key != two.access_key
    assert one.secret_key != two.secret_key
    assert len(one.secret_key) >= 30
    assert SeaweedS3(tmp_path, access_key="given", secret_key="given-secret").secret_key == "given-secret"


async def test_pg_conninfo_is_a_private_migrated_database(pg_conninfo: str, pg_server: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_conninfo, autocommit=True) as conn:
        cur = await conn.execute("SELECT current_database(), (SELECT count(*) FROM schema_migrations)")
        row = await cur.fetchone()
    assert row is not None
    name, migrations = row
    assert name.startswith("test_")
    assert migrations >= 1
    assert psycopg.conninfo.conninfo_to_dict(pg_server).get("dbname") != name


def test_queue_names_are_unique(queue_name: str, redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        assert client.exists(queue_name) == 0
        assert client.ping()
