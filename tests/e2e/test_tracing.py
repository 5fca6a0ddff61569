"""OpenTelemetry tracing: one trace from the caller's traceparent through the RPC and the Taskiq task to the job."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from client import Client
from datamill.v1 import job_pb2
from tests.e2e.conftest import Stack
from tests.e2e.helpers import schema, wait_for


def _spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_trace_runs_from_the_call_through_the_task_into_the_worker(stack_factory: Any, tmp_path: Path) -> None:
    spans_file = tmp_path / "spans.jsonl"
    stack: Stack = stack_factory(settings={"DATAMILL_TRACING": "file", "DATAMILL_TRACING_FILE": str(spans_file)})
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    traceparent = [("traceparent", f"00-{trace_id}-{caller_span}-01")]
    with Client.connect(stack.target, metadata=traceparent) as client:
        job = client.generate("traced", schema=schema(2_000))
    with Client.connect(stack.target) as client:  # an untraced caller starts a trace of its own
        assert client.wait(job.id).state == job_pb2.JOB_STATE_SUCCEEDED

    def traced() -> list[dict[str, Any]]:
        return [s for s in _spans(spans_file) if s["trace_id"] == trace_id]

    spans = wait_for(lambda: len(traced()) >= 2 and traced(), timeout=30, what="the worker's span")
    by_name = {s["name"]: s for s in spans}
    rpc = by_name["datamill.v1.JobService/Generate"]
    assert rpc["service"] == "datamill-server" and rpc["parent_id"] == caller_span
    assert rpc["attributes"]["rpc.grpc.status_code"] == "OK"
    work = by_name["datamill.run_job"]
    assert work["service"] == "datamill-worker" and work["parent_id"] == rpc["span_id"]
    assert work["attributes"]["datamill.job_id"] == job.id
    assert work["start_ns"] >= rpc["start_ns"]
    # The server ends the WatchJob span when the stream closes, which may come after the client has its answer.
    watch = wait_for(
        lambda: [s for s in _spans(spans_file) if s["name"] == "datamill.v1.JobService/WatchJob"],
        what="the WatchJob span",
    )
    assert watch and all(s["trace_id"] != trace_id and s["parent_id"] is None for s in watch)
