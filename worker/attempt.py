"""One attempt at a job: the lease token that fences its writes, and its cancel flag."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg

from server.core.faults import crash_point
from server.core.models import JobRow, JobState
from server.core.settings import Settings
from server.core.store import JobStore


class JobCancelled(Exception):  # a signal that unwinds the job body
    """CancelJob was called; stop and remove partial data."""


@dataclass
class Attempt:
    job: JobRow
    lease_token: uuid.UUID
    store: JobStore
    settings: Settings
    cancel_requested: bool = field(default=False)
    # Set when the worker shuts down: the job is given back, not cancelled or failed.
    releasing: bool = field(default=False)
    #: The job as `succeed` left it (for the worker's metrics).
    final: JobRow | None = field(default=None)

    def reached(self, phase: str) -> None:
        """A crash point of the fault tests (`server.core.faults`); nothing unless armed."""
        crash_point(self.settings.crash_points, self.settings.test_crash_marker_dir, self.job.kind.value, phase)

    def raise_if_cancelled(self) -> None:
        if self.cancel_requested:
            raise JobCancelled(str(self.job.id))

    async def checkpoint(self, conn: psycopg.AsyncConnection[Any], *, done: int) -> None:
        """Record progress in the caller's transaction (raises LeaseLost if taken over)."""
        if await self.store.checkpoint(
            conn, self.job.id, self.lease_token, done=done, lease_seconds=self.settings.lease_seconds
        ):
            self.cancel_requested = True

    async def dataset_table(self) -> str:
        """The name of the table of the dataset this job builds."""
        async with self.store.transaction() as conn:
            cur = await conn.execute("SELECT table_name FROM datasets WHERE id = %s", (self.job.dataset_id,))
            row = await cur.fetchone()
        if row is None:
            raise RuntimeError(f"dataset {self.job.dataset_id} of job {self.job.id} is missing")
        return str(row["table_name"] if isinstance(row, dict) else row[0])

    async def succeed(self, conn: psycopg.AsyncConnection[Any], *, result: dict[str, Any], done: int) -> JobRow:
        """Mark the job SUCCEEDED in the caller's transaction, the one that also makes its outcome durable."""
        self.reached("before_done")
        self.final = await self.store.finish(
            conn, self.job.id, self.lease_token, state=JobState.SUCCEEDED, result=result, done=done
        )
        return self.final


class JobBody(Protocol):
    """What the runner needs from each kind of job."""

    async def run(self, attempt: Attempt) -> None:
        """Do the work, ending with `attempt.succeed` in the last transaction."""

    async def cleanup(
        self, conn: psycopg.AsyncConnection[Any], job: JobRow, state: JobState, error: dict[str, Any]
    ) -> None:
        """Remove partial data, inside the transaction that ends the job in `state` (FAILED or CANCELLED)."""
