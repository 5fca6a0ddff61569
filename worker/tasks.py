"""The taskiq application: `taskiq worker worker.tasks:broker`, started by `datamill-worker`.

Tasks are thin: they hand a job id to the JobRunner. Pools open in
WORKER_STARTUP and close in WORKER_SHUTDOWN, because workers are forked
processes (PITFALLS.md).
"""

from __future__ import annotations

import uuid
from typing import Annotated

import structlog
from taskiq import Context, TaskiqDepends, TaskiqEvents, TaskiqState

from server.core import retention, tracing
from server.core.exports import ExportStore
from server.core.logging import configure_logging
from server.core.models import JobKind
from server.core.objects import open_object_store
from server.core.settings import load_settings
from server.core.store import JobStore, open_pool
from worker.attempt import JobBody
from worker.broker import EXPIRE_JOBS_TASK, RUN_JOB_TASK, make_broker
from worker.jobs.export import ExportJob
from worker.jobs.generate import GenerateJob
from worker.jobs.ingest import IngestJob
from worker.runner import JobRunner

settings = load_settings()
broker = make_broker(settings.redis_url, settings.queue_name)
log = structlog.get_logger(__name__)


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def _startup(state: TaskiqState) -> None:
    configure_logging(settings.log_level, settings.log_format.value)
    tracing.configure(settings, "datamill-worker")  # in each worker process: exporters start threads
    pool = await open_pool(settings.database_url, min_size=1, max_size=settings.db_pool_max, name="datamill-worker")
    store = JobStore(pool)
    objects = open_object_store(settings)
    state.pool, state.objects = pool, objects
    bodies: dict[JobKind, JobBody] = {
        JobKind.GENERATE: GenerateJob(),
        JobKind.GENERATE_SHARD: GenerateJob(),
        JobKind.INGEST: IngestJob(objects),
        JobKind.EXPORT: ExportJob(objects, ExportStore(store), settings),
    }
    state.runner, state.store = JobRunner(store, settings, bodies), store
    log.info("worker_started", queue=settings.queue_name)


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def _shutdown(state: TaskiqState) -> None:
    await state.runner.release_all()
    await state.objects.close()
    await state.pool.close()
    log.info("worker_stopped")


@broker.task(task_name=RUN_JOB_TASK)
async def run_job(job_id: str, context: Annotated[Context, TaskiqDepends()]) -> None:
    runner: JobRunner = context.state.runner
    with tracing.span("datamill.run_job", context.message.labels, **{"datamill.job_id": job_id}):
        await runner.run(uuid.UUID(job_id))


@broker.task(task_name=EXPIRE_JOBS_TASK)
async def expire_jobs(context: Annotated[Context, TaskiqDepends()]) -> None:
    """Retention (server/core/retention.py), sent by a server's sweeper once per DATAMILL_RETENTION_INTERVAL_SECONDS."""
    await retention.expire(
        context.state.store,
        context.state.objects,
        ttl_seconds=settings.retention_days * 86400,
        batch=settings.retention_batch,
    )
