"""CancelJob for the kinds and phases not covered beside their own features (docs/reliability.md, rows C1-C4).

Generate (running, queued, sharded) is in test_generate_watch.py and
test_shards.py, and a running Export in test_export.py. Here: an import
cancelled while its COPY runs, and an import and an export cancelled while
QUEUED. Each must be CANCELLED within 2 seconds with its partial data gone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from client import Client, UploadOptions
from client.errors import NotFoundError
from datamill.v1 import job_pb2
from tests.e2e.conftest import Stack
from tests.e2e.helpers import TERMINAL, schema, wait_for

pytestmark = pytest.mark.timeout(120)


def _big_csv(path: Path, rows: int) -> Path:
    with path.open("w") as out:
        out.write("id,name,score\n")
        for start in range(0, rows, 100_000):
            out.write("".join(f"{i},name {i},{i / 8}\n" for i in range(start, min(start + 100_000, rows))))
    return path


def _cancel_within_two_seconds(client: Client, job_id: str) -> job_pb2.Job:
    requested = time.monotonic()
    client.cancel_job(job_id)
    final = wait_for(lambda: (j := client.get_job(job_id)).state in TERMINAL and j, timeout=10, what="cancellation")
    took = time.monotonic() - requested
    assert final.state == job_pb2.JOB_STATE_CANCELLED
    assert took < 2.0, f"cancellation took {took:.2f}s"
    return final  # type: ignore[no-any-return]


def test_an_import_cancelled_mid_copy_leaves_no_dataset(stack: Stack, tmp_path: Path) -> None:
    path = _big_csv(tmp_path / "big.csv", 3_000_000)
    with Client.connect(stack.target, timeout=30) as client:
        completed = client.upload(path, "big_import", options=UploadOptions(format="csv"))
        job_id = completed.job.id
        wait_for(lambda: client.get_job(job_id).progress.done > 0, timeout=30, interval=0.02, what="the COPY to start")
        final = _cancel_within_two_seconds(client, job_id)
        assert final.progress.done < path.stat().st_size
        with pytest.raises(NotFoundError):
            client.get_dataset("big_import")
    assert stack.sql("SELECT count(*) FROM pg_tables WHERE schemaname = 'datasets'") == [(0,)]


def test_queued_import_and_export_are_cancelled_at_once(stack_factory: Any, tmp_path: Path) -> None:
    stack: Stack = stack_factory()
    with Client.connect(stack.target, timeout=30) as client:
        made = client.wait(client.generate("ready", schema=schema(100)).id)
        assert made.state == job_pb2.JOB_STATE_SUCCEEDED
        for worker in stack.workers:  # from now on, jobs stay QUEUED
            worker.stop()
        export = client.export("ready", format="csv")
        completed = client.upload(_big_csv(tmp_path / "small.csv", 100), "queued_import")
        for job_id in (export.id, completed.job.id):
            assert client.cancel_job(job_id).state == job_pb2.JOB_STATE_CANCELLED
        with pytest.raises(NotFoundError):  # the import's reserved dataset is gone
            client.get_dataset("queued_import")
        assert client.get_dataset("ready").row_count == 100  # the exported one is untouched
    assert stack.sql("SELECT count(*) FROM objects WHERE job_id = %s", export.id) == [(0,)]
