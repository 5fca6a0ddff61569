"""One contract, two backends: a local directory and a real S3 server (SeaweedFS) behave the same."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import io
import json
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from server.core.errors import FailedPrecondition, InvalidArgument, NotFound, OutOfRange, Unavailable
from server.core.objects import (
    MIN_PART_SIZE,
    LocalObjectStore,
    ObjectInfo,
    ObjectStore,
    PartInfo,
    S3ObjectStore,
)
from server.core.objects import local as local_module
from server.core.objects._pipe import ChunkPipe
from server.devstack import S3Endpoint, free_port

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
MIN_PART = 5 * MiB
CSV = "text/csv"


def make_s3_store(s3: S3Endpoint, bucket: str) -> S3ObjectStore:
    return S3ObjectStore(
        endpoint=s3.endpoint,
        access_key=s3.access_key,
        secret_key=s3.secret_key,
        bucket=bucket,
        region=s3.region,
        secure=s3.secure,
        connect_timeout=2,
        read_timeout=30,
    )


class PlacingLocalStore(LocalObjectStore):
    """The local store with every multipart upload hinted to MIN_PART_SIZE: parts are placed in one file."""

    async def create_multipart(self, key: str, *, content_type: str, part_size: int | None = None) -> str:
        return await super().create_multipart(
            key, content_type=content_type, part_size=MIN_PART_SIZE if part_size is None else part_size
        )


@pytest.fixture(params=["local", "local-placing", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    backend: ObjectStore
    if request.param == "local":
        backend = LocalObjectStore(tmp_path / "objects")
    elif request.param == "local-placing":
        backend = PlacingLocalStore(tmp_path / "objects")
    else:
        backend = make_s3_store(request.getfixturevalue("s3"), request.getfixturevalue("s3_bucket"))
    async with backend:
        await backend.ensure_ready()
        yield backend


def new_key(suffix: str = "bin") -> str:
    return f"tenant-a/uploads/{uuid.uuid4()}.{suffix}"


def random_bytes(size: int, seed: int = 0) -> bytes:
    # Random, not repeated, data: SeaweedFS compresses, which would flatter sizes and timings.
    return random.Random(seed).randbytes(size)


async def chunks_of(data: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(store: ObjectStore, key: str, offset: int = 0, length: int | None = None) -> bytes:
    async with aclosing(store.open_range(key, offset, length)) as chunks:
        return b"".join([chunk async for chunk in chunks])


async def put_bytes(store: ObjectStore, key: str, data: bytes, **kwargs: Any) -> ObjectInfo:
    return await store.put_stream(key, chunks_of(data), content_type=kwargs.pop("content_type", CSV), **kwargs)


def s3_uploads(client: Minio, bucket: str, key: str) -> list[str]:
    """Upload ids of multipart uploads pending for `key`, straight from the S3 ListMultipartUploads API."""
    result = client._list_multipart_uploads(bucket, prefix=key)
    return [u.upload_id or "" for u in result.uploads if u.object_name == key]


async def test_put_returns_and_stat_reports_size_sha256_and_content_type(store: ObjectStore) -> None:
    data = random_bytes(300_000)
    key = new_key("csv")
    info = await put_bytes(store, key, data, content_type=CSV)
    expected = ObjectInfo(key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest(), content_type=CSV)
    assert info == expected
    assert await store.stat(key) == expected


async def test_open_range_yields_the_whole_object_in_chunks_of_at_most_1_mib(store: ObjectStore) -> None:
    data = random_bytes(2 * MiB + 12345, seed=1)
    key = new_key()
    await put_bytes(store, key, data)
    async with aclosing(store.open_range(key)) as stream:
        chunks = [chunk async for chunk in stream]
    assert b"".join(chunks) == data
    assert len(chunks) >= 3
    assert max(len(c) for c in chunks) <= MiB


@pytest.mark.parametrize(
    ("offset", "length"),
    [(0, 10), (1, None), (1000, 5000), (MiB - 1, 3), (MiB + 17, None), (0, 10 * MiB), (2 * MiB, 1)],
)
async def test_range_reads_match_slices(store: ObjectStore, offset: int, length: int | None) -> None:
    data = random_bytes(2 * MiB + 1, seed=2)
    key = new_key()
    await put_bytes(store, key, data)
    end = None if length is None else offset + length
    assert await read_all(store, key, offset, length) == data[offset:end]


async def test_offset_at_the_end_reads_nothing_and_past_the_end_is_out_of_range(store: ObjectStore) -> None:
    data = random_bytes(1000, seed=3)
    key = new_key()
    await put_bytes(store, key, data)
    assert await read_all(store, key, 1000) == b""
    assert await read_all(store, key, 1000, 5) == b""
    assert await read_all(store, key, 10, 0) == b""
    with pytest.raises(OutOfRange):
        await read_all(store, key, 1001)
    with pytest.raises(OutOfRange):
        await read_all(store, key, 1001, 0)


async def test_negative_offset_or_length_is_invalid(store: ObjectStore) -> None:
    key = new_key()
    await put_bytes(store, key, b"abc")
    with pytest.raises(InvalidArgument) as exc:
        await read_all(store, key, -1)
    assert exc.value.violations[0].field == "offset"
    with pytest.raises(InvalidArgument) as exc:
        await read_all(store, key, 0, -1)
    assert exc.value.violations[0].field == "length"


async def test_missing_key_is_not_found(store: ObjectStore) -> None:
    key = new_key()
    with pytest.raises(NotFound) as exc:
        await store.stat(key)
    assert exc.value.metadata == {"resource_type": "object", "resource_name": key}
    with pytest.raises(NotFound):
        await read_all(store, key)
    with pytest.raises(NotFound):
        await read_all(store, key, 0, 0)


async def test_delete_removes_the_object_and_is_idempotent(store: ObjectStore) -> None:
    key = new_key()
    await put_bytes(store, key, b"x" * 10)
    await store.delete(key)
    with pytest.raises(NotFound):
        await store.stat(key)
    await store.delete(key)
    await store.delete(new_key())


async def test_empty_object(store: ObjectStore) -> None:
    key = new_key()
    info = await put_bytes(store, key, b"")
    assert info.size == 0
    assert info.sha256 == hashlib.sha256(b"").hexdigest()
    assert await store.stat(key) == info
    assert await read_all(store, key) == b""


async def test_put_replaces_an_existing_object(store: ObjectStore) -> None:
    key = new_key()
    await put_bytes(store, key, b"first version")
    second = await put_bytes(store, key, b"second", content_type="application/json")
    assert await store.stat(key) == second
    assert second.content_type == "application/json"
    assert await read_all(store, key) == b"second"


BAD_KEYS = ["", "../escape", "a/../../etc/passwd", "/etc/passwd", "a\\b", "a//b", "a/", ".hidden", "a/.tmp", "a\x00b"]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_unsafe_keys_are_rejected_by_every_method(store: ObjectStore, key: str) -> None:
    consumed = False

    async def never_read() -> AsyncIterator[bytes]:
        nonlocal consumed
        consumed = True
        yield b"data"

    with pytest.raises(InvalidArgument):
        await store.put_stream(key, never_read(), content_type=CSV)
    assert not consumed
    with pytest.raises(InvalidArgument):
        await store.stat(key)
    with pytest.raises(InvalidArgument):
        await read_all(store, key)
    with pytest.raises(InvalidArgument):
        await store.delete(key)
    with pytest.raises(InvalidArgument):
        await store.presigned_get_url(key, timedelta(minutes=1))


async def test_local_store_never_writes_outside_its_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with LocalObjectStore(root) as store:
        await store.ensure_ready()
        for key in ("../outside", "a/../../outside"):
            with pytest.raises(InvalidArgument):
                await put_bytes(store, key, b"nope")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root"]


async def test_presigned_url(store: ObjectStore) -> None:
    data = random_bytes(70_000, seed=4)
    key = new_key("csv")
    await put_bytes(store, key, data)
    url = await store.presigned_get_url(key, timedelta(minutes=5))
    if isinstance(store, LocalObjectStore):
        assert url is None
        return
    assert url is not None

    def download(target: str) -> bytes:
        with urllib.request.urlopen(target, timeout=10) as response:  # our own test server
            body: bytes = response.read()
            return body

    assert await asyncio.to_thread(download, url) == data
    # The server checks the signature: a tampered URL is refused.
    tampered = url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    with pytest.raises(urllib.error.HTTPError) as exc:
        await asyncio.to_thread(download, tampered)
    exc.value.close()
    assert exc.value.code == 403
    with pytest.raises(InvalidArgument):
        await store.presigned_get_url(key, timedelta(days=30))


async def test_multipart_upload_of_several_minimum_size_parts(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = random_bytes(3 * MIN_PART + 4321, seed=5)
    key = new_key()
    part_sizes: list[int] = []
    if isinstance(store, S3ObjectStore):
        upload_part = store._client._upload_part

        def counting_upload_part(*args: Any) -> str:
            part_sizes.append(len(args[2]))
            result: str = upload_part(*args)
            return result

        monkeypatch.setattr(store._client, "_upload_part", counting_upload_part)

    info = await put_bytes(store, key, data, part_size=MIN_PART)

    assert info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert await store.stat(key) == info
    assert await read_all(store, key) == data
    if isinstance(store, S3ObjectStore):
        assert part_sizes == [MIN_PART, MIN_PART, MIN_PART, 4321]


async def _wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def _leftover_files(store: LocalObjectStore) -> list[str]:
    return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())


async def test_cancelled_put_leaves_no_object_and_no_pending_upload(
    store: ObjectStore, request: pytest.FixtureRequest
) -> None:
    key = new_key()
    two_parts_sent = asyncio.Event()

    async def stalls_after_two_parts() -> AsyncIterator[bytes]:
        yield random_bytes(MIN_PART, seed=6)
        # More than one part: the S3 backend has now started a multipart upload and sent part 1.
        yield random_bytes(MIN_PART, seed=7)
        two_parts_sent.set()
        await asyncio.Event().wait()  # the client goes silent
        yield b"never"

    task = asyncio.create_task(store.put_stream(key, stalls_after_two_parts(), content_type=CSV, part_size=MIN_PART))
    await asyncio.wait_for(two_parts_sent.wait(), 10)
    if isinstance(store, S3ObjectStore):
        client: Minio = request.getfixturevalue("s3_client")
        await _wait_until(lambda: bool(s3_uploads(client, store.bucket, key)))
    else:
        assert isinstance(store, LocalObjectStore)
        await _wait_until(lambda: bool(_leftover_files(store)))
    with pytest.raises(NotFound):
        await store.stat(key)  # invisible until put_stream returns

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    with pytest.raises(NotFound):
        await store.stat(key)
    if isinstance(store, S3ObjectStore):
        assert s3_uploads(client, store.bucket, key) == []
    else:
        assert isinstance(store, LocalObjectStore)
        assert _leftover_files(store) == []


async def test_failing_producer_leaves_nothing(store: ObjectStore, request: pytest.FixtureRequest) -> None:
    key = new_key()

    async def breaks_after_two_parts() -> AsyncIterator[bytes]:
        yield random_bytes(MIN_PART, seed=8)
        yield random_bytes(MIN_PART, seed=9)
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await store.put_stream(key, breaks_after_two_parts(), content_type=CSV, part_size=MIN_PART)
    with pytest.raises(NotFound):
        await store.stat(key)
    if isinstance(store, S3ObjectStore):
        client: Minio = request.getfixturevalue("s3_client")
        assert s3_uploads(client, store.bucket, key) == []
    else:
        assert isinstance(store, LocalObjectStore)
        assert _leftover_files(store) == []


async def test_concurrent_puts_beyond_the_upload_limit_all_complete(store: ObjectStore) -> None:
    payloads = {new_key(): random_bytes(200_000 + i, seed=10 + i) for i in range(10)}
    infos = await asyncio.gather(*(put_bytes(store, key, data) for key, data in payloads.items()))
    for info, (key, data) in zip(infos, payloads.items(), strict=True):
        assert info.key == key
        assert info.sha256 == hashlib.sha256(data).hexdigest()
        assert await read_all(store, key) == data


# --- Resumable multipart uploads ------------------------------------------------------------------


def reopened(store: ObjectStore, request: pytest.FixtureRequest) -> ObjectStore:
    """A new store instance on the same directory or bucket, as a restarted server would open."""
    if isinstance(store, LocalObjectStore):
        return type(store)(store.root)
    assert isinstance(store, S3ObjectStore)
    return make_s3_store(request.getfixturevalue("s3"), store.bucket)


def pending_uploads(store: ObjectStore, request: pytest.FixtureRequest, key: str) -> list[str]:
    """Handles of the multipart uploads of `key` that the backend still keeps."""
    if isinstance(store, S3ObjectStore):
        return s3_uploads(request.getfixturevalue("s3_client"), store.bucket, key)
    assert isinstance(store, LocalObjectStore)
    uploads = store.root / ".multipart"
    if not uploads.exists():
        return []
    return [d.name for d in uploads.iterdir() if json.loads((d / "upload.json").read_text())["key"] == key]


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


async def upload_parts(store: ObjectStore, key: str, handle: str, parts: list[bytes]) -> list[PartInfo]:
    return [await store.upload_part(key, handle, number, data) for number, data in enumerate(parts, start=1)]


async def test_multipart_upload_assembles_the_parts_into_the_object(
    store: ObjectStore, request: pytest.FixtureRequest
) -> None:
    parts = [random_bytes(MIN_PART_SIZE, seed=30), random_bytes(MIN_PART_SIZE, seed=31), random_bytes(4321, seed=32)]
    key = new_key("csv")
    handle = await store.create_multipart(key, content_type=CSV)
    assert 0 < len(handle) <= 1024

    # Parts may arrive in any order, and concurrently.
    infos = await asyncio.gather(*(store.upload_part(key, handle, n, parts[n - 1]) for n in (3, 1, 2)))
    assert [(i.number, i.size) for i in infos] == [(n, len(parts[n - 1])) for n in (3, 1, 2)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i.etag) for i in infos)
    assert len({i.etag for i in infos}) == 3
    if not isinstance(store, LocalObjectStore):  # S3's etag is the part's MD5; the local store's, a random name
        assert [i.etag for i in infos] == [md5_hex(parts[n - 1]) for n in (3, 1, 2)]
    with pytest.raises(NotFound):
        await store.stat(key)  # invisible until completed

    info = await store.complete_multipart(key, handle, sorted(infos, key=lambda i: i.number))

    data = b"".join(parts)
    assert (info.key, info.size, info.content_type) == (key, len(data), CSV)
    assert info.sha256 in (None, hashlib.sha256(data).hexdigest())
    assert await store.stat(key) == info
    assert await read_all(store, key) == data
    assert pending_uploads(store, request, key) == []


@pytest.mark.parametrize("size", [0, 1000])
async def test_a_single_small_part_completes(store: ObjectStore, size: int) -> None:
    data = random_bytes(size, seed=33)
    key = new_key()
    handle = await store.create_multipart(key, content_type=CSV)
    part = await store.upload_part(key, handle, 1, data)
    info = await store.complete_multipart(key, handle, [part])
    assert info.size == size
    assert await read_all(store, key) == data


async def test_uploading_a_part_number_again_replaces_the_part(store: ObjectStore) -> None:
    first, second, tail = (random_bytes(MIN_PART_SIZE, seed=34), random_bytes(MIN_PART_SIZE, seed=35), b"tail")
    key = new_key()
    handle = await store.create_multipart(key, content_type=CSV)
    await store.upload_part(key, handle, 1, first)
    replaced = await store.upload_part(key, handle, 1, second)
    last = await store.upload_part(key, handle, 2, tail)

    info = await store.complete_multipart(key, handle, [replaced, last])

    assert info.size == len(second) + len(tail)
    assert await read_all(store, key) == second + tail


async def test_parts_that_do_not_match_what_was_stored_are_a_failed_precondition(store: ObjectStore) -> None:
    parts = [random_bytes(MIN_PART_SIZE, seed=36), random_bytes(1000, seed=37)]
    key = new_key()
    handle = await store.create_multipart(key, content_type=CSV)
    one, two = await upload_parts(store, key, handle, parts)

    wrong_etag = PartInfo(1, one.size, "0" * 32)
    wrong_size = PartInfo(2, two.size + 1, two.etag)
    never_uploaded = PartInfo(3, two.size, two.etag)
    for listed in ([wrong_etag, two], [one, wrong_size], [one, never_uploaded]):
        with pytest.raises(FailedPrecondition):
            await store.complete_multipart(key, handle, listed)
        with pytest.raises(NotFound):
            await store.stat(key)

    # A refused completion leaves the upload as it was.
    info = await store.complete_multipart(key, handle, [one, two])
    assert await read_all(store, key) == b"".join(parts)
    assert info.size == MIN_PART_SIZE + 1000


async def test_part_lists_that_s3_would_refuse_are_invalid(store: ObjectStore) -> None:
    key = new_key()
    handle = await store.create_multipart(key, content_type=CSV)
    small, other = await upload_parts(store, key, handle, [b"a" * 1000, b"b" * 1000])
    big = await store.upload_part(key, handle, 3, random_bytes(MIN_PART_SIZE, seed=38))

    bad_lists: dict[str, list[PartInfo]] = {
        "a part but the last is too small": [small, other],
        "empty": [],
        "not ascending": [big, small],
        "a number twice": [big, big],
        "number 0": [PartInfo(0, 10, small.etag)],
    }
    for listed in bad_lists.values():
        with pytest.raises(InvalidArgument):
            await store.complete_multipart(key, handle, listed)
    for number in (0, 10_001):
        with pytest.raises(InvalidArgument):
            await store.upload_part(key, handle, number, b"x")
    await store.abort_multipart(key, handle)


async def test_abort_leaves_nothing_and_is_idempotent(store: ObjectStore, request: pytest.FixtureRequest) -> None:
    key = new_key()
    handle = await store.create_multipart(key, content_type=CSV)
    part = await store.upload_part(key, handle, 1, random_bytes(MIN_PART_SIZE, seed=39))
    assert pending_uploads(store, request, key) == [handle]

    await store.abort_multipart(key, handle)

    assert pending_uploads(store, request, key) == []
    if isinstance(store, LocalObjectStore):
        assert _leftover_files(store) == []
    with pytest.raises(NotFound):
        await store.stat(key)
    await store.abort_multipart(key, handle)
    with pytest.raises(NotFound):
        await store.upload_part(key, handle, 2, b"late")
    with pytest.raises(NotFound):
        await store.complete_multipart(key, handle, [part])


async def test_unknown_handles_are_not_found(store: ObjectStore) -> None:
    key = new_key()
    part = PartInfo(1, 4, md5_hex(b"data"))
    other_key = new_key()
    handle_of_other_key = await store.create_multipart(other_key, content_type=CSV)
    for handle in (uuid.uuid4().hex, "not-a-handle", handle_of_other_key):
        with pytest.raises(NotFound) as exc:
            await store.upload_part(key, handle, 1, b"data")
        assert exc.value.metadata == {"resource_type": "multipart upload", "resource_name": handle}
        with pytest.raises(NotFound):
            await store.complete_multipart(key, handle, [part])
        await store.abort_multipart(key, handle)
    with pytest.raises(NotFound):
        await store.stat(key)
    # Aborting with the wrong key did not touch the other key's upload.
    await store.upload_part(other_key, handle_of_other_key, 1, b"data")
    with pytest.raises(InvalidArgument):
        await store.upload_part(key, "", 1, b"data")


async def test_completing_again_after_success_returns_the_same_object(store: ObjectStore) -> None:
    parts = [random_bytes(MIN_PART_SIZE, seed=40), random_bytes(777, seed=41)]
    key = new_key()
    handle = await store.create_multipart(key, content_type=CSV)
    listed = await upload_parts(store, key, handle, parts)
    first = await store.complete_multipart(key, handle, listed)

    # A server that crashed before recording the completion asks again.
    assert await store.complete_multipart(key, handle, listed) == first
    assert await read_all(store, key) == b"".join(parts)

    # Other parts were not what produced this object.
    with pytest.raises(NotFound):
        await store.complete_multipart(key, handle, [listed[0], PartInfo(2, 778, listed[1].etag)])
    with pytest.raises(NotFound):
        await store.complete_multipart(key, handle, [listed[0], PartInfo(2, 777, md5_hex(b"x" * 777))])
    await store.delete(key)
    with pytest.raises(NotFound):
        await store.complete_multipart(key, handle, listed)


async def test_a_restarted_store_resumes_the_upload(store: ObjectStore, request: pytest.FixtureRequest) -> None:
    parts = [random_bytes(MIN_PART_SIZE, seed=42), random_bytes(5000, seed=43)]
    key = new_key("csv")
    async with reopened(store, request) as before_crash:
        handle = await before_crash.create_multipart(key, content_type=CSV)
        one = await before_crash.upload_part(key, handle, 1, parts[0])
    async with reopened(store, request) as after_restart:
        two = await after_restart.upload_part(key, handle, 2, parts[1])
        info = await after_restart.complete_multipart(key, handle, [one, two])
    assert (info.size, info.content_type) == (sum(map(len, parts)), CSV)
    assert await read_all(store, key) == b"".join(parts)


async def test_part_uploads_beyond_the_upload_limit_wait_for_a_slot(
    store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key()
    handle = await store.create_multipart(key, content_type=CSV)
    lock = threading.Lock()
    running = peak = 0
    original = store._upload_part  # type: ignore[attr-defined]  # both backends name their blocking half so

    def counting_upload_part(*args: Any) -> PartInfo:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            time.sleep(0.02)
            result: PartInfo = original(*args)
            return result
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(store, "_upload_part", counting_upload_part)
    infos = await asyncio.gather(*(store.upload_part(key, handle, n, random_bytes(1000, seed=n)) for n in range(1, 13)))
    assert [i.number for i in infos] == list(range(1, 13))
    assert 1 < peak <= 4  # the stores' default max_uploads
    await store.abort_multipart(key, handle)


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_unsafe_keys_are_rejected_by_every_multipart_method(store: ObjectStore, key: str) -> None:
    handle = uuid.uuid4().hex
    with pytest.raises(InvalidArgument):
        await store.create_multipart(key, content_type=CSV)
    with pytest.raises(InvalidArgument):
        await store.upload_part(key, handle, 1, b"data")
    with pytest.raises(InvalidArgument):
        await store.complete_multipart(key, handle, [PartInfo(1, 4, md5_hex(b"data"))])
    with pytest.raises(InvalidArgument):
        await store.abort_multipart(key, handle)


async def test_ensure_ready_is_idempotent(store: ObjectStore) -> None:
    await store.ensure_ready()
    key = new_key()
    await put_bytes(store, key, b"kept")
    await store.ensure_ready()
    assert await read_all(store, key) == b"kept"


# --- The reader-size rule (PITFALLS.md: minio's put_object is quadratic on short reads) ---------------


async def test_pipe_read_returns_exactly_the_size_asked_for() -> None:
    data = random_bytes(MiB + 100, seed=20)
    pipe = ChunkPipe(asyncio.get_running_loop(), max_chunks=4)

    async def feed() -> None:
        async for chunk in chunks_of(data, 64 * 1024):
            await pipe.put(chunk)
        await pipe.finish()

    feeder = asyncio.create_task(feed())
    reads = await asyncio.to_thread(lambda: [pipe.read(300_000) for _ in range(5)])
    await feeder
    assert [len(r) for r in reads] == [300_000, 300_000, 300_000, MiB + 100 - 900_000, 0]
    assert b"".join(reads) == data
    assert pipe.size == len(data)
    assert pipe.sha256_hex == hashlib.sha256(data).hexdigest()


@pytest.fixture
async def s3_store(s3: S3Endpoint, s3_bucket: str) -> AsyncIterator[S3ObjectStore]:
    async with make_s3_store(s3, s3_bucket) as store:
        await store.ensure_ready()
        yield store


async def test_s3_upload_from_small_chunks_gets_one_full_read_per_part(
    s3_store: S3ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = s3_store
    calls: list[tuple[int, int]] = []
    original = ChunkPipe.read

    def recording_read(self: ChunkPipe, size: int = -1) -> bytes:
        data = original(self, size)
        calls.append((size, len(data)))
        return data

    monkeypatch.setattr(ChunkPipe, "read", recording_read)
    data = random_bytes(2 * MIN_PART + 1000, seed=21)
    info = await store.put_stream(key := new_key(), chunks_of(data, 16 * 1024), content_type=CSV, part_size=MIN_PART)

    assert info.sha256 == hashlib.sha256(data).hexdigest()
    assert await read_all(store, key) == data
    # 640 small chunks came in, yet minio needed one read per part: every read was answered in full
    # until the stream ran out (a short read, then minio's read that sees the end).
    assert calls[:2] == [(MIN_PART + 1, MIN_PART + 1), (MIN_PART, MIN_PART)]
    assert calls[2:] == [(MIN_PART, 999), (MIN_PART - 999, 0)]


# --- Backend-specific behaviour ------------------------------------------------------------------


async def test_s3_unreachable_endpoint_is_unavailable_quickly() -> None:
    async with S3ObjectStore(
        endpoint=f"127.0.0.1:{free_port()}", access_key="k", secret_key="s", bucket="nowhere", connect_timeout=1
    ) as store:
        started = time.monotonic()
        with pytest.raises(Unavailable) as exc:
            await store.ensure_ready()
        assert exc.value.reason == "OBJECT_STORE_UNREACHABLE"
        with pytest.raises(Unavailable):
            await store.stat(new_key())
        assert time.monotonic() - started < 5


async def test_s3_wrong_credentials_are_unavailable_not_not_found(s3: S3Endpoint, s3_bucket: str) -> None:
    if not s3.access_key:
        pytest.skip("the endpoint under test does not check credentials")
    async with S3ObjectStore(
        endpoint=s3.endpoint, access_key=s3.access_key, secret_key="wrong" + s3.secret_key, bucket=s3_bucket
    ) as store:
        with pytest.raises(Unavailable) as exc:
            await store.ensure_ready()
        assert exc.value.reason == "OBJECT_STORE_ACCESS_DENIED"


async def test_s3_object_written_by_another_client_has_no_sha256(s3_store: S3ObjectStore, s3_client: Minio) -> None:
    key = new_key()
    await asyncio.to_thread(s3_client.put_object, s3_store.bucket, key, io.BytesIO(b"abc"), 3)
    info = await s3_store.stat(key)
    assert (info.size, info.sha256, info.content_type) == (3, None, "application/octet-stream")


async def test_local_handles_never_name_paths(tmp_path: Path) -> None:
    root = tmp_path / "root"
    async with LocalObjectStore(root) as store:
        await store.ensure_ready()
        key = new_key()
        (tmp_path / "upload.json").write_text(json.dumps({"key": key, "content_type": CSV}))
        for handle in ("../..", "../../..", "/tmp", "..", "."):
            with pytest.raises(NotFound):
                await store.upload_part(key, handle, 1, b"data")
            await store.abort_multipart(key, handle)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["root", "upload.json"]
    assert _leftover_files(store) == []


async def test_local_abort_interrupted_after_the_rename_is_swept_at_start_up(tmp_path: Path) -> None:
    async with LocalObjectStore(tmp_path) as store:
        await store.ensure_ready()
        key = new_key()
        handle = await store.create_multipart(key, content_type=CSV)
        await store.upload_part(key, handle, 1, b"data")
        # What a crash between the rename and the removal leaves.
        upload = tmp_path / ".multipart" / handle
        upload.rename(upload.with_name(f"{handle}.{uuid.uuid4().hex}.deleted"))
        with pytest.raises(NotFound):
            await store.upload_part(key, handle, 2, b"more")
        await store.ensure_ready()
        assert list((tmp_path / ".multipart").iterdir()) == []


async def test_local_sidecar_that_does_not_match_the_file_is_ignored(tmp_path: Path) -> None:
    async with LocalObjectStore(tmp_path) as store:
        await store.ensure_ready()
        key = new_key()
        await put_bytes(store, key, b"original")
        # What a crash between the sidecar's and the data file's rename leaves: a new file, an old sidecar.
        path = tmp_path / key
        replacement = path.with_name("replacement")
        replacement.write_bytes(b"replaced")
        os.replace(replacement, path)
        info = await store.stat(key)
        assert (info.size, info.sha256) == (8, None)


# --- The local store's parts placed in place -----------------------------------------------------


async def _placed_upload(store: LocalObjectStore, key: str, parts: list[bytes]) -> tuple[str, list[PartInfo]]:
    handle = await store.create_multipart(key, content_type=CSV, part_size=MIN_PART_SIZE)
    infos = await asyncio.gather(*(store.upload_part(key, handle, n, data) for n, data in enumerate(parts, start=1)))
    return handle, list(infos)


async def test_local_placed_parts_become_the_object_without_a_copy(tmp_path: Path) -> None:
    parts = [random_bytes(MIN_PART_SIZE, seed=50), random_bytes(MIN_PART_SIZE, seed=51), random_bytes(999, seed=52)]
    key = new_key()
    async with LocalObjectStore(tmp_path) as store:
        handle, infos = await _placed_upload(store, key, parts)
        data_file = tmp_path / ".multipart" / handle / "data"
        inode = data_file.stat().st_ino
        assert not list(data_file.parent.glob("*.part"))  # nothing was written twice

        info = await store.complete_multipart(key, handle, infos)

        assert info.size == sum(map(len, parts))
        assert (tmp_path / key).stat().st_ino == inode  # renamed, not copied
        assert await read_all(store, key) == b"".join(parts)
        assert list((tmp_path / ".multipart").iterdir()) == []


async def test_local_placed_parts_beyond_the_listed_ones_are_cut_off(tmp_path: Path) -> None:
    parts = [random_bytes(MIN_PART_SIZE, seed=53), random_bytes(MIN_PART_SIZE, seed=54), random_bytes(10, seed=55)]
    key = new_key()
    async with LocalObjectStore(tmp_path) as store:
        handle, infos = await _placed_upload(store, key, parts)
        info = await store.complete_multipart(key, handle, infos[:2])
        assert info.size == 2 * MIN_PART_SIZE
        assert await read_all(store, key) == parts[0] + parts[1]


async def test_local_placed_parts_with_a_gap_are_copied_in_order(tmp_path: Path) -> None:
    parts = [random_bytes(MIN_PART_SIZE, seed=56), random_bytes(MIN_PART_SIZE, seed=57), random_bytes(77, seed=58)]
    key = new_key()
    async with LocalObjectStore(tmp_path) as store:
        handle, infos = await _placed_upload(store, key, parts)
        info = await store.complete_multipart(key, handle, [infos[0], infos[2]])
        assert info.size == MIN_PART_SIZE + 77
        assert await read_all(store, key) == parts[0] + parts[2]


async def test_local_parts_placed_and_in_files_complete_together(tmp_path: Path) -> None:
    # Part 2 too big for the hint and part 1 uploaded twice: both go to files of their own.
    first, again = random_bytes(MIN_PART_SIZE, seed=59), random_bytes(MIN_PART_SIZE, seed=60)
    big, tail = random_bytes(MIN_PART_SIZE + 1, seed=61), random_bytes(5, seed=62)
    key = new_key()
    async with LocalObjectStore(tmp_path) as store:
        handle = await store.create_multipart(key, content_type=CSV, part_size=MIN_PART_SIZE)
        placed_first = await store.upload_part(key, handle, 1, first)
        replaced = await store.upload_part(key, handle, 1, again)
        two = await store.upload_part(key, handle, 2, big)
        three = await store.upload_part(key, handle, 3, tail)
        directory = tmp_path / ".multipart" / handle
        assert sorted(p.name.split(".")[0] for p in directory.glob("*.part")) == ["1", "2"]
        with pytest.raises(FailedPrecondition):
            await store.complete_multipart(key, handle, [PartInfo(1, MIN_PART_SIZE - 1, placed_first.etag)])

        info = await store.complete_multipart(key, handle, [replaced, two, three])
        assert info.size == len(again) + len(big) + len(tail)
        assert await read_all(store, key) == again + big + tail


async def test_local_part_landing_after_the_completion_does_not_touch_the_object(tmp_path: Path) -> None:
    parts = [random_bytes(MIN_PART_SIZE, seed=63), random_bytes(100, seed=64)]
    key = new_key()
    async with LocalObjectStore(tmp_path) as store:
        handle, infos = await _placed_upload(store, key, parts)
        late = store._open_upload(key, handle)  # a part upload that read the record just before the completion
        await store.complete_multipart(key, handle, infos)

        with pytest.raises(FileNotFoundError):
            late.place(3, md5_hex(b"late"), b"late")
        with pytest.raises(NotFound):
            await store.upload_part(key, handle, 3, b"late")
        assert await read_all(store, key) == b"".join(parts)


async def test_local_completion_interrupted_after_the_rename_completes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = [random_bytes(MIN_PART_SIZE, seed=65), random_bytes(100, seed=66)]
    key = new_key()
    async with LocalObjectStore(tmp_path) as store:
        handle, infos = await _placed_upload(store, key, parts)
        with monkeypatch.context() as patch:
            patch.setattr(LocalObjectStore, "_remove_upload", staticmethod(lambda directory: None))
            first = await store.complete_multipart(key, handle, infos)
        assert (tmp_path / ".multipart" / handle / "upload.json").exists()  # the "crash" left the upload

        assert await store.complete_multipart(key, handle, infos) == first
        assert list((tmp_path / ".multipart").iterdir()) == []
        with pytest.raises(NotFound):
            await store.complete_multipart(key, handle, [infos[0], PartInfo(2, 101, infos[1].etag)])
        assert await read_all(store, key) == b"".join(parts)


def _refuse_direct_open(real: Any) -> Any:
    def fake_open(path: Any, flags: int, *args: Any) -> int:
        if flags & getattr(os, "O_DIRECT", 0):
            raise OSError(errno.EINVAL, "O_DIRECT refused")
        return int(real(path, flags, *args))

    return fake_open


def _refuse_direct_write(real_open: Any, real_pwrite: Any) -> tuple[Any, Any]:
    direct: set[int] = set()

    def fake_open(path: Any, flags: int, *args: Any) -> int:
        fd = int(real_open(path, flags, *args))
        if flags & getattr(os, "O_DIRECT", 0):
            direct.add(fd)
        return fd

    def fake_pwrite(fd: int, data: Any, offset: int) -> int:
        if fd in direct:
            direct.discard(fd)
            raise OSError(errno.EINVAL, "direct write refused")
        return int(real_pwrite(fd, data, offset))

    return fake_open, fake_pwrite


@pytest.mark.parametrize("way", ["direct", "open refused", "write refused", "unaligned hint"])
async def test_local_placed_parts_are_written_directly_or_through_the_page_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    # Parts larger than the staging buffer (4 MiB) and a last part that is not a multiple of the alignment.
    part_size = MIN_PART_SIZE + (1 if way == "unaligned hint" else 0)
    parts = [random_bytes(part_size, seed=67), random_bytes(part_size, seed=68), random_bytes(4097, seed=69)]
    calls: list[bool] = []
    real_direct = local_module._direct_write

    def spied_direct(*args: Any) -> bool:
        calls.append(real_direct(*args))
        return calls[-1]

    monkeypatch.setattr(local_module, "_direct_write", spied_direct)
    if way == "open refused":
        monkeypatch.setattr(os, "open", _refuse_direct_open(os.open))
    elif way == "write refused":
        fake_open, fake_pwrite = _refuse_direct_write(os.open, os.pwrite)
        monkeypatch.setattr(os, "open", fake_open)
        monkeypatch.setattr(os, "pwrite", fake_pwrite)
    key = new_key()
    async with LocalObjectStore(tmp_path) as store:
        handle = await store.create_multipart(key, content_type=CSV, part_size=part_size)
        infos = [await store.upload_part(key, handle, n, data) for n, data in enumerate(parts, start=1)]
        inode = (tmp_path / ".multipart" / handle / "data").stat().st_ino
        info = await store.complete_multipart(key, handle, infos)

        assert calls == ([] if way == "unaligned hint" else [way == "direct"] * 3)
        assert info.size == sum(map(len, parts))
        assert (tmp_path / key).stat().st_ino == inode  # still no copy
        assert await read_all(store, key) == b"".join(parts)


@pytest.mark.parametrize("part_size", [0, -1, 5 * 1024 * MiB + 1])
async def test_a_part_size_hint_out_of_range_is_invalid(store: ObjectStore, part_size: int) -> None:
    with pytest.raises(InvalidArgument):
        await store.create_multipart(new_key(), content_type=CSV, part_size=part_size)
