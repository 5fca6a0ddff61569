"""Export at scale: the worker's memory stays flat whatever the dataset's size.

The bounds are far below the file's size: a worker that held the file, or
every part of it, would exceed them. A 10x larger dataset must not need more
than a few MiB more at peak.
"""

from __future__ import annotations

import pytest

from client import Client
from datamill.v1 import job_pb2
from tests.e2e.conftest import Stack
from tests.e2e.helpers import process_children, reset_peak_rss, schema, status_bytes

pytestmark = pytest.mark.timeout(300)

MiB = 1024 * 1024


@pytest.mark.parametrize("format", ["csv", "parquet"])
def test_export_memory_does_not_grow_with_the_dataset(stack_factory: object, format: str) -> None:
    stack: Stack = stack_factory(settings={"DATAMILL_GENERATE_SHARD_ROWS": "10000000"})  # type: ignore[operator]
    (worker,) = process_children(stack.workers[0].pid)  # the taskiq worker process that runs the jobs
    growth = {}
    with Client.connect(stack.target, timeout=30) as client:
        for rows in (200_000, 2_000_000):
            name = f"rows_{rows}"
            made = client.wait(client.generate(name, schema=schema(rows)).id)
            assert made.state == job_pb2.JOB_STATE_SUCCEEDED, made.error.message
            idle = status_bytes(worker, "VmRSS")
            reset_peak_rss(worker)
            job = client.wait(client.export(name, format=format).id)
            assert job.state == job_pb2.JOB_STATE_SUCCEEDED, job.error.message
            assert job.export.row_count == rows
            growth[rows] = (status_bytes(worker, "VmHWM") - idle, job.export.size_bytes)
    print({rows: (f"+{g / MiB:.0f} MiB", f"{size / MiB:.0f} MiB file") for rows, (g, size) in growth.items()})
    (small, _), (large, _) = growth[200_000], growth[2_000_000]
    # CSV: three 8 MiB parts and a block of rows. Parquet: also the row group being gathered (131,072 rows)
    # and the one being encoded, which Arrow keeps whole until its dictionary pages are written (~100 MiB).
    assert large < (64 if format == "csv" else 200) * MiB
    assert large < small + 48 * MiB, "peak memory grew with the dataset"
