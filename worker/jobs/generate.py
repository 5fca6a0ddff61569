"""The Generate job: make rows in vectorized chunks and COPY them into the dataset's table.

Each chunk commits in one transaction together with the job's progress, so a
retry resumes after the last committed chunk and never duplicates rows.
Rows are a pure function of (seed, row number), so the resumed data is the
data the first attempt would have written. The next chunk is built in a
thread while the current one streams into PostgreSQL.

A large Generate runs as shards (jobs of kind GENERATE_SHARD, each with its
own row range) on any number of workers, into one table. A shard moves its
parent along: progress after each chunk (the sum of its shards'), success
when it is the last to finish (only then does the dataset become ready).
A shard that ends otherwise stops the others, and the last of them to end
fails or cancels the parent and drops the table (`stop_parent`). Transactions that
touch both lock the parent first, so shards and CancelJob cannot deadlock.
"""

from __future__ import annotations

import asyncio
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import psycopg
import structlog
from psycopg import AsyncCopy
from psycopg.types.json import Jsonb

from server.core.models import DATASET_SCHEMA, JobRow, JobState
from server.core.schema import SchemaSpec, columns
from server.core.sql import query
from server.core.store import cancelled_error, drop_pending_dataset, stop_parent
from worker.attempt import Attempt
from worker.engines.generate import generate_chunk
from worker.engines.pgcopy import COPY_HEADER, COPY_TRAILER, copy_sql, create_table_sql, encode_copy_tuples

log = structlog.get_logger(__name__)


# Rows are made in batches, on one thread per worker process whatever the number of jobs it
# runs: the GIL would serialize more threads anyway, and more cores mean more worker processes.
# A chunk (chunk_rows, one transaction and checkpoint) is one COPY of several batches, each built
# while the one before streams into PostgreSQL, so a job holds at most two batches. The jobs of a
# process share BATCH_ROWS: with n of them running, a batch is BATCH_ROWS / n rows, so a worker's
# memory is the same for one job or four, of any size, and no job ever waits for another's room
# (a per-process limit on batches held was tried and dropped: a job holding a place could wait on
# a lock held by a job waiting for one). Measured in bench/README.md: 25,000-row batches keep the
# end-to-end speed that 10,000-row ones lose.
BATCH_ROWS = 25_000
MIN_BATCH_ROWS = 2_000
_BUILDER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate-build")


def _build(spec: SchemaSpec, start: int, count: int) -> memoryview:
    return encode_copy_tuples(generate_chunk(spec, start, count))


class GenerateJob:
    async def run(self, attempt: Attempt) -> None:
        job = attempt.job
        if job.spec is None or job.dataset_id is None:
            raise RuntimeError("a Generate job needs its spec and dataset")
        spec = SchemaSpec.from_json(job.spec["schema"])
        chunk_rows = int(job.spec["chunk_rows"])
        first_row = int(job.spec.get("start_row", 0))
        total = int(job.spec.get("row_count", spec.rows))  # this job's rows: all, or its shard's
        table = await attempt.dataset_table()
        cols = columns(spec)
        create = create_table_sql(DATASET_SCHEMA, table, cols, if_not_exists=True)
        copy = copy_sql(DATASET_SCHEMA, table, cols)
        done = job.progress_done
        batches = _Batches(spec, first_row, total, done, chunk_rows=chunk_rows)
        try:
            while done < total:
                attempt.raise_if_cancelled()
                end = min(done + chunk_rows, total)
                async with attempt.store.transaction() as conn:
                    # Not flushed at commit: a chunk lost in a PostgreSQL crash is lost with its
                    # checkpoint, and the retry makes the same rows again. The final commit is
                    # flushed, and with it the WAL of every chunk before it.
                    await conn.execute("SET LOCAL synchronous_commit = off")
                    await attempt.checkpoint(conn, done=end)
                    attempt.raise_if_cancelled()  # rolls back: a cancelled shard's table may be gone
                    if done == 0:
                        await _create_table_once(conn, job.dataset_id, create)
                    async with conn.cursor().copy(copy) as pipe:
                        await pipe.write(COPY_HEADER)
                        while batches.position < end:
                            await batches.write_next(pipe)
                        await pipe.write(COPY_TRAILER)
                done = end
                if job.parent_id is not None:
                    await attempt.store.sync_parent(job.parent_id)
                if done < total:
                    attempt.reached("midway")
        finally:
            batches.close()
        attempt.raise_if_cancelled()
        async with attempt.store.transaction() as conn:
            if job.parent_id is None:
                await self._complete(conn, job.id, job.dataset_id, job.dataset_name, spec.rows)
            else:
                await self._complete_shard(conn, job, spec.rows)
            await attempt.succeed(conn, result=_result(job, total), done=total)

    @staticmethod
    async def _complete(
        conn: psycopg.AsyncConnection[Any], job_id: uuid.UUID, dataset_id: uuid.UUID, name: str, rows: int
    ) -> None:
        await conn.execute(query("mark_dataset_ready"), {"id": dataset_id, "row_count": rows})
        log.info("dataset_ready", dataset_id=str(dataset_id), job_id=str(job_id), rows=rows)

    async def _complete_shard(self, conn: psycopg.AsyncConnection[Any], job: JobRow, rows: int) -> None:
        """Count this shard's success on its parent; the last shard completes the parent and the dataset."""
        if job.parent_id is None or job.dataset_id is None:
            raise RuntimeError(f"shard {job.id} has no parent or dataset")
        cur = await conn.execute(query("count_shard_success"), {"id": job.parent_id})
        row = await cur.fetchone()
        if row is None:  # the parent is being stopped: the last shard to end ends it
            await stop_parent(conn, job.parent_id, cancelled_error(), shard_id=job.id)
            return
        if row["shards_done"] < row["shard_count"]:
            return
        await self._complete(conn, job.parent_id, job.dataset_id, job.dataset_name, rows)
        await conn.execute(
            query("finish_parent"),
            {
                "id": job.parent_id,
                "state": JobState.SUCCEEDED.value,
                "result": Jsonb(_result(job, rows)),
                "error": None,
                "done": rows,
            },
        )

    async def cleanup(
        self, conn: psycopg.AsyncConnection[Any], job: JobRow, state: JobState, error: dict[str, Any]
    ) -> None:
        if job.parent_id is not None:
            await stop_parent(conn, job.parent_id, error, shard_id=job.id)
        elif job.dataset_id is not None:
            await drop_pending_dataset(conn, job.dataset_id)


class _Batches:
    """The job's rows from `done` on, as encoded batches, each built while the one before is written.

    Batches never cross a chunk's end (a multiple of chunk_rows): a chunk's COPY holds its rows only.
    """

    open_jobs: ClassVar[int] = 0  # open in this process, sharing BATCH_ROWS (one event loop: no lock)

    def __init__(self, spec: SchemaSpec, first_row: int, total: int, done: int, *, chunk_rows: int) -> None:
        _Batches.open_jobs += 1
        self._open = True
        self._spec, self._first_row, self._total, self._chunk_rows = spec, first_row, total, chunk_rows
        self.position = done  # the first row of the next batch `write_next` writes
        self._pending_size = 0
        self._pending = self._build(done)

    def _size(self, offset: int) -> int:
        share = max(MIN_BATCH_ROWS, BATCH_ROWS // max(_Batches.open_jobs, 1))
        return min(share, self._total - offset, self._chunk_rows - offset % self._chunk_rows)

    def _build(self, offset: int) -> asyncio.Future[memoryview] | None:
        if offset >= self._total:
            return None
        self._pending_size = self._size(offset)
        loop = asyncio.get_running_loop()
        return loop.run_in_executor(_BUILDER, _build, self._spec, self._first_row + offset, self._pending_size)

    async def write_next(self, pipe: AsyncCopy) -> None:
        if self._pending is None:
            raise RuntimeError("no rows left")
        payload = await self._pending
        self.position += self._pending_size
        self._pending = self._build(self.position)
        await pipe.write(payload)

    def close(self) -> None:
        """Drop the batch in the making, if any, and give this job's share of BATCH_ROWS back."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        if self._open:
            self._open = False
            _Batches.open_jobs -= 1


async def _create_table_once(conn: psycopg.AsyncConnection[Any], dataset_id: uuid.UUID, create: Any) -> None:
    """CREATE TABLE IF NOT EXISTS, serialized per dataset: concurrent ones would race on the catalog."""
    lock_key = zlib.crc32(dataset_id.bytes) - 2**31
    await conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (0x6D696C6C, lock_key))
    await conn.execute(create)


def _result(job: JobRow, rows: int) -> dict[str, Any]:
    return {"dataset_id": str(job.dataset_id), "dataset_name": job.dataset_name, "row_count": rows}
