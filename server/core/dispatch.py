"""How a job id reaches a worker. The transport (Taskiq over Redis) lives in
`worker.broker`; the core only knows this protocol, so it imports no taskiq."""

from __future__ import annotations

import uuid
from typing import Protocol


class Dispatcher(Protocol):
    async def dispatch(self, job_id: uuid.UUID) -> None:
        """Hand the job to the queue. May raise; the sweeper re-dispatches what was lost."""

    async def expire_jobs(self) -> None:
        """Send the retention task (server/core/retention.py) to a worker."""

    async def ping(self) -> None:
        """Raise if the queue is unreachable."""
