"""Object store in a local directory, for the embedded single-machine mode.

The object `a/b.csv` is the file `ROOT/a/b.csv`. Its SHA-256 and content type
live in a JSON sidecar, `ROOT/a/.b.csv.meta`, that also records the inode and
size of the data file it describes, so a sidecar left over from a crash is
recognised as stale (the SHA-256 is then reported as unknown) instead of being
believed. A write goes to `ROOT/a/.b.csv.<random>.tmp`, is fsynced, and is
renamed into place. No key segment may start with ".", so these names never
collide with objects.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import os
import stat as stat_module
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from server.core.errors import DatamillError, InvalidArgument, NotFound, OutOfRange, ResourceExhausted, Unavailable
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
    from collections.abc import AsyncGenerator, AsyncIterator, Callable
    from datetime import timedelta

T = TypeVar("T")

_DEFAULT_CONTENT_TYPE = "application/octet-stream"


def _os_error(exc: OSError, action: str) -> DatamillError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ResourceExhausted(f"local object store is full ({action})", reason="OBJECT_STORE_FULL")
    return Unavailable(f"local object store failed to {action}: {exc.strerror}", reason="OBJECT_STORE_IO")


def _meta_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.meta")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalObjectStore(ObjectStore):
    """Objects as files under `root`. Blocking file calls run in a small thread pool of its own."""

    def __init__(self, root: Path, *, max_uploads: int = 4, max_workers: int = 8) -> None:
        if max_workers <= max_uploads:
            raise ValueError("max_workers must exceed max_uploads so that reads never wait for uploads")
        self.root = Path(root).expanduser().absolute()
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="local-objects")
        # An upload holds a thread for its whole duration.
        self._uploads = asyncio.Semaphore(max_uploads)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key).split("/"))

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    async def ensure_ready(self) -> None:
        await self._run(self._ensure_root)

    def _ensure_root(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _os_error(exc, f"create {self.root}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise Unavailable(f"local object store {self.root} is not writable", reason="OBJECT_STORE_IO")

    async def put_stream(
        self,
        key: str,
        chunks: AsyncIterator[bytes],
        *,
        content_type: str,
        part_size: int = DEFAULT_PART_SIZE,
    ) -> ObjectInfo:
        path = self._path(key)
        if part_size <= 0:
            raise InvalidArgument.single("part_size", "must be positive")
        async with self._uploads:
            loop = asyncio.get_running_loop()
            pipe = ChunkPipe(loop)
            work = loop.run_in_executor(self._pool, self._write, path, key, pipe, content_type)
            return await pump(chunks, pipe, work, discard=functools.partial(self.delete, key))

    def _write(self, path: Path, key: str, pipe: ChunkPipe, content_type: str) -> ObjectInfo:
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("xb") as out:
                while (chunk := pipe.next_chunk()) is not None:
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
                inode = os.fstat(out.fileno()).st_ino
            info = ObjectInfo(key=key, size=pipe.size, sha256=pipe.sha256_hex, content_type=content_type)
            self._write_meta(path, info, inode)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise _os_error(exc, f"write {key!r}") from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            pipe.consumer_exited()
        return info

    @staticmethod
    def _write_meta(path: Path, info: ObjectInfo, inode: int) -> None:
        meta = {"sha256": info.sha256, "content_type": info.content_type, "size": info.size, "inode": inode}
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            with tmp.open("x", encoding="utf-8") as out:
                json.dump(meta, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, _meta_path(path))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    async def open_range(self, key: str, offset: int = 0, length: int | None = None) -> AsyncGenerator[bytes, None]:
        path = self._path(key)
        check_range(offset, length)
        source = await self._run(self._open_at, path, key, offset)
        try:
            remaining = length
            while remaining is None or remaining > 0:
                size = READ_CHUNK_SIZE if remaining is None else min(READ_CHUNK_SIZE, remaining)
                data = await self._run(source.read, size)
                if not data:
                    return
                if remaining is not None:
                    remaining -= len(data)
                yield data
        finally:
            source.close()

    @staticmethod
    def _open_at(path: Path, key: str, offset: int) -> IO[bytes]:
        try:
            source = path.open("rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise NotFound("object", key) from exc
        except OSError as exc:
            raise _os_error(exc, f"read {key!r}") from exc
        try:
            size = os.fstat(source.fileno()).st_size
            if offset > size:
                raise OutOfRange(f"offset {offset} is beyond the end of object {key!r} ({size} bytes)")
            source.seek(offset)
        except BaseException:
            source.close()
            raise
        return source

    async def stat(self, key: str) -> ObjectInfo:
        path = self._path(key)
        return await self._run(self._stat, path, key)

    @staticmethod
    def _stat(path: Path, key: str) -> ObjectInfo:
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise NotFound("object", key) from exc
        except OSError as exc:
            raise _os_error(exc, f"stat {key!r}") from exc
        if not stat_module.S_ISREG(st.st_mode):
            raise NotFound("object", key)
        try:
            meta = json.loads(_meta_path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = None
        if isinstance(meta, dict) and meta.get("inode") == st.st_ino and meta.get("size") == st.st_size:
            return ObjectInfo(
                key=key,
                size=st.st_size,
                sha256=meta.get("sha256"),
                content_type=meta.get("content_type") or _DEFAULT_CONTENT_TYPE,
            )
        return ObjectInfo(key=key, size=st.st_size, sha256=None, content_type=_DEFAULT_CONTENT_TYPE)

    async def delete(self, key: str) -> None:
        path = self._path(key)
        await self._run(self._delete, path, key)

    @staticmethod
    def _delete(path: Path, key: str) -> None:
        for victim in (path, _meta_path(path)):
            try:
                victim.unlink()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                pass  # already gone, or a "directory" key that was never an object
            except OSError as exc:
                raise _os_error(exc, f"delete {key!r}") from exc

    async def presigned_get_url(self, key: str, expires: timedelta) -> str | None:
        check_key(key)
        return None

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, functools.partial(self._pool.shutdown, wait=True))
