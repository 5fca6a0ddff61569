"""Params for the field types whose params have no defaults, for tests that make every type."""

from __future__ import annotations

from typing import Any

# Fields that derived examples read; a schema with a derived example includes them.
INPUT_FIELDS: list[dict[str, Any]] = [
    {"name": "in_word", "type": "word"},
    {"name": "in_integer", "type": "integer", "params": {"min": -50, "max": 50}},
    {"name": "in_float", "type": "float"},
]
EXAMPLE_PARAMS: dict[str, dict[str, Any]] = {
    "choice": {"values": ["red", "green", "blue"], "weights": [1, 2, 3]},
    "template": {"template": "{in_word}-{in_integer}", "case": "upper"},
    "expression": {"expression": "round(in_integer * 2.5 + in_float, 2)", "result": "decimal", "scale": 2},
}
NEEDS_A_SERVER = frozenset({"foreign_key"})  # resolved against a stored dataset: see test_relations


def example_field(type_name: str, name: str = "value", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_name, "params": EXAMPLE_PARAMS.get(type_name, {}), **extra}
