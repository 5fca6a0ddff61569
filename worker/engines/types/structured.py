"""Generators of the types in `server.core.fieldtypes.structured`.

A nested field (a JSON object's value, an array's element) is made by its
own type's generator under a child key of the field's `Rand`: a JSON value
per key with the same row numbers; array elements on `expand` slots, each
element seeing its position in the array as its row number.
"""

from __future__ import annotations

import json
from functools import cache

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from server.core.fieldtypes.structured import (
    Alternation,
    ArrayParams,
    CharSet,
    Concat,
    JsonObjectParams,
    NaughtyStringParams,
    NestedField,
    Node,
    PatternParams,
    Text,
    naughty_strings,
    parse_pattern,
)
from worker.engines.rand import Rand
from worker.engines.types.base import Block, generator, join_parts, make_values
from worker.engines.types.chars import hex_codes, int_strings, scatter

JSON_TYPE = pa.json_(pa.string())
_SHORT_ESCAPES = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTROL = "[\\x00-\\x1f]"


# -- pattern ------------------------------------------------------------------------------


def pattern_values(node: Node, rand: Rand) -> pa.Array:
    """One string per counter of `rand`; each node draws from its own stream (its id)."""
    size = len(rand)
    if isinstance(node, Text):
        return pa.repeat(pa.scalar(node.text, pa.string()), size)
    if isinstance(node, CharSet):
        return _chars(node.chars).take(pa.array(rand.below(len(node.chars), node.id)))
    if isinstance(node, Concat):
        if not node.items:
            return pa.repeat(pa.scalar("", pa.string()), size)
        return pc.binary_join_element_wise(*(pattern_values(item, rand) for item in node.items), "")
    if isinstance(node, Alternation):
        which = rand.below(len(node.options), node.id)
        parts = []
        for number, option in enumerate(node.options):
            where = np.flatnonzero(which == number)
            parts.append((where, pattern_values(option, rand.take(where))))
        return scatter(parts, size, pa.string())
    counts = rand.integers(node.low, node.high, node.id)
    slots, offsets = rand.child("repeat", node.id).expand(counts)
    return join_parts(pattern_values(node.item, slots), offsets, "")


@cache
def _chars(chars: str) -> pa.Array:
    return pa.array(list(chars), pa.string())


@generator("pattern", PatternParams)
def _pattern(params: PatternParams, block: Block) -> pa.Array:
    return pattern_values(parse_pattern(params.pattern, params.max_repeat), block.rand)


@cache
def _naughty() -> pa.Array:
    return pa.array(naughty_strings(), pa.string())


@generator("naughty_string", NaughtyStringParams)
def _naughty_string(params: NaughtyStringParams, block: Block) -> pa.Array:
    values = _naughty()
    return values.take(pa.array(block.rand.below(len(values))))


# -- nested fields ------------------------------------------------------------------------


def nested_column(nested: NestedField, rows: npt.NDArray[np.int64], rand: Rand, locale: str) -> pa.Array:
    """A nested field's values (with its nulls) for counters of `rand`, as a top-level field's."""
    block = Block(rows, rand, locale, False, {})
    return make_values(nested.type, nested.parsed_params(), block, null_rate=nested.null_rate)


def json_quoted(values: pa.Array) -> pa.Array:
    """Strings as JSON string literals (RFC 8259 escaping); NULL stays NULL."""
    values = pc.replace_substring(values, "\\", "\\\\")
    values = pc.replace_substring(values, '"', '\\"')
    if pc.any(pc.match_substring_regex(values, _CONTROL)).as_py():
        for code in range(0x20):  # the 32 control characters, only when there are any
            char = chr(code)
            values = pc.replace_substring(values, char, _SHORT_ESCAPES.get(char, f"\\u{code:04x}"))
    return pc.binary_join_element_wise('"', values, '"', "")


def json_fragments(column: pa.Array) -> pa.Array:
    """Each value as JSON text (null for NULL), for the Arrow types the catalogue makes."""
    kind = column.type
    if isinstance(kind, pa.BaseExtensionType):  # json (the only extension type the catalogue makes)
        text = column.storage
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        text = json_quoted(column.cast(pa.string()))
    elif pa.types.is_boolean(kind):
        text = pc.if_else(column, "true", "false")
    elif pa.types.is_integer(kind) or pa.types.is_decimal(kind):
        text = column.cast(pa.string())
    elif pa.types.is_floating(kind):
        finite = pc.is_finite(column)
        text = pc.if_else(finite, column.cast(pa.string()), pa.scalar(None, pa.string()))  # JSON has no inf or nan
    elif pa.types.is_timestamp(kind):
        text = json_quoted(pc.strftime(column, "%Y-%m-%dT%H:%M:%S" + ("Z" if kind.tz else "")))
    elif pa.types.is_date(kind) or pa.types.is_time(kind):
        text = json_quoted(column.cast(pa.string()))
    elif pa.types.is_fixed_size_binary(kind) and kind.byte_width == 16:
        text = json_quoted(uuid_strings(column))
    elif kind == pa.month_day_nano_interval():
        text = json_quoted(iso_durations(column))
    elif pa.types.is_list(kind):
        text = json_lists(column)
    else:
        raise TypeError(f"no JSON form for Arrow type {kind}")
    return pc.fill_null(text, "null")


def json_lists(column: pa.ListArray) -> pa.Array:
    offsets = column.offsets.to_numpy().astype(np.int64)
    elements = json_fragments(column.flatten())
    inner = join_parts(elements, offsets - offsets[0], ",")
    text = pc.binary_join_element_wise("[", inner, "]", "")
    return pc.if_else(column.is_valid(), text, pa.scalar(None, pa.string()))


def uuid_strings(column: pa.Array) -> pa.Array:
    """8-4-4-4-12 lower-case hex of 16-byte values."""
    raw = np.frombuffer(column.buffers()[1], dtype=">u8", count=2 * (column.offset + len(column)))
    raw = raw[2 * column.offset :].reshape(-1, 2).astype(np.uint64)
    codes = np.concatenate([hex_codes(raw[:, 0], 16), hex_codes(raw[:, 1], 16)], axis=1)
    dashed = np.insert(codes, [8, 12, 16, 20], ord("-"), axis=1)
    hex_text = pa.array(np.ascontiguousarray(dashed).view(f"S{dashed.shape[1]}").ravel(), pa.binary())
    return pc.if_else(column.is_valid(), hex_text.cast(pa.string()), pa.scalar(None, pa.string()))


def iso_durations(column: pa.Array) -> pa.Array:
    """ISO-8601 durations P<m>M<d>DT<s>S of month-day-nano intervals (seconds with microseconds)."""
    raw = np.frombuffer(
        column.buffers()[1],
        dtype=np.dtype([("months", "<i4"), ("days", "<i4"), ("nanos", "<i8")]),
        count=column.offset + len(column),
    )[column.offset :]
    micros = raw["nanos"] // 1000
    sign = pa.array(np.where(micros < 0, "-", ""), pa.string())
    whole, fraction = np.abs(micros) // 1_000_000, np.abs(micros) % 1_000_000
    text = pc.binary_join_element_wise(
        "P", int_strings(raw["months"].astype(np.int64)), "M", int_strings(raw["days"].astype(np.int64)), "DT",
        sign, int_strings(whole), ".", pc.utf8_lpad(int_strings(fraction), 6, "0"), "S", "",
    )  # fmt: skip
    return pc.if_else(column.is_valid(), text, pa.scalar(None, pa.string()))


@generator("json_object", JsonObjectParams)
def _json_object(params: JsonObjectParams, block: Block) -> pa.Array:
    parts: list[pa.Array | str] = []
    # jsonb's own key order (shorter keys first, then by bytes): the text does not depend on the
    # order the mapping arrived in (a spec stored as jsonb comes back in this order anyway).
    keys = sorted(params.fields, key=lambda k: (len(k.encode()), k.encode()))
    for number, key in enumerate(keys):
        nested = params.fields[key]
        value = nested_column(nested, block.rows, block.rand.child("json", key), block.locale)
        parts.extend(["{" if number == 0 else ",", json.dumps(key) + ":", json_fragments(value)])
    parts.append("}")
    text = pc.binary_join_element_wise(*parts, "")
    return pa.ExtensionArray.from_storage(JSON_TYPE, text)


@generator("array", ArrayParams)
def _array(params: ArrayParams, block: Block) -> pa.Array:
    lengths = block.rand.integers(params.min_length, params.max_length)
    slots, offsets = block.rand.child("element").expand(lengths)
    positions = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)
    elements = nested_column(params.element, positions, slots, block.locale)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), elements)
