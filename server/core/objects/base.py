"""The object store interface that uploads and exports are written through.

Keys are chosen by datamill (`tenant/exports/<uuid>.csv`), but every backend
still validates them with `check_key`, so that no key can name a path outside
the local store's root.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self

from server.core.errors import InvalidArgument

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator
    from datetime import timedelta

MiB = 1024 * 1024
#: Multipart part size: 16 MiB parts reach full throughput, and memory stays a few parts per upload.
DEFAULT_PART_SIZE = 16 * MiB
#: The largest chunk `open_range` yields (a good gRPC message size, see PITFALLS.md).
READ_CHUNK_SIZE = 1 * MiB
#: S3's own limit on key length, applied to every backend so that keys stay portable.
MAX_KEY_BYTES = 1024
SHA256_HEX_LENGTH = 64


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int
    #: Hex SHA-256 of the content; None when the store has no record of it.
    sha256: str | None
    content_type: str


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


class ObjectStore(ABC):
    """Objects addressed by key, written once as a stream and read back by range.

    Errors: `InvalidArgument` for a bad key or range, `NotFound` for a missing
    object, `OutOfRange` for an offset past the end, `Unavailable` when the
    backend cannot be reached. Use as `async with store:` or call `close()`.
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
    async def close(self) -> None:
        """Release threads and connections. Uploads and reads must have ended."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
