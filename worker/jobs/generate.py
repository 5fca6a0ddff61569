"""The Generate job: make rows in vectorized chunks and COPY them into the dataset's table.

Each chunk commits in one transaction together with the job's progress, so a
retry resumes after the last committed chunk and never duplicates rows.
Chunks are deterministic in (seed, start row), so the resumed data is the data
the first attempt would have written. The next chunk is built in a thread
while the current one streams into PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import structlog

from server.core.models import DATASET_SCHEMA, JobRow
from server.core.schema import SchemaSpec, columns
from server.core.sql import query
from server.core.store import drop_pending_dataset
from worker.attempt import Attempt
from worker.engines.generate import generate_chunk
from worker.engines.pgcopy import copy_sql, create_table_sql, encode_copy_binary

log = structlog.get_logger(__name__)


def _build(spec: SchemaSpec, start: int, count: int) -> bytes:
    return encode_copy_binary(generate_chunk(spec, start, count))


class GenerateJob:
    async def run(self, attempt: Attempt) -> None:
        job = attempt.job
        if job.spec is None or job.dataset_id is None:
            raise RuntimeError("a Generate job needs its spec and dataset")
        spec = SchemaSpec.from_json(job.spec["schema"])
        chunk_rows = int(job.spec["chunk_rows"])
        table = await self._table_name(attempt)
        cols = columns(spec)
        create = create_table_sql(DATASET_SCHEMA, table, cols)
        copy = copy_sql(DATASET_SCHEMA, table, cols)
        total, done = spec.rows, job.progress_done

        def next_chunk(start: int) -> asyncio.Future[bytes] | None:
            if start >= total:
                return None
            return asyncio.ensure_future(asyncio.to_thread(_build, spec, start, min(chunk_rows, total - start)))

        pending = next_chunk(done)
        try:
            while pending is not None:
                attempt.raise_if_cancelled()
                payload = await pending
                count = min(chunk_rows, total - done)
                pending = next_chunk(done + count)
                async with attempt.store.transaction() as conn:
                    await attempt.checkpoint(conn, done=done + count)
                    if done == 0:
                        await conn.execute(create)
                    async with conn.cursor().copy(copy) as pipe:
                        await pipe.write(payload)
                done += count
        finally:
            if pending is not None:
                pending.cancel()
        attempt.raise_if_cancelled()
        async with attempt.store.transaction() as conn:
            await conn.execute(query("mark_dataset_ready"), {"id": job.dataset_id, "row_count": total})
            await attempt.succeed(
                conn,
                result={"dataset_id": str(job.dataset_id), "dataset_name": job.dataset_name, "row_count": total},
                done=total,
            )

    async def cleanup(self, conn: psycopg.AsyncConnection[Any], job: JobRow) -> None:
        if job.dataset_id is not None:
            await drop_pending_dataset(conn, job.dataset_id)

    @staticmethod
    async def _table_name(attempt: Attempt) -> str:
        async with attempt.store.transaction() as conn:
            cur = await conn.execute("SELECT table_name FROM datasets WHERE id = %s", (attempt.job.dataset_id,))
            row = await cur.fetchone()
        if row is None:
            raise RuntimeError(f"dataset {attempt.job.dataset_id} of job {attempt.job.id} is missing")
        return str(row["table_name"] if isinstance(row, dict) else row[0])
