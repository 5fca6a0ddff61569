"""Object store on any S3-compatible endpoint, through the `minio` SDK.

minio is synchronous, so every call runs in a thread pool owned by the store,
and at most `max_uploads` uploads hold a thread at once. Its HTTP pool gets
short timeouts and few retries: the SDK's defaults retry five times with
five-minute timeouts, which turns an outage into a hang.

The SHA-256 is stored as user metadata (`x-amz-meta-sha256`). It is known only
when the stream ends, after minio has sent the object's headers, so it is set
by a server-side copy of the object onto itself with the REPLACE directive,
which changes metadata without moving data.

The resumable multipart upload maps one to one onto S3's multipart API; its
handle is the S3 UploadId. Objects assembled that way carry no SHA-256.
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
from minio.datatypes import Part
from minio.error import InvalidResponseError, S3Error, ServerError

from server.core.errors import FailedPrecondition, InvalidArgument, NotFound, OutOfRange, Unavailable
from server.core.objects._pipe import ChunkPipe, pump, run_in_slot
from server.core.objects.base import (
    DEFAULT_PART_SIZE,
    MIN_PART_SIZE,
    READ_CHUNK_SIZE,
    ObjectInfo,
    ObjectStore,
    PartInfo,
    check_handle,
    check_key,
    check_part_number,
    check_part_size_hint,
    check_parts,
    check_range,
    multipart_etag,
)

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Sequence
    from datetime import timedelta

    from minio.datatypes import Object
    from urllib3 import BaseHTTPResponse

T = TypeVar("T")

SHA256_METADATA = "x-amz-meta-sha256"
_DEFAULT_CONTENT_TYPE = "application/octet-stream"
_SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_MISSING_KEY = frozenset({"NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound"})
_ACCESS_DENIED = frozenset({"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"})
_TRANSIENT = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"})
#: S3's answers to a CompleteMultipartUpload whose part list is wrong, and our error for each.
_BAD_PART_LIST = frozenset({"InvalidPartOrder", "EntityTooSmall"})
_PART_MISMATCH = "InvalidPart"
_LIST_PARTS_PAGE = 1000  # S3's maximum


@contextlib.contextmanager
def _translate_errors(bucket: str, key: str | None, *, upload: str | None = None) -> Iterator[None]:
    """Turn minio and urllib3 errors into datamill errors; other S3 errors are bugs and pass through.

    `upload` is the multipart upload's handle, for calls that name one.
    """
    try:
        yield
    except S3Error as exc:
        if exc.code == "NoSuchUpload" and upload is not None:
            raise NotFound("multipart upload", upload) from exc
        if exc.code == _PART_MISMATCH and upload is not None:
            raise FailedPrecondition(
                f"a listed part of multipart upload {upload!r} was not stored with that etag",
                reason="MULTIPART_PART_MISMATCH",
            ) from exc
        if exc.code in _BAD_PART_LIST and upload is not None:
            raise InvalidArgument.single("parts", f"rejected by the object store ({exc.code})") from exc
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
        # An upload holds a thread for its whole duration; so does each part or
        # completion of a multipart upload.
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
        if part_size < MIN_PART_SIZE:
            raise InvalidArgument.single("part_size", f"must be at least {MIN_PART_SIZE} bytes (S3's minimum)")
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
        return self._info(key, obj)

    @staticmethod
    def _info(key: str, obj: Object) -> ObjectInfo:
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

    # minio 7.2.20 has no public API for a multipart upload that spans several
    # calls (put_object runs one from start to end), so these call the private
    # wrappers of the S3 multipart API that put_object itself is built on; they
    # are unchanged across minio 7.2.x and the contract suite exercises each one.

    async def create_multipart(self, key: str, *, content_type: str, part_size: int | None = None) -> str:
        check_key(key)
        check_part_size_hint(part_size)  # S3 needs no hint: it assembles parts without copying them
        return await self._run(self._create_multipart, key, content_type)

    def _create_multipart(self, key: str, content_type: str) -> str:
        with _translate_errors(self.bucket, key):
            upload_id: str = self._client._create_multipart_upload(self.bucket, key, {"Content-Type": content_type})
        return upload_id

    async def upload_part(self, key: str, handle: str, number: int, data: bytes | memoryview) -> PartInfo:
        check_key(key)
        check_handle(handle)
        check_part_number(number)
        return await run_in_slot(self._uploads, self._pool, self._upload_part, key, handle, number, data)

    def _upload_part(self, key: str, handle: str, number: int, data: bytes | memoryview) -> PartInfo:
        with _translate_errors(self.bucket, key, upload=handle):
            # minio hashes and sends any bytes-like body; its annotation says bytes only.
            etag: str = self._client._upload_part(self.bucket, key, cast(bytes, data), None, handle, number)
        return PartInfo(number=number, size=len(data), etag=etag)

    async def complete_multipart(self, key: str, handle: str, parts: Sequence[PartInfo]) -> ObjectInfo:
        check_key(key)
        check_handle(handle)
        check_parts(parts)
        return await run_in_slot(self._uploads, self._pool, self._complete_multipart, key, handle, list(parts))

    def _complete_multipart(self, key: str, handle: str, parts: list[PartInfo]) -> ObjectInfo:
        try:
            with _translate_errors(self.bucket, key, upload=handle):
                # CompleteMultipartUpload checks etags only, so sizes are checked against ListParts first.
                self._check_stored_parts(key, handle, parts)
                result = self._client._complete_multipart_upload(
                    self.bucket, key, handle, [Part(part.number, part.etag.strip('"')) for part in parts]
                )
            if result.etag is None:
                # S3 may report a failure as 200 OK with an <Error> body, which minio does not check.
                raise Unavailable(
                    f"object store failed to complete multipart upload {handle!r}",
                    reason="OBJECT_STORE_UNAVAILABLE",
                    retry_after=1.0,
                )
        except NotFound:
            # The upload is gone: perhaps a previous call completed it (see the interface's docstring).
            info = self._completed_earlier(key, parts)
            if info is None:
                raise
            return info
        return self._stat(key)

    def _check_stored_parts(self, key: str, handle: str, parts: list[PartInfo]) -> None:
        # Keyed by number and etag: SeaweedFS lists every upload of a part number, not just the last.
        stored: dict[tuple[int, str], int | None] = {}
        marker: str | None = None
        while True:
            page = self._client._list_parts(
                self.bucket, key, handle, max_parts=_LIST_PARTS_PAGE, part_number_marker=marker
            )
            for listed in page.parts:
                stored[listed.part_number, listed.etag.strip('"').lower()] = listed.size
            marker = page.next_part_number_marker
            if not page.is_truncated or not marker or int(marker) >= parts[-1].number:
                break
        for part in parts:
            etag = part.etag.strip('"').lower()
            if (part.number, etag) not in stored:
                raise FailedPrecondition(
                    f"part {part.number} of multipart upload {handle!r} was not stored with etag {etag!r}",
                    reason="MULTIPART_PART_MISMATCH",
                )
            size = stored[part.number, etag]
            if size is not None and size != part.size:
                raise FailedPrecondition(
                    f"part {part.number} of multipart upload {handle!r} holds {size} bytes, not {part.size}",
                    reason="MULTIPART_PART_MISMATCH",
                )

    def _completed_earlier(self, key: str, parts: list[PartInfo]) -> ObjectInfo | None:
        """The ObjectInfo of `key` if it looks assembled from exactly `parts`, else None."""
        try:
            with _translate_errors(self.bucket, key):
                obj = self._client.stat_object(self.bucket, key)
        except NotFound:
            return None
        if obj.size != sum(part.size for part in parts):
            return None
        # S3 servers give an assembled object the etag that its parts' etags determine, which
        # tells it from an object of the same size written otherwise.
        if (obj.etag or "").strip('"').lower() != multipart_etag(parts):
            return None
        return self._info(key, obj)

    async def abort_multipart(self, key: str, handle: str) -> None:
        check_key(key)
        check_handle(handle)
        await self._run(self._abort_multipart, key, handle)

    def _abort_multipart(self, key: str, handle: str) -> None:
        with contextlib.suppress(NotFound), _translate_errors(self.bucket, key, upload=handle):
            self._client._abort_multipart_upload(self.bucket, key, handle)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, functools.partial(self._pool.shutdown, wait=True))
        self._http.clear()
