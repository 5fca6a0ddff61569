"""scripts/audit.py turns pip-audit's JSON report into an exit status: findings and gaps fail, no lookups is BLOCKED."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "audit.py"


@pytest.fixture(scope="module")
def audit() -> ModuleType:
    spec = importlib.util.spec_from_file_location("audit", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _clean(name: str) -> dict[str, object]:
    return {"name": name, "version": "1.0", "vulns": []}


def _skipped(name: str) -> dict[str, object]:
    return {"name": name, "skip_reason": f"Dependency not found on PyPI and could not be audited: {name} (1.0)"}


def test_every_package_audited_and_clean_passes(audit: ModuleType) -> None:
    lines, status = audit.verdict([_clean("grpcio"), _clean("psycopg")])
    assert status == 0
    assert lines == ["dependency audit: 2 packages, 2 audited, 0 vulnerable"]


def test_a_finding_fails_and_names_the_fix(audit: ModuleType) -> None:
    finding = {"name": "urllib3", "version": "1.0", "vulns": [{"id": "GHSA-x", "fix_versions": ["2.5.0"]}]}
    lines, status = audit.verdict([_clean("grpcio"), finding])
    assert status == 1
    assert "urllib3 1.0: GHSA-x (fixed in 2.5.0)" in lines


def test_a_partial_lookup_fails_naming_the_gaps(audit: ModuleType) -> None:
    lines, status = audit.verdict([_clean("grpcio"), _skipped("yarl")])
    assert status == 1
    assert any(line.startswith("not audited:") and "yarl" in line for line in lines)


def test_no_lookup_at_all_is_blocked_not_clean(audit: ModuleType) -> None:
    lines, status = audit.verdict([_skipped("grpcio"), _skipped("yarl")])
    assert status == audit.BLOCKED
    assert "BLOCKED" in lines[-1]
