"""Bounded memory (DESIGN.md): moving 200 MiB through a store raises peak RSS by far less than 200 MiB."""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import pytest

from server.core.objects import LocalObjectStore, ObjectStore, S3ObjectStore
from server.devstack import S3Endpoint

pytestmark = pytest.mark.integration

MiB = 1024 * 1024
TOTAL = 200 * MiB
CHUNK = 1 * MiB
PART = 16 * MiB
# Expected peak: the pipe's queue (8 chunks) plus about three copies of one part
# inside minio (reading, trimming, sending). A leak of the data would be >= 200 MiB.
MAX_GROWTH = 100 * MiB

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def reset_peak_rss() -> int:
    """Reset the kernel's high-water mark to the current RSS (Linux >= 4.0) and return that RSS."""
    _CLEAR_REFS.write_text("5")
    return _status_kib("VmRSS") * 1024


def peak_rss() -> int:
    return _status_kib("VmHWM") * 1024


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if not (_CLEAR_REFS.exists() and _STATUS.exists()):
        pytest.skip("peak RSS is measured through Linux /proc")
    backend: ObjectStore
    if request.param == "local":
        backend = LocalObjectStore(tmp_path / "objects")
    else:
        s3: S3Endpoint = request.getfixturevalue("s3")
        backend = S3ObjectStore(
            endpoint=s3.endpoint,
            access_key=s3.access_key,
            secret_key=s3.secret_key,
            bucket=request.getfixturevalue("s3_bucket"),
            region=s3.region,
            secure=s3.secure,
        )
    async with backend:
        await backend.ensure_ready()
        yield backend


async def test_200_mib_round_trip_keeps_peak_rss_growth_bounded(store: ObjectStore) -> None:
    rng = random.Random(42)
    sent = hashlib.sha256()

    async def generate() -> AsyncIterator[bytes]:
        for _ in range(TOTAL // CHUNK):
            # Random data, because SeaweedFS compresses repetitive content.
            block = rng.randbytes(CHUNK)
            sent.update(block)
            yield block

    key = f"tenant-a/uploads/{uuid.uuid4()}.bin"
    baseline = reset_peak_rss()
    started = time.monotonic()
    info = await store.put_stream(key, generate(), content_type="application/octet-stream", part_size=PART)
    put_seconds = time.monotonic() - started
    put_growth = peak_rss() - baseline

    assert info.size == TOTAL
    assert info.sha256 == sent.hexdigest()
    assert put_growth < MAX_GROWTH, f"upload raised peak RSS by {put_growth / MiB:.0f} MiB"

    baseline = reset_peak_rss()
    started = time.monotonic()
    received = hashlib.sha256()
    size = 0
    async with aclosing(store.open_range(key)) as stream:
        async for chunk in stream:
            received.update(chunk)
            size += len(chunk)
    get_seconds = time.monotonic() - started
    get_growth = peak_rss() - baseline

    assert (size, received.hexdigest()) == (TOTAL, info.sha256)
    assert get_growth < MAX_GROWTH, f"download raised peak RSS by {get_growth / MiB:.0f} MiB"
    print(
        f"{type(store).__name__}: put {TOTAL / MiB / put_seconds:.0f} MiB/s (+{put_growth / MiB:.0f} MiB peak), "
        f"get {TOTAL / MiB / get_seconds:.0f} MiB/s (+{get_growth / MiB:.0f} MiB peak)"
    )
    await store.delete(key)
