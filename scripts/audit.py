"""Audit the project's installed dependencies for known vulnerabilities with pip-audit.

pip-audit runs from its own venv (.venv-audit) so that its dependencies never mix with the service's, and it audits
exactly what `pip freeze` lists in .venv, the editable project itself excepted.

Exit status: 0 when every dependency was audited and none has a known vulnerability; 1 when one has, or when only
some could be looked up; 3 when none could be looked up (the vulnerability service is out of reach: the audit is
blocked, not clean, and says so).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROJECT_PYTHON = ROOT / ".venv" / "bin" / "python"
AUDIT_VENV = ROOT / ".venv-audit"
BLOCKED = 3


def _pip_audit() -> Path:
    tool = AUDIT_VENV / "bin" / "pip-audit"
    if not tool.exists():
        venv.create(AUDIT_VENV, with_pip=True)
        subprocess.run([AUDIT_VENV / "bin" / "pip", "install", "--quiet", "pip-audit>=2.7"], check=True)
    return tool


def verdict(dependencies: list[dict[str, Any]]) -> tuple[list[str], int]:
    """What pip-audit's JSON report says, as lines to print and the exit status (see the module's docstring)."""
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if "skip_reason" in d]
    lines = []
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixes = ", ".join(vuln.get("fix_versions", [])) or "none"
            lines.append(f"{dependency['name']} {dependency['version']}: {vuln['id']} (fixed in {fixes})")
    audited = len(dependencies) - len(skipped)
    lines.append(f"dependency audit: {len(dependencies)} packages, {audited} audited, {len(vulnerable)} vulnerable")
    if vulnerable:
        return lines, 1
    if skipped and not audited:
        reason = skipped[0]["skip_reason"]
        return [*lines, f"dependency audit BLOCKED: no package could be looked up ({reason})"], BLOCKED
    return [*lines, *(f"not audited: {d['skip_reason']}" for d in skipped)], 1 if skipped else 0


def main() -> int:
    frozen = subprocess.run(
        [PROJECT_PYTHON, "-m", "pip", "freeze", "--exclude-editable"], check=True, capture_output=True, text=True
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        requirements = Path(tmp) / "requirements.txt"
        report = Path(tmp) / "report.json"
        requirements.write_text(frozen)
        options = ["--no-deps", "--disable-pip", "--progress-spinner", "off", "--format", "json"]
        command = [str(_pip_audit()), "-r", str(requirements), *options, "--output", str(report)]
        run = subprocess.run(command, check=False, capture_output=True, text=True)
        if not report.exists():
            print(run.stderr.strip().splitlines()[-1] if run.stderr.strip() else "pip-audit wrote no report")
            print(f"dependency audit BLOCKED: pip-audit failed (exit {run.returncode}) before auditing anything")
            return BLOCKED
        dependencies = json.loads(report.read_text())["dependencies"]
    lines, status = verdict(dependencies)
    print("\n".join(lines))
    return status


if __name__ == "__main__":
    sys.exit(main())
