"""Generators of the types in `server.core.fieldtypes.address`."""

from __future__ import annotations

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from server.core import vocab
from server.core.fieldtypes import NoParams
from server.core.fieldtypes.address import (
    ADDRESS_LAYOUTS,
    BuildingNumberParams,
    PostcodeParams,
    StateParams,
)
from worker.engines.rand import Rand
from worker.engines.types.base import Block, generator
from worker.engines.types.chars import Ints, int_strings, list_generators, list_index, sample_list
from worker.engines.types.person import digit_strings

Template = tuple[tuple[str, str | None], ...]  # (literal text, placeholder or None) pairs
# The largest building number of a street address, after the locale's custom (Faker's formats).
_STREET_BUILDING_MAX = {"en_US": 9999, "pt_BR": 9999}
_DEFAULT_STREET_BUILDING_MAX = 999
_BUILDING_AT_AN_END = re.compile(r"^\{building\}[ ,]*|[ ,]*\{building\}$")


def parse_template(text: str) -> Template:
    return tuple((literal, name) for literal, name, _, _ in string.Formatter().parse(text))


@dataclass(frozen=True, slots=True)
class Entries:
    """A part whose values are entries of a list, by index: literal text beside it can go into the list."""

    values: tuple[str, ...]
    index: Ints


Part: TypeAlias = "pa.Array | Entries"
Piece: TypeAlias = "pa.Array | Entries | str"


@cache
def _decorated(values: tuple[str, ...], before: str, after: str) -> pa.Array:
    return pa.array([f"{before}{value}{after}" for value in values], pa.string())


def join(pieces: list[Piece]) -> pa.Array:
    """Concatenate the pieces row by row.

    Literal text goes into the list of an Entries beside it (a cached copy of the list with
    the text added), so that Arrow joins arrays only: about twice as fast as with scalars.
    """
    before, after = [""] * len(pieces), [""] * len(pieces)
    kept: list[int] = []
    for number, piece in enumerate(pieces):
        if isinstance(piece, str) and number > 0 and isinstance(pieces[number - 1], Entries):
            after[number - 1] += piece
        elif isinstance(piece, str) and number + 1 < len(pieces) and isinstance(pieces[number + 1], Entries):
            before[number + 1] = piece
        else:
            kept.append(number)
    arrays: list[pa.Array | str] = []
    for number in kept:
        piece = pieces[number]
        if isinstance(piece, Entries):
            piece = _decorated(piece.values, before[number], after[number]).take(pa.array(piece.index))
        arrays.append(piece)
    return pc.binary_join_element_wise(*arrays, "")


def render_any(templates: tuple[Template, ...], parts: Mapping[str, Part], rand: Rand, stream: int) -> pa.Array:
    """Each row in one of the templates, picked uniformly, with each placeholder replaced by its part's value.

    Templates with the same placeholders in the same order (a locale's street formats) differ
    only in their literals: one join, with a column of literals where they differ.
    """
    choice = pa.array(rand.below(len(templates), stream)) if len(templates) > 1 else None
    if len({tuple(name for _, name in template) for template in templates}) > 1:
        return pc.choose(choice, *(render_any((template,), parts, rand, stream) for template in templates))
    pieces: list[Piece] = []
    for slot in zip(*templates, strict=True):
        texts = [text for text, _ in slot]
        if len(set(texts)) > 1:
            pieces.append(pa.array(texts, pa.string()).take(choice))
        elif texts[0]:
            pieces.append(texts[0])
        if slot[0][1] is not None:
            pieces.append(parts[slot[0][1]])
    return join(pieces)


# -- buildings and streets ----------------------------------------------------------------


_FRACTION_BITS = 40


def building_numbers(rand: Rand, low: int, high: int, stream: int) -> Ints:
    """Numbers in [low, high], each count of digits equally likely, as on real streets (one draw).

    The draw's high part picks the count of digits and its low 40 bits the number among those
    with that many: floor(fraction * span / 2**40), uneven by at most span / 2**40 (under 1e-6).
    """
    counts = range(len(str(low)), len(str(high)) + 1)
    firsts = np.array([max(low, 10 ** (digits - 1)) for digits in counts], dtype=np.int64)
    spans = np.array([min(high, 10**digits - 1) + 1 for digits in counts], dtype=np.int64) - firsts
    draw = rand.below(len(counts) << _FRACTION_BITS, stream)
    which = draw >> _FRACTION_BITS
    fraction = draw & ((1 << _FRACTION_BITS) - 1)
    numbers: Ints = firsts[which] + ((fraction * spans[which]) >> _FRACTION_BITS)  # < 2**60: no overflow
    return numbers


@generator("building_number", BuildingNumberParams)
def _building_number(params: BuildingNumberParams, block: Block) -> pa.Array:
    if block.unique:
        return int_strings(block.pick(params.max - params.min + 1) + params.min)
    return int_strings(building_numbers(block.rand, params.min, params.max, stream=0))


@cache
def street_formats(locale: str, *, building: bool) -> tuple[str, ...]:
    """The locale's street formats; without the building number and its separator when `building` is false."""
    formats = vocab.load(locale, "street_format").values
    if building:
        return formats
    stripped = tuple(dict.fromkeys(_BUILDING_AT_AN_END.sub("", text) for text in formats))
    if any("{building}" in text for text in stripped):
        raise ValueError(f"{locale} street formats must put the building number first or last: {formats}")
    return stripped


def street_templates(locale: str, *, building: bool) -> tuple[Template, ...]:
    return tuple(parse_template(text) for text in street_formats(locale, building=building))


_STREET_FORMAT, _STREET_NAME, _STREET_SUFFIX, _STREET_BUILDING = 0, 1, 2, 3


def locale_entries(block: Block, name: str, stream: int) -> Entries:
    """Entries of the locale's list, by its weights when it has them (never unique)."""
    return Entries(vocab.load(block.locale, name).values, list_index(block.rand, block.locale, name, stream))


@cache
def _numbers(high: int) -> tuple[str, ...]:
    return tuple(str(number) for number in range(high + 1))


def _street_parts(block: Block, *, building: bool) -> dict[str, Part]:
    parts: dict[str, Part] = {
        "name": locale_entries(block, "street_name", _STREET_NAME),
        "suffix": locale_entries(block, "street_suffix", _STREET_SUFFIX),
    }
    if building:
        high = _STREET_BUILDING_MAX.get(block.locale, _DEFAULT_STREET_BUILDING_MAX)
        parts["building"] = Entries(_numbers(high), building_numbers(block.rand, 1, high, _STREET_BUILDING))
    return parts


@generator("street_name", NoParams)
def _street_name(params: NoParams, block: Block) -> pa.Array:
    parts = _street_parts(block, building=False)
    return render_any(street_templates(block.locale, building=False), parts, block.rand, _STREET_FORMAT)


@generator("street_address", NoParams)
def _street_address(params: NoParams, block: Block) -> pa.Array:
    parts = _street_parts(block, building=True)
    return render_any(street_templates(block.locale, building=True), parts, block.rand, _STREET_FORMAT)


# -- places -------------------------------------------------------------------------------


@generator("state", StateParams)
def _state(params: StateParams, block: Block) -> pa.Array:
    return sample_list(block, block.locale, params.list_name)


def postcodes(block: Block, stream: int) -> pa.Array:
    return digit_strings(block, vocab.load(block.locale, "postcode_format").values, stream)


@generator("postcode", PostcodeParams)
def _postcode(params: PostcodeParams, block: Block) -> pa.Array:
    return postcodes(block, stream=0)


_ADDRESS_CITY, _ADDRESS_STATE, _ADDRESS_POSTCODE = 10, 11, 12  # above the street's; the postcode uses several


@cache
def address_templates(locale: str) -> tuple[Template, ...]:
    """The locale's layout with each of its street formats in place of {street_address}: one join per row."""
    layout = ADDRESS_LAYOUTS[locale]
    return tuple(
        parse_template(layout.replace("{street_address}", street)) for street in street_formats(locale, building=True)
    )


@generator("address", NoParams)
def _address(params: NoParams, block: Block) -> pa.Array:
    templates = address_templates(block.locale)
    used = {name for template in templates for _, name in template}
    parts = _street_parts(block, building=True)
    parts["city"] = locale_entries(block, "city", _ADDRESS_CITY)
    if "state_abbr" in used:
        parts["state_abbr"] = locale_entries(block, "state_abbr", _ADDRESS_STATE)
    parts["postcode"] = postcodes(block, _ADDRESS_POSTCODE)
    return render_any(templates, parts, block.rand, _STREET_FORMAT)


list_generators("city", "country")
