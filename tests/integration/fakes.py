"""Fakes for integration tests that exercise the core without a queue."""

from __future__ import annotations

import uuid


class NoDispatch:
    """A dispatcher that hands nothing to a queue: the test drives jobs itself."""

    async def dispatch(self, job_id: uuid.UUID) -> None:
        return None

    async def expire_jobs(self) -> None:
        return None

    async def ping(self) -> None:
        return None
