"""The Node.js example client (examples/node, @grpc/grpc-js) against a live server: the stubs work across languages."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "examples" / "node" / "client.js"


def test_the_node_client_generates_watches_exports_and_reads_back(stack: Stack) -> None:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("node and `npm install` (make test runs it) are needed: the example is part of the suite")
    done = subprocess.run([node, str(CLIENT), stack.target], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)

    generated = report["generate"]
    assert generated["state"] == "JOB_STATE_SUCCEEDED" and generated["rows"] == "500" and generated["events"] >= 2
    (table,) = stack.sql("SELECT table_name FROM datasets WHERE job_id = %s", generated["id"])[0]
    assert stack.sql(f'SELECT count(*) FROM datasets."{table}"') == [(500,)]

    exported = report["export"]
    assert exported["key"].startswith(f"default/exports/{exported['id']}/") and exported["size"] > 500
    assert stack.sql("SELECT sha256, size_bytes FROM objects WHERE key = %s", exported["key"]) == [
        (exported["sha256"], exported["size"])
    ]

    refused = report["refused"]
    assert refused["code"] == "INVALID_ARGUMENT" and refused["status"]["code"] == 3  # google.rpc.Code.INVALID_ARGUMENT
    details = refused["status"]["details"]
    assert {"google.rpc.ErrorInfo", "google.rpc.BadRequest"} <= {detail["type"] for detail in details}, refused
    (bad_request,) = [d["value"] for d in details if d["type"] == "google.rpc.BadRequest"]
    assert any(v["field"] == "dataset_name" for v in bad_request["field_violations"]), bad_request
