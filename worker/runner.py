"""JobRunner: claim, heartbeat, run the body, record the outcome.

Every outcome write is conditional on the attempt's lease token, so a worker
that lost its lease (paused, partitioned, or simply slow) changes nothing and
the attempt that took over wins. Outcome writes are shielded from task
cancellation, so a shutdown never leaves a job half-finished in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping
from typing import Any

import structlog

from server.core import metrics
from server.core.errors import DatamillError
from server.core.models import JobKind, JobRow, JobState
from server.core.retry import backoff_seconds
from server.core.settings import Settings
from server.core.store import JobStore, LeaseLost, cancelled_error, error_json
from worker.attempt import Attempt, JobBody, JobCancelled

log = structlog.get_logger(__name__)


class JobRunner:
    def __init__(self, store: JobStore, settings: Settings, bodies: Mapping[JobKind, JobBody]) -> None:
        self._store = store
        self._settings = settings
        self._bodies = bodies
        self._active: dict[uuid.UUID, tuple[Attempt, asyncio.Task[None]]] = {}

    async def run(self, job_id: uuid.UUID) -> None:
        token = uuid.uuid4()
        job = await self._store.claim(job_id, token, self._settings.lease_seconds)
        if job is None:
            log.info("claim_skipped", job_id=str(job_id))  # duplicate delivery, cancelled, or backing off
            return
        metrics.job_claimed(job)
        started, outcome = time.monotonic(), "INTERRUPTED"
        with structlog.contextvars.bound_contextvars(job_id=str(job.id), attempt=job.attempt):
            log.info("job_claimed", kind=job.kind.value, resume_from=job.progress_done)
            attempt = Attempt(job, token, self._store, self._settings)
            attempt.reached("claimed")
            body = self._bodies[job.kind]
            work = asyncio.create_task(body.run(attempt), name=f"job-{job.id}")
            heartbeat = asyncio.create_task(self._heartbeat(attempt, work), name=f"heartbeat-{job.id}")
            self._active[job.id] = (attempt, work)
            try:
                await work
                outcome = "SUCCEEDED"
                log.info("job_succeeded")
            except JobCancelled:
                outcome = await asyncio.shield(self._terminate(attempt, body, JobState.CANCELLED, cancelled_error()))
            except LeaseLost:
                outcome = "LEASE_LOST"
                log.warning("lease_lost")
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    outcome = "RELEASED"
                    raise  # the worker itself is shutting down
                if attempt.releasing:
                    outcome = "RELEASED"
                    return  # release_all gives the job back
                if heartbeat.done() and isinstance(heartbeat.exception(), LeaseLost):
                    outcome = "LEASE_LOST"
                    log.warning("lease_lost")
                elif attempt.cancel_requested:
                    state = JobState.CANCELLED
                    outcome = await asyncio.shield(self._terminate(attempt, body, state, cancelled_error()))
                else:
                    raise
            except DatamillError as exc:
                outcome = await asyncio.shield(self._fail_or_retry(attempt, body, exc, retryable=exc.retryable))
            except Exception as exc:
                log.exception("job_error")
                outcome = await asyncio.shield(self._fail_or_retry(attempt, body, exc, retryable=True))
            finally:
                metrics.job_ended(job, outcome, time.monotonic() - started, attempt.final)
                self._active.pop(job.id, None)
                heartbeat.cancel()
                with contextlib.suppress(asyncio.CancelledError, LeaseLost, DatamillError):
                    await heartbeat

    async def release_all(self) -> int:
        """On worker shutdown: stop the jobs still running and give them back at once.

        taskiq first waits `--wait-tasks-timeout` for running tasks, so a job that
        can finish in that time finishes; the rest go back to QUEUED with their
        checkpoints, and another worker resumes them without waiting for the lease.
        """
        released = 0
        for job_id, (attempt, work) in list(self._active.items()):
            attempt.releasing = True
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            try:
                await self._store.release(job_id, attempt.lease_token)
            except (LeaseLost, DatamillError) as exc:
                log.warning("job_release_failed", job_id=str(job_id), error=str(exc))
            else:
                released += 1
                log.info("job_released", job_id=str(job_id))
        return released

    async def _heartbeat(self, attempt: Attempt, work: asyncio.Task[None]) -> None:
        """Renew the lease; cancel the work when cancellation is requested or the lease is lost."""
        interval = min(self._settings.lease_seconds / 3, 1.0)
        while not work.done():
            await asyncio.sleep(interval)
            try:
                if await self._store.renew_lease(attempt.job.id, attempt.lease_token, self._settings.lease_seconds):
                    attempt.cancel_requested = True
                    work.cancel()
                    return
            except LeaseLost:
                work.cancel()
                raise
            except DatamillError as exc:  # database blip: the lease has slack, try again
                log.warning("lease_renewal_failed", error=str(exc))

    async def _fail_or_retry(self, attempt: Attempt, body: JobBody, exc: Exception, *, retryable: bool) -> str:
        """Requeue the job or end it; return the outcome for the metrics."""
        job = attempt.job
        error = _error_json(exc)
        try:
            if attempt.cancel_requested:  # requeued, a cancelled job would never be claimed again
                return await self._terminate(attempt, body, JobState.CANCELLED, cancelled_error())
            if retryable and job.attempt < job.max_attempts:
                delay = backoff_seconds(
                    job.attempt,
                    base=self._settings.retry_backoff_base_seconds,
                    cap=self._settings.retry_backoff_max_seconds,
                )
                await self._store.requeue(job.id, attempt.lease_token, error=error, delay_seconds=delay)
                log.warning("job_requeued", error=error["message"], delay_seconds=round(delay, 2))
                return "REQUEUED"
            return await self._terminate(attempt, body, JobState.FAILED, error)
        except LeaseLost:
            log.warning("lease_lost")
            return "LEASE_LOST"

    async def _terminate(self, attempt: Attempt, body: JobBody, state: JobState, error: dict[str, Any]) -> str:
        """End the job in `state` with its cleanup; return the outcome for the metrics."""
        try:
            async with self._store.transaction() as conn:
                await body.cleanup(conn, attempt.job, state, error)
                final: JobRow = await self._store.finish(
                    conn, attempt.job.id, attempt.lease_token, state=state, error=error
                )
            log.info("job_finished", state=final.state.value)
        except LeaseLost:
            log.warning("lease_lost")
            return "LEASE_LOST"
        return final.state.value


def _error_json(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, DatamillError):
        return error_json(exc.code.value, exc.message, exc.reason, exc.metadata)
    # Unexpected errors keep their text out of the job: it may hold internals.
    return error_json("INTERNAL", f"internal error ({type(exc).__name__}); see the worker log", "INTERNAL")
