"""The object store interface that uploads and exports are written through.

Keys are chosen by datamill (`tenant/exports/<uuid>.csv`), but every backend
still validates them with `check_key`, so that no key can name a path outside
the local store's root.

Besides `put_stream`, which writes a whole object in one call, the store offers
a resumable multipart upload (`create_multipart` ... `complete_multipart`),
addressed by an opaque handle that outlives the process, so that an upload
whose parts are recorded elsewhere can be finished by another server.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self

from server.core.errors import InvalidArgument

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Sequence
    from datetime import timedelta

MiB = 1024 * 1024
#: Multipart part size: 16 MiB parts reach full throughput, and memory stays a few parts per upload.
DEFAULT_PART_SIZE = 16 * MiB
#: The largest chunk `open_range` yields (a good gRPC message size, see PITFALLS.md).
READ_CHUNK_SIZE = 1 * MiB
#: S3's own limit on key length, applied to every backend so that keys stay portable.
MAX_KEY_BYTES = 1024
SHA256_HEX_LENGTH = 64
#: S3's rules for multipart uploads, enforced by every backend: every part but the last
#: must hold at least MIN_PART_SIZE bytes, and part numbers run from 1 to MAX_PARTS.
MIN_PART_SIZE = 5 * MiB
MAX_PART_SIZE = 5 * 1024 * MiB
MAX_PARTS = 10_000
#: Handles are opaque to callers, who may store them in a column of this width.
MAX_HANDLE_LENGTH = 1024


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    #: Hex SHA-256 of the content; None when the store has no record of it.
    sha256: str | None
    content_type: str


@dataclass(frozen=True, slots=True)
class PartInfo:
    """One stored part of a multipart upload, as `upload_part` returns it and `complete_multipart` takes it."""

    #: 1 to MAX_PARTS.
    number: int
    size: int
    #: The store's entity tag of this upload of the part, without quotes: 32 hex digits, opaque to callers. S3's is
    #: the part's MD5; the local store's is a random UUID per upload (hashing the bytes cost more CPU than writing
    #: them), so two uploads of the same bytes get different etags there.
    etag: str


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative `/`-separated name, else raise InvalidArgument.

    A segment may not start with "." ("..", ".", and names that the local
    backend keeps for its temporary and metadata files).
    """
    if not key:
        raise InvalidArgument.single("key", "must not be empty")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidArgument.single("key", f"must be at most {MAX_KEY_BYTES} bytes")
    if "\\" in key or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise InvalidArgument.single("key", "must not contain backslashes or control characters")
    if key.startswith("/"):
        raise InvalidArgument.single("key", "must be relative")
    for segment in key.split("/"):
        if not segment:
            raise InvalidArgument.single("key", "must not contain empty segments or end with '/'")
        if segment.startswith("."):
            raise InvalidArgument.single("key", "no segment may start with '.'")
    return key


def check_range(offset: int, length: int | None) -> None:
    if offset < 0:
        raise InvalidArgument.single("offset", "must not be negative")
    if length is not None and length < 0:
        raise InvalidArgument.single("length", "must not be negative")


def check_handle(handle: str) -> str:
    """Return `handle` if it could be one a store issued, else raise InvalidArgument.

    An empty handle must never reach S3: `uploadId=` would turn a part upload
    into a plain write of the object.
    """
    if not handle:
        raise InvalidArgument.single("handle", "must not be empty")
    if len(handle) > MAX_HANDLE_LENGTH or not handle.isascii() or not handle.isprintable() or " " in handle:
        raise InvalidArgument.single("handle", f"must be at most {MAX_HANDLE_LENGTH} printable ASCII characters")
    return handle


def check_part_number(number: int, field: str = "number") -> None:
    if not 1 <= number <= MAX_PARTS:
        raise InvalidArgument.single(field, f"must be between 1 and {MAX_PARTS}")


def check_part_size_hint(part_size: int | None) -> None:
    if part_size is not None and not 0 < part_size <= MAX_PART_SIZE:
        raise InvalidArgument.single("part_size", f"must be between 1 and {MAX_PART_SIZE} bytes")


def check_parts(parts: Sequence[PartInfo]) -> None:
    """Raise InvalidArgument unless `parts` could be assembled: what `complete_multipart` checks before any I/O."""
    if not parts:
        raise InvalidArgument.single("parts", "must not be empty")
    previous = 0
    for index, part in enumerate(parts):
        check_part_number(part.number, f"parts[{index}].number")
        if part.number <= previous:
            raise InvalidArgument.single(f"parts[{index}].number", "part numbers must be strictly ascending")
        previous = part.number
        if part.size < 0:
            raise InvalidArgument.single(f"parts[{index}].size", "must not be negative")
        if not part.etag:
            raise InvalidArgument.single(f"parts[{index}].etag", "must not be empty")
        if index < len(parts) - 1 and part.size < MIN_PART_SIZE:
            raise InvalidArgument.single(
                f"parts[{index}].size", f"every part but the last must be at least {MIN_PART_SIZE} bytes"
            )


def multipart_etag(parts: Sequence[PartInfo]) -> str | None:
    """The entity tag S3 gives the object assembled from `parts`: MD5 of the parts' binary etags, then `-<count>`.

    Both backends use it to recognise an object that a previous `complete_multipart`
    of the same parts produced. None if a part's etag is not hex.
    """
    digest = hashlib.md5(usedforsecurity=False)
    for part in parts:
        try:
            digest.update(bytes.fromhex(part.etag.strip('"')))
        except ValueError:
            return None
    return f"{digest.hexdigest()}-{len(parts)}"


class ObjectStore(ABC):
    """Objects addressed by key, written once as a stream and read back by range.

    Errors: `InvalidArgument` for a bad key, range or part list, `NotFound` for
    a missing object or multipart upload, `FailedPrecondition` for parts that
    do not match what was stored, `OutOfRange` for an offset past the end,
    `Unavailable` when the backend cannot be reached (`ResourceExhausted` when
    the local disk is full). Use as `async with store:` or call `close()`.
    """

    @abstractmethod
    async def ensure_ready(self) -> None:
        """Create the bucket or directory if missing; raise Unavailable if the backend is unreachable."""

    @abstractmethod
    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> ObjectInfo:
        """Store the chunks as `key` with memory bounded by `part_size`, and return its size and SHA-256.

        The object appears only when this returns. If it raises or is cancelled
        (or `chunks` raises), nothing is left behind: no object and no pending
        multipart upload. An existing object with the same key is replaced.
        """

    @abstractmethod
    def open_range(self, key: str, offset: int = 0, length: int | None = None) -> AsyncGenerator[bytes, None]:
        """Yield the bytes of `key` from `offset` (at most `length` of them) in chunks of at most 1 MiB.

        An async generator: NotFound and OutOfRange (offset beyond the size) are
        raised by the first iteration. Close it (`contextlib.aclosing`) if you stop early.
        """

    @abstractmethod
    async def stat(self, key: str) -> ObjectInfo:
        """Size, SHA-256 and content type of `key`; NotFound if it does not exist."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove `key`; deleting a missing key is not an error."""

    @abstractmethod
    async def presigned_get_url(self, key: str, expires: timedelta) -> str | None:
        """A URL that downloads `key` without credentials until `expires` passes; None if unsupported."""

    @abstractmethod
    async def create_multipart(self, key: str, *, content_type: str, part_size: int | None = None) -> str:
        """Start a multipart upload that will become `key`; return its handle.

        The handle is opaque, at most MAX_HANDLE_LENGTH characters, and stays
        valid across processes and restarts until the upload is completed or
        aborted (or the backend expires it). Nothing is visible at `key` until
        `complete_multipart`. Every later call must pass the same `key`: a
        handle used with another key is unknown (NotFound).

        `part_size` is a hint: the caller cuts every part but the last to
        exactly this size. A backend may lay the parts out for it (the local
        store writes them in place into the object-to-be); parts of any other
        size are still accepted, at the cost the backend has without the hint.
        InvalidArgument if it is given and not positive.
        """

    @abstractmethod
    async def upload_part(self, key: str, handle: str, number: int, data: bytes | memoryview) -> PartInfo:
        """Store `data` durably as part `number` of the upload and describe it.

        Uploading the same number again replaces the part (the caller completes
        with the PartInfo it got last). Parts may arrive in any order and
        concurrently. Any size is accepted here; sizes are checked by
        `complete_multipart`. InvalidArgument for a number outside 1..MAX_PARTS;
        NotFound if the handle is unknown (aborted, completed or expired).
        """

    @abstractmethod
    async def complete_multipart(self, key: str, handle: str, parts: Sequence[PartInfo]) -> ObjectInfo:
        """Assemble exactly `parts`, in this order, into `key`, which appears atomically; return its ObjectInfo.

        Stored parts that are not listed are discarded. The result has the
        size and content type; `sha256` may be None (the caller keeps its own hash).

        Errors: InvalidArgument if `parts` is empty, its numbers are not
        strictly ascending, or a part but the last is smaller than
        MIN_PART_SIZE (checked on the listed sizes, before any I/O);
        FailedPrecondition if a listed part was not stored with that size and
        etag; NotFound if the handle is unknown.

        Idempotent: when the handle is unknown because a previous call with
        these parts already succeeded (a server that crashed before recording
        the completion calls it again), the object's ObjectInfo is returned, as
        long as `key` holds exactly the sum of the parts' sizes and, where the
        backend keeps it, the entity tag that these parts produce. Keys must
        therefore not be reused across uploads.
        """

    @abstractmethod
    async def abort_multipart(self, key: str, handle: str) -> None:
        """Discard the upload and all its stored parts. An unknown handle is not an error (idempotent).

        Do not call it concurrently with `upload_part` of the same handle: a
        part that lands after the abort may be left behind.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release threads and connections. Uploads and reads must have ended."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
