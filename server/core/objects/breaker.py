"""A circuit breaker in front of an object store, so a dead S3 endpoint is not hammered.

After `failures` calls in a row fail with Unavailable, the circuit opens: every
call fails at once with Unavailable (reason OBJECT_STORE_CIRCUIT_OPEN, with
the time left in RetryInfo) instead of waiting for timeouts. After
`reset_seconds` one call at a time is let through as a trial (half-open): its
success closes the circuit, its failure opens it again. The server's health
check (`ensure_ready`) is such a call, so health reports the open circuit and
notices first when the endpoint is back.

Written here rather than taken from a library: the kept ones (circuitbreaker,
aiobreaker) count every exception, while only Unavailable means the endpoint is
down (NotFound or a bad part list are answers), and this is 80 lines.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from datetime import timedelta
from enum import StrEnum
from typing import TypeVar

import structlog

from server.core.errors import Unavailable
from server.core.objects.base import DEFAULT_PART_SIZE, ObjectInfo, ObjectStore, PartInfo

log = structlog.get_logger(__name__)
T = TypeVar("T")


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(self, *, failures: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold, self._reset, self._clock = failures, reset_seconds, clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> CircuitState:
        if self._opened_at is None:
            return CircuitState.CLOSED
        return CircuitState.HALF_OPEN if self._clock() - self._opened_at >= self._reset else CircuitState.OPEN

    async def call(self, action: Callable[[], Awaitable[T]]) -> T:
        trial = self._admit()
        try:
            result = await action()
        except Unavailable:
            self._failed(trial)
            raise
        except BaseException:
            if trial:
                self._trial_running = False
            raise
        self._succeeded()
        return result

    def _admit(self) -> bool:
        """Whether this call is the half-open trial; raises Unavailable while the circuit is open."""
        state = self.state
        if state is CircuitState.CLOSED:
            return False
        if state is CircuitState.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return True
        assert self._opened_at is not None
        wait = max(self._reset - (self._clock() - self._opened_at), 0.1)
        raise Unavailable(
            f"the object store is unavailable (circuit open after {self._threshold} failures in a row)",
            reason="OBJECT_STORE_CIRCUIT_OPEN",
            retry_after=wait,
        )

    def _failed(self, trial: bool) -> None:
        self._trial_running = False
        self._failures += 1
        if trial or (self._opened_at is None and self._failures >= self._threshold):
            if self._opened_at is None:
                log.warning("object_store_circuit_opened", failures=self._failures)
            self._opened_at = self._clock()

    def _succeeded(self) -> None:
        if self._opened_at is not None:
            log.info("object_store_circuit_closed")
        self._failures, self._opened_at, self._trial_running = 0, None, False


class GuardedObjectStore(ObjectStore):
    """An ObjectStore whose calls go through a CircuitBreaker (presigning needs no network and is not guarded)."""

    def __init__(self, inner: ObjectStore, breaker: CircuitBreaker) -> None:
        self.inner, self.breaker = inner, breaker

    async def ensure_ready(self) -> None:
        await self.breaker.call(self.inner.ensure_ready)

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, content_type: str, part_size: int = DEFAULT_PART_SIZE
    ) -> ObjectInfo:
        return await self.breaker.call(
            lambda: self.inner.put_stream(key, chunks, content_type=content_type, part_size=part_size)
        )

    async def open_range(self, key: str, offset: int = 0, length: int | None = None) -> AsyncGenerator[bytes, None]:
        stream = self.inner.open_range(key, offset, length)
        try:
            first = await self.breaker.call(lambda: anext(stream, None))
            if first is None:
                return
            yield first
            async for chunk in stream:
                yield chunk
        finally:
            await stream.aclose()

    async def stat(self, key: str) -> ObjectInfo:
        return await self.breaker.call(lambda: self.inner.stat(key))

    async def delete(self, key: str) -> None:
        await self.breaker.call(lambda: self.inner.delete(key))

    async def presigned_get_url(self, key: str, expires: timedelta) -> str | None:
        return await self.inner.presigned_get_url(key, expires)

    async def create_multipart(self, key: str, *, content_type: str, part_size: int | None = None) -> str:
        return await self.breaker.call(
            lambda: self.inner.create_multipart(key, content_type=content_type, part_size=part_size)
        )

    async def upload_part(self, key: str, handle: str, number: int, data: bytes | memoryview) -> PartInfo:
        return await self.breaker.call(lambda: self.inner.upload_part(key, handle, number, data))

    async def complete_multipart(self, key: str, handle: str, parts: Sequence[PartInfo]) -> ObjectInfo:
        return await self.breaker.call(lambda: self.inner.complete_multipart(key, handle, parts))

    async def abort_multipart(self, key: str, handle: str) -> None:
        await self.breaker.call(lambda: self.inner.abort_multipart(key, handle))

    async def close(self) -> None:
        await self.inner.close()
