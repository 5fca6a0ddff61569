"""Hostile names on a real server and worker: quotes, semicolons, SQL, unicode and 10,000-character names.

Names that must be identifiers (datasets, schema fields, export columns, job
ids) are refused up front with INVALID_ARGUMENT and a field violation, or are
NOT_FOUND; never INTERNAL. Names that come from a file (an uploaded CSV's
header) are turned into column names and imported; the values come back
unchanged. Whatever was sent, what was stored before is still there, row for row.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import grpc
import pytest

from client import Client
from client.errors import DatamillError
from tests.e2e.conftest import Stack

SUCCEEDED = 3
HOSTILE = [
    'x"; DROP TABLE jobs; --',
    "Robert'); DROP TABLE datasets; --",
    "a;b",
    '"quoted"',
    "données_ünïcode",
    "名前",
    "emoji_🙂",
    "nul\x00byte",
    "new\nline",
    "trailing\n",
    "../../etc/passwd",
    "x" * 10_000,
    " ",
    "UPPER",
]
SCHEMA = {"fields": [{"name": "n", "type": "integer", "params": {"min": 1, "max": 9}}], "rows": 50, "seed": 9}


@pytest.fixture
def seeded(stack: Stack) -> dict[str, Any]:
    with Client.connect(stack.target) as client:
        job = client.generate("keep_me", schema=SCHEMA)
        assert client.wait(job.id).state == SUCCEEDED
        table = stack.sql("SELECT table_name FROM datasets WHERE name = 'keep_me'")[0][0]
    rows = stack.sql(f'SELECT count(*), sum(n) FROM datasets."{table}"')[0]
    jobs = stack.sql("SELECT count(*) FROM jobs")[0][0]
    return {"stack": stack, "table": table, "rows": rows, "jobs": jobs}


def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(DatamillError) as exc:
        call()
    assert exc.value.code is not grpc.StatusCode.INTERNAL, exc.value
    return exc.value.code


def _intact(seeded: dict[str, Any]) -> None:
    stack: Stack = seeded["stack"]
    assert stack.sql(f'SELECT count(*), sum(n) FROM datasets."{seeded["table"]}"')[0] == seeded["rows"]
    tables = stack.sql("SELECT to_regclass('public.jobs') IS NOT NULL, to_regclass('public.datasets') IS NOT NULL")
    assert tables == [(True, True)]


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_identifiers_are_refused_before_any_work(seeded: dict[str, Any], name: str) -> None:
    stack: Stack = seeded["stack"]
    with Client.connect(stack.target) as client:
        with pytest.raises(DatamillError) as generate:
            client.generate(name, schema=SCHEMA)
        assert generate.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert [v.field for v in generate.value.field_violations] == ["dataset_name"]

        bad_field = {**SCHEMA, "fields": [{"name": name, "type": "integer"}]}
        with pytest.raises(DatamillError) as field:
            client.generate("fine_name", schema=bad_field)
        assert field.value.code is grpc.StatusCode.INVALID_ARGUMENT
        assert any("fields" in v.field for v in field.value.field_violations)

        assert _code(lambda: client.export(name, format="csv")) in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
        )
        assert _code(lambda: client.export("keep_me", format="csv", columns=[name])) is (
            grpc.StatusCode.INVALID_ARGUMENT
        )
        for call in (
            lambda: client.get_dataset(name),
            lambda: client.delete_dataset(name),
            lambda: client.get_job(name),
            lambda: client.cancel_job(name),
            lambda: list(client.watch(name)),
            lambda: b"".join(client.read_object(name)),
        ):
            assert _code(call) in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert stack.sql("SELECT count(*) FROM jobs")[0][0] == seeded["jobs"]  # nothing was started
    _intact(seeded)


def test_an_upload_with_hostile_header_names_imports_them_as_safe_columns(
    seeded: dict[str, Any], tmp_path: Path
) -> None:
    stack: Stack = seeded["stack"]
    headers = [h for h in HOSTILE if "\x00" not in h]
    rows = [[f"v{r}_{c};'\"" for c in range(len(headers))] for r in range(30)]
    path = tmp_path / "hostile.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(headers)
        writer.writerows(rows)

    with Client.connect(stack.target) as client:
        done = client.upload(path, "from_hostile_file")
        assert client.wait(done.job.id).state == SUCCEEDED
        dataset = client.get_dataset("from_hostile_file")
        names = [c.name for c in dataset.columns]
        assert len(names) == len(set(names)) == len(headers)
        assert all(n.isascii() and len(n.encode()) <= 63 for n in names)
        exported = client.export("from_hostile_file", format="csv")
        final = client.wait(exported.id)
        assert final.state == SUCCEEDED
        text = b"".join(client.read_object(final.export.object_key)).decode()
    back = list(csv.reader(io.StringIO(text)))
    assert back[0] == names
    assert sorted(back[1:]) == sorted(rows)  # every value, quotes and semicolons included, unchanged
    _intact(seeded)
