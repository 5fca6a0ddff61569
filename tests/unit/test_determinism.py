"""The reproducibility contract: same schema, rows, seed and datamill version give the same bytes.

Each type's column (as binary COPY bytes, exactly what PostgreSQL receives)
has a checked-in SHA-256 in golden/generate.json, so an accidental change of
any type's output between versions fails here. A deliberate change bumps the
data contract: regenerate with DATAMILL_UPDATE_GOLDEN=1 and say so in the
release notes.
"""

from __future__ import annotations

import hashlib
import json
import os
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from server.core import vocab
from server.core.fieldtypes import FIELD_TYPES
from server.core.schema import SchemaSpec, validate_schema
from tests.unit.examples import INPUT_FIELDS, NEEDS_A_SERVER, example_field
from worker.engines.generate import generate_chunk
from worker.engines.pgcopy import encode_copy_binary

GOLDEN = Path(__file__).parent / "golden" / "generate.json"
ROWS = 2_000
SEED = 20261123
SKIPPED = NEEDS_A_SERVER


def type_spec(type_name: str, locale: str = "en_US") -> SchemaSpec:
    raw = {
        "fields": [*INPUT_FIELDS, example_field(type_name, null_rate=0.1)],
        "rows": ROWS,
        "seed": SEED,
        "locale": locale,
    }
    return validate_schema(SchemaSpec.from_json(raw), max_rows=10**9, max_fields=100)


def column_digest(spec: SchemaSpec, chunks: list[tuple[int, int]]) -> str:
    digest = hashlib.sha256()
    for start, count in chunks:
        batch = generate_chunk(spec, start, count)
        digest.update(encode_copy_binary(batch.select(["value"])))
    return digest.hexdigest()


def current_digests() -> dict[str, str]:
    digests = {name: column_digest(type_spec(name), [(0, ROWS)]) for name in sorted(FIELD_TYPES) if name not in SKIPPED}
    for locale in vocab.LOCALES:  # every type, since many draw from the locale's vocabularies
        if locale != "en_US":
            for name in sorted(FIELD_TYPES.keys() - SKIPPED):
                digests[f"{name}@{locale}"] = column_digest(type_spec(name, locale), [(0, ROWS)])
    return digests


def test_every_type_matches_its_golden_digest() -> None:
    current = current_digests()
    if os.environ.get("DATAMILL_UPDATE_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    golden: dict[str, str] = json.loads(GOLDEN.read_text())
    missing = sorted(set(current) - set(golden))
    changed = sorted(k for k in golden if k in current and golden[k] != current[k])
    assert not missing, f"no golden digest for {missing}: run with DATAMILL_UPDATE_GOLDEN=1"
    assert not changed, (
        f"the output of {changed} changed: this breaks reproducibility between versions."
        " If deliberate, regenerate with DATAMILL_UPDATE_GOLDEN=1 and note it in the release."
    )


def _layouts(rows: int) -> list[list[tuple[int, int]]]:
    cuts = np.random.default_rng(7).choice(np.arange(1, rows), size=9, replace=False)
    random_cuts = [0, *sorted(int(c) for c in cuts), rows]
    return [
        [(0, rows)],
        [(0, 1), (1, rows - 1)],
        [(start, min(333, rows - start)) for start in range(0, rows, 333)],
        [(a, b - a) for a, b in pairwise(random_cuts)],
    ]


def _layout_bytes(spec: SchemaSpec, layout: list[tuple[int, int]]) -> str:
    digest = hashlib.sha256()
    for start, count in layout:
        digest.update(encode_copy_binary(generate_chunk(spec, start, count)).removeprefix(HEADER)[: -len(TRAILER)])
    return digest.hexdigest()


HEADER = encode_copy_binary(pa.record_batch({"x": pa.array([], pa.int64())}))[:-2]
TRAILER = b"\xff\xff"


def test_every_shard_layout_gives_the_same_bytes() -> None:
    fields = [example_field(name, f"c_{name}", null_rate=0.05) for name in sorted(FIELD_TYPES) if name not in SKIPPED]
    raw = {"fields": [*INPUT_FIELDS, *fields], "rows": ROWS, "seed": SEED}
    spec = validate_schema(SchemaSpec.from_json(raw), max_rows=10**9, max_fields=1000)
    digests = {_layout_bytes(spec, layout) for layout in _layouts(ROWS)}
    assert len(digests) == 1


@pytest.mark.parametrize("seed", [0, 1, 2**64 - 1])
def test_extreme_seeds_work_and_differ(seed: int) -> None:
    raw = {"fields": [{"name": "x", "type": "integer"}], "rows": 10, "seed": seed}
    spec = validate_schema(SchemaSpec.from_json(raw), max_rows=10, max_fields=1)
    other = validate_schema(SchemaSpec.from_json({**raw, "seed": seed ^ 1}), max_rows=10, max_fields=1)
    assert not generate_chunk(spec, 0, 10).equals(generate_chunk(other, 0, 10))
