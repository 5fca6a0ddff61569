"""Generators of the types in `server.core.fieldtypes.commerce`."""

from __future__ import annotations

import math
import string
from functools import cache

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from server.core.fieldtypes import NoParams
from server.core.fieldtypes.commerce import (
    CHARM_DISCOUNT,
    CHARM_STEP,
    SKU_LETTERS,
    PriceParams,
    ProductNameParams,
    SkuParams,
    product_words,
)
from server.core.fieldtypes.numbers import MONEY_PRECISION
from worker.engines.rand import Rand, exp, log
from worker.engines.types.base import Block, generator
from worker.engines.types.chars import (
    ascii_codes,
    base_digits,
    decimal_codes,
    fixed_width_strings,
    list_entries,
    list_generators,
    mixed_radix,
    scatter,
)
from worker.engines.types.numbers import decimal_array

I64 = npt.NDArray[np.int64]

# -- companies ----------------------------------------------------------------------

# Formats that read naturally in every locale ("&" rather than a language's "and"), by weight.
COMPANY_FORMATS: tuple[tuple[str, int], ...] = (
    ("{last} {suffix}", 3),
    ("{last}-{last}", 1),
    ("{last} & {last} {suffix}", 1),
    ("{last}, {last} & {last}", 1),
)
_FORMAT_STREAM = 0
_SUFFIX_STREAM = 1
_LAST_STREAM = 2  # and up: one stream per {last} of a format, so the names of one company differ in draws


@cache
def _company_pieces() -> tuple[tuple[tuple[str, str | None], ...], ...]:
    """Each format as (literal text, placeholder or None) pairs."""
    parse = string.Formatter().parse
    return tuple(tuple((text, name) for text, name, _, _ in parse(template)) for template, _ in COMPANY_FORMATS)


def _company(rand: Rand, locale: str, pieces: tuple[tuple[str, str | None], ...]) -> pa.Array:
    columns: list[pa.Array | str] = []
    lasts = 0
    for text, placeholder in pieces:
        if text:
            columns.append(text)
        if placeholder == "last":
            columns.append(list_entries(rand, locale, "last_name", _LAST_STREAM + lasts))
            lasts += 1
        elif placeholder == "suffix":
            columns.append(list_entries(rand, locale, "company_suffix", _SUFFIX_STREAM))
    return pc.binary_join_element_wise(*columns, "")


@generator("company_name", NoParams)
def _company_name(params: NoParams, block: Block) -> pa.Array:
    formats = block.rand.weighted([weight for _, weight in COMPANY_FORMATS], _FORMAT_STREAM)
    parts = []
    for number, pieces in enumerate(_company_pieces()):
        where = np.flatnonzero(formats == number)
        parts.append((where, _company(block.rand.take(where), block.locale, pieces)))
    return scatter(parts, block.size, pa.string())


# -- products -----------------------------------------------------------------------


@cache
def _product_arrays() -> tuple[pa.Array, pa.Array, pa.Array]:
    adjectives, materials, nouns = product_words()
    return pa.array(adjectives, pa.string()), pa.array(materials, pa.string()), pa.array(nouns, pa.string())


@generator("product_name", ProductNameParams)
def _product_name(params: ProductNameParams, block: Block) -> pa.Array:
    adjectives, materials, nouns = _product_arrays()
    # One index over all (adjective, material, noun) triples, in mixed radix: unique takes each triple once.
    radices = (len(adjectives), len(materials), len(nouns))
    adjective, material, noun = mixed_radix(block.pick(math.prod(radices)), radices)
    words = (adjectives.take(pa.array(adjective)), materials.take(pa.array(material)), nouns.take(pa.array(noun)))
    return pc.binary_join_element_wise(*words, " ")


# -- prices and codes ---------------------------------------------------------------


def log_uniform_integers(rand: Rand, low: int, high: int, stream: int = 0) -> I64:
    """Integers in [low, high], 1 <= low, with P(k) proportional to log((k + 1) / k).

    The floor of a log-uniform float in [low, high + 1), drawn with our own
    log and exp (the same bits on every platform); floor and clip of floats
    holding integers below 2**53 are exact.
    """
    start, end = log(np.array([float(low), float(high + 1)], dtype=np.float64))
    drawn = np.floor(exp(start + (end - start) * rand.uniform(stream)))
    return np.clip(drawn, low, high).astype(np.int64)


@generator("price", PriceParams)
def _price(params: PriceParams, block: Block) -> pa.Array:
    first, last = params.step_range
    if params.distribution == "uniform":
        steps = block.rand.integers(first, last)
    else:
        steps = log_uniform_integers(block.rand, first, last)
    cents = steps * CHARM_STEP - CHARM_DISCOUNT if params.charm else steps
    return decimal_array(cents, MONEY_PRECISION, 2)


_PICK_LIMIT = 1 << 63  # the most values one `block.pick` ranges over
_LETTER_CODES = ascii_codes(SKU_LETTERS)


@generator("sku", SkuParams)
def _sku(params: SkuParams, block: Block) -> pa.Array:
    base, letters, digits = len(SKU_LETTERS), params.letters, params.digits
    # The digits and the last letters come from one pick, distinct when unique. Beyond 2**63 SKUs the
    # first letters it cannot hold are drawn independently: the picked part still has over 10**17
    # values, more than any row count.
    free = next(k for k in range(letters + 1) if base ** (letters - k) * 10**digits <= _PICK_LIMIT)
    picked = block.pick(base ** (letters - free) * 10**digits)
    letter_index = base_digits(picked // 10**digits, base, letters - free)
    if free:
        letter_index = np.concatenate([base_digits(block.rand.below(base**free, 1), base, free), letter_index], axis=1)
    codes = [_LETTER_CODES[letter_index]]
    if letters and params.separator:
        codes.append(np.full((block.size, 1), ord(params.separator), dtype=np.uint8))
    codes.append(decimal_codes(picked % 10**digits, digits))
    return fixed_width_strings(np.concatenate(codes, axis=1))


list_generators("company_suffix", "product_material", "color_name")
