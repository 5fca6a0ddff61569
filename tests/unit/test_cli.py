"""The `datamill` CLI through click's CliRunner, against the fake services on a real gRPC server."""

from __future__ import annotations

import hashlib
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner, Result

from client.cli import cli
from datamill.v1 import job_pb2, job_service_pb2, schema_pb2
from tests.unit.test_client_fakes import ThreadedFakeServer, rich_status

SCHEMA_YAML = """\
rows: 300
seed: 1
fields:
  - {name: id, type: uuid4}
  - {name: age, type: integer, params: {min: 18, max: 90}, null_rate: 0.1}
"""


@pytest.fixture(scope="module")
def fake() -> Iterator[ThreadedFakeServer]:
    with ThreadedFakeServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_state(fake: ThreadedFakeServer) -> None:
    state = fake.state
    for store in (state.jobs, state.events, state.datasets, state.objects, state.failures):
        store.clear()
    state.requests.clear()
    state.subscriptions.clear()
    state.failing_datasets.clear()
    state.stall_after = None
    state.break_read_after = None


@pytest.fixture
def schema_file(tmp_path: Path) -> Path:
    path = tmp_path / "schema.yaml"
    path.write_text(SCHEMA_YAML)
    return path


def run(fake: ThreadedFakeServer, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, ["--target", fake.target, *args], input=input, catch_exceptions=False)


def _requests(fake: ThreadedFakeServer, kind: type) -> list[Any]:
    return [r for r in fake.state.requests if isinstance(r, kind)]


# --- generate -------------------------------------------------------------------------------------


def test_generate_wait_shows_the_finished_job_and_exits_0(fake: ThreadedFakeServer, schema_file: Path) -> None:
    result = run(fake, "generate", "people", "--schema", str(schema_file), "--wait")

    assert result.exit_code == 0, result.output
    assert "SUCCEEDED" in result.stdout
    assert "people" in result.stdout
    assert "300/300 rows (100%)" in result.stdout
    [request] = _requests(fake, job_service_pb2.GenerateRequest)
    assert [f.name for f in request.schema.fields] == ["id", "age"]


def test_generate_wait_json_prints_one_document(fake: ThreadedFakeServer, schema_file: Path) -> None:
    result = run(fake, "--json", "generate", "people", "--schema", str(schema_file), "--wait", "--rows", "9")

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["state"] == "JOB_STATE_SUCCEEDED"
    assert document["generate"]["row_count"] == "9"
    [request] = _requests(fake, job_service_pb2.GenerateRequest)
    assert request.schema.rows == 9
    assert request.schema.seed == 1


def test_generate_without_wait_prints_the_queued_job(fake: ThreadedFakeServer, schema_file: Path) -> None:
    result = run(fake, "generate", "people", "--schema", str(schema_file), "--request-id", "k1", "--seed", "5")

    assert result.exit_code == 0, result.output
    assert "QUEUED" in result.stdout
    [request] = _requests(fake, job_service_pb2.GenerateRequest)
    assert request.request_id == "k1"
    assert request.schema.seed == 5


def test_generate_reads_the_schema_from_stdin(fake: ThreadedFakeServer) -> None:
    result = run(fake, "generate", "people", "--schema", "-", input=SCHEMA_YAML)

    assert result.exit_code == 0, result.output
    assert _requests(fake, job_service_pb2.GenerateRequest)[0].schema.rows == 300


def test_generate_wait_exits_1_when_the_job_fails(fake: ThreadedFakeServer, schema_file: Path) -> None:
    fake.state.failing_datasets.add("doomed")

    result = run(fake, "generate", "doomed", "--schema", str(schema_file), "--wait")

    assert result.exit_code == 1
    assert "FAILED" in result.stdout
    assert "INTERNAL: worker crashed" in result.stdout


def test_invalid_argument_lists_each_field_violation_and_exits_2(fake: ThreadedFakeServer, tmp_path: Path) -> None:
    schema = tmp_path / "bad.json"
    schema.write_text(
        json.dumps({"rows": 0, "fields": [{"name": "a", "type": "integer"}, {"name": "b", "type": "nope"}]})
    )

    result = run(fake, "generate", "people", "--schema", str(schema))

    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: INVALID_ARGUMENT: invalid schema: 2 problem(s)",
        "  schema.rows: must be at least 1",
        "  schema.fields[1].type: unknown type 'nope'",
        "  reason: INVALID_SCHEMA",
    ]
    assert "Traceback" not in result.output


def test_invalid_argument_as_json(fake: ThreadedFakeServer, tmp_path: Path) -> None:
    schema = tmp_path / "bad.yaml"
    schema.write_text("rows: 1\nfields:\n  - {name: a, type: nope}\n")

    result = run(fake, "--json", "generate", "people", "--schema", str(schema))

    assert result.exit_code == 2
    error = json.loads(result.stderr)["error"]
    assert error["code"] == "INVALID_ARGUMENT"
    assert error["field_violations"] == [{"field": "schema.fields[0].type", "description": "unknown type 'nope'"}]


def test_unreadable_schema_file_names_file_and_line(fake: ThreadedFakeServer, tmp_path: Path) -> None:
    schema = tmp_path / "broken.yaml"
    schema.write_text("rows: 10\nfields:\n  - name: a\n    nme: b\n")

    result = run(fake, "generate", "people", "--schema", str(schema))

    assert result.exit_code == 2
    assert f"{schema}:4:" in result.stderr
    assert "unknown key 'nme'" in result.stderr
    assert fake.state.requests == []


def test_missing_schema_file(fake: ThreadedFakeServer, tmp_path: Path) -> None:
    result = run(fake, "generate", "people", "--schema", str(tmp_path / "none.json"))

    assert result.exit_code == 2
    assert "cannot read schema file" in result.stderr


# --- jobs -----------------------------------------------------------------------------------------


def test_get_and_cancel(fake: ThreadedFakeServer) -> None:
    job = fake.state.add_job(dataset_name="people")

    got = run(fake, "get", job.id)
    cancelled = run(fake, "--json", "cancel", job.id)

    assert got.exit_code == 0
    assert job.id in got.stdout
    assert json.loads(cancelled.stdout)["state"] == "JOB_STATE_CANCELLED"


def test_get_unknown_job_is_a_clean_error(fake: ThreadedFakeServer) -> None:
    result = run(fake, "get", "nope")

    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == "error: NOT_FOUND: job 'nope' not found"
    assert "Traceback" not in result.output


def test_list_limits_pages_and_lists_everything_with_all(fake: ThreadedFakeServer) -> None:
    jobs = [fake.state.add_job(dataset_name=f"d{i}") for i in range(5)]

    limited = run(fake, "list", "--limit", "3")
    everything = run(fake, "--json", "list", "--all")
    filtered = run(fake, "--json", "list", "--kind", "export", "--state", "queued")

    assert limited.exit_code == 0
    assert [job.id for job in jobs[2:]] == [j for j in (job.id for job in jobs) if j in limited.stdout][::1]
    assert jobs[0].id not in limited.stdout
    assert "--all" in limited.stderr
    assert [json.loads(line)["id"] for line in everything.stdout.splitlines()] == [j.id for j in reversed(jobs)]
    assert filtered.stdout == ""
    request = _requests(fake, job_service_pb2.ListJobsRequest)[-1]
    assert request.kind == job_pb2.JOB_KIND_EXPORT
    assert request.state == job_pb2.JOB_STATE_QUEUED


def test_watch_follows_several_jobs_and_exits_1_if_one_failed(fake: ThreadedFakeServer) -> None:
    ok = fake.state.add_job(dataset_name="ok")
    bad = fake.state.add_job(dataset_name="bad", outcome=job_pb2.JOB_EVENT_TYPE_FAILED)

    result = run(fake, "watch", ok.id, bad.id)
    only_ok = run(fake, "--json", "watch", ok.id, "--after-sequence", "4")

    assert result.exit_code == 1
    assert "SUCCEEDED" in result.stdout
    assert "FAILED" in result.stdout
    assert only_ok.exit_code == 0
    assert [json.loads(line)["sequence"] for line in only_ok.stdout.splitlines()] == ["5", "6"]
    assert fake.state.subscriptions[-1] == (ok.id, 4)


# --- export and download --------------------------------------------------------------------------


def test_export_downloads_and_checks_the_file(fake: ThreadedFakeServer, tmp_path: Path) -> None:
    output = tmp_path / "people.csv"

    result = run(fake, "export", "people", "--format", "csv", "--compression", "gzip", "-o", str(output))

    assert result.exit_code == 0, result.output
    [request] = _requests(fake, job_service_pb2.ExportRequest)
    assert request.format == job_service_pb2.FILE_FORMAT_CSV
    assert request.compression == job_service_pb2.COMPRESSION_GZIP
    [data] = fake.state.objects.values()
    assert output.read_bytes() == data
    assert f"sha256 {hashlib.sha256(data).hexdigest()} (checked)" in result.stderr
    assert not (tmp_path / "people.csv.part").exists()


def test_download_with_a_wrong_sha256_keeps_no_file(fake: ThreadedFakeServer, tmp_path: Path) -> None:
    fake.state.objects["exports/x.csv"] = b"a,b\n1,2\n"
    fake.state.break_read_after = 1  # also resumes across a broken stream
    output = tmp_path / "x.csv"

    good = run(fake, "download", "exports/x.csv", "-o", str(output))
    bad = run(fake, "download", "exports/x.csv", "-o", str(tmp_path / "y.csv"), "--sha256", "00" * 32)

    assert good.exit_code == 0, good.output
    assert output.read_bytes() == b"a,b\n1,2\n"
    assert bad.exit_code == 1
    assert "sha256 mismatch" in bad.stderr
    assert not (tmp_path / "y.csv").exists()
    assert not (tmp_path / "y.csv.part").exists()


def test_download_of_a_missing_object(fake: ThreadedFakeServer, tmp_path: Path) -> None:
    result = run(fake, "download", "nope", "-o", str(tmp_path / "out"))

    assert result.exit_code == 1
    assert "error: NOT_FOUND" in result.stderr
    assert not (tmp_path / "out.part").exists()


def test_export_rejects_an_unknown_format_before_calling(fake: ThreadedFakeServer) -> None:
    result = run(fake, "export", "people", "--format", "xml")

    assert result.exit_code == 2
    assert fake.state.requests == []


# --- datasets -------------------------------------------------------------------------------------


def test_datasets_list_get_delete(fake: ThreadedFakeServer) -> None:
    dataset = job_pb2.Dataset(
        id="d-1", name="people", row_count=1000, ready=True, columns=[schema_pb2.Column(name="id", type="uuid")]
    )
    fake.state.datasets[dataset.id] = dataset

    listed = run(fake, "datasets", "list")
    got = run(fake, "--json", "datasets", "get", "people")
    deleted = run(fake, "datasets", "delete", "people")
    missing = run(fake, "datasets", "get", "people")

    assert listed.exit_code == 0
    assert "people" in listed.stdout
    assert json.loads(got.stdout)["columns"] == [{"name": "id", "type": "uuid"}]
    assert deleted.stdout.strip() == "deleted dataset people"
    assert missing.exit_code == 1
    assert "error: NOT_FOUND" in missing.stderr


def test_delete_while_in_use_is_failed_precondition(fake: ThreadedFakeServer) -> None:
    fake.state.failures["DeleteDataset"] = [
        rich_status(grpc.StatusCode.FAILED_PRECONDITION, "a job is reading it", reason="DATASET_IN_USE")
    ]

    result = run(fake, "datasets", "delete", "people")

    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: FAILED_PRECONDITION: a job is reading it",
        "  reason: DATASET_IN_USE",
    ]


# --- connection and admin -------------------------------------------------------------------------


def test_unreachable_server_is_a_clean_error() -> None:
    result = CliRunner().invoke(cli, ["get", "x"], env={"DATAMILL_TARGET": "127.0.0.1:1"})

    assert result.exit_code == 1
    assert result.stderr.startswith("error: UNAVAILABLE")
    assert "is a datamill server running at 127.0.0.1:1?" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_dev_and_migrate_call_the_server_lazily(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[tuple[str, dict[str, object]]] = []
    dev = types.ModuleType("server.dev")

    def run_dev(**kwargs: object) -> int:
        calls.append(("dev", kwargs))
        return 0

    dev.run_dev = run_dev  # type: ignore[attr-defined]
    migrate = types.ModuleType("server.core.migrate")

    def migrate_command(database_url: str | None) -> int:
        calls.append(("migrate", {"database_url": database_url}))
        return 3

    migrate.migrate_command = migrate_command  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "server.dev", dev)
    monkeypatch.setitem(sys.modules, "server.core.migrate", migrate)

    dev_result = CliRunner().invoke(cli, ["dev", "--data-dir", str(tmp_path), "--demo", "--workers", "1"])
    migrate_result = CliRunner().invoke(cli, ["migrate"], env={"DATAMILL_DATABASE_URL": "postgresql://x/y"})

    assert dev_result.exit_code == 0, dev_result.output
    assert migrate_result.exit_code == 3
    assert calls == [
        ("dev", {"data_dir": tmp_path, "port": 50051, "workers": 1, "demo": True, "rows": 100_000}),
        ("migrate", {"database_url": "postgresql://x/y"}),
    ]


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(cli, ["--help"])

    for command in ("generate", "get", "list", "watch", "cancel", "export", "download", "datasets", "dev", "migrate"):
        assert command in result.output
