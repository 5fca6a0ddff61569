"""The generation schema, free of any transport, and its validation.

`validate_schema` is the one gate between a request and a worker: it collects
every problem in one `InvalidArgument` (a client fixes them all in one go) and
returns a normalized spec whose params carry their defaults, so that a stored
job regenerates the same rows even if a default changes later.
"""

from __future__ import annotations

import difflib
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from pydantic import ConfigDict, TypeAdapter, ValidationError

from server.core import vocab
from server.core.errors import FieldViolation, InvalidArgument
from server.core.fieldtypes import FIELD_TYPES, FieldParams, FieldType

DEFAULT_LOCALE = "en_US"
UINT64_MAX = 2**64 - 1
_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*")
_MAX_NAME_BYTES = 63  # PostgreSQL truncates longer identifiers silently


@dataclass(frozen=True, slots=True)
class FieldSpec:
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    name: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    null_rate: float = 0.0
    unique: bool = False
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class SchemaSpec:
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    fields: tuple[FieldSpec, ...]
    rows: int
    seed: int | None = None
    locale: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict, as stored in `jobs.spec` and read back by `from_json`."""
        data: dict[str, Any] = _ADAPTER.dump_python(self, mode="json", warnings=False)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, path: str = "schema") -> SchemaSpec:
        """Parse the JSON form (also what the CLI loads from JSON or YAML).

        Only the shape is checked here; `validate_schema` checks the values.
        """
        try:
            return _ADAPTER.validate_python(data)
        except ValidationError as exc:
            raise InvalidArgument([_violation(path, e) for e in exc.errors()]) from exc


_ADAPTER = TypeAdapter(SchemaSpec)


@dataclass(frozen=True, slots=True)
class ColumnDef:
    name: str
    logical_type: str
    pg_type: str
    nullable: bool

    def to_json(self) -> dict[str, Any]:
        """The column as stored in `datasets.columns`."""
        return {"name": self.name, "type": self.logical_type, "pg_type": self.pg_type, "nullable": self.nullable}


#: Logical column types an uploaded file may be imported as, with their PostgreSQL types.
INGEST_PG_TYPES: Mapping[str, str] = {
    "boolean": "boolean",
    "integer": "bigint",
    "float": "double precision",
    "text": "text",
    "uuid": "uuid",
    "date": "date",
    "time": "time",
    "timestamp": "timestamptz",
    "json": "jsonb",
}


def validate_schema(spec: SchemaSpec, *, max_rows: int, max_fields: int, path: str = "schema") -> SchemaSpec:
    """Check everything and return the normalized spec, or raise one InvalidArgument with every violation.

    Normalized: params coerced and completed with their defaults, seed chosen
    when unset, and an empty locale made "en_US".
    """
    violations: list[FieldViolation] = []
    if not 1 <= spec.rows <= max_rows:
        violations.append(FieldViolation(f"{path}.rows", f"must be between 1 and {max_rows}"))
    if not 1 <= len(spec.fields) <= max_fields:
        violations.append(FieldViolation(f"{path}.fields", f"must have between 1 and {max_fields} fields"))
    if spec.seed is not None and not 0 <= spec.seed <= UINT64_MAX:
        violations.append(FieldViolation(f"{path}.seed", "must be an unsigned 64-bit integer"))
    locale = spec.locale or DEFAULT_LOCALE
    if not vocab.supports(locale):
        supported = ", ".join(vocab.LOCALES)
        violations.append(FieldViolation(f"{path}.locale", f"unsupported locale {locale!r}; supported: {supported}"))
        locale = DEFAULT_LOCALE  # still check the fields, against the default vocabularies

    fields: list[FieldSpec] = []
    first_index_of: dict[str, int] = {}
    for index, field_spec in enumerate(spec.fields):
        field_path = f"{path}.fields[{index}]"
        if field_spec.name in first_index_of:
            where = f"{path}.fields[{first_index_of[field_spec.name]}]"
            violations.append(FieldViolation(f"{field_path}.name", f"duplicates the name of {where}"))
        first_index_of.setdefault(field_spec.name, index)
        # Params are checked against rows in range: rows itself is reported above.
        in_range = min(max(spec.rows, 1), max_rows)
        normalized, problems = _check_field(field_spec, field_path, rows=in_range, locale=locale)
        violations.extend(problems)
        if normalized is not None:
            fields.append(normalized)

    if violations:
        raise InvalidArgument(violations)
    normalized_spec = SchemaSpec(fields=tuple(fields), rows=spec.rows, seed=spec.seed, locale=locale)
    violations.extend(_input_problems(normalized_spec, path))
    if violations:
        raise InvalidArgument(violations)
    seed = spec.seed if spec.seed is not None else secrets.randbits(63)
    return replace(normalized_spec, seed=seed)


def field_params(spec: FieldSpec) -> FieldParams:
    """The params model of a validated field."""
    return FIELD_TYPES[spec.type].params.model_validate(spec.params)


def generation_order(spec: SchemaSpec) -> list[int]:
    """Field indexes, each after the fields it is computed from (validation ruled out cycles)."""
    index_of = {f.name: i for i, f in enumerate(spec.fields)}
    order: list[int] = []
    placed: set[int] = set()

    def place(index: int) -> None:
        if index in placed:
            return
        placed.add(index)
        for name in field_params(spec.fields[index]).inputs():
            place(index_of[name])
        order.append(index)

    for index in range(len(spec.fields)):
        place(index)
    return order


def _input_problems(spec: SchemaSpec, path: str) -> Iterator[FieldViolation]:
    """Fields computed from fields that do not exist, or from themselves through a cycle."""
    index_of = {f.name: i for i, f in enumerate(spec.fields)}
    params = [field_params(f) for f in spec.fields]
    inputs = {i: p.inputs() for i, p in enumerate(params)}
    for index, names in inputs.items():
        for name in names:
            if name not in index_of:
                known = ", ".join(sorted(index_of))
                yield FieldViolation(
                    f"{path}.fields[{index}].params", f"refers to unknown field {name!r}; known: {known}"
                )
        types = {
            n: FIELD_TYPES[spec.fields[index_of[n]].type].column(params[index_of[n]]).logical
            for n in names
            if n in index_of
        }
        for param, description in params[index].input_problems(types):
            yield FieldViolation(f"{path}.fields[{index}].params.{param}", description)
    for index in range(len(spec.fields)):
        cycle = _cycle_from(index, inputs, index_of)
        if cycle and min(cycle) == index:  # report each cycle once
            trail = " -> ".join(spec.fields[i].name for i in [*cycle, cycle[0]])
            yield FieldViolation(f"{path}.fields[{index}].params", f"fields depend on each other in a cycle: {trail}")


def _cycle_from(start: int, inputs: Mapping[int, Sequence[str]], index_of: Mapping[str, int]) -> list[int]:
    """The fields of a cycle through `start`, in order, or [] (depth-first search)."""
    stack: list[tuple[int, list[int]]] = [(start, [start])]
    seen: set[int] = set()
    while stack:
        node, trail = stack.pop()
        for name in inputs[node]:
            nxt = index_of.get(name)
            if nxt is None:
                continue
            if nxt == start:
                return trail
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*trail, nxt]))
    return []


def columns(spec: SchemaSpec) -> list[ColumnDef]:
    """The table columns of a validated spec, in order."""
    defs = []
    for f in spec.fields:
        column_type = FIELD_TYPES[f.type].column(field_params(f))
        defs.append(ColumnDef(f.name, column_type.logical, column_type.pg, nullable=f.null_rate > 0))
    return defs


#: Objects and lists inside a field's params, at most: nested json_object and array fields are validated
#: recursively, and a few hundred levels would exhaust Python's stack (gRPC's Struct stops at 100 anyway).
MAX_PARAMS_DEPTH = 100


def _nesting_depth(value: Any) -> int:
    """How deep dicts and lists nest in `value`, counted without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Iterable[Any] = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        if deepest > MAX_PARAMS_DEPTH:
            return deepest
        stack.extend((child, depth) for child in children)
    return deepest


def _check_field(
    spec: FieldSpec, path: str, *, rows: int, locale: str
) -> tuple[FieldSpec | None, list[FieldViolation]]:
    """The field's normalized form, or None and its violations."""
    violations = [FieldViolation(f"{path}.name", d) for d in _name_problems(spec.name)]
    if not 0.0 <= spec.null_rate <= 1.0:  # also rejects NaN
        violations.append(FieldViolation(f"{path}.null_rate", "must be between 0 and 1"))
    if spec.seed is not None and not 0 <= spec.seed <= UINT64_MAX:
        violations.append(FieldViolation(f"{path}.seed", "must be an unsigned 64-bit integer"))

    field_type = FIELD_TYPES.get(spec.type)
    if field_type is None:
        violations.append(FieldViolation(f"{path}.type", _unknown_type(spec.type)))
        return None, violations
    if spec.unique and not field_type.supports_unique:
        violations.append(FieldViolation(f"{path}.unique", f"type {spec.type} cannot promise distinct values"))
    if _nesting_depth(spec.params) > MAX_PARAMS_DEPTH:
        violations.append(FieldViolation(f"{path}.params", f"nests more than {MAX_PARAMS_DEPTH} levels deep"))
        return None, violations
    params = _parse_params(field_type, spec.params, f"{path}.params")
    if isinstance(params, list):
        return None, violations + params
    violations.extend(
        FieldViolation(f"{path}.params.{name}", description) for name, description in params.problems(rows=rows)
    )
    if spec.unique and field_type.supports_unique and not violations:
        domain = params.domain(locale)
        if domain is not None and domain < rows:
            violations.append(
                FieldViolation(
                    f"{path}.unique",
                    f"field {spec.name!r} ({spec.type}) has only {domain:,} distinct values"
                    f" for locale {locale}, fewer than rows ({rows:,})",
                )
            )
    if violations:
        return None, violations
    return replace(spec, params=params.model_dump(mode="json", exclude_none=True)), []


def _name_problems(name: str) -> Iterator[str]:
    if not _NAME_RE.fullmatch(name):
        yield "must be a lower-case identifier: [a-z_][a-z0-9_]*"
    if len(name.encode()) > _MAX_NAME_BYTES:
        yield f"must be at most {_MAX_NAME_BYTES} bytes"


def _unknown_type(name: str) -> str:
    close = difflib.get_close_matches(name, FIELD_TYPES, n=3)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown type {name!r}.{hint} See docs/field-types.md for all {len(FIELD_TYPES)} types."


def _parse_params(field_type: FieldType, params: Mapping[str, Any], path: str) -> FieldParams | list[FieldViolation]:
    if not isinstance(params, Mapping):
        return [FieldViolation(path, "must be an object")]
    try:
        return field_type.params.model_validate(dict(params))
    except ValidationError as exc:
        allowed = ", ".join(field_type.params.model_fields) or "none"
        return [_violation(path, e, unknown=f"unknown parameter; allowed: {allowed}") for e in exc.errors()]


def _violation(path: str, error: Any, *, unknown: str = "unknown field") -> FieldViolation:
    """A pydantic error as a violation whose path extends `path` with the error's location."""
    loc: Sequence[str | int] = error["loc"]
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return FieldViolation(path, unknown)
    message: str = error["msg"]
    return FieldViolation(path, message.removeprefix("Value error, "))
