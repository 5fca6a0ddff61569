"""Hands an async stream of chunks to one blocking consumer thread, with backpressure.

The backends write with blocking calls (minio's `put_object`, file writes), so
`put_stream` runs the writer in a thread and feeds it through a bounded
`asyncio.Queue`: a slow store makes the producer wait, and gRPC flow control
passes that wait on to the client. Memory is the queue plus what the writer
holds (one part for S3), whatever the object's size. The SHA-256 and size are
computed in the consumer thread, off the event loop.

`run_in_slot` runs one blocking write (a part of a multipart upload) under the
same bound on concurrent uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import hashlib
import io
import sys
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from concurrent.futures import Executor

T = TypeVar("T")

#: Chunks buffered between producer and consumer (1 MiB chunks make this 8 MiB).
DEFAULT_MAX_CHUNKS = 8


class UploadAborted(Exception):
    """Raised in the consumer thread when the producer gave up, so the writer rolls back.

    minio's `put_object` aborts the multipart upload when its reader raises.
    """


class ConsumerGone(Exception):
    """The consumer thread stopped before the end of the stream; its own error says why."""


class _Signal(enum.Enum):
    EOF = enum.auto()
    ABORT = enum.auto()


class ChunkPipe:
    """A one-producer, one-consumer channel from the event loop to a thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, *, max_chunks: int = DEFAULT_MAX_CHUNKS) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[bytes | _Signal] = asyncio.Queue(max_chunks)
        self._consumer_gone = False
        # Below: touched only by the consumer thread.
        self._carry = b""  # the part of a chunk that the last read() did not need
        self._ended = False
        self._aborted = False
        self._sha256 = hashlib.sha256()
        self.size = 0

    # --- producer side (event loop) ---

    async def put(self, chunk: bytes) -> None:
        if self._consumer_gone:
            raise ConsumerGone
        await self._queue.put(chunk)

    async def finish(self) -> None:
        if self._consumer_gone:
            raise ConsumerGone
        await self._queue.put(_Signal.EOF)

    def abort(self) -> None:
        """Make the consumer's next read raise UploadAborted (also when it is blocked in one)."""
        self._drain()
        self._queue.put_nowait(_Signal.ABORT)

    def _drain(self) -> None:
        # Emptying the queue also wakes a producer blocked in put().
        while not self._queue.empty():
            self._queue.get_nowait()

    def _on_consumer_exit(self) -> None:
        self._consumer_gone = True
        self._drain()

    # --- consumer side (worker thread) ---

    @property
    def sha256_hex(self) -> str:
        return self._sha256.hexdigest()

    def next_chunk(self) -> bytes | None:
        """The next chunk, or None at the end of the stream."""
        if self._aborted:
            raise UploadAborted
        if self._ended:
            return None
        item = asyncio.run_coroutine_threadsafe(self._queue.get(), self._loop).result()
        if item is _Signal.ABORT:
            self._aborted = True
            raise UploadAborted
        if item is _Signal.EOF:
            self._ended = True
            return None
        self._sha256.update(item)
        self.size += len(item)
        return item

    def read(self, size: int = -1) -> bytes:
        """Return exactly `size` bytes, fewer only at the end of the stream.

        minio builds each part with `bytes +=` over read() results, so short
        reads make an upload quadratic in the part size (PITFALLS.md).
        """
        if size < 0:
            size = sys.maxsize
        # Each chunk is copied into the buffer and dropped at once, so a read
        # holds one part, not a part's worth of chunks plus their join; and
        # getvalue() hands over the buffer without another copy.
        out = io.BytesIO()
        room = size
        carry, self._carry = self._carry, b""
        while room:
            if not carry:
                chunk = self.next_chunk()
                if chunk is None:
                    break
                carry = chunk
            if len(carry) > room:
                self._carry = carry[room:]
                carry = carry[:room]
            out.write(carry)
            room -= len(carry)
            carry = b""
        return out.getvalue()

    def consumer_exited(self) -> None:
        """Call from the consumer thread when it stops, whether it finished or failed."""
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._on_consumer_exit)


async def pump(
    chunks: AsyncIterator[bytes],
    pipe: ChunkPipe,
    work: asyncio.Future[T],
    *,
    discard: Callable[[], Awaitable[None]],
) -> T:
    """Feed `chunks` into `pipe` while `work` consumes it in a thread; return `work`'s result.

    If the producer raises or this task is cancelled, the consumer is aborted
    and awaited before the exception propagates, so that it can roll back. If
    the consumer had already committed the object, `discard` removes it.
    """
    try:
        with contextlib.suppress(ConsumerGone):  # the consumer's own error comes out of `work` below
            async for chunk in chunks:
                if chunk:
                    await pipe.put(chunk)
            await pipe.finish()
        return await work
    except BaseException:
        pipe.abort()
        # A second cancellation only stops this wait; the aborted consumer still rolls back.
        with contextlib.suppress(BaseException):
            await asyncio.shield(work)
        if work.done() and not work.cancelled() and work.exception() is None:
            # Best effort: the original exception matters more than a failed clean-up.
            with contextlib.suppress(Exception):
                await discard()
        raise


async def run_in_slot(slots: asyncio.Semaphore, pool: Executor, fn: Callable[..., T], *args: Any) -> T:
    """Run the blocking `fn(*args)` in `pool` while holding one of `slots`, and return its result.

    A thread cannot be interrupted, so when the caller is cancelled the slot
    stays taken until `fn` returns: at most as many threads write as there are
    slots, and the rest of the pool stays free for reads.
    """
    async with slots:
        work = asyncio.get_running_loop().run_in_executor(pool, functools.partial(fn, *args))
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            # A second cancellation only stops this wait.
            with contextlib.suppress(BaseException):
                await asyncio.shield(work)
            raise
