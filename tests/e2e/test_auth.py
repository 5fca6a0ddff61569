"""Authentication and roles on a real server and worker: every RPC against every kind of caller.

The callers: no credentials, an expired token, a token for another audience,
an admin of another tenant, and viewer, editor and admin tokens of tenant
`acme`. Each RPC is called as each caller on resources of `acme`, and the
outcome is checked against the role table (server/api/auth.py): UNAUTHENTICATED
for a bad credential (with one message whatever the cause), PERMISSION_DENIED
with ErrorInfo for a role that is too low, NOT_FOUND (as for a resource that
does not exist) for another tenant, and success otherwise.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import Client
from client.cli import cli
from client.errors import DatamillError
from server.core.auth import UNAUTHENTICATED_MESSAGE
from tests.e2e.conftest import Stack

SECRET = "e2e-secret-" + "x" * 32
AUDIENCE = "datamill-e2e"
SCHEMA = {"fields": [{"name": "n", "type": "integer", "params": {"min": 1, "max": 9}}], "rows": 20, "seed": 1}

OK, UNAUTH, DENIED, MISSING = "OK", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND"


def token(
    *, tenant: str = "acme", role: str = "editor", audience: str = AUDIENCE, expires_in: int = 300, sub: str = ""
) -> str:
    now = int(time.time())
    claims = {
        "sub": sub or f"{role}@{tenant}",
        "tenant": tenant,
        "role": role,
        "aud": audience,
        "exp": now + expires_in,
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


CALLERS: dict[str, str | None] = {
    "none": None,
    "expired": token(expires_in=-3600),
    "wrong-audience": token(audience="another-service"),
    "other-tenant-admin": token(tenant="rival", role="admin"),
    "viewer": token(role="viewer"),
    "editor": token(role="editor"),
    "admin": token(role="admin"),
}
BAD = {"none": UNAUTH, "expired": UNAUTH, "wrong-audience": UNAUTH}


def expected(least: str, *, scoped: bool = True) -> dict[str, str]:
    """Each caller's outcome for an RPC that needs role `least` on a resource of acme (`scoped`)."""
    order = ["viewer", "editor", "admin"]
    outcome = dict(BAD)
    outcome["other-tenant-admin"] = MISSING if scoped else OK
    for role in order:
        outcome[role] = OK if order.index(role) >= order.index(least) else DENIED
    return outcome


@pytest.fixture(scope="module")
def secured(pg_server: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from tests.e2e.conftest import make_stack, stop_stack  # noqa: PLC0415

    settings = {"DATAMILL_AUTH": "required", "DATAMILL_JWT_SECRET": SECRET, "DATAMILL_JWT_AUDIENCE": AUDIENCE}
    stack = make_stack(pg_server, redis_url, tmp_path_factory.mktemp("auth"), settings=settings)
    try:
        with connect(stack, CALLERS["admin"]) as admin:
            job = admin.generate("shared", schema=SCHEMA)
            assert admin.wait(job.id).state == 3  # SUCCEEDED
            exported = admin.export("shared", format="csv")
            done = admin.wait(exported.id)
            assert done.state == 3, done
            yield {"stack": stack, "job_id": job.id, "object_key": done.export.object_key}
    except BaseException:
        print(stack.dump_logs())
        raise
    finally:
        stop_stack(stack, pg_server)


def connect(stack: Stack, credential: str | None) -> Client:
    metadata = [("authorization", f"Bearer {credential}")] if credential else []
    return Client.connect(stack.target, metadata=metadata, timeout=20)


def outcome(call: Callable[[], object]) -> str:
    """The call's status code name; a refusal whose details are not as promised shows them instead."""
    try:
        call()
    except DatamillError as exc:
        detail = (exc.message, exc.reason, exc.metadata)
        if exc.code is grpc.StatusCode.UNAUTHENTICATED and detail != (UNAUTHENTICATED_MESSAGE, "UNAUTHENTICATED", {}):
            return f"UNAUTHENTICATED with details {detail}"  # one message for every cause, nothing more
        if exc.code is grpc.StatusCode.PERMISSION_DENIED and (
            exc.reason not in ("ROLE_REQUIRED", "NOT_JOB_OWNER")
            or set(exc.metadata) != {"action", "required_role", "role"}
        ):
            return f"PERMISSION_DENIED without its ErrorInfo {detail}"
        return exc.code.name
    return OK


def _name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def _csv(tmp: Path) -> Path:
    path = tmp / f"{uuid.uuid4().hex}.csv"
    path.write_text("a,b\n1,x\n2,y\n")
    return path


RPCS: dict[str, tuple[dict[str, str], Callable[[Client, dict[str, Any], Path], object]]] = {
    "Generate": (
        expected("editor", scoped=False),
        lambda c, r, t: c.generate(_name("g"), schema=SCHEMA),
    ),
    "Upload": (expected("editor", scoped=False), lambda c, r, t: c.upload(_csv(t), _name("u"))),
    "Export": (expected("editor"), lambda c, r, t: c.export("shared", format="jsonl")),
    "GetJob": (expected("viewer"), lambda c, r, t: c.get_job(r["job_id"])),
    "WatchJob": (expected("viewer"), lambda c, r, t: list(c.watch(r["job_id"]))),
    # The job was created by the admin: an editor may cancel only its own (see the test below).
    "CancelJob": (expected("admin"), lambda c, r, t: c.cancel_job(r["job_id"])),
    "GetDataset": (expected("viewer"), lambda c, r, t: c.get_dataset("shared")),
    "ReadObject": (expected("viewer"), lambda c, r, t: b"".join(c.read_object(r["object_key"]))),
    "ListJobs": (expected("viewer", scoped=False), lambda c, r, t: c.list_jobs()),
    "ListDatasets": (expected("viewer", scoped=False), lambda c, r, t: c.list_datasets()),
}


@pytest.mark.parametrize("rpc", list(RPCS))
def test_every_rpc_admits_exactly_the_callers_its_role_allows(
    secured: dict[str, Any], rpc: str, tmp_path: Path
) -> None:
    wanted, call = RPCS[rpc]
    seen = {}
    for name, credential in CALLERS.items():
        with connect(secured["stack"], credential) as client:
            seen[name] = outcome(lambda client=client: call(client, secured, tmp_path))  # type: ignore[misc]
    assert seen == wanted


def test_delete_dataset_needs_an_admin_of_its_tenant(secured: dict[str, Any]) -> None:
    stack = secured["stack"]
    with connect(stack, CALLERS["admin"]) as admin:
        admin.wait(admin.generate("doomed", schema=SCHEMA).id)
    seen = {}
    for name in ("none", "expired", "wrong-audience", "other-tenant-admin", "viewer", "editor", "admin"):
        with connect(stack, CALLERS[name]) as client:
            seen[name] = outcome(lambda client=client: client.delete_dataset("doomed"))  # type: ignore[misc]
    assert seen == expected("admin")
    with connect(stack, CALLERS["admin"]) as admin, pytest.raises(DatamillError) as gone:
        admin.get_dataset("doomed")
    assert gone.value.code is grpc.StatusCode.NOT_FOUND


def test_another_tenant_sees_nothing_of_acme_in_lists(secured: dict[str, Any]) -> None:
    with connect(secured["stack"], CALLERS["other-tenant-admin"]) as rival:
        assert secured["job_id"] not in {job.id for job in rival.list_jobs().jobs}
        assert "shared" not in {d.name for d in rival.list_datasets().datasets}
    with connect(secured["stack"], CALLERS["viewer"]) as viewer:
        assert secured["job_id"] in {job.id for job in viewer.list_jobs().jobs}


def test_another_tenants_resource_is_indistinguishable_from_a_missing_one(secured: dict[str, Any]) -> None:
    absent = str(uuid.uuid4())
    with connect(secured["stack"], CALLERS["other-tenant-admin"]) as rival:
        with pytest.raises(DatamillError) as theirs:
            rival.get_job(secured["job_id"])
        with pytest.raises(DatamillError) as missing:
            rival.get_job(absent)
    assert theirs.value.code is missing.value.code is grpc.StatusCode.NOT_FOUND
    assert theirs.value.reason == missing.value.reason
    assert theirs.value.message.replace(secured["job_id"], "ID") == missing.value.message.replace(absent, "ID")
    assert {k: v.replace(secured["job_id"], "ID") for k, v in theirs.value.metadata.items()} == {
        k: v.replace(absent, "ID") for k, v in missing.value.metadata.items()
    }


def test_health_needs_no_credentials_and_the_log_audits_without_secrets(secured: dict[str, Any]) -> None:
    stack = secured["stack"]
    with grpc.insecure_channel(stack.target) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    log = (stack.logs / "server.log").read_text()
    assert '"event": "audit"' in log or '"event":"audit"' in log
    assert "PERMISSION_DENIED" in log and "UNAUTHENTICATED" in log
    for credential in CALLERS.values():
        if credential:
            assert credential not in log
            assert credential.split(".")[2] not in log  # not even a signature
    assert SECRET not in log


def _keys_cli(stack: Stack, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["--json", "keys", "--database-url", stack.database_url, *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.output.splitlines() if line.strip()]


def test_api_keys_carry_their_tenant_and_role_until_revoked(secured: dict[str, Any]) -> None:
    stack: Stack = secured["stack"]
    [created] = _keys_cli(stack, "create", "--tenant", "acme", "--role", "viewer", "--name", "dashboard")
    key = created["key"]
    assert key.startswith("dmk_") and created["tenant"] == "acme" and created["role"] == "viewer"
    [rival] = _keys_cli(stack, "create", "--tenant", "rival", "--role", "admin", "--name", "rival-ci")

    with connect(stack, key) as viewer:
        assert viewer.get_job(secured["job_id"]).id == secured["job_id"]
        assert outcome(lambda: viewer.generate("by_key", schema=SCHEMA)) == DENIED
    with connect(stack, rival["key"]) as other:
        assert outcome(lambda: other.get_job(secured["job_id"])) == MISSING
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    with connect(stack, forged) as impostor:
        assert outcome(lambda: impostor.get_job(secured["job_id"])) == UNAUTH

    # Only a salted hash is stored: the secret appears nowhere in the table.
    secret = key.rsplit("_", 1)[1]
    stored = stack.sql("SELECT tenant, role, name, encode(salt, 'hex'), encode(secret_hash, 'hex') FROM api_keys")
    assert secret not in repr(stored) and len(stored) == 2
    listed = _keys_cli(stack, "list", "--tenant", "acme")
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]

    [revoked] = _keys_cli(stack, "revoke", created["id"])
    assert revoked["revoked_at"] is not None
    with connect(stack, key) as viewer:
        assert outcome(lambda: viewer.get_job(secured["job_id"])) == UNAUTH  # at once, not after a cache expires
    bad = CliRunner().invoke(
        cli,
        [
            "keys",
            "--database-url",
            stack.database_url,
            "create",
            "--tenant",
            "Bad Tenant",
            "--role",
            "viewer",
            "--name",
            "x",
        ],
    )
    assert bad.exit_code == 2 and "tenant must match" in bad.output


def test_an_editor_cancels_its_own_jobs_and_an_admin_any(secured: dict[str, Any]) -> None:
    stack: Stack = secured["stack"]
    another_editor = token(role="editor", sub="someone-else")
    big = {**SCHEMA, "rows": 5_000_000}  # still running when cancelled
    with connect(stack, CALLERS["editor"]) as editor, connect(stack, another_editor) as other:
        mine = editor.generate(_name("mine"), schema=big)
        assert outcome(lambda: other.cancel_job(mine.id)) == DENIED  # same tenant and role, not the creator
        assert editor.cancel_job(mine.id).id == mine.id
        assert editor.wait(mine.id).state == 5  # CANCELLED
        theirs = other.generate(_name("theirs"), schema=big)
    with connect(stack, CALLERS["admin"]) as admin:
        assert admin.cancel_job(theirs.id).id == theirs.id
        assert admin.wait(theirs.id).state == 5
    rows = stack.sql("SELECT created_by FROM jobs WHERE id = %s", mine.id)
    assert rows == [("editor@acme",)]
