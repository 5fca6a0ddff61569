from __future__ import annotations

import json
import re
import uuid
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from server.core import vocab
from server.core.fieldtypes import FIELD_TYPES
from server.core.fieldtypes.structured import ArrayParams, naughty_strings
from tests.unit.types.helpers import check_arrow_type, check_chunking, column, make_spec, values, violations
from worker.engines.generate import generate_chunk

NESTED_FIELDS: dict[str, Any] = {
    "id": {"type": "uuid7"},
    "name": {"type": "word", "null_rate": 0.3},
    "price": {"type": "money"},
    "ratio": {"type": "float"},
    "ok": {"type": "boolean"},
    "at": {"type": "timestamp"},
    "day": {"type": "date"},
    "when": {"type": "time"},
    "wait": {"type": "interval"},
    "code": {"type": "pattern", "params": {"pattern": '[a"\\\\\\n\\t]{0,4}'}},
    "tags": {"type": "array", "params": {"element": {"type": "slug"}}},
    "inner": {"type": "json_object", "params": {"fields": {"n": {"type": "integer", "null_rate": 0.5}}}},
}
CASES: list[tuple[str, dict[str, Any]]] = [
    ("pattern", {}),
    ("pattern", {"pattern": "(ab|c[de]{2,3})+x?\\d*"}),
    ("naughty_string", {}),
    ("json_object", {}),
    ("json_object", {"fields": NESTED_FIELDS}),
    ("array", {}),
    ("array", {"element": {"type": "decimal", "params": {"scale": 4}, "null_rate": 0.2}}),
    ("array", {"element": {"type": "json_object"}, "min_length": 1, "max_length": 2}),
    ("array", {"element": {"type": "timestamp_local", "params": {"timezone": "Europe/Paris"}}}),
]


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_makes_its_declared_arrow_type(type_name: str, params: dict[str, Any]) -> None:
    check_arrow_type(type_name, params)


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_rows_do_not_depend_on_the_chunking(type_name: str, params: dict[str, Any]) -> None:
    check_chunking(type_name, params)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(ab", "unclosed group '(' (at position 0)"),
        ("ab)", "unbalanced ')' (at position 2)"),
        ("a**", "a quantifier cannot follow a quantifier"),
        ("*a", "nothing to repeat before '*' (at position 0)"),
        ("[^a]", "negated classes [^...] are not supported"),
        ("[z-a]", "bad range z-a"),
        ("[]", "unclosed class"),
        ("a{3,2}", "max below min"),
        ("a{x}", "must start a quantifier"),
        ("\\q", "unsupported escape \\q"),
        ("ab\\", "lone backslash"),
        ("(?=a)", "only plain groups"),
        ("a{5000}b{5001}", "longer than 10000 characters"),
        ("a^b", "anchor '^' is only allowed at the start or end"),
    ],
)
def test_bad_patterns_are_rejected_with_the_position(pattern: str, message: str) -> None:
    found = violations("pattern", {"pattern": pattern})
    assert list(found) == ["pattern"]
    assert message in found["pattern"]


@pytest.mark.parametrize(
    ("type_name", "params", "path", "message"),
    [
        ("pattern", {"pattern": ""}, "pattern", "at least 1 character"),
        ("pattern", {"max_repeat": 0}, "max_repeat", "greater than or equal to 1"),
        ("naughty_string", {"safe": True}, "safe", "unknown parameter"),
        ("json_object", {"fields": {}}, "fields", "at least 1 item"),
        ("json_object", {"fields": {"a": {"type": "nope"}}}, "fields.a.type", "unknown type 'nope'"),
        ("json_object", {"fields": {"a": {"type": "integer", "params": {"min": 5, "max": 1}}}}, "fields.a.params.max",
         "must be >= min (5)"),
        ("json_object", {"fields": {"a": {"type": "integer", "params": {"min": "x"}}}}, "fields.a.params.min",
         "valid integer"),
        ("json_object", {"fields": {"a": {"type": "integer", "params": {"mn": 1}}}}, "fields.a.params.mn",
         "unknown parameter"),
        ("json_object", {"fields": {"a": {"type": "integer", "null_rate": 2}}}, "fields.a.null_rate",
         "less than or equal to 1"),
        ("json_object", {"fields": {"a": {"type": "integer", "unique": True}}}, "fields.a.unique", "unknown parameter"),
        ("json_object", {"fields": {"a": {"type": "template", "params": {"template": "{x}"}}}}, "fields.a.type",
         "computed from other fields"),
        ("json_object", {"fields": {"a": {"type": "json_object", "params": {"fields": {"b": {"type": "x"}}}}}},
         "fields.a.params.fields.b.type", "unknown type 'x'"),
        ("array", {"element": {"type": "array"}}, "element.type", "cannot be nested here"),
        ("array", {"element": {"type": "pattern", "params": {"pattern": "("}}}, "element.params.pattern",
         "unclosed group"),
        ("array", {"min_length": 3, "max_length": 2}, "max_length", "must be >= min_length (3)"),
        ("array", {"max_length": 1001}, "max_length", "less than or equal to 1000"),
    ],
)  # fmt: skip
def test_bad_params_are_rejected_on_the_param(type_name: str, params: dict[str, Any], path: str, message: str) -> None:
    found = violations(type_name, params)
    assert list(found) == [path]
    assert message in found[path]


def test_unique_is_rejected() -> None:
    for type_name in ("pattern", "naughty_string", "json_object", "array"):
        assert not FIELD_TYPES[type_name].supports_unique
        assert list(violations(type_name, {}, unique=True)) == ["unique"]


@pytest.mark.parametrize(
    "pattern",
    [
        "[A-Z]{3}-\\d{4}",
        "^(ab|cd)+$",
        "colou?r",
        "\\w+@\\w+\\.(com|org)",
        "[a-c_-]{2,5}",
        "(x|)y*",
        "[\\d.]{3}",
        "((a|b)c|d(e|f{2})){1,3}",
        "[]a]\\]",
        "é[α-γ]+\\s?✓",
        "\\{\\}\\(\\)\\[\\]\\|\\*\\+\\?\\.\\^\\$\\\\",
        "a{2,}b{,2}",
        ".{5}",
        "(?:ab){2}",
    ],
)
def test_values_match_their_pattern(pattern: str) -> None:
    made = values("pattern", {"pattern": pattern, "max_repeat": 4})
    compiled = re.compile(pattern)
    assert all(compiled.fullmatch(v) for v in made), [v for v in made if not compiled.fullmatch(v)][:5]
    deterministic = {"(?:ab){2}", "\\{\\}\\(\\)\\[\\]\\|\\*\\+\\?\\.\\^\\$\\\\"}
    assert (len(set(made)) == 1) == (pattern in deterministic)


def test_pattern_alternatives_and_counts_are_uniform() -> None:
    made = values("pattern", {"pattern": "(a|bb|ccc)x{0,3}"}, 12_000)
    firsts = [v[0] for v in made]
    for letter in "abc":
        assert firsts.count(letter) == pytest.approx(4_000, rel=0.06)
    xs = [v.count("x") for v in made]
    assert {n: xs.count(n) for n in range(4)} == pytest.approx(dict.fromkeys(range(4), 3_000), rel=0.08)


def test_star_and_plus_repeat_at_most_max_repeat() -> None:
    made = values("pattern", {"pattern": "a+b*", "max_repeat": 3})
    assert {v.count("a") for v in made} == {1, 2, 3}
    assert {v.count("b") for v in made} == {0, 1, 2, 3}


def test_naughty_strings_come_from_the_list_without_nul() -> None:
    made = set(values("naughty_string", {}, 5_000))
    assert made <= set(vocab.load("_global", "naughty_string").values)
    assert not any("\x00" in s for s in made)
    assert len(made) > 200
    assert len(naughty_strings()) < len(vocab.load("_global", "naughty_string").values)


def test_json_objects_parse_with_their_keys_in_jsonb_order() -> None:
    made = column("json_object", {"fields": NESTED_FIELDS}, 3_000)
    assert made.type == pa.json_(pa.string())
    objects = [json.loads(text) for text in made.storage.to_pylist()]
    jsonb_order = sorted(NESTED_FIELDS, key=lambda k: (len(k), k))
    assert all(list(o) == jsonb_order for o in objects)
    first = objects[0]
    uuid.UUID(first["id"])
    assert isinstance(first["price"], float)
    assert isinstance(first["ok"], bool)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["at"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", first["day"])
    assert re.fullmatch(r"P0M\d+DT\d+\.\d{6}S", first["wait"])
    assert all(isinstance(o["tags"], list) for o in objects)
    assert sum(o["name"] is None for o in objects) == pytest.approx(900, abs=100)
    assert sum(o["inner"]["n"] is None for o in objects) == pytest.approx(1_500, abs=150)
    assert {c for o in objects for c in o["code"]} == set('a"\\\n\t')


def test_json_text_does_not_depend_on_the_order_of_the_keys() -> None:
    forward = {"b": {"type": "integer"}, "a": {"type": "word"}, "cc": {"type": "boolean"}}
    backward = dict(reversed(forward.items()))
    assert column("json_object", {"fields": forward}).equals(column("json_object", {"fields": backward}))


def test_json_values_equal_the_nested_types_own_columns() -> None:
    fields = {"n": {"type": "decimal", "params": {"min": -1, "max": 1, "scale": 3}}, "w": {"type": "word"}}
    objects = [json.loads(t) for t in column("json_object", {"fields": fields}).storage.to_pylist()]
    assert all(-1 <= o["n"] <= 1 and Decimal(str(o["n"])) == round(Decimal(str(o["n"])), 3) for o in objects)
    assert {o["w"] for o in objects} <= set(vocab.load("en_US", "word").values)


def test_json_params_are_normalized_with_their_defaults() -> None:
    spec = make_spec({"name": "j", "type": "json_object", "params": {"fields": {"a": {"type": "integer"}}}})
    assert spec.fields[0].params == {
        "fields": {"a": {"type": "integer", "params": {"min": 0, "max": 1_000_000}, "null_rate": 0.0}}
    }
    assert make_spec(*spec.to_json()["fields"]) == spec


@pytest.mark.parametrize(("low", "high"), [(0, 0), (0, 3), (2, 2), (5, 9)])
def test_array_lengths_are_in_range(low: int, high: int) -> None:
    lists = values("array", {"min_length": low, "max_length": high})
    assert {len(v) for v in lists} == set(range(low, high + 1))


def test_array_elements_are_of_the_element_type_with_nulls() -> None:
    params = {"element": {"type": "integer", "params": {"min": 1, "max": 6}, "null_rate": 0.25}, "max_length": 8}
    elements = [e for v in values("array", params, 5_000) for e in v]
    present = [e for e in elements if e is not None]
    assert set(present) == set(range(1, 7))
    assert (len(elements) - len(present)) / len(elements) == pytest.approx(0.25, abs=0.02)


def test_array_elements_see_their_position_as_the_row() -> None:
    params = {"element": {"type": "sequence", "params": {"start": 1}}, "min_length": 0, "max_length": 4}
    assert all(v == list(range(1, len(v) + 1)) for v in values("array", params))


def test_array_column_types_follow_the_element() -> None:
    column_of = FIELD_TYPES["array"].column
    assert column_of(ArrayParams.model_validate({"element": {"type": "money"}})) == column_of(
        ArrayParams.model_validate({"element": {"type": "money", "params": {"min": 1}}})
    )
    declared = column_of(ArrayParams.model_validate({"element": {"type": "decimal", "params": {"scale": 3}}}))
    assert (declared.logical, declared.pg) == ("decimal[]", "numeric(7,3)[]")
    declared = column_of(ArrayParams.model_validate({"element": {"type": "timestamp"}}))
    assert (declared.logical, declared.pg) == ("timestamp[]", "timestamp with time zone[]")


def test_arrays_of_uuids_are_distinct_across_rows_and_positions() -> None:
    spec = make_spec({"name": "a", "type": "array", "params": {"element": {"type": "uuid7"}, "max_length": 10}})
    ids = [i for v in generate_chunk(spec, 0, 2_000).column(0).to_pylist() for i in v]
    assert len(set(ids)) == len(ids)
