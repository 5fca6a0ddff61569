"""EventHub: one LISTEN connection per process, fanning job events out to watchers.

PITFALLS.md: LISTEN needs a dedicated autocommit connection, not a pooled one,
and a reconnect loop. Notifications sent while the connection was down are
lost, so after every (re)connect each inbox gets RESYNC and its watcher
re-reads the database from its cursor. A slow watcher never blocks the hub:
an inbox that overflows is emptied and marked for resync instead.
"""

from __future__ import annotations

import asyncio
import collections
import json
import uuid
from typing import Final

import psycopg
import structlog

from server.core.models import EventRow

log = structlog.get_logger(__name__)

CHANNEL: Final = "datamill_job_events"


class Resync:
    """Marker: events may have been missed; re-read the log from the cursor."""


RESYNC: Final = Resync()


class Inbox:
    """Bounded per-watcher buffer of live events for one job."""

    def __init__(self, maxsize: int = 256) -> None:
        self._items: collections.deque[EventRow] = collections.deque()
        self._maxsize = maxsize
        self._wakeup = asyncio.Event()
        self._resync = False

    def push(self, item: EventRow | Resync) -> None:
        if isinstance(item, Resync) or len(self._items) >= self._maxsize:
            self._items.clear()
            self._resync = True
        else:
            self._items.append(item)
        self._wakeup.set()

    async def get(self) -> EventRow | Resync:
        while not self._items and not self._resync:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._resync:
            self._resync = False
            return RESYNC
        return self._items.popleft()


class EventHub:
    def __init__(self, conninfo: str, *, reconnect_delay: float = 0.5) -> None:
        self._conninfo = conninfo
        self._reconnect_delay = reconnect_delay
        self._inboxes: dict[uuid.UUID, set[Inbox]] = collections.defaultdict(set)
        self.connected = asyncio.Event()

    def subscribe(self, job_id: uuid.UUID, inbox: Inbox) -> None:
        self._inboxes[job_id].add(inbox)

    def unsubscribe(self, job_id: uuid.UUID, inbox: Inbox) -> None:
        inboxes = self._inboxes.get(job_id)
        if inboxes is not None:
            inboxes.discard(inbox)
            if not inboxes:
                del self._inboxes[job_id]

    @property
    def watcher_count(self) -> int:
        return sum(len(s) for s in self._inboxes.values())

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after any connection failure."""
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.connected.set()
                    log.info("event_listener_connected")
                    self._broadcast_resync()
                    async for note in conn.notifies():
                        self._deliver(note.payload)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if self.connected.is_set():
                    log.warning("event_listener_disconnected", error=str(exc))
                self.connected.clear()
                await asyncio.sleep(self._reconnect_delay)

    def _broadcast_resync(self) -> None:
        for inboxes in self._inboxes.values():
            for inbox in inboxes:
                inbox.push(RESYNC)

    def _deliver(self, payload: str) -> None:
        if not self._inboxes:  # nobody watches any job here: every Generate's NOTIFY would be parsed for nothing
            return
        try:
            event = EventRow.from_row(json.loads(payload))
        except (ValueError, KeyError) as exc:
            log.error("bad_event_payload", error=str(exc), payload=payload[:200])
            return
        for inbox in self._inboxes.get(event.job_id, ()):
            inbox.push(event)
