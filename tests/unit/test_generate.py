from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from server.core import vocab
from server.core.fieldtypes import FIELD_TYPES
from server.core.schema import SchemaSpec, field_params, validate_schema
from tests.unit.examples import INPUT_FIELDS, NEEDS_A_SERVER, example_field
from worker.engines.generate import generate_chunk
from worker.engines.types import GENERATORS
from worker.engines.types.base import arrow_type_of

WORDS = set(vocab.load("en_US", "word").values)
CHUNK = 5_000


def make_spec(*fields: dict[str, Any], rows: int = 1_000_000, seed: int = 42) -> SchemaSpec:
    spec = SchemaSpec.from_json({"fields": list(fields), "rows": rows, "seed": seed})
    return validate_schema(spec, max_rows=10**9, max_fields=500)


def one_column(field_type: str, params: dict[str, Any] | None = None, count: int = 20_000, **extra: Any) -> pa.Array:
    spec = make_spec({"name": "c", "type": field_type, "params": params or {}, **extra})
    return generate_chunk(spec, 0, count).column(0)


ALL_TYPES_SPEC = make_spec(
    *INPUT_FIELDS, *(example_field(name, f"c_{name}") for name in FIELD_TYPES if name not in NEEDS_A_SERVER)
)


def test_every_declared_type_has_a_generator_and_vice_versa() -> None:
    assert set(GENERATORS) == set(FIELD_TYPES)


def test_each_type_makes_the_arrow_type_of_its_column_type() -> None:
    batch = generate_chunk(ALL_TYPES_SPEC, 0, 10)
    for field, spec in zip(batch.schema, ALL_TYPES_SPEC.fields, strict=True):
        column_type = FIELD_TYPES[spec.type].column(field_params(spec))
        assert field.type == arrow_type_of(column_type.logical, column_type.pg), spec.type
        assert not field.nullable


def test_same_inputs_give_identical_batches() -> None:
    assert generate_chunk(ALL_TYPES_SPEC, 1234, 5000).equals(generate_chunk(ALL_TYPES_SPEC, 1234, 5000))


def test_different_rows_or_seeds_give_different_data() -> None:
    first = generate_chunk(ALL_TYPES_SPEC, 0, 1000)
    later = generate_chunk(ALL_TYPES_SPEC, CHUNK * 3, 1000)
    reseeded = generate_chunk(make_spec(*_fields_json(ALL_TYPES_SPEC), seed=43), 0, 1000)
    for name in ("c_integer", "c_float", "c_uuid4", "c_sentence", "c_timestamp", "c_sequence"):
        assert not first.column(name).equals(later.column(name)), name
        if name != "c_sequence":
            assert not first.column(name).equals(reseeded.column(name)), name


def _fields_json(spec: SchemaSpec) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = spec.to_json()["fields"]
    return fields


@pytest.mark.parametrize(("start", "count"), [(0, 1), (1, 10), (CHUNK - 3, 7), (2 * CHUNK + 17, CHUNK * 2)])
def test_rows_do_not_depend_on_the_chunking(start: int, count: int) -> None:
    whole = generate_chunk(ALL_TYPES_SPEC, 0, 5 * CHUNK)
    assert generate_chunk(ALL_TYPES_SPEC, start, count).equals(whole.slice(start, count))


def test_a_field_seed_keeps_its_column_when_other_fields_change() -> None:
    kept = {"name": "k", "type": "integer", "seed": 99}
    before = generate_chunk(make_spec({"name": "a", "type": "word"}, kept), 0, 500).column("k")
    after = generate_chunk(make_spec(kept, {"name": "b", "type": "float"}, seed=1), 0, 500).column("k")
    assert before.equals(after)


def test_null_rate_is_respected_and_leaves_other_values_unchanged() -> None:
    plain = one_column("integer", count=100_000)
    nullable = one_column("integer", count=100_000, null_rate=0.3)
    assert nullable.null_count / len(nullable) == pytest.approx(0.3, abs=0.01)
    valid = nullable.is_valid()
    assert nullable.filter(valid).equals(plain.filter(valid))


def test_null_rate_one_makes_only_nulls() -> None:
    assert one_column("sentence", count=100, null_rate=1.0).null_count == 100


def test_zero_rows_still_have_the_columns_types() -> None:
    batch = generate_chunk(ALL_TYPES_SPEC, 0, 0)
    assert batch.num_rows == 0
    assert batch.schema.equals(generate_chunk(ALL_TYPES_SPEC, 0, 1).schema)


def test_bad_row_range() -> None:
    with pytest.raises(ValueError, match="bad row range"):
        generate_chunk(ALL_TYPES_SPEC, -1, 10)


def test_integer_range_is_inclusive() -> None:
    values = one_column("integer", {"min": -3, "max": 3}).to_numpy()
    assert set(values.tolist()) == set(range(-3, 4))
    extremes = one_column("integer", {"min": -(2**63), "max": 2**63 - 1}).to_numpy()
    assert extremes.min() < -(2**62)
    assert extremes.max() > 2**62


def test_float_range_and_decimals() -> None:
    values = one_column("float", {"min": -2.5, "max": 7.5, "decimals": 2}).to_numpy()
    assert values.min() >= -2.5
    assert values.max() <= 7.5
    assert values.max() - values.min() > 9.9
    np.testing.assert_array_equal(values, np.round(values, 2))
    assert len(np.unique(values)) > 900


def test_boolean_probability() -> None:
    values = one_column("boolean", {"probability": 0.8}, count=100_000).to_numpy(zero_copy_only=False)
    assert values.mean() == pytest.approx(0.8, abs=0.01)


def test_sequence_follows_the_row_number() -> None:
    spec = make_spec({"name": "s", "type": "sequence", "params": {"start": 10, "step": -3}})
    values = generate_chunk(spec, 7_000, 50_000).column(0).to_numpy()
    np.testing.assert_array_equal(values, 10 - 3 * np.arange(7_000, 57_000))


def test_uuid4_values_are_distinct_and_well_formed() -> None:
    spec = make_spec({"name": "u", "type": "uuid4", "unique": True})
    column = pa.concat_arrays([generate_chunk(spec, start, 50_000).column(0) for start in (0, 50_000)])
    raw = column.to_pylist()
    assert len(set(raw)) == 100_000
    parsed = [uuid.UUID(bytes=b) for b in raw[:1000]]
    assert {u.version for u in parsed} == {4}
    assert {u.variant for u in parsed} == {uuid.RFC_4122}


def test_choice_draws_only_values_by_weight() -> None:
    values = one_column("choice", {"values": ["a", "b", "never"], "weights": [1, 3, 0]}, count=100_000)
    counts = dict(zip(*np.unique(values.to_numpy(zero_copy_only=False), return_counts=True), strict=True))
    assert set(counts) == {"a", "b"}
    assert counts["b"] / 100_000 == pytest.approx(0.75, abs=0.01)
    unweighted = one_column("choice", {"values": ["x", "y"]}, count=100_000)
    assert pc.mean(pc.equal(unweighted, "x")).as_py() == pytest.approx(0.5, abs=0.01)


def test_sentence_is_known_words_capitalized_with_a_period() -> None:
    values = one_column("sentence", {"min_words": 2, "max_words": 5}, count=5_000).to_pylist()
    known = {w.lower() for w in WORDS}
    lengths = set()
    for sentence in values:
        assert sentence[0].isupper()
        assert sentence.endswith(".")
        words = sentence[:-1].lower().split(" ")
        assert set(words) <= known
        lengths.add(len(words))
    assert lengths == {2, 3, 4, 5}


def test_paragraph_is_sentences_of_known_words() -> None:
    params = {"min_sentences": 1, "max_sentences": 3, "min_words": 1, "max_words": 4}
    values = one_column("paragraph", params, count=5_000).to_pylist()
    known = {w.lower() for w in WORDS}
    sentence_counts, word_counts = set(), set()
    for paragraph in values:
        assert paragraph.endswith(".") and not paragraph.endswith(" ")
        sentences = paragraph[:-1].split(". ")
        sentence_counts.add(len(sentences))
        for sentence in sentences:
            assert sentence[0].isupper()
            words = sentence.lower().split(" ")
            assert set(words) <= known
            word_counts.add(len(words))
    assert sentence_counts == {1, 2, 3}
    assert word_counts == {1, 2, 3, 4}


def test_word_is_one_known_word() -> None:
    values = one_column("word", count=5_000).to_pylist()
    assert set(values) <= WORDS
    assert len(set(values)) > 300


def test_timestamps_stay_in_range() -> None:
    params = {"start": "2024-02-29T23:00:00-01:00", "end": "2024-03-01T00:00:01Z"}
    values = one_column("timestamp", params).to_pylist()
    assert min(values) >= datetime(2024, 3, 1, tzinfo=UTC)
    assert max(values) <= datetime(2024, 3, 1, 0, 0, 1, tzinfo=UTC)
    assert len(set(values)) > 19_000  # microsecond resolution
