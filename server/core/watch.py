"""WatchSession: many job subscriptions multiplexed on one stream. Transport-free.

For each subscription the session registers a live inbox with the EventHub
*before* replaying the stored events after the cursor, then drains the inbox.
Anything the inbox holds that replay already sent is dropped by sequence; a
gap or a RESYNC marker sends it back to the database from its cursor. So a
change that lands between replay and live is delivered exactly once, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import structlog

from server.core.errors import DatamillError, InvalidArgument
from server.core.events import EventHub, Inbox, Resync
from server.core.models import EventRow
from server.core.store import JobStore

log = structlog.get_logger(__name__)


class EndReason(StrEnum):
    TERMINAL = "TERMINAL"
    UNSUBSCRIBED = "UNSUBSCRIBED"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class Subscribed:
    job_id: str


@dataclass(frozen=True, slots=True)
class Ended:
    job_id: str
    reason: EndReason
    error: DatamillError | None = None


@dataclass(frozen=True, slots=True)
class Keepalive:
    time: datetime


WatchMessage = EventRow | Subscribed | Ended | Keepalive


class WatchSession:
    def __init__(
        self,
        store: JobStore,
        hub: EventHub,
        tenant: str,
        *,
        keepalive_seconds: float,
        max_subscriptions: int = 1000,
        buffer: int = 256,
    ) -> None:
        self._store = store
        self._hub = hub
        self._tenant = tenant
        self._keepalive = keepalive_seconds
        self._max_subscriptions = max_subscriptions
        # Bounded: a client that stops reading slows its own subscriptions,
        # whose inboxes then overflow into resyncs; the server's memory stays flat.
        self._out: asyncio.Queue[WatchMessage] = asyncio.Queue(maxsize=buffer)
        self._follows: dict[str, asyncio.Task[None]] = {}
        self._input_done = False
        self._changed = asyncio.Event()

    async def subscribe(self, job_id: str, after_sequence: int) -> None:
        try:
            parsed = uuid.UUID(job_id)
        except ValueError:
            await self._end(job_id, EndReason.ERROR, InvalidArgument.single("subscribe.job_id", "must be a UUID"))
            return
        if after_sequence < 0:
            err = InvalidArgument.single("subscribe.after_sequence", "must be >= 0")
            await self._end(job_id, EndReason.ERROR, err)
            return
        await self._stop_follow(job_id)
        if len(self._follows) >= self._max_subscriptions:
            err = InvalidArgument.single("subscribe", f"at most {self._max_subscriptions} subscriptions per stream")
            await self._end(job_id, EndReason.ERROR, err)
            return
        self._follows[job_id] = asyncio.create_task(
            self._follow(job_id, parsed, after_sequence), name=f"watch-{job_id}"
        )

    async def unsubscribe(self, job_id: str) -> None:
        if await self._stop_follow(job_id):
            await self._end(job_id, EndReason.UNSUBSCRIBED)

    def input_finished(self) -> None:
        """The client half-closed: end the stream once the last subscription ends."""
        self._input_done = True
        self._changed.set()

    async def messages(self) -> AsyncIterator[WatchMessage]:
        """Messages for the client, with keepalives while idle."""
        while True:
            if self._input_done and not self._follows and self._out.empty():
                return
            getter = asyncio.ensure_future(self._out.get())
            changed = asyncio.ensure_future(self._changed.wait())
            try:
                done, _ = await asyncio.wait(
                    {getter, changed}, timeout=self._keepalive, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                changed.cancel()
                if not getter.done():
                    getter.cancel()
            self._changed.clear()
            if getter in done:
                yield getter.result()
            elif not done:
                yield Keepalive(datetime.now(UTC))

    async def close(self) -> None:
        tasks = list(self._follows.values())
        self._follows.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _stop_follow(self, job_id: str) -> bool:
        task = self._follows.pop(job_id, None)
        if task is None:
            return False
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return True

    async def _end(self, job_id: str, reason: EndReason, error: DatamillError | None = None) -> None:
        await self._out.put(Ended(job_id, reason, error))

    async def _follow(self, job_id: str, parsed: uuid.UUID, after: int) -> None:
        inbox = Inbox()
        self._hub.subscribe(parsed, inbox)
        try:
            job = await self._store.get_job(self._tenant, parsed)
            await self._out.put(Subscribed(job_id))
            cursor = after
            cursor, finished = await self._replay(parsed, cursor)
            if not finished and job.state.terminal and cursor >= job.event_seq:
                finished = True  # the cursor is already past the terminal event
            while not finished:
                item = await inbox.get()
                if isinstance(item, Resync) or item.seq > cursor + 1:
                    cursor, finished = await self._replay(parsed, cursor)
                elif item.seq == cursor + 1:
                    await self._out.put(item)
                    cursor, finished = item.seq, item.terminal
            await self._end(job_id, EndReason.TERMINAL)
        except DatamillError as exc:
            await self._end(job_id, EndReason.ERROR, exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("watch_follow_failed", job_id=job_id)
            await self._end(job_id, EndReason.ERROR, DatamillError("internal error while watching"))
        finally:
            self._hub.unsubscribe(parsed, inbox)
            if self._follows.get(job_id) is asyncio.current_task():
                del self._follows[job_id]
            self._changed.set()

    async def _replay(self, job_id: uuid.UUID, cursor: int) -> tuple[int, bool]:
        while True:
            events = await self._store.events_after(job_id, cursor)
            for event in events:
                await self._out.put(event)
                cursor = event.seq
                if event.terminal:
                    return cursor, True
            if len(events) < 500:
                return cursor, False
