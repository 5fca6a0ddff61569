"""The Generate job's batch pipeline: batches end at chunk ends, and together make the rows in order."""

from __future__ import annotations

import asyncio

import pytest

from server.core.schema import SchemaSpec, validate_schema
from worker.engines.generate import generate_chunk
from worker.engines.pgcopy import encode_copy_tuples
from worker.jobs import generate
from worker.jobs.generate import _Batches

SPEC = validate_schema(
    SchemaSpec.from_json({"rows": 70_000, "seed": 3, "fields": [{"name": "v", "type": "integer"}]}),
    max_rows=10**6,
    max_fields=10,
)


class Pipe:
    def __init__(self) -> None:
        self.written: list[bytes] = []

    async def write(self, data: memoryview) -> None:
        self.written.append(bytes(data))
        await asyncio.sleep(0)


async def test_batches_stop_at_chunk_ends_and_make_the_rows_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generate, "BATCH_ROWS", 8_000)
    batches = _Batches(SPEC, 0, 70_000, 20_000, chunk_rows=30_000)  # from mid-chunk, to see its end kept
    pipe, ends = Pipe(), []
    for chunk_end in (30_000, 60_000, 70_000):
        while batches.position < chunk_end:
            await batches.write_next(pipe)  # type: ignore[arg-type]
            ends.append(batches.position)
    batches.close()
    assert ends == [28_000, 30_000, 38_000, 46_000, 54_000, 60_000, 68_000, 70_000]
    assert b"".join(pipe.written) == bytes(encode_copy_tuples(generate_chunk(SPEC, 20_000, 50_000)))


async def test_jobs_of_a_process_share_the_batch_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(generate, "BATCH_ROWS", 8_000)
    monkeypatch.setattr(generate, "MIN_BATCH_ROWS", 1_000)
    jobs = [_Batches(SPEC, 0, 70_000, 0, chunk_rows=70_000) for _ in range(4)]
    pipe = Pipe()
    await jobs[0].write_next(pipe)  # type: ignore[arg-type]  # its first batch was sized when 1 job was open
    await jobs[0].write_next(pipe)  # type: ignore[arg-type]  # sized with 4 open: a quarter
    assert jobs[0].position == 8_000 + 2_000
    for job in jobs[1:]:
        job.close()
    await jobs[0].write_next(pipe)  # type: ignore[arg-type]
    await jobs[0].write_next(pipe)  # type: ignore[arg-type]  # alone again: the whole BATCH_ROWS
    assert jobs[0].position == 8_000 + 2_000 + 2_000 + 8_000
    jobs[0].close()
    assert _Batches.open_jobs == 0
    assert b"".join(pipe.written) == bytes(encode_copy_tuples(generate_chunk(SPEC, 0, 20_000)))
