"""Retention through the real pieces: the server's sweeper sends the Taskiq task, a worker expires the jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from client import Client
from client.errors import DatamillError, NotFoundError
from datamill.v1 import job_pb2
from tests.e2e.conftest import Stack
from tests.e2e.helpers import schema, wait_for


def test_finished_jobs_expire_with_their_events_export_and_dataset(stack_factory: Any) -> None:
    stack: Stack = stack_factory(
        settings={"DATAMILL_RETENTION_DAYS": "0.00005", "DATAMILL_RETENTION_INTERVAL_SECONDS": "1"}  # 4.3 s
    )
    with Client.connect(stack.target) as client:
        generated = client.wait(client.generate("short_lived", schema=schema(1_000)).id)
        assert generated.state == job_pb2.JOB_STATE_SUCCEEDED, generated.error.message
        (table,) = stack.sql("SELECT table_name FROM datasets WHERE name = 'short_lived'")[0]
        exported = client.wait(client.export("short_lived", format="csv").id)
        assert exported.state == job_pb2.JOB_STATE_SUCCEEDED, exported.error.message
        key = exported.export.object_key
        assert b"".join(client.read_object(key))  # there, for now
        stored = stack.env["DATAMILL_LOCAL_OBJECT_DIR"]

        def expired(job_id: str) -> bool:
            try:
                client.get_job(job_id)
            except NotFoundError:
                return True
            return False

        wait_for(lambda: expired(generated.id) and expired(exported.id), timeout=60, what="both jobs to expire")
        with pytest.raises(DatamillError) as gone:
            b"".join(client.read_object(key))
        assert gone.value.code is grpc.StatusCode.NOT_FOUND
    assert stack.sql("SELECT count(*) FROM job_events") == [(0,)]
    assert stack.sql("SELECT count(*) FROM datasets") == [(0,)]
    assert stack.sql("SELECT to_regclass(%s)::text", f"datasets.{table}") == [(None,)]
    assert not [p for p in Path(stored).rglob("*") if p.is_file() and str(exported.id) in str(p)]
    assert '"event": "jobs_expired"' in "".join(w.log_tail(400) for w in stack.workers)
