"""The docs match the code: generated field types and settings table are current, README schemas validate."""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from client.schema_file import parse_schema
from server.api.convert import schema_spec
from server.core.schema import validate_schema
from tests.unit.examples import NEEDS_A_SERVER

ROOT = Path(__file__).resolve().parents[2]


def test_field_type_docs_are_current() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/fieldtypes_doc.py", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_readme_settings_table_is_current() -> None:
    """README.md lists every DATAMILL_* setting with its default, as scripts/settings_doc.py renders them."""
    result = subprocess.run(
        [sys.executable, "scripts/settings_doc.py", "--check"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_readme_schemas_are_valid() -> None:
    """Every YAML schema in the README parses as the CLI reads it and passes validation."""
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    schemas = [block for block in blocks if "fields:" in block]
    assert len(schemas) >= 2
    for block in schemas:
        spec = schema_spec(parse_schema(block, source="README.md"))
        local = [f for f in spec.fields if f.type not in NEEDS_A_SERVER]  # resolved against a stored dataset
        validate_schema(replace(spec, fields=tuple(local)), max_rows=10**9, max_fields=100)
