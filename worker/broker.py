"""Taskiq wiring shared by the server (which sends) and the workers (which run).

RedisStreamBroker is the only taskiq-redis broker that acknowledges after the
task ends (XREADGROUP/XACK/XAUTOCLAIM). PITFALLS.md lists its traps; each
setting below answers one. Redis carries only wake-ups: PostgreSQL's sweeper
re-dispatches anything Redis loses.
"""

from __future__ import annotations

import uuid
from typing import Final

from redis.asyncio import Redis
from taskiq.kicker import AsyncKicker
from taskiq_redis import RedisStreamBroker

from server.core import tracing

RUN_JOB_TASK: Final = "datamill.run_job"
EXPIRE_JOBS_TASK: Final = "datamill.expire_jobs"
CONSUMER_GROUP: Final = "datamill-workers"


def make_broker(redis_url: str, queue_name: str) -> RedisStreamBroker:
    return RedisStreamBroker(
        url=redis_url,
        queue_name=queue_name,
        consumer_group_name=CONSUMER_GROUP,
        # "0", not "$": messages sent before the group existed are still read.
        consumer_id="0",
        # XACK does not trim; the sweeper covers anything trimmed unread.
        maxlen=100_000,
        # A job runs as long as it needs; its lease in PostgreSQL, not this
        # timeout, decides when it is taken over (taskiq-redis #101).
        idle_timeout=6 * 3600 * 1000,
        unacknowledged_lock_timeout=30,
        xread_block=1000,
        # One message per XREADGROUP: the listener reads again only when the worker has a free slot, so a busy
        # worker cannot take (and hold pending) messages that an idle one could run. The default, 100, let the first
        # worker up claim every shard of a Generate at once.
        xread_count=1,
    )


class TaskiqDispatcher:
    """`server.core.dispatch.Dispatcher` over a RedisStreamBroker."""

    def __init__(self, broker: RedisStreamBroker) -> None:
        self._broker = broker
        self._kicker: AsyncKicker[[str], None] = AsyncKicker(task_name=RUN_JOB_TASK, broker=broker, labels={})
        self._expire: AsyncKicker[[], None] = AsyncKicker(task_name=EXPIRE_JOBS_TASK, broker=broker, labels={})
        self._started = False

    async def _ensure_started(self) -> None:
        # The consumer group must exist before the first message (PITFALLS.md), but
        # Redis may be down when the server starts: create it on first contact.
        if not self._started:
            await self._broker.startup()
            self._started = True

    async def dispatch(self, job_id: uuid.UUID) -> None:
        await self._ensure_started()
        labels = tracing.inject({})
        if labels:  # tracing on: the worker's span continues this one (a kicker per call: its labels are its own)
            kicker: AsyncKicker[[str], None] = AsyncKicker(task_name=RUN_JOB_TASK, broker=self._broker, labels=labels)
            await kicker.kiq(str(job_id))
        else:
            await self._kicker.kiq(str(job_id))

    async def expire_jobs(self) -> None:
        await self._ensure_started()
        await self._expire.kiq()

    async def ping(self) -> None:
        await self._ensure_started()
        async with Redis(connection_pool=self._broker.connection_pool) as redis:
            await redis.ping()

    async def close(self) -> None:
        await self._broker.shutdown()
