"""Derived fields (template, expression), foreign keys and unique: output and validation."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from server.core import vocab
from server.core.errors import InvalidArgument
from server.core.schema import SchemaSpec, validate_schema
from worker.engines.generate import generate_chunk


def make_spec(*fields: dict[str, Any], rows: int = 10_000, seed: int = 5, locale: str = "") -> SchemaSpec:
    raw = {"fields": list(fields), "rows": rows, "seed": seed, "locale": locale}
    return validate_schema(SchemaSpec.from_json(raw), max_rows=10**9, max_fields=100)


def violations(*fields: dict[str, Any], rows: int = 100) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        make_spec(*fields, rows=rows)
    return {v.field: v.description for v in info.value.violations}


FIRST = {"name": "first", "type": "choice", "params": {"values": ["José", "Ann"]}}
LAST = {"name": "last", "type": "choice", "params": {"values": ["Müller", "Lee"]}}


def test_template_combines_fields_row_by_row() -> None:
    email = {"name": "email", "type": "template", "params": {"template": "{first}.{last}@example.com"}}
    batch = generate_chunk(make_spec(FIRST, LAST, email), 0, 1000).to_pydict()
    for first, last, got in zip(batch["first"], batch["last"], batch["email"], strict=True):
        assert got == f"{first}.{last}@example.com"


def test_template_case_ascii_and_nulls() -> None:
    first = {**FIRST, "null_rate": 0.3}
    email = {"name": "e", "type": "template", "params": {"template": "{first}{{x}}", "case": "lower", "ascii": True}}
    batch = generate_chunk(make_spec(first, email), 0, 2000).to_pydict()
    for name, got in zip(batch["first"], batch["e"], strict=True):
        assert got == (None if name is None else {"José": "jose{x}", "Ann": "ann{x}"}[name])


def test_template_renders_uuids_and_numbers_as_text() -> None:
    fields: list[dict[str, Any]] = [
        {"name": "id", "type": "uuid4"},
        {"name": "n", "type": "integer"},
        {"name": "t", "type": "template", "params": {"template": "{id}/{n}"}},
    ]
    batch = generate_chunk(make_spec(*fields), 0, 100)
    ids = [b.hex() for b in batch.column("id").to_pylist()]
    for raw, n, got in zip(ids, batch.column("n").to_pylist(), batch.column("t").to_pylist(), strict=True):
        assert got == f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:]}/{n}"


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{first", "expected '}' before end of string"),
        ("{First}", "placeholder {First} must name a field: [a-z_][a-z0-9_]*"),
        ("{first:>10}", "placeholder {first} takes no format spec or conversion"),
        ("no fields", "has no {field} placeholder; use choice for a constant"),
    ],
)
def test_template_problems_name_the_param(template: str, message: str) -> None:
    found = violations(FIRST, {"name": "t", "type": "template", "params": {"template": template}})
    assert found == {"schema.fields[1].params.template": message}


def test_inputs_must_exist_and_not_form_a_cycle() -> None:
    found = violations(
        {"name": "a", "type": "template", "params": {"template": "{b}"}},
        {"name": "b", "type": "template", "params": {"template": "{a}"}},
        {"name": "c", "type": "template", "params": {"template": "{nope}"}},
    )
    assert found == {
        "schema.fields[0].params": "fields depend on each other in a cycle: a -> b -> a",
        "schema.fields[2].params": "refers to unknown field 'nope'; known: a, b, c",
    }


PRICE = {"name": "price", "type": "expression", "params": {"expression": "round(base / 100, 2)", "result": "decimal"}}
BASE = {"name": "base", "type": "integer", "params": {"min": 1, "max": 100_000}}
QUANTITY = {"name": "quantity", "type": "integer", "params": {"min": 1, "max": 20}}


def test_expression_total_is_price_times_quantity_exactly() -> None:
    total = {"name": "total", "type": "expression", "params": {"expression": "price * quantity", "result": "decimal"}}
    batch = generate_chunk(make_spec(BASE, PRICE, QUANTITY, total), 0, 5000)
    assert batch.schema.field("total").type == pa.decimal128(38, 2)
    rows = batch.to_pydict()
    for base, price, quantity, got in zip(rows["base"], rows["price"], rows["quantity"], rows["total"], strict=True):
        assert price == Decimal(base) / 100
        assert got == price * quantity


def test_expression_integer_and_float_results_and_nulls() -> None:
    fields: list[dict[str, Any]] = [
        {**QUANTITY, "null_rate": 0.2},
        {"name": "sq", "type": "expression", "params": {"expression": "quantity ** 2 - 1", "result": "integer"}},
        {"name": "inv", "type": "expression", "params": {"expression": "1 / (quantity - 1)"}},
        {"name": "m", "type": "expression", "params": {"expression": "max(quantity, 10) // 3", "result": "integer"}},
    ]
    rows = generate_chunk(make_spec(*fields), 0, 3000).to_pydict()
    for q, sq, inv, m in zip(rows["quantity"], rows["sq"], rows["inv"], rows["m"], strict=True):
        if q is None:
            assert (sq, inv, m) == (None, None, None)
            continue
        assert sq == q * q - 1
        assert m == max(q, 10) // 3
        assert inv == (None if q == 1 else 1 / (q - 1))  # division by zero: NULL


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("quantity +", "is not a valid expression: invalid syntax"),
        ("__import__('os')", "only these functions may be called: abs, round, floor, ceil, sqrt, log, exp, min, max"),
        ("quantity ** 0.5", "** takes a whole-number literal power from 0 to 16"),
        ("quantity if quantity else 1", "IfExp is not supported in an expression"),
        ("'a' + quantity", "only numbers may appear as literals, not 'a'"),
        ("quantity.real", "Attribute is not supported in an expression"),
    ],
)
def test_expression_problems(expression: str, message: str) -> None:
    found = violations(QUANTITY, {"name": "e", "type": "expression", "params": {"expression": expression}})
    assert found == {"schema.fields[1].params.expression": message}


def test_expression_inputs_must_be_numbers() -> None:
    found = violations(FIRST, {"name": "e", "type": "expression", "params": {"expression": "first * 2"}})
    assert found == {"schema.fields[1].params.expression": "field 'first' is text, not a number"}


# -- foreign keys: the server fills `target` from the referenced dataset (see references.py) ----------

PARENT = SchemaSpec.from_json(
    {"fields": [{"name": "id", "type": "sequence", "params": {"start": 100}}], "rows": 1_000, "seed": 9}
)


def foreign_key(skew: float = 0.0, **extra: Any) -> dict[str, Any]:
    target = {
        "rows": PARENT.rows,
        "schema": PARENT.to_json(),
        "field": "id",
        "column": {"type": "integer", "pg_type": "bigint"},
    }
    params = {"dataset": "parents", "column": "id", "skew": skew, "target": target}
    return {"name": "parent_id", "type": "foreign_key", "params": params, **extra}


def test_foreign_keys_only_take_referenced_values() -> None:
    column = generate_chunk(make_spec(foreign_key(), rows=50_000), 0, 50_000).column(0)
    assert column.type == pa.int64()
    values = np.asarray(column.to_numpy())
    assert values.min() >= 100
    assert values.max() <= 1_099
    assert len(np.unique(values)) > 990  # uniform over 1,000 keys


def test_skew_concentrates_on_few_keys_spread_over_the_parent() -> None:
    values = np.asarray(generate_chunk(make_spec(foreign_key(skew=3.0), rows=50_000), 0, 50_000).column(0))
    counts = np.sort(np.unique(values, return_counts=True)[1])[::-1]
    # With skew s, the hottest fraction f of the keys gets f ** (1 / (1 + s)) of the rows: 1% -> 32%.
    assert counts[:10].sum() > 0.25 * len(values)
    hot = np.unique(values, return_counts=True)[0][np.argsort(-np.unique(values, return_counts=True)[1])[:10]]
    assert hot.max() - hot.min() > 100  # not simply the first parent rows


def test_unique_foreign_keys_pair_rows_one_to_one() -> None:
    values = generate_chunk(make_spec(foreign_key(unique=True), rows=1_000), 0, 1_000).column(0).to_pylist()
    assert sorted(values) == list(range(100, 1_100))
    found = violations(foreign_key(unique=True), rows=1_001)
    assert list(found) == ["schema.fields[0].unique"]


def test_foreign_keys_remake_computed_parent_columns() -> None:
    parent = SchemaSpec.from_json(
        {
            "fields": [
                {"name": "n", "type": "sequence"},
                {"name": "code", "type": "template", "params": {"template": "P-{n}"}},
            ],
            "rows": 50,
            "seed": 1,
        }
    )
    field = foreign_key()
    field["params"]["target"].update(schema=parent.to_json(), field="code", rows=50)
    field["params"]["target"]["column"] = {"type": "text", "pg_type": "text"}
    values = set(generate_chunk(make_spec(field, rows=2_000), 0, 2_000).column(0).to_pylist())
    assert values == {f"P-{n}" for n in range(1, 51)}


# -- unique ------------------------------------------------------------------------------------------


def test_unique_rejects_a_domain_smaller_than_the_rows_naming_the_field() -> None:
    small = {"name": "code", "type": "integer", "params": {"min": 1, "max": 99}, "unique": True}
    assert violations(small, rows=100) == {
        "schema.fields[0].unique": "field 'code' (integer) has only 99 distinct values for locale en_US,"
        " fewer than rows (100)"
    }
    words = len(vocab.load("en_US", "word").values)
    found = violations({"name": "w", "type": "word", "unique": True}, rows=words + 1)
    assert "has only" in found["schema.fields[0].unique"]


@pytest.mark.parametrize(
    "field",
    [
        {"name": "v", "type": "integer", "params": {"min": -5, "max": 9_994}},
        {
            "name": "v",
            "type": "timestamp",
            "params": {"start": "2024-01-01T00:00:00Z", "end": "2024-01-01T00:00:00.009999Z"},
        },
        {"name": "v", "type": "choice", "params": {"values": [str(i) for i in range(10_000)]}},
    ],
)
def test_unique_values_are_distinct_across_chunks_up_to_the_whole_domain(field: dict[str, Any]) -> None:
    spec = make_spec({**field, "unique": True}, rows=10_000)
    column = pa.concat_arrays([generate_chunk(spec, start, 2_500).column(0) for start in range(0, 10_000, 2_500)])
    assert pc.count_distinct(column).as_py() == 10_000
