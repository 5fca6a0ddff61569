"""Structured values: strings matching a pattern, naughty strings, JSON objects and arrays of other types.

A pattern is a small regular-expression language, parsed here at validation
into a tree that the worker walks to generate. json_object and array hold
other catalogue types ("nested fields"): their params are normalized and
checked here like a top-level field's, with violations under their own paths.
"""

from __future__ import annotations

import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from server.core import vocab
from server.core.fieldtypes.base import FIELD_TYPES, ColumnType, FieldParams, FieldType, IntParam, NoParams, declare

MAX_PATTERN_LENGTH = 10_000  # characters one value may have
MAX_CLASS_SIZE = 10_000
# Types that cannot be nested: computed from other fields, or resolved against a stored dataset.
_NOT_NESTABLE = frozenset({"foreign_key"})
_NOT_ELEMENTS = frozenset({"array"})  # PostgreSQL arrays are rectangular: no arrays of arrays

# -- patterns ---------------------------------------------------------------------


class PatternError(ValueError):
    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at position {position})")


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class CharSet:
    chars: str  # distinct characters, one drawn uniformly
    id: int  # the node's random stream


@dataclass(frozen=True, slots=True)
class Concat:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Alternation:
    options: tuple[Node, ...]
    id: int


@dataclass(frozen=True, slots=True)
class Repeat:
    item: Node
    low: int
    high: int
    id: int


Node = Text | CharSet | Concat | Alternation | Repeat

DIGITS = string.digits
WORD = string.ascii_letters + string.digits + "_"
SPACE = " "
DOT = "".join(chr(c) for c in range(0x21, 0x7F))  # printable ASCII but space
_CLASS_ESCAPES = {"d": DIGITS, "w": WORD, "s": SPACE}
_CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


class _PatternParser:
    """Recursive descent over: alternation := sequence ('|' sequence)*; sequence := (atom quantifier?)*."""

    def __init__(self, text: str, max_repeat: int) -> None:
        self.text = text
        self.pos = 0
        self.max_repeat = max_repeat
        self.next_id = 0

    def parse(self) -> Node:
        start, end = 0, len(self.text)
        if self.text.startswith("^"):  # anchors mean nothing to a generator: the whole value matches
            start = 1
        if self.text.endswith("$") and not self.text.endswith("\\$") and end > start:
            end -= 1
        self.text, self.pos = self.text[:end], start
        node = self._alternation()
        if self.pos < len(self.text):
            raise PatternError("unbalanced ')'", self.pos)
        return node

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id

    def _peek(self) -> str | None:
        return self.text[self.pos] if self.pos < len(self.text) else None

    def _alternation(self) -> Node:
        options = [self._sequence()]
        while self._peek() == "|":
            self.pos += 1
            options.append(self._sequence())
        return options[0] if len(options) == 1 else Alternation(tuple(options), self._id())

    def _sequence(self) -> Node:
        items: list[Node] = []
        while (char := self._peek()) is not None and char not in "|)":
            atom = self._quantified(self._atom())
            if isinstance(atom, Text) and items and isinstance(items[-1], Text):
                items[-1] = Text(items[-1].text + atom.text)
            else:
                items.append(atom)
        return items[0] if len(items) == 1 else Concat(tuple(items))

    def _atom(self) -> Node:
        start = self.pos
        char = self.text[self.pos]
        self.pos += 1
        if char == "(":
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self._peek() == "?":
                raise PatternError("only plain groups (...) and (?:...) are supported", start)
            inner = self._alternation()
            if self._peek() != ")":
                raise PatternError("unclosed group '('", start)
            self.pos += 1
            return inner
        if char == "[":
            return self._class(start)
        if char == "\\":
            return self._escape(start, in_class=False)
        if char == ".":
            return CharSet(DOT, self._id())
        if char in "*+?{":
            raise PatternError(f"nothing to repeat before {char!r}", start)
        if char in "^$":
            raise PatternError(f"anchor {char!r} is only allowed at the start or end", start)
        if char == "\x00":
            raise PatternError("NUL cannot be stored in PostgreSQL text", start)
        return Text(char)

    def _escape(self, start: int, *, in_class: bool) -> CharSet | Text:
        if self.pos >= len(self.text):
            raise PatternError("pattern ends with a lone backslash", start)
        char = self.text[self.pos]
        self.pos += 1
        if char in _CLASS_ESCAPES:
            return CharSet(_CLASS_ESCAPES[char], 0 if in_class else self._id())
        if char in _CHAR_ESCAPES:
            return Text(_CHAR_ESCAPES[char])
        if char.isalnum():
            raise PatternError(f"unsupported escape \\{char} (supported: \\d \\w \\s \\n \\t \\r)", start)
        return Text(char)

    def _class(self, start: int) -> CharSet:
        if self._peek() == "^":
            raise PatternError("negated classes [^...] are not supported", start)
        chars: dict[str, None] = {}
        first = True
        while True:
            char = self._peek()
            if char is None:
                raise PatternError("unclosed class '['", start)
            if char == "]" and not first:
                self.pos += 1
                break
            first = False
            item_start = self.pos
            self.pos += 1
            if char == "\\":
                escaped = self._escape(item_start, in_class=True)
                if isinstance(escaped, CharSet):
                    chars.update(dict.fromkeys(escaped.chars))
                    continue
                char = escaped.text
            if self._peek() == "-" and self.pos + 1 < len(self.text) and self.text[self.pos + 1] != "]":
                self.pos += 1
                high = self.text[self.pos]
                self.pos += 1
                if high == "\\":
                    escaped = self._escape(self.pos - 1, in_class=True)
                    if isinstance(escaped, CharSet):
                        raise PatternError("a range cannot end in a class escape", item_start)
                    high = escaped.text
                if ord(high) < ord(char):
                    raise PatternError(f"bad range {char}-{high}", item_start)
                if ord(high) - ord(char) >= MAX_CLASS_SIZE:
                    raise PatternError(f"a class may hold at most {MAX_CLASS_SIZE} characters", item_start)
                chars.update(dict.fromkeys(chr(c) for c in range(ord(char), ord(high) + 1)))
            else:
                chars[char] = None
        chars.pop("\x00", None)
        if not chars:
            raise PatternError("empty class", start)
        if len(chars) > MAX_CLASS_SIZE:
            raise PatternError(f"a class may hold at most {MAX_CLASS_SIZE} characters", start)
        return CharSet("".join(chars), self._id())

    def _quantified(self, atom: Node) -> Node:
        start = self.pos
        char = self._peek()
        if char is None or char not in "*+?{":
            return atom
        self.pos += 1
        if char == "?":
            low, high = 0, 1
        elif char == "*":
            low, high = 0, self.max_repeat
        elif char == "+":
            low, high = 1, self.max_repeat
        else:
            low, high = self._braces(start)
        if (following := self._peek()) is not None and following in "*+?{":
            raise PatternError("a quantifier cannot follow a quantifier (no lazy or possessive forms)", self.pos)
        return Repeat(atom, low, high, self._id())

    def _braces(self, start: int) -> tuple[int, int]:
        close = self.text.find("}", self.pos)
        body = self.text[self.pos : close] if close >= 0 else ""
        low_text, comma, high_text = body.partition(",")
        well_formed = (low_text.isdigit() or (comma and not low_text)) and (high_text.isdigit() or not high_text)
        if close < 0 or not well_formed:
            raise PatternError("'{' must start a quantifier {n}, {n,m}, {n,} or {,m}; write \\{ for a brace", start)
        self.pos = close + 1
        low = int(low_text) if low_text else 0
        high = (int(high_text) if high_text else max(low, self.max_repeat)) if comma else low
        if high < low:
            raise PatternError(f"bad quantifier {{{body}}}: max below min", start)
        if high > MAX_PATTERN_LENGTH:
            raise PatternError(f"a quantifier may repeat at most {MAX_PATTERN_LENGTH} times", start)
        return low, high


def longest(node: Node) -> int:
    """The most characters the node can make."""
    if isinstance(node, Text):
        return len(node.text)
    if isinstance(node, CharSet):
        return 1
    if isinstance(node, Concat):
        return sum(longest(item) for item in node.items)
    if isinstance(node, Alternation):
        return max(longest(option) for option in node.options)
    return node.high * longest(node.item)


@cache
def parse_pattern(text: str, max_repeat: int) -> Node:
    """The pattern's tree; PatternError (a ValueError) saying what is wrong where."""
    node = _PatternParser(text, max_repeat).parse()
    if longest(node) > MAX_PATTERN_LENGTH:
        raise PatternError(f"can make values longer than {MAX_PATTERN_LENGTH} characters", 0)
    return node


class PatternParams(FieldParams):
    pattern: Annotated[str, Field(min_length=1, max_length=1000)] = Field(
        "[A-Z]{3}-\\d{4}",
        description="a regular expression the values match: literals, escapes \\d \\w \\s (a space) and \\."
        " (any escaped punctuation), classes [A-Z0-9_-], '.' (printable ASCII), groups (ab|cd) and (?:ab),"
        " and quantifiers ? * + {n} {n,m}; ^ and $ are ignored; e.g. '[A-Z]{3}-\\d{4}'",
    )
    max_repeat: IntParam = Field(8, ge=1, le=100, description="how many times * and + (and {n,}) repeat at most")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        try:
            parse_pattern(self.pattern, self.max_repeat)
        except PatternError as exc:
            yield "pattern", str(exc)


class NaughtyStringParams(NoParams):
    """No params; the strings that PostgreSQL text cannot hold (with U+0000) are left out."""


def naughty_strings() -> tuple[str, ...]:
    return tuple(s for s in vocab.load("_global", "naughty_string").values if "\x00" not in s)


# -- nested fields ----------------------------------------------------------------


class NestedField(BaseModel):
    """A value of another catalogue type inside a JSON object or an array."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    type: str = Field(description="the catalogue type of the value")
    params: dict[str, Any] = Field(default_factory=dict, description="its params, as for a field")
    null_rate: float = Field(0.0, ge=0.0, le=1.0, description="chance of a null value")

    @model_validator(mode="before")
    @classmethod
    def _normalize(cls, data: Any) -> Any:
        """Complete valid params with their defaults (like validate_schema), so that a stored job keeps its rows."""
        if (
            isinstance(data, Mapping)
            and isinstance(data.get("type"), str)
            and isinstance(data.get("params", {}), Mapping)
        ):
            field_type = FIELD_TYPES.get(data["type"])
            if field_type is not None:
                try:
                    params = field_type.params.model_validate(dict(data.get("params", {})))
                except ValidationError:
                    return data  # reported with precise paths by `nested_problems`
                return {**data, "params": params.model_dump(mode="json", exclude_none=True)}
        return data

    def parsed_params(self) -> FieldParams:
        return FIELD_TYPES[self.type].params.model_validate(self.params)

    def column(self) -> ColumnType:
        return FIELD_TYPES[self.type].column(self.parsed_params())


def nested_problems(
    nested: NestedField, path: str, *, rows: int, excluded: frozenset[str]
) -> Iterator[tuple[str, str]]:
    """Problems of a nested field, as (path under the params, description)."""
    field_type = FIELD_TYPES.get(nested.type)
    if field_type is None:
        yield f"{path}.type", f"unknown type {nested.type!r}; known types: {', '.join(sorted(FIELD_TYPES))}"
        return
    if nested.type in excluded or nested.type in _NOT_NESTABLE:
        yield f"{path}.type", f"type {nested.type} cannot be nested here"
        return
    try:
        params = nested.parsed_params()
    except ValidationError as exc:
        for error in exc.errors():
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"])
            message = "unknown parameter" if error["type"] == "extra_forbidden" else error["msg"]
            yield f"{path}.params{where}", message.removeprefix("Value error, ")
        return
    if params.inputs():
        yield f"{path}.type", f"type {nested.type} is computed from other fields and cannot be nested"
        return
    for name, description in params.problems(rows=rows):
        yield f"{path}.params.{name}", description


class JsonObjectParams(FieldParams):
    fields: Annotated[dict[Annotated[str, Field(min_length=1, max_length=100)], NestedField], Field(
        min_length=1, max_length=100
    )] = Field(
        default_factory=lambda: {"id": {"type": "integer"}, "name": {"type": "word"}},
        validate_default=True,
        description="the object's keys, each with the {type, params, null_rate} of its value (nested"
        " json_object and array values are allowed); written in jsonb's key order: shorter keys first",
    )  # fmt: skip

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        for key, nested in self.fields.items():
            yield from nested_problems(nested, f"fields.{key}", rows=rows, excluded=frozenset())


class ArrayParams(FieldParams):
    element: NestedField = Field(
        default_factory=lambda: {"type": "integer", "params": {"min": 0, "max": 100}},
        validate_default=True,
        description="the {type, params, null_rate} of the elements (not an array)",
    )
    min_length: IntParam = Field(0, ge=0, le=1000, description="fewest elements")
    max_length: IntParam = Field(5, ge=0, le=1000, description="most elements")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        yield from nested_problems(self.element, "element", rows=rows, excluded=_NOT_ELEMENTS)
        if self.min_length > self.max_length:
            yield "max_length", f"must be >= min_length ({self.min_length})"

    def column_type(self) -> ColumnType | None:
        if self.element.type not in FIELD_TYPES or self.element.type in _NOT_ELEMENTS:
            return None  # invalid: `problems` says why
        try:
            element = self.element.column()
        except ValidationError:
            return None
        return ColumnType(f"{element.logical}[]", f"{element.pg}[]")


declare(
    FieldType("pattern", "structured", "strings matching a regular expression", PatternParams, "text", "text"),
    FieldType(
        "naughty_string", "structured", "strings that break naive input handling (Big List of Naughty Strings)",
        NaughtyStringParams, "text", "text",
    ),
    FieldType("json_object", "structured", "a JSON object of values of other types", JsonObjectParams, "json",
              "jsonb"),
    FieldType("array", "structured", "an array of values of another type", ArrayParams, "text[]", "text[]"),
)  # fmt: skip
