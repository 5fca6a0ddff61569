from __future__ import annotations

from typing import Any

import pytest

from server.core.errors import InvalidArgument
from server.core.fieldtypes import FIELD_TYPES
from server.core.schema import ColumnDef, FieldSpec, SchemaSpec, columns, validate_schema
from tests.unit.examples import INPUT_FIELDS, NEEDS_A_SERVER, example_field


def spec_of(*fields: dict[str, Any], rows: int = 100, seed: int | None = 7, locale: str = "") -> SchemaSpec:
    return SchemaSpec.from_json({"fields": list(fields), "rows": rows, "seed": seed, "locale": locale})


def validate(spec: SchemaSpec, **limits: int) -> SchemaSpec:
    return validate_schema(spec, max_rows=limits.get("max_rows", 1_000), max_fields=limits.get("max_fields", 10))


def violations(spec: SchemaSpec, **limits: int) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        validate(spec, **limits)
    found = {v.field: v.description for v in info.value.violations}
    assert len(found) == len(info.value.violations), "one violation per path"
    return found


def test_normalizes_params_seed_and_locale() -> None:
    spec = spec_of(
        {"name": "age", "type": "integer", "params": {"min": 18.0, "max": 90.0}},
        {"name": "score", "type": "float", "params": {"min": 1}},
        {"name": "at", "type": "timestamp", "params": {"start": "2024-01-01T02:00:00+02:00"}},
        seed=None,
    )
    normalized = validate(spec)

    age, score, at = normalized.fields
    assert age.params == {"min": 18, "max": 90}
    assert type(age.params["min"]) is int
    assert score.params == {"min": 1.0, "max": 1.0}
    assert at.params == {"start": "2024-01-01T02:00:00+02:00", "end": "2025-01-01T00:00:00Z"}
    assert normalized.locale == "en_US"
    assert normalized.seed is not None
    assert 0 <= normalized.seed < 2**63
    assert validate(normalized) == normalized, "validation is idempotent"


def test_a_given_seed_is_kept() -> None:
    assert validate(spec_of({"name": "a", "type": "uuid4"}, seed=2**64 - 1)).seed == 2**64 - 1


def test_json_round_trip() -> None:
    spec = validate(
        spec_of(
            {"name": "id", "type": "sequence", "unique": True, "seed": 3},
            {"name": "kind", "type": "choice", "params": {"values": ["a", "b"], "weights": [1, 3]}, "null_rate": 0.5},
            locale="fr_FR",
        )
    )
    data = spec.to_json()
    assert data["fields"][1] == {
        "name": "kind",
        "type": "choice",
        "params": {"values": ["a", "b"], "weights": [1.0, 3.0]},
        "null_rate": 0.5,
        "unique": False,
        "seed": None,
    }
    assert SchemaSpec.from_json(data) == spec


def test_from_json_reports_shape_errors_with_paths() -> None:
    with pytest.raises(InvalidArgument) as info:
        SchemaSpec.from_json({"fields": [{"name": "a", "type": "word", "colour": 1}, {"type": "word"}], "rows": "x"})
    assert {v.field for v in info.value.violations} == {
        "schema.fields[0].colour",
        "schema.fields[1].name",
        "schema.rows",
    }


def test_reports_every_violation_at_once_with_exact_paths() -> None:
    spec = SchemaSpec(
        fields=(
            FieldSpec("ok", "integer", {"min": 10, "max": 5}),
            FieldSpec("Bad-Name", "intger", {}),
            FieldSpec("ok", "float", {"mn": 1}),
            FieldSpec("x", "boolean", {"probability": 2}, null_rate=1.5),
            FieldSpec("y", "float", {}, unique=True, seed=-1),
            FieldSpec("z", "choice", {"values": ["a", 3], "weights": [1]}),
        ),
        rows=0,
        seed=2**64,
        locale="english",
    )
    assert violations(spec) == {
        "schema.rows": "must be between 1 and 1000",
        "schema.seed": "must be an unsigned 64-bit integer",
        "schema.locale": "unsupported locale 'english'; supported: en_US, de_DE, fr_FR, es_ES, it_IT, pt_BR",
        "schema.fields[0].params.max": "must be >= min (10)",
        "schema.fields[1].name": "must be a lower-case identifier: [a-z_][a-z0-9_]*",
        "schema.fields[1].type": (
            "unknown type 'intger'. Did you mean 'integer' or 'interval'?"
            f" See docs/field-types.md for all {len(FIELD_TYPES)} types."
        ),
        "schema.fields[2].name": "duplicates the name of schema.fields[0]",
        "schema.fields[2].params.mn": "unknown parameter; allowed: min, max, decimals",
        "schema.fields[3].null_rate": "must be between 0 and 1",
        "schema.fields[3].params.probability": "Input should be less than or equal to 1",
        "schema.fields[4].unique": "type float cannot promise distinct values",
        "schema.fields[4].seed": "must be an unsigned 64-bit integer",
        "schema.fields[5].params.values[1]": "Input should be a valid string",
    }


def test_path_prefix_is_the_callers() -> None:
    found = violations(SchemaSpec((FieldSpec("a", "nope", {}),), rows=1, seed=None, locale=""))
    assert list(found) == ["schema.fields[0].type"]
    with pytest.raises(InvalidArgument) as info:
        validate_schema(SchemaSpec((), rows=1, seed=None, locale=""), max_rows=1, max_fields=1, path="request.schema")
    assert [v.field for v in info.value.violations] == ["request.schema.fields"]


@pytest.mark.parametrize(
    ("rows", "field_count", "path"),
    [(1_001, 1, "schema.rows"), (-1, 1, "schema.rows"), (1, 0, "schema.fields"), (1, 11, "schema.fields")],
)
def test_limits(rows: int, field_count: int, path: str) -> None:
    fields = [{"name": f"f{i}", "type": "word"} for i in range(field_count)]
    assert list(violations(spec_of(*fields, rows=rows))) == [path]


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("1st", "lower-case identifier"),
        ("Name", "lower-case identifier"),
        ("with space", "lower-case identifier"),
        ("", "lower-case identifier"),
        ("é", "lower-case identifier"),
        ("a" * 64, "at most 63 bytes"),
    ],
)
def test_bad_names(name: str, problem: str) -> None:
    found = violations(spec_of({"name": name, "type": "word"}))
    assert problem in found["schema.fields[0].name"]


def test_longest_name_is_accepted() -> None:
    validate(spec_of({"name": "a" * 63, "type": "word"}))


@pytest.mark.parametrize("null_rate", [-0.1, 1.01, float("nan")])
def test_bad_null_rates(null_rate: float) -> None:
    assert list(violations(spec_of({"name": "a", "type": "word", "null_rate": null_rate}))) == [
        "schema.fields[0].null_rate"
    ]


@pytest.mark.parametrize(
    ("field_type", "params", "path", "message"),
    [
        ("integer", {"min": "5"}, "min", "Input should be a valid integer"),
        ("integer", {"min": True}, "min", "Input should be a valid integer"),
        ("integer", {"min": 5.5}, "min", "Input should be a valid integer"),
        ("integer", {"max": 2.0**64}, "max", "less than or equal to 9223372036854775807"),
        ("float", {"min": float("inf")}, "min", "Input should be a finite number"),
        ("float", {"min": -1e308, "max": 1e308}, "max", "max - min must be a finite float"),
        ("float", {"decimals": 16}, "decimals", "less than or equal to 15"),
        ("sequence", {"step": 0}, "step", "must not be 0"),
        ("sequence", {"start": 2**63 - 99, "step": 1}, "step", "overflows a 64-bit integer within 100 rows"),
        ("choice", {}, "values", "Field required"),
        ("choice", {"values": []}, "values", "at least 1 item"),
        ("choice", {"values": ["a", "b"], "weights": [1]}, "weights", "has 1 entries but values has 2"),
        ("choice", {"values": ["a"], "weights": [0]}, "weights", "must have a positive sum"),
        ("choice", {"values": ["a"], "weights": [-1]}, "weights[0]", "greater than or equal to 0"),
        ("sentence", {"min_words": 5, "max_words": 4}, "max_words", "must be >= min_words (5)"),
        ("sentence", {"max_words": 201}, "max_words", "less than or equal to 200"),
        ("timestamp", {"start": "2024-01-01T00:00:00"}, "start", "timezone"),
        ("timestamp", {"start": 1700000000}, "start", "ISO-8601 string with a timezone"),
        ("timestamp", {"start": "2030-01-01T00:00:00Z"}, "end", "must not be before start"),
        ("uuid4", {"version": 4}, "version", "unknown parameter; allowed: none"),
    ],
)
def test_param_violations(field_type: str, params: dict[str, Any], path: str, message: str) -> None:
    found = violations(spec_of({"name": "a", "type": field_type, "params": params}))
    assert list(found) == [f"schema.fields[0].params.{path}"]
    assert message in found[f"schema.fields[0].params.{path}"]


def test_unique_is_accepted_where_it_holds_by_construction() -> None:
    spec = validate(
        spec_of({"name": "id", "type": "uuid4", "unique": True}, {"name": "n", "type": "sequence", "unique": True})
    )
    assert [f.unique for f in spec.fields] == [True, True]
    unsupported = [name for name, t in FIELD_TYPES.items() if not t.supports_unique and name not in NEEDS_A_SERVER]
    for name in unsupported:
        found = violations(spec_of(*INPUT_FIELDS, example_field(name, unique=True)))
        assert found == {f"schema.fields[{len(INPUT_FIELDS)}].unique": f"type {name} cannot promise distinct values"}


def test_every_type_validates_with_default_params() -> None:
    for name in FIELD_TYPES.keys() - NEEDS_A_SERVER:
        validate(spec_of(*INPUT_FIELDS, example_field(name)))


def test_columns() -> None:
    spec = validate(
        spec_of(
            {"name": "id", "type": "uuid4"},
            {"name": "n", "type": "integer", "null_rate": 0.1},
            {"name": "at", "type": "timestamp"},
            {"name": "kind", "type": "choice", "params": {"values": ["a"]}, "null_rate": 1},
        )
    )
    assert columns(spec) == [
        ColumnDef("id", "uuid", "uuid", nullable=False),
        ColumnDef("n", "integer", "bigint", nullable=True),
        ColumnDef("at", "timestamp", "timestamp with time zone", nullable=False),
        ColumnDef("kind", "text", "text", nullable=True),
    ]


def test_sequence_may_end_exactly_at_the_int64_limit() -> None:
    validate(spec_of({"name": "a", "type": "sequence", "params": {"start": 2**63 - 100}}, rows=100))
