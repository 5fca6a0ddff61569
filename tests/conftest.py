"""Session services for the integration and end-to-end tests.

A service starts only when a test asks for its fixture, so unit tests start
nothing. Each one is embedded (server/devstack.py) unless an environment
variable points at an existing one:

    DATAMILL_TEST_DATABASE_URL     admin conninfo of a PostgreSQL (needs CREATEDB)
    DATAMILL_TEST_REDIS_URL        a Redis URL
    DATAMILL_TEST_S3_ENDPOINT      host:port of an S3 API, with
    DATAMILL_TEST_S3_ACCESS_KEY / DATAMILL_TEST_S3_SECRET_KEY

PostgreSQL isolation follows procrastinate: the migrations run once into a
template database, and every test gets `CREATE DATABASE ... TEMPLATE` of it,
which is a file copy and takes milliseconds.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
import urllib3
from minio import Minio
from minio.error import S3Error
from psycopg import sql
from psycopg.conninfo import make_conninfo

from server.devstack import EmbeddedPostgres, EmbeddedRedis, S3Endpoint, SeaweedS3


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Admin conninfo of a PostgreSQL server for the whole session."""
    url = os.environ.get("DATAMILL_TEST_DATABASE_URL")
    if url:
        yield url
        return
    with EmbeddedPostgres(tmp_path_factory.mktemp("postgres") / "data") as pg:
        yield pg.conninfo


async def _admin(conninfo: str, statement: sql.Composed) -> None:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(statement)


@pytest.fixture(scope="session")
async def pg_template(pg_server: str) -> AsyncIterator[str]:
    """Name of a database with every migration applied, to be cloned per test."""
    from server.core.migrate import apply_migrations  # noqa: PLC0415  # only tests that use PostgreSQL need it

    name = f"datamill_template_{secrets.token_hex(4)}"
    await _admin(pg_server, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        await apply_migrations(make_conninfo(pg_server, dbname=name))
        yield name
    finally:
        await _admin(pg_server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
async def pg_conninfo(pg_server: str, pg_template: str) -> AsyncIterator[str]:
    """Conninfo of a fresh, migrated database of this test's own; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    await _admin(
        pg_server,
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(pg_template)),
    )
    try:
        yield make_conninfo(pg_server, dbname=name)
    finally:
        await _admin(pg_server, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis | None]:
    """The session's embedded Redis, or None when DATAMILL_TEST_REDIS_URL points elsewhere.

    Fault tests restart it through this fixture; they skip when it is None.
    """
    if os.environ.get("DATAMILL_TEST_REDIS_URL"):
        yield None
        return
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as redis:
        yield redis


@pytest.fixture(scope="session")
def redis_url(embedded_redis: EmbeddedRedis | None) -> str:
    return embedded_redis.url if embedded_redis is not None else os.environ["DATAMILL_TEST_REDIS_URL"]


@pytest.fixture
def queue_name() -> str:
    """A Redis stream name of this test's own, so tests sharing one Redis never see each other's tasks."""
    return f"datamill-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Endpoint]:
    """An S3 endpoint with credentials for the whole session."""
    endpoint = os.environ.get("DATAMILL_TEST_S3_ENDPOINT")
    if endpoint:
        yield S3Endpoint(
            endpoint=endpoint,
            access_key=os.environ.get("DATAMILL_TEST_S3_ACCESS_KEY", ""),
            secret_key=os.environ.get("DATAMILL_TEST_S3_SECRET_KEY", ""),
        )
        return
    with SeaweedS3(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server.connection


@pytest.fixture(scope="session")
def s3_client(s3: S3Endpoint) -> Iterator[Minio]:
    """A minio client with test-friendly timeouts, for set-up and for checking what a store left behind."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=2, read=30), retries=urllib3.Retry(total=1, backoff_factor=0.1)
    )
    try:
        yield Minio(
            s3.endpoint,
            access_key=s3.access_key,
            secret_key=s3.secret_key,
            secure=s3.secure,
            region=s3.region,
            http_client=http,
        )
    finally:
        http.clear()


@pytest.fixture
def s3_bucket(s3_client: Minio) -> Iterator[str]:
    """A bucket name no other test uses. The test creates it (`ensure_ready`); it is emptied and removed after.

    Removing it matters on SeaweedFS too, where every bucket holds a volume of a limited number.
    """
    name = f"dm-test-{uuid.uuid4().hex[:16]}"
    yield name
    if not s3_client.bucket_exists(name):
        return
    for upload in s3_client._list_multipart_uploads(name).uploads:
        if upload.object_name and upload.upload_id:
            s3_client._abort_multipart_upload(name, upload.object_name, upload.upload_id)
    for obj in s3_client.list_objects(name, recursive=True):
        s3_client.remove_object(name, obj.object_name)
    with contextlib.suppress(S3Error):
        s3_client.remove_bucket(name)
