"""Object store on any S3-compatible endpoint, through the `minio` SDK.

minio is synchronous, so every call runs in a thread pool owned by the store,
and at most `max_uploads` uploads hold a thread at once. Its HTTP pool gets
short timeouts and few retries: the SDK's defaults retry five times with
five-minute timeouts, which turns an outage into a hang.

The SHA-256 is stored as user metadata (`x-amz-meta-sha256`). It is known only
when the stream ends, after minio has sent the object's headers, so it is set
by a server-side copy of the object onto itself with the REPLACE directive,
which changes metadata without moving data.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import REPLACE, CopySource
from minio.error import InvalidResponseError, S3Error, ServerError

from server.core.errors import InvalidArgument, NotFound, OutOfRange, Unavailable
from server.core.objects._pipe import ChunkPipe, pump
from server.core.objects.base import (
    DEFAULT_PART_SIZE,
    READ_CHUNK_SIZE,
    ObjectInfo,
    ObjectStore,
    check_key,
    check_range,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
    from datetime import timedelta

    from urllib3 import BaseHTTPResponse

T = TypeVar("T")

SHA256_METADATA = "x-amz-meta-sha256"
_DEFAULT_CONTENT_TYPE = "application/octet-stream"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_MISSING_KEY = frozenset({"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"})
_ACCESS_DENIED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"})
_TRANSIENT = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"})
_MIN_PART_SIZE = 5 * 1024 * 1024  # S3's minimum for every part but the last


@contextlib.contextmanager
def _translate_errors(bucket: str, key: str | None) -> Iterator[None]:
    """Turn minio and urllib3 errors into datamill errors; other S3 errors are bugs and pass through."""
    try:
        yield
    except S3Error as exc:
        if exc.code in _MISSING_KEY and key is not None:
            raise NotFound("object", key) from exc
        if exc.code == "NoSuchBucket":
            raise Unavailable(
                f"object store bucket {bucket!r} does not exist", reason="OBJECT_STORE_BUCKET_MISSING"
            ) from exc
        if exc.code in _ACCESS_DENIED:
            raise Unavailable(
                f"object store refused datamill's credentials ({exc.code})", reason="OBJECT_STORE_ACCESS_DENIED"
            ) from exc
        if exc.code in _TRANSIENT:
            raise Unavailable(
                f"object store is unavailable ({exc.code})", reason="OBJECT_STORE_UNAVAILABLE", retry_after=1.0
            ) from exc
        raise
    except (ServerError, InvalidResponseError) as exc:
        raise Unavailable(
            f"object store answered with an error: {exc}", reason="OBJECT_STORE_UNAVAILABLE", retry_after=1.0
        ) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise Unavailable(
            f"object store is unreachable: {exc}", reason="OBJECT_STORE_UNREACHABLE", retry_after=1.0
        ) from exc


class S3ObjectStore(ObjectStore):
    """Objects in one bucket of an S3-compatible endpoint (`host:port`)."""

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        bucket: str,
        region: str = "us-east-1",
        secure: bool = False,
        max_uploads: int = 4,
        max_workers: int = 16,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retries: int = 2,
    ) -> None:
        if max_workers <= max_uploads:
            raise ValueError("max_workers must exceed max_uploads so that reads never wait for uploads")
        self.bucket = bucket
        self._http = urllib3.PoolManager(
            maxsize=max_workers,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
            retries=urllib3.Retry(
                total=retries,
                backoff_factor=0.2,
                status_forcelist=(500, 502, 503, 504),
                # Hand the last error response to minio, which reports the S3 error code.
                raise_on_status=False,
            ),
            cert_reqs="CERT_REQUIRED",
            ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        )
        # With the region given, presigning is local and no call asks the server for it.
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=self._http,
        )
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="s3-objects")
        # An upload holds a thread for its whole duration.
        self._uploads = asyncio.Semaphore(max_uploads)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    async def ensure_ready(self) -> None:
        await self._run(self._ensure_bucket)

    def _ensure_bucket(self) -> None:
        with _translate_errors(self.bucket, None):
            if self._client.bucket_exists(self.bucket):
                return
            try:
                self._client.make_bucket(self.bucket)
            except S3Error as exc:
                # Another replica created it first.
                if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> ObjectInfo:
        check_key(key)
        if part_size < _MIN_PART_SIZE:
            raise InvalidArgument.single("part_size", f"must be at least {_MIN_PART_SIZE} bytes (S3's minimum)")
        async with self._uploads:
            loop = asyncio.get_running_loop()
            pipe = ChunkPipe(loop)
            work = loop.run_in_executor(self._pool, self._put, key, pipe, content_type, part_size)
            return await pump(chunks, pipe, work, discard=functools.partial(self.delete, key))

    def _put(self, key: str, pipe: ChunkPipe, content_type: str, part_size: int) -> ObjectInfo:
        try:
            with _translate_errors(self.bucket, key):
                # One part at a time: minio's parallel mode leaves its threads
                # blocked when the reader raises, and may still be sending a part
                # while it aborts the upload. The pipe's queue keeps the producer
                # going during each part's round trip.
                written = self._client.put_object(
                    self.bucket,
                    key,
                    cast(BinaryIO, pipe),  # minio only calls read(size)
                    length=-1,
                    part_size=part_size,
                    content_type=content_type,
                    num_parallel_uploads=1,
                )
                try:
                    self._client.copy_object(
                        self.bucket,
                        key,
                        # match_etag: never stamp our hash on an object someone else wrote meanwhile.
                        CopySource(self.bucket, key, match_etag=written.etag),
                        metadata={SHA256_METADATA: pipe.sha256_hex, "Content-Type": content_type},
                        metadata_directive=REPLACE,
                    )
                except BaseException:
                    with contextlib.suppress(Exception):
                        self._client.remove_object(self.bucket, key)
                    raise
        finally:
            pipe.consumer_exited()
        return ObjectInfo(key=key, size=pipe.size, sha256=pipe.sha256_hex, content_type=content_type)

    async def open_range(self, key: str, offset: int = 0, length: int | None = None) -> AsyncGenerator[bytes, None]:
        check_key(key)
        check_range(offset, length)
        if length == 0:
            # minio would read `length=0` as "to the end"; still report a missing key or bad offset.
            info = await self.stat(key)
            self._check_offset(info, offset)
            return
        response = await self._run(self._get, key, offset, length)
        if response is None:
            return
        try:
            while True:
                data = await self._run(self._read, response, key)
                if not data:
                    return
                yield data
        finally:
            response.close()
            response.release_conn()

    def _get(self, key: str, offset: int, length: int | None) -> BaseHTTPResponse | None:
        with _translate_errors(self.bucket, key):
            try:
                return self._client.get_object(self.bucket, key, offset=offset, length=length or 0)
            except S3Error as exc:
                if exc.code != "InvalidRange":
                    raise
        # S3 refuses a range that starts at the end, so tell "empty tail" from "past the end".
        self._check_offset(self._stat(key), offset)
        return None

    def _read(self, response: BaseHTTPResponse, key: str) -> bytes:
        with _translate_errors(self.bucket, key):
            return response.read(READ_CHUNK_SIZE)

    @staticmethod
    def _check_offset(info: ObjectInfo, offset: int) -> None:
        if offset > info.size:
            raise OutOfRange(f"offset {offset} is beyond the end of object {info.key!r} ({info.size} bytes)")

    async def stat(self, key: str) -> ObjectInfo:
        check_key(key)
        return await self._run(self._stat, key)

    def _stat(self, key: str) -> ObjectInfo:
        with _translate_errors(self.bucket, key):
            obj = self._client.stat_object(self.bucket, key)
        sha256 = (obj.metadata or {}).get(SHA256_METADATA)
        return ObjectInfo(
            key=key,
            size=obj.size or 0,
            sha256=sha256 if isinstance(sha256, str) and _SHA256_HEX.match(sha256) else None,
            content_type=obj.content_type or _DEFAULT_CONTENT_TYPE,
        )

    async def delete(self, key: str) -> None:
        check_key(key)
        await self._run(self._delete, key)

    def _delete(self, key: str) -> None:
        # S3 answers a delete of a missing key with success already.
        with contextlib.suppress(NotFound), _translate_errors(self.bucket, key):
            self._client.remove_object(self.bucket, key)

    async def presigned_get_url(self, key: str, expires: timedelta) -> str | None:
        check_key(key)
        try:
            url: str = self._client.presigned_get_object(self.bucket, key, expires=expires)
        except ValueError as exc:
            raise InvalidArgument.single("expires", "must be between 1 second and 7 days") from exc
        return url

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, functools.partial(self._pool.shutdown, wait=True))
        self._http.clear()
