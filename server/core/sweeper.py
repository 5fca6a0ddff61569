"""The sweeper: the reason a lost Redis message or a dead worker costs only time.

Each round it (1) requeues RUNNING jobs whose lease expired, with backoff, or
fails them after max_attempts, and (2) dispatches QUEUED jobs that are due and
were never handed off, or whose hand-off is older than `redispatch_after`.
It also (3) aborts uploads left unfinished past their TTL, in the object store
and in the database, and (4) removes the multipart uploads (or objects) of
export attempts that ended without success, when the attempt could not. And (5)
once per DATAMILL_RETENTION_INTERVAL_SECONDS, one replica sends the retention task.
Rows are taken with SKIP LOCKED, so any number of server replicas may sweep.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time

import structlog

from server.core import retention
from server.core.dispatch import Dispatcher
from server.core.errors import DatamillError
from server.core.exports import ExportStore
from server.core.objects import ObjectStore
from server.core.retry import backoff_seconds
from server.core.settings import Settings
from server.core.store import JobStore
from server.core.uploads import UploadStore

log = structlog.get_logger(__name__)

BATCH = 200


class Sweeper:
    def __init__(
        self,
        store: JobStore,
        dispatcher: Dispatcher,
        settings: Settings,
        *,
        uploads: UploadStore | None = None,
        exports: ExportStore | None = None,
        objects: ObjectStore | None = None,
    ) -> None:
        self._store = store
        self._uploads = uploads
        self._exports = exports
        self._objects = objects
        self._dispatcher = dispatcher
        self._settings = settings
        self._retention_checked = -math.inf
        self._backoff = functools.partial(
            backoff_seconds, base=settings.retry_backoff_base_seconds, cap=settings.retry_backoff_max_seconds
        )

    async def run(self, ready: asyncio.Event | None = None) -> None:
        """Sweep every interval until cancelled, starting once `ready` is set (the schema is migrated)."""
        if ready is not None:
            await ready.wait()
        while True:
            try:
                await self.sweep_once()
            except DatamillError as exc:  # database or queue down: try again next round
                log.warning("sweep_failed", error=str(exc))
            except Exception:
                log.exception("sweep_crashed")
            await asyncio.sleep(self._settings.sweep_interval_seconds)

    async def sweep_once(self) -> tuple[int, int]:
        """One round; returns (jobs requeued or failed, jobs dispatched)."""
        changed = await self._store.sweep_expired(limit=BATCH, backoff=self._backoff)
        for job in changed:
            log.warning("lease_expired", job_id=str(job.id), state=job.state.value, attempt=job.attempt)
        due = await self._store.due_for_dispatch(limit=BATCH, redispatch_after=self._settings.redispatch_after_seconds)
        for job_id in due:
            try:
                await self._dispatcher.dispatch(job_id)
            except Exception as exc:  # noqa: BLE001  # retried next round
                log.warning("redispatch_failed", job_id=str(job_id), error=str(exc))
                await self._store.mark_undispatched(job_id)
        if due:
            log.info("jobs_dispatched_by_sweeper", count=len(due))
        if self._uploads is not None and self._objects is not None:
            await self._uploads.expire(self._objects, limit=BATCH)
        if self._exports is not None and self._objects is not None:
            await self._exports.discard_abandoned(self._objects, limit=BATCH)
        await self._start_retention()
        return len(changed), len(due)

    async def _start_retention(self) -> None:
        """Send the retention task if this replica wins this interval's run (asked at most every 10 s)."""
        settings = self._settings
        now = time.monotonic()
        if not settings.retention_days or now < self._retention_checked + min(settings.retention_interval_seconds, 10):
            return
        self._retention_checked = now
        if await retention.claim_run(self._store, settings.retention_interval_seconds):
            try:
                await self._dispatcher.expire_jobs()
            except Exception as exc:  # noqa: BLE001  # Redis down: the next interval sends it again
                log.warning("retention_dispatch_failed", error=str(exc))
            else:
                log.info("retention_started", ttl_days=settings.retention_days)
