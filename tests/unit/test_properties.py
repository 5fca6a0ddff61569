"""Property-based tests of request validation: every input gives precise violations or a correct result.

Schemas (`validate_schema`), upload headers (`_header_violations`), export requests
(`request_violations`, `plan_export`) and the chunk offsets of `UploadSession.write`.
An exception other than the documented one would reach a client as INTERNAL.

The strategies leave out the inputs of known bugs, so that the random properties stay
green; each bug has its own test below with a minimal reproducer, `xfail(strict=True)` while it is open.
"""

from __future__ import annotations

import asyncio
import codecs
import io
import json
import re
import string
import uuid
from dataclasses import asdict, replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from rehashes import PySha256

from server.core import vocab
from server.core.errors import DatamillError, FailedPrecondition, InvalidArgument, OutOfRange, ResourceExhausted
from server.core.exports import (
    CSV_ENCODINGS,
    MAX_ROW_GROUP_SIZE,
    MAX_ROWS_PER_STATEMENT,
    PARQUET_COMPRESSIONS,
    ExportPlan,
    ExportRequestSpec,
    ParquetSpec,
    SqlSpec,
    plan_export,
    request_violations,
)
from server.core.exports import FORMATS as EXPORT_FORMATS
from server.core.fieldtypes import FIELD_TYPES
from server.core.fileformats import CsvSpec
from server.core.models import DatasetRow
from server.core.objects.base import PartInfo
from server.core.schema import INGEST_PG_TYPES, SchemaSpec, columns, validate_schema
from server.core.uploads import (
    MAX_CHUNK_BYTES,
    UploadColumn,
    UploadDomain,
    UploadHeaderSpec,
    UploadRow,
    UploadSession,
    _header_violations,
)
from worker.engines.generate import generate_chunk
from worker.engines.ingest import IngestReader
from worker.jobs.ingest import ObjectFile, _open_reader

MAX_ROWS = 1_000
MAX_FIELDS = 6

# No example database: nothing is written into the repository, and a run depends only on its seed.
FAST = settings(deadline=None, database=None, max_examples=100)
# The hostile strategies draw large nested values on purpose.
HOSTILE = settings(FAST, max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- shared strategies -----------------------------------------------------------------------------------------

IDENTIFIER = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True)
# Junk that is not an identifier. A trailing newline is left out: check_identifier accepts it
# (test_identifier_with_a_trailing_newline_is_refused).
NOT_IDENTIFIER = st.text(max_size=70).filter(lambda s: not s.endswith("\n"))
NAMES = st.one_of(IDENTIFIER, st.sampled_from(["a", "b", "c", "sex", "A", "1a", "a" * 64, "a-b", ""]), NOT_IDENTIFIER)
# Encodings that exist and are text encodings, names that are none, and names near them.
# Names of codecs that are not text encodings (rot13, zlib, ...) and names with NUL are left out:
# see test_non_text_codec_is_an_upload_violation and test_encoding_with_nul_is_a_violation.
ENCODINGS = st.one_of(
    st.sampled_from(["", "utf-8", "UTF8", "latin-1", "cp1252", "utf-16", "shift_jis", "koi8-r", "big5", "ascii"]),
    st.sampled_from(["klingon", "utf-9", " ", "latin-99", "x-unknown"]),
    st.text(alphabet=string.ascii_letters + string.digits + "-_", max_size=12).map(lambda s: "x-" + s),
)
ONE_CHAR = st.one_of(
    st.sampled_from([",", ";", "\t", "|", '"', "'", " ", "\r", "\n", "\x00", "é", "\u2028"]),
    st.characters(),
)
DELIMITERS = st.one_of(st.just(""), ONE_CHAR, st.text(min_size=2, max_size=3))


def _is_identifier(value: str) -> bool:
    return re.fullmatch(r"[a-z_][a-z0-9_]*", value) is not None and len(value.encode()) <= 63


def _is_text_encoding(name: str) -> bool:
    """A codec between str and bytes; rot13, zlib, base64 and the like are marked as not (str.encode refuses them)."""
    try:
        info = codecs.lookup(name)
    except LookupError:
        return False
    return bool(getattr(info, "_is_text_encoding", True))


# --- 1. schemas ------------------------------------------------------------------------------------------------

FIELD_TYPE_NAMES = sorted(FIELD_TYPES)
# Types usable with their default params (choice, template, expression and foreign_key need some).
DEFAULT_TYPES = sorted(
    name for name, t in FIELD_TYPES.items() if not any(f.is_required() for f in t.params.model_fields.values())
)

EDGE_VALUES: list[Any] = [
    0, 1, -1, 2, 10, 100, 2**31, 2**53 + 1, 2**63 - 1, 2**63, -(2**63) - 1, 2**64, 0.0, -0.0, 0.5, 1.5, 1e-300,
    1e300, float("inf"), float("-inf"), float("nan"), True, False, None, "", " ", "\x00", "é", "a", "abc",
    "2024-01-01", "2024-01-01T00:00:00Z", "2024-13-40", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
    "1969-12-31T23:59:59Z", "08:30", "25:00", "PT30M", "P2DT12H", "UTC", "Europe/Paris", "Mars/Olympus",
    "10.0.0.0/8", "10.0.0.1/8", "::/0", "fe80::/10", "example.com", "EXAMPLE", "DE", "xx", "female", "any", [],
    {}, [1, 2], ["a", "a"], ["a", "b"], [0.5, 0.5], [-1.0], {"a": 1},
]  # fmt: skip
# Expressions, templates and patterns: tokens glued at random, so mostly invalid and sometimes valid.
EXPRESSIONS = st.lists(
    st.sampled_from(["a", "b", "c", "x1", "1", "2.5", "+", "-", "*", "/", "//", "%", "**", "(", ")", "abs(",
                     "round(", "min(", ",", " ", "'s'", "a.b", "lambda", "__import__", "[", "]", "1e999", "if"]),
    max_size=8,
).map("".join)  # fmt: skip
TEMPLATES = st.lists(
    st.sampled_from(["{a}", "{b}", "{c}", "{", "}", "{{", "}}", "{a!r}", "{a:>3}", "{0}", "{}", "x", "@", "é"]),
    max_size=5,
).map("".join)
PATTERNS = st.text(alphabet="ab()[]{}|*+?\\-^$.,09dwsnxz", max_size=16)
SCALARS = st.one_of(
    st.sampled_from(EDGE_VALUES),
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**65), max_value=2**65),
    st.floats(),
    st.text(max_size=12),
    EXPRESSIONS,
    TEMPLATES,
    PATTERNS,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


def _nested_field(inner: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.fixed_dictionaries({"type": st.just("json_object"), "params": st.fixed_dictionaries(
            {"fields": st.dictionaries(st.text(max_size=4), inner, max_size=2)}
        )}),
        st.fixed_dictionaries({"type": st.just("array"), "params": st.fixed_dictionaries({"element": inner})}),
    )  # fmt: skip


# Nested fields of json_object and array, a few levels deep (deep nesting: test_deeply_nested_fields_...).
NESTED = st.recursive(
    st.fixed_dictionaries(
        {"type": st.sampled_from(FIELD_TYPE_NAMES) | st.text(max_size=6)},
        optional={"params": st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=2), "null_rate": SCALARS},
    ),
    _nested_field,
    max_leaves=3,
)


@st.composite
def field_params(draw: st.DrawFn, type_name: object) -> dict[str, Any]:
    """Params with mostly the type's own keys (and a few unknown ones), with values of any kind."""
    field_type = FIELD_TYPES.get(type_name) if isinstance(type_name, str) else None
    known = sorted(field_type.params.model_fields) if field_type is not None else []
    keys = st.sampled_from(known) | st.text(max_size=8) if known else st.text(max_size=8)
    params: dict[str, Any] = {}
    for key in draw(st.lists(keys, max_size=3, unique=True)):
        if key == "fields":
            params[key] = draw(st.dictionaries(st.text(max_size=4), NESTED, max_size=2) | JSON_VALUES)
        elif key == "element":
            params[key] = draw(NESTED | JSON_VALUES)
        elif key.endswith("_field"):
            params[key] = draw(st.sampled_from(["a", "b", "sex"]) | JSON_VALUES)
        else:
            params[key] = draw(JSON_VALUES)
    return params


def _usually(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any], *, tenths: int = 8) -> Any:
    """A draw from `good` `tenths` times in ten, else from `bad`: most schemas get deep into validation."""
    return draw(good) if draw(st.integers(0, 9)) < tenths else draw(bad)


def _rarely(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in `one_in` draws; False is the simpler choice, the one shrinking goes to."""
    return bool(draw(st.integers(0, one_in - 1)) == one_in - 1)


@st.composite
def hostile_field(draw: st.DrawFn, name: str = "a") -> Any:
    if _rarely(draw, 20):
        return draw(JSON_VALUES)  # not even an object
    type_name = _usually(draw, st.sampled_from(FIELD_TYPE_NAMES), st.text(max_size=10) | SCALARS, tenths=9)
    field: dict[str, Any] = {"type": type_name}
    field["name"] = _usually(draw, st.just(name), st.sampled_from(["a", "b", "c", "sex"]) | NAMES, tenths=9)
    kind = draw(st.integers(0, 9))
    if kind >= 5:
        field["params"] = draw(field_params(type_name))
    elif kind == 4:
        field["params"] = draw(JSON_VALUES)
    optional = {
        "null_rate": (st.sampled_from([0.0, 0.1, 1.0]), SCALARS),
        "unique": (st.booleans(), SCALARS),
        "seed": (st.integers(0, 2**64 - 1), st.integers(-1, 2**65) | SCALARS),
    }
    for key, (good, bad) in optional.items():
        if _rarely(draw, 4):
            field[key] = _usually(draw, good, bad)
    if _rarely(draw, 10):
        field[draw(st.text(max_size=8))] = draw(JSON_VALUES)
    if _rarely(draw, 20):
        field.pop(draw(st.sampled_from(["name", "type"])))
    return field


@st.composite
def hostile_schema(draw: st.DrawFn) -> Any:
    if _rarely(draw, 20):
        return draw(JSON_VALUES)
    names = st.lists(st.sampled_from(["a", "b", "c", "sex"]) | IDENTIFIER, min_size=1, max_size=4, unique=True)
    schema: dict[str, Any] = {
        "fields": _usually(
            draw,
            names.flatmap(lambda ns: st.tuples(*(hostile_field(n) for n in ns)).map(list)),
            st.lists(hostile_field(), max_size=MAX_FIELDS + 1) | JSON_VALUES,
        ),
        # Within 65 bits: beyond, rows meets a float (test_rows_beyond_any_float_is_a_violation).
        "rows": _usually(draw, st.integers(1, MAX_ROWS), st.integers(-(2**65), 2**65) | SCALARS),
    }
    if draw(st.booleans()):
        schema["seed"] = _usually(draw, st.integers(0, 2**64 - 1), st.integers(-1, 2**65) | SCALARS)
    if draw(st.booleans()):
        schema["locale"] = _usually(draw, st.sampled_from(["", *vocab.LOCALES]), st.just("en_us") | SCALARS)
    if _rarely(draw, 10):
        schema[draw(st.text(max_size=8))] = draw(JSON_VALUES)
    if _rarely(draw, 20):
        schema.pop(draw(st.sampled_from(["fields", "rows"])))
    return schema


def _validate(data: Any) -> SchemaSpec:
    return validate_schema(SchemaSpec.from_json(data), max_rows=MAX_ROWS, max_fields=MAX_FIELDS)


def _validated_or_refused(data: Any) -> SchemaSpec | InvalidArgument:
    """Any other exception propagates, and fails the test."""
    try:
        return _validate(data)
    except InvalidArgument as exc:
        return exc


@HOSTILE
@given(data=hostile_schema())
def test_any_schema_is_a_precise_invalid_argument_or_a_spec_that_round_trips(data: Any) -> None:
    spec = _validated_or_refused(data)
    if isinstance(spec, InvalidArgument):
        assert spec.violations
        for violation in spec.violations:
            assert violation.field.startswith("schema"), violation
            assert violation.description, violation
        event("invalid")
        return
    event("valid")
    assert 1 <= spec.rows <= MAX_ROWS
    assert 1 <= len(spec.fields) <= MAX_FIELDS
    assert len(spec.fields) == len(data["fields"])
    assert spec.seed is not None
    assert spec.locale in vocab.LOCALES
    assert [c.name for c in columns(spec)] == [f.name for f in spec.fields]
    assert _validate(spec.to_json()) == spec


@st.composite
def valid_schema(draw: st.DrawFn) -> SchemaSpec:
    rows = draw(st.integers(1, 50))
    locale = draw(st.sampled_from(vocab.LOCALES))
    names = draw(st.lists(IDENTIFIER, min_size=1, max_size=4, unique=True))
    fields = []
    for name in names:
        type_name = draw(st.sampled_from(DEFAULT_TYPES))
        field_type = FIELD_TYPES[type_name]
        field: dict[str, Any] = {"name": name, "type": type_name}
        domain = field_type.params.model_validate({}).domain(locale)
        if field_type.supports_unique and (domain is None or domain >= rows) and draw(st.booleans()):
            field["unique"] = True
        field["null_rate"] = draw(st.sampled_from([0.0, 0.0, 0.3, 1.0]))
        if _rarely(draw, 5):
            field["seed"] = draw(st.integers(0, 2**64 - 1))
        fields.append(field)
    seed = draw(st.none() | st.integers(0, 2**64 - 1))
    return SchemaSpec.from_json({"fields": fields, "rows": rows, "seed": seed, "locale": locale})


@settings(FAST, max_examples=60)
@given(spec=valid_schema(), data=st.data())
def test_valid_schemas_pass_and_generate_their_declared_columns(spec: SchemaSpec, data: st.DataObject) -> None:
    validated = validate_schema(spec, max_rows=MAX_ROWS, max_fields=MAX_FIELDS)
    assert [f.name for f in validated.fields] == [f.name for f in spec.fields]
    assert validate_schema(SchemaSpec.from_json(validated.to_json()), max_rows=MAX_ROWS, max_fields=MAX_FIELDS) == (
        validated
    )
    count = data.draw(st.integers(0, spec.rows), label="count")
    batch = generate_chunk(validated, 0, count)
    assert batch.num_rows == count
    assert batch.schema.names == [f.name for f in spec.fields]
    assert [f.nullable for f in batch.schema] == [c.nullable for c in columns(validated)]
    for field in validated.fields:
        column = batch.column(field.name)
        if field.null_rate == 0.0:
            assert column.null_count == 0, field
        if field.null_rate == 1.0:
            assert column.null_count == count, field
        if field.unique:
            values = column.drop_null().to_pylist()
            assert len(set(values)) == len(values), field
    # Any chunking makes the same rows.
    split = data.draw(st.integers(0, count), label="split")
    tail = generate_chunk(validated, split, count - split)
    assert tail.to_pylist() == batch.slice(split).to_pylist()


def test_deep_but_short_expressions_are_validated() -> None:
    """Guards the reproducers below: nesting the parser refuses is a clean violation."""
    with pytest.raises(InvalidArgument) as caught:
        _validate(_expression_schema("(" * 300 + "a" + ")" * 300))
    assert caught.value.violations[0].field == "schema.fields[1].params.expression"


def _expression_schema(expression: str) -> dict[str, Any]:
    computed = {"name": "e", "type": "expression", "params": {"expression": expression}}
    return {"rows": 10, "seed": 1, "fields": [{"name": "a", "type": "integer"}, computed]}


def test_deeply_nested_unary_expression_is_a_violation() -> None:
    with pytest.raises(InvalidArgument) as caught:
        _validate(_expression_schema("-" * 4000 + "a"))
    assert "levels deep" in caught.value.violations[0].description


def test_an_expression_too_deep_for_the_evaluator_is_a_violation_and_one_within_generates() -> None:
    with pytest.raises(InvalidArgument) as caught:  # 1,499 nested additions: beyond MAX_EXPRESSION_DEPTH
        _validate(_expression_schema("+".join(["a"] * 1500)))
    assert caught.value.violations[0].field == "schema.fields[1].params.expression"
    spec = _validate(_expression_schema("+".join(["a"] * 90)))
    assert generate_chunk(spec, 0, 3).num_rows == 3


@pytest.mark.parametrize("type_name", ["uuid7", "ulid"])
def test_rows_beyond_any_float_is_a_violation(type_name: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        _validate({"rows": 10**400, "fields": [{"name": "id", "type": type_name}]})
    assert caught.value.violations[0].field == "schema.rows"


def test_deeply_nested_fields_are_a_violation() -> None:
    nested: dict[str, Any] = {"type": "integer"}
    for _ in range(200):
        nested = {"type": "json_object", "params": {"fields": {"k": {"type": "array", "params": {"element": nested}}}}}
    with pytest.raises(InvalidArgument) as caught:
        _validate({"rows": 10, "fields": [{"name": "f", **nested}]})
    assert caught.value.violations[0].field == "schema.fields[0].params"
    assert "levels deep" in caught.value.violations[0].description


# --- 2. upload headers -----------------------------------------------------------------------------------------

HEADER_FORMATS = st.sampled_from(["csv", "jsonl", "parquet", "", "sql", "CSV", "#7"])
COMPRESSION_NAMES = st.sampled_from(["", "none", "gzip", "zstd", "GZIP", "lz4", "#9"])
COLUMN_TYPES = st.sampled_from([*INGEST_PG_TYPES, "decimal", "interval", "integer[]", "", "TEXT"])
SHA256S = st.one_of(
    st.just(""),
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    st.text(alphabet="0123456789abcdefABCDEF", min_size=63, max_size=65),
    st.text(max_size=70),
)


@st.composite
def csv_specs(draw: st.DrawFn) -> CsvSpec:
    csv = CsvSpec(
        delimiter=draw(DELIMITERS),
        header=draw(st.none() | st.booleans()),
        quote=draw(DELIMITERS),
        encoding=draw(ENCODINGS),
    )
    # Leave out a quote equal to the default delimiter (test_quote_equal_to_the_default_delimiter_is_a_violation).
    if not csv.delimiter and csv.quote == ",":
        csv = replace(csv, quote="")
    return csv


UPLOAD_COLUMNS = st.builds(
    UploadColumn, name=st.sampled_from(["a", "b"]) | NAMES, type=COLUMN_TYPES, nullable=st.booleans()
)


@st.composite
def upload_headers(draw: st.DrawFn) -> UploadHeaderSpec:
    csv = draw(st.just(CsvSpec()) | csv_specs())
    return UploadHeaderSpec(
        upload_id=draw(st.sampled_from(["", str(uuid.UUID(int=1)), "junk"])),
        file_name=draw(st.text(max_size=20) | st.text(min_size=250, max_size=260)),
        format=draw(HEADER_FORMATS),
        compression=draw(COMPRESSION_NAMES),
        total_size=draw(st.none() | st.integers(-(2**63), 2**63 - 1) | st.sampled_from([-1, 0, 1])),
        expected_sha256=draw(SHA256S),
        dataset_name=draw(NAMES),
        columns=tuple(draw(st.lists(UPLOAD_COLUMNS, max_size=4))),
        csv=csv,
        request_id=draw(st.text(max_size=10) | st.text(min_size=127, max_size=130)),
        skip_malformed_rows=draw(st.booleans()),
    )


def _csv_is_valid(csv: CsvSpec) -> bool:
    """Upload CSV options: delimiter and quote one printable ASCII character or a tab, differing; a known encoding."""
    for value in (csv.delimiter, csv.quote):
        if value and not (value == "\t" or (len(value) == 1 and " " <= value <= "~")):
            return False
    return (csv.delimiter or ",") != (csv.quote or '"') and (not csv.encoding or _is_text_encoding(csv.encoding))


def _header_is_valid(header: UploadHeaderSpec) -> bool:
    """The rules of UploadHeader as documented in the proto and in the violations' descriptions."""
    names = [c.name for c in header.columns]
    return (
        _is_identifier(header.dataset_name)
        and len(header.request_id) <= 128
        and header.format in ("csv", "jsonl", "parquet")
        and header.compression in ("", "none", "gzip", "zstd")
        and not (header.format == "parquet" and header.compression in ("gzip", "zstd"))
        and len(header.file_name) <= 255
        and (header.total_size is None or header.total_size >= 1)
        and (not header.expected_sha256 or re.fullmatch(r"[0-9a-f]{64}", header.expected_sha256) is not None)
        and all(_is_identifier(n) for n in names)
        and len(set(names)) == len(names)
        and all(c.type in INGEST_PG_TYPES for c in header.columns)
        and (header.csv == CsvSpec() or (header.format == "csv" and _csv_is_valid(header.csv)))
    )


@settings(FAST, max_examples=250)
@given(header=upload_headers())
def test_any_upload_header_gives_violations_exactly_when_it_breaks_a_rule(header: UploadHeaderSpec) -> None:
    violations = _header_violations(header)
    assert all(v.field.startswith("header.") and v.description for v in violations), violations
    assert (not violations) == _header_is_valid(header), violations


def _ingest_spec(header: UploadHeaderSpec) -> dict[str, Any]:
    """The ingest job's spec as UploadDomain.create_ingest writes it."""
    return {
        "format": header.format,
        "compression": header.compression or None,
        "csv": asdict(header.csv),
        "columns": [{"name": c.name, "type": c.type, "nullable": c.nullable} for c in header.columns],
        "skip_malformed_rows": header.skip_malformed_rows,
    }


@st.composite
def acceptable_headers(draw: st.DrawFn) -> UploadHeaderSpec:
    """Headers with every field valid, and the CSV options of any kind an upload accepts.

    ASCII delimiters and quotes only: a non-ASCII one is test_csv_options_refused_by_the_engine_are_refused_at_upload.
    """
    fmt = draw(st.sampled_from(["csv", "jsonl", "parquet"]))
    compressions = ["", "none"] if fmt == "parquet" else ["", "none", "gzip", "zstd"]
    csv = CsvSpec()
    if fmt == "csv" and draw(st.booleans()):
        ascii_chars = st.sampled_from(["", ",", ";", "\t", "|", " ", "'", '"', "#"])
        csv = CsvSpec(
            delimiter=draw(ascii_chars),
            header=draw(st.none() | st.booleans()),
            quote=draw(ascii_chars),
            encoding=draw(st.sampled_from(["", "utf-8", "UTF8", "latin-1", "cp1252", "utf-16", "shift_jis"])),
        )
        if not csv.delimiter and csv.quote == ",":  # test_quote_equal_to_the_default_delimiter_is_a_violation
            csv = replace(csv, quote="")
    names = draw(st.lists(IDENTIFIER, max_size=3, unique=True))
    return UploadHeaderSpec(
        format=fmt,
        compression=draw(st.sampled_from(compressions)),
        dataset_name=draw(IDENTIFIER),
        columns=tuple(UploadColumn(n, draw(st.sampled_from(sorted(INGEST_PG_TYPES))), True) for n in names),
        csv=csv,
    )


# A value of each type, as text: what a CSV field, a JSON string or a Parquet string holds.
SAMPLE_VALUES = {
    "boolean": "true",
    "integer": "7",
    "float": "0.5",
    "text": "x",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
    "date": "2024-01-02",
    "time": "08:30:00",
    "timestamp": "2024-01-02T03:04:05+00:00",
    "json": "[1]",
}


def _file_for(header: UploadHeaderSpec) -> bytes:
    """A file with the header's columns (or one integer column "a") and one row, as the header describes it."""
    values = {c.name: SAMPLE_VALUES[c.type] for c in header.columns} or {"a": "7"}
    if header.format == "parquet":
        sink = io.BytesIO()
        pq.write_table(pa.table({n: pa.array([v]) for n, v in values.items()}), sink)
        return sink.getvalue()
    if header.format == "jsonl":
        text = json.dumps({n: json.loads(v) if v in ("7", "0.5", "true", "[1]") else v for n, v in values.items()})
        text += "\n"
    else:
        delimiter = header.csv.delimiter or ","
        lines = [delimiter.join(values)] if header.csv.header is not False else []
        text = "".join(line + "\n" for line in [*lines, delimiter.join(values.values())])
    data = text.encode(header.csv.encoding or "utf-8")
    if header.compression in ("gzip", "zstd"):
        sink = pa.BufferOutputStream()
        with pa.CompressedOutputStream(sink, header.compression) as out:
            out.write(data)
        return bytes(sink.getvalue())
    return data


@settings(FAST, max_examples=80)
@given(header=acceptable_headers())
def test_an_accepted_upload_header_is_accepted_by_the_ingest_engine(header: UploadHeaderSpec) -> None:
    """What Upload accepts must not fail the ingest job for its options after the whole file was sent."""
    assume(not _header_violations(header))
    reader = _reader_or_refusal(_file_for(header), header)
    assert isinstance(reader, IngestReader), reader
    inferred = ["col_1"] if header.csv.header is False else ["a"]
    assert [c.name for c in reader.columns] == ([c.name for c in header.columns] or inferred)
    assert sum(batch.num_rows for batch in reader.batches()) == 1


def _reader_or_refusal(data: bytes, header: UploadHeaderSpec) -> IngestReader | FailedPrecondition:
    try:
        return _open_reader(cast(ObjectFile, io.BytesIO(data)), _ingest_spec(header))
    except FailedPrecondition as exc:
        return exc


@pytest.mark.parametrize("csv", [CsvSpec(delimiter="é"), CsvSpec(quote="\u2028")], ids=["delimiter", "quote"])
def test_csv_options_refused_by_the_engine_are_refused_at_upload(csv: CsvSpec) -> None:
    header = UploadHeaderSpec(format="csv", dataset_name="d", csv=csv)
    if not _header_violations(header):  # else: refused at upload, as it should be
        reader = _open_reader(cast(ObjectFile, io.BytesIO(b"a\n1\n")), _ingest_spec(header))
        assert [c.name for c in reader.columns] == ["a"]


@pytest.mark.parametrize(
    "header",
    [
        UploadHeaderSpec(format="csv", dataset_name="orders\n"),
        UploadHeaderSpec(format="csv", dataset_name="orders", columns=(UploadColumn("a\n", "text", True),)),
    ],
    ids=["dataset_name", "column_name"],
)
def test_identifier_with_a_trailing_newline_is_refused(header: UploadHeaderSpec) -> None:
    assert _header_violations(header) != []


def test_quote_equal_to_the_default_delimiter_is_a_violation() -> None:
    csv = CsvSpec(quote=",")
    upload = _header_violations(UploadHeaderSpec(format="csv", dataset_name="d", csv=csv))
    export = request_violations(ExportRequestSpec(dataset="d", format="csv", csv=csv))
    assert [v.field for v in upload] == ["header.csv_options.quote"]
    assert [v.field for v in export] == ["csv_options.quote"]


@pytest.mark.parametrize("encoding", ["rot13", "quopri", "zlib"])
def test_non_text_codec_is_an_upload_violation(encoding: str) -> None:
    violations = _header_violations(UploadHeaderSpec(format="csv", dataset_name="d", csv=CsvSpec(encoding=encoding)))
    assert [v.field for v in violations] == ["header.csv_options.encoding"]


@pytest.mark.parametrize("where", ["upload", "export"])
def test_encoding_with_nul_is_a_violation(where: str) -> None:
    csv = CsvSpec(encoding="utf-8\x00")
    if where == "upload":
        violations = _header_violations(UploadHeaderSpec(format="csv", dataset_name="d", csv=csv))
    else:
        violations = request_violations(ExportRequestSpec(dataset="d", format="csv", csv=csv))
    assert [v.field for v in violations] == [f"{'header.' if where == 'upload' else ''}csv_options.encoding"]


# --- 3. export requests ----------------------------------------------------------------------------------------

DATASET_COLUMNS: list[dict[str, Any]] = [
    {"name": "id", "type": "uuid", "pg_type": "uuid", "nullable": False},
    {"name": "qty", "type": "integer", "pg_type": "bigint", "nullable": True},
    {"name": "note", "type": "text", "pg_type": "text", "nullable": True},
    {"name": "tags", "type": "text[]", "pg_type": "text[]"},  # an old row without "nullable"
]
DATASET = DatasetRow(
    id=uuid.UUID(int=7),
    tenant="default",
    name="orders",
    table_name="ds_orders",
    columns=DATASET_COLUMNS,
    row_count=10,
    ready=True,
    job_id=uuid.UUID(int=8),
    created_at=datetime(2024, 1, 1, tzinfo=UTC),
)
DATASET_COLUMN_NAMES = [c["name"] for c in DATASET_COLUMNS]
PG_ENCODING_OF = {codecs.lookup(name).name: pg for name, pg in CSV_ENCODINGS.items()}


@st.composite
def export_requests(draw: st.DrawFn) -> ExportRequestSpec:
    return ExportRequestSpec(
        dataset=draw(st.sampled_from(["orders", ""]) | st.text(max_size=8)),
        format=draw(st.sampled_from([*EXPORT_FORMATS, "", "CSV", "#9"])),
        compression=draw(COMPRESSION_NAMES),
        csv=draw(st.none() | csv_specs() | st.sampled_from([CsvSpec(encoding=e) for e in CSV_ENCODINGS])),
        parquet=draw(
            st.none()
            | st.builds(
                ParquetSpec,
                row_group_size=st.integers(-1, MAX_ROW_GROUP_SIZE + 1) | st.sampled_from([0, MAX_ROW_GROUP_SIZE]),
                compression=st.sampled_from([*PARQUET_COMPRESSIONS, "", "ZSTD", "brotli"]) | st.text(max_size=5),
            )
        ),
        sql=draw(
            st.none()
            | st.builds(
                SqlSpec,
                style=st.sampled_from(["", "insert", "copy", "merge"]),
                table_name=st.text(max_size=5) | st.text(min_size=60, max_size=66) | st.just("t\x00"),
                include_create_table=st.booleans(),
                rows_per_statement=st.integers(-1, MAX_ROWS_PER_STATEMENT + 1) | st.sampled_from([0, 1]),
            )
        ),
        columns=tuple(draw(st.lists(st.sampled_from(DATASET_COLUMN_NAMES) | st.text(max_size=4), max_size=5))),
        row_limit=draw(st.none() | st.integers(-(2**63), 2**63 - 1)),
        request_id=draw(st.text(max_size=10) | st.text(min_size=127, max_size=130)),
    )  # fmt: skip


def _plan_or_refusal(request: ExportRequestSpec) -> ExportPlan | InvalidArgument:
    try:
        return plan_export(request, DATASET)
    except InvalidArgument as exc:
        return exc


def _export_csv_is_valid(csv: CsvSpec) -> bool:
    """An export's CSV: printable ASCII (or tab) delimiter and quote that differ, an encoding COPY can write."""
    for value in (csv.delimiter, csv.quote):
        if value and not (len(value) == 1 and (value == "\t" or (value.isascii() and value.isprintable()))):
            return False
    if (csv.delimiter or ",") == (csv.quote or '"'):
        return False
    return not csv.encoding or (_is_text_encoding(csv.encoding) and codecs.lookup(csv.encoding).name in PG_ENCODING_OF)


def _export_is_valid(request: ExportRequestSpec) -> bool:
    """The rules of ExportRequest as documented in the proto and in the violations' descriptions."""
    fmt = request.format
    options = {"csv": request.csv, "parquet": request.parquet, "sql": request.sql}
    parquet, sql = request.parquet, request.sql
    return (
        bool(request.dataset)
        and fmt in ("csv", "jsonl", "parquet", "sql")
        and request.compression in ("", "none", "gzip", "zstd")
        and not (fmt == "parquet" and request.compression in ("gzip", "zstd"))
        and all(value is None or name == fmt for name, value in options.items())
        and (request.csv is None or _export_csv_is_valid(request.csv))
        and (parquet is None or 0 <= parquet.row_group_size <= MAX_ROW_GROUP_SIZE)
        and (parquet is None or parquet.compression.lower() in ("", *PARQUET_COMPRESSIONS))
        and (sql is None or sql.style in ("", "insert", "copy"))
        and (sql is None or (len(sql.table_name.encode()) <= 63 and "\x00" not in sql.table_name))
        and (sql is None or 0 <= sql.rows_per_statement <= MAX_ROWS_PER_STATEMENT)
        and (sql is None or not (sql.rows_per_statement and sql.style == "copy"))
        and (request.row_limit is None or request.row_limit >= 0)
        and len(request.request_id) <= 128
    )


@settings(FAST, max_examples=250)
@given(request=export_requests())
def test_any_export_request_gives_violations_or_a_plan_that_round_trips(request: ExportRequestSpec) -> None:
    violations = request_violations(request)
    assert all(v.field and v.description for v in violations), violations
    assert (not violations) == _export_is_valid(request), violations
    if violations:
        return
    known = DATASET_COLUMN_NAMES
    plan = _plan_or_refusal(request)
    if isinstance(plan, InvalidArgument):
        assert all(v.field.startswith("columns[") for v in plan.violations), plan.violations
        assert not set(request.columns) <= set(known) or len(set(request.columns)) < len(request.columns)
        return
    assert [c.name for c in plan.columns] == (list(request.columns) or known)
    assert (plan.format, plan.table, plan.row_limit) == (request.format, DATASET.table_name, request.row_limit)
    assert plan.compression == (request.compression or "none")
    csv, sql = request.csv or CsvSpec(), request.sql or SqlSpec()
    assert (plan.delimiter, plan.quote) == (csv.delimiter or ",", csv.quote or '"')
    assert plan.delimiter != plan.quote
    assert plan.sql_table_name == (sql.table_name or DATASET.name)
    assert plan.encoding in CSV_ENCODINGS.values()
    assert plan.parquet_compression in PARQUET_COMPRESSIONS
    assert plan.sql_style in ("insert", "copy")
    assert 1 <= plan.row_group_size <= MAX_ROW_GROUP_SIZE
    assert 1 <= plan.rows_per_statement <= MAX_ROWS_PER_STATEMENT
    assert plan.content_type
    assert plan.extension.startswith(".")
    assert ExportPlan.from_json(plan.to_json()) == plan


# --- 5. upload chunk offsets -----------------------------------------------------------------------------------


class _Objects:
    """Keeps the parts of one multipart upload in memory."""

    def __init__(self) -> None:
        self.parts: dict[int, bytes] = {}

    async def upload_part(self, key: str, handle: str, number: int, data: bytes | memoryview) -> PartInfo:
        await asyncio.sleep(0)
        self.parts[number] = bytes(data)
        return PartInfo(number=number, size=len(data), etag=f"etag-{number}")


class _Store:
    """Records committed parts as UploadStore.commit_part would."""

    def __init__(self) -> None:
        self.commits: list[tuple[int, int]] = []

    async def commit_part(
        self, upload: UploadRow, part: PartInfo, *, committed_offset: int, sha256_state: bytes, ttl_seconds: float
    ) -> None:
        await asyncio.sleep(0)
        self.commits.append((part.number, committed_offset))


class _Domain:
    def __init__(self, max_upload_bytes: int) -> None:
        self.settings = SimpleNamespace(max_upload_bytes=max_upload_bytes, upload_ttl_seconds=60.0)
        self.objects = _Objects()
        self.store = _Store()
        self.aborted: list[DatamillError] = []

    async def abort(self, upload: UploadRow, exc: DatamillError) -> None:
        self.aborted.append(exc)


def _upload_row(*, part_size: int, committed_offset: int, total_size: int | None) -> UploadRow:
    return UploadRow(
        id=uuid.UUID(int=3),
        tenant="default",
        state="OPEN",
        request_id=None,
        request_hash="",
        header=UploadHeaderSpec(format="csv", dataset_name="d", total_size=total_size),
        object_key="default/uploads/3",
        multipart_handle="handle",
        part_size=part_size,
        committed_offset=committed_offset,
        sha256_state=b"",
        generation=1,
        size_bytes=None,
        sha256=None,
        job_id=None,
        error=None,
        expires_at=datetime(2100, 1, 1, tzinfo=UTC),
    )


async def _write_or_refusal(session: UploadSession, offset: int, data: bytes) -> DatamillError | None:
    try:
        await session.write(offset, data)
    except (InvalidArgument, OutOfRange, ResourceExhausted) as exc:
        return exc
    return None


# A chunk: (how its offset relates to the expected one, its size, whether to let stored parts commit first).
CHUNKS = st.lists(
    st.tuples(
        st.sampled_from([0, 0, 0, 0, -1, 1, -(2**40), 2**40]),
        st.integers(1, 40) | st.sampled_from([0, MAX_CHUNK_BYTES + 1]),
        st.booleans(),
    ),
    max_size=25,
)


@settings(FAST, max_examples=80)
@given(
    part_size=st.integers(1, 16),
    parts_before=st.integers(0, 3),
    declared=st.none() | st.integers(1, 300),
    limit=st.integers(1, 400),
    chunks=CHUNKS,
)
def test_chunks_must_continue_exactly_from_the_received_offset(
    part_size: int, parts_before: int, declared: int | None, limit: int, chunks: list[tuple[int, int, bool]]
) -> None:
    """Against a model: wrong offsets are OUT_OF_RANGE and change nothing; the rest is stored in order."""

    async def scenario() -> None:
        start = parts_before * part_size
        domain = _Domain(limit)
        parts = [PartInfo(number=n, size=part_size, etag="") for n in range(1, parts_before + 1)]
        upload = _upload_row(part_size=part_size, committed_offset=start, total_size=declared)
        session = UploadSession(cast(UploadDomain, domain), upload, parts, PySha256())
        reported: list[int] = []
        session.on_commit = reported.append
        expected = start
        accepted = b""
        rejected: type[DatamillError] | None = None
        for index, (shift, size, settle) in enumerate(chunks):
            if settle:
                for _ in range(6):
                    await asyncio.sleep(0)
            data = bytes([index % 256]) * size
            refusal = await _write_or_refusal(session, expected + shift, data)
            if isinstance(refusal, InvalidArgument) and (size == 0 or size > MAX_CHUNK_BYTES):
                assert refusal.violations[0].field == "chunk.data"
                continue
            if isinstance(refusal, OutOfRange):
                assert 1 <= size <= MAX_CHUNK_BYTES and shift != 0
                assert refusal.reason == "UPLOAD_OFFSET_MISMATCH"
                assert refusal.metadata["expected_offset"] == str(expected)
                committed = int(refusal.metadata["committed_offset"])
                assert start <= committed <= expected and (committed - start) % part_size == 0
                continue
            if isinstance(refusal, InvalidArgument):
                assert shift == 0 and declared is not None and expected + size > declared
                assert refusal.violations[0].field == "chunk"
                rejected = InvalidArgument
                break
            if isinstance(refusal, ResourceExhausted):
                assert shift == 0 and expected + size > limit and refusal.reason == "UPLOAD_TOO_LARGE"
                rejected = ResourceExhausted
                break
            assert refusal is None
            assert shift == 0 and 1 <= size <= MAX_CHUNK_BYTES
            assert expected + size <= limit and (declared is None or expected + size <= declared)
            expected += size
            accepted += data
        await session.close()
        if rejected is not None:
            assert [type(e) for e in domain.aborted] == [rejected]
            return
        assert domain.aborted == []
        whole = (expected - start) // part_size
        ends = [start + part_size * (i + 1) for i in range(whole)]
        assert domain.store.commits == [(parts_before + 1 + i, end) for i, end in enumerate(ends)]
        assert reported == ends
        assert session.committed_offset == start + whole * part_size
        stored = b"".join(domain.objects.parts[n] for n in sorted(domain.objects.parts))
        assert stored == accepted[: whole * part_size]

    asyncio.run(scenario())


def test_the_chunk_model_sees_parts_commit() -> None:
    """Guards the property above: a part does get stored and committed through the fakes."""

    async def scenario() -> tuple[int, list[tuple[int, int]]]:
        domain = _Domain(100)
        upload = _upload_row(part_size=4, committed_offset=0, total_size=None)
        session = UploadSession(cast(UploadDomain, domain), upload, [], PySha256())
        await session.write(0, b"abcdef")
        await session.close()
        return session.committed_offset, domain.store.commits

    assert asyncio.run(scenario()) == (4, [(1, 4)])
