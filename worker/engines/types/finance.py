"""Generators of the types in `server.core.fieldtypes.finance`.

Check digits (Luhn, ISO 7064 mod 97-10, EAN/UPC, ISBN-10) are computed on
matrices of digits, one column per position: a loop over the few positions,
never over rows.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from server.core import vocab
from server.core.fieldtypes.finance import (
    CARD_BRANDS,
    GLOBAL,
    AccountNumberParams,
    BicParams,
    CardBrandSpec,
    CreditCardExpiryParams,
    CreditCardNumberParams,
    CurrencyParams,
    CvvParams,
    Ean13Params,
    IbanParams,
    Isbn10Params,
    Isbn13Params,
    UpcAParams,
)
from worker.engines.rand import Rand
from worker.engines.types.base import Block, generator
from worker.engines.types.chars import (
    DIGIT_CODES,
    Codes,
    ascii_codes,
    base_digits,
    fixed_width_strings,
    prefix_strings,
    random_symbols,
    sample_index,
    sample_list,
    scatter,
)

I64 = npt.NDArray[np.int64]
UPPER = ascii_codes("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
ALNUM = ascii_codes("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def luhn_check_digit(payload: I64) -> I64:
    """The digit that makes payload + digit pass the Luhn check; payload is (n, m) digits."""
    width = payload.shape[1]
    doubled = (width - 1 - np.arange(width)) % 2 == 0  # every other digit, from the rightmost
    values = np.where(doubled, payload * 2, payload)
    values = np.where(values > 9, values - 9, values)
    check: I64 = (10 - values.sum(axis=1) % 10) % 10
    return check


def gs1_check_digit(payload: I64) -> I64:
    """EAN/UPC check digit: weights 3 and 1 alternating from the rightmost payload digit."""
    width = payload.shape[1]
    weights = np.where((width - 1 - np.arange(width)) % 2 == 0, 3, 1)
    check: I64 = (10 - (payload * weights).sum(axis=1) % 10) % 10
    return check


def digit_strings(digits: I64) -> pa.Array:
    return fixed_width_strings(DIGIT_CODES[digits])


def with_check(payload: I64, check: I64) -> pa.Array:
    return digit_strings(np.concatenate([payload, check[:, None]], axis=1))


# -- cards --------------------------------------------------------------------------------


def card_numbers(brand: CardBrandSpec, rand: Rand) -> pa.Array:
    """Numbers of one brand: an issuer prefix, random digits and the Luhn digit."""
    low = np.array([lo for lo, _ in brand.prefixes], dtype=np.int64)
    size = np.array([hi - lo + 1 for lo, hi in brand.prefixes], dtype=np.float64)
    prefix_digits = np.array([len(str(lo)) for lo, _ in brand.prefixes], dtype=np.int64)
    which = rand.below(len(brand.prefixes), stream=1)
    prefix = low[which] + np.floor(rand.uniform(stream=2) * size[which]).astype(np.int64)
    payload_digits = brand.length - 1
    rest = np.power(10, payload_digits - prefix_digits[which])
    # Every prefix has at least one digit, so 10**(payload_digits - 1) is a multiple of each `rest`.
    body = rand.below(10 ** (payload_digits - 1), stream=3) % rest
    payload = base_digits(prefix * rest + body, 10, payload_digits)
    return with_check(payload, luhn_check_digit(payload))


@generator("credit_card_number", CreditCardNumberParams)
def _credit_card_number(params: CreditCardNumberParams, block: Block) -> pa.Array:
    brands = params.chosen()
    which = block.rand.below(len(brands), stream=0)
    parts = []
    for number, name in enumerate(brands):  # a handful of brands, each a vectorized subset
        where = np.flatnonzero(which == number)
        parts.append((where, card_numbers(CARD_BRANDS[name], block.rand.take(where))))
    return scatter(parts, block.size, pa.string())


@generator("credit_card_expiry", CreditCardExpiryParams)
def _credit_card_expiry(params: CreditCardExpiryParams, block: Block) -> pa.Array:
    months = params.start.year * 12 + params.start.month - 1 + block.rand.below(params.years * 12)
    month, year = months % 12 + 1, (months // 12) % 100
    codes = np.concatenate(
        [DIGIT_CODES[base_digits(month, 10, 2)], np.full((block.size, 1), ord("/"), np.uint8),
         DIGIT_CODES[base_digits(year, 10, 2)]],
        axis=1,
    )  # fmt: skip
    return fixed_width_strings(codes)


@generator("cvv", CvvParams)
def _cvv(params: CvvParams, block: Block) -> pa.Array:
    return digit_strings(base_digits(block.rand.below(10**params.length), 10, params.length))


# -- banks --------------------------------------------------------------------------------

_PAD, _DIGIT, _LETTER, _ALNUM = 0, 1, 2, 3
_CLASS_OF = {"n": _DIGIT, "a": _LETTER, "c": _ALNUM}
_CLASS_SIZE = np.array([1, 10, 26, 36], dtype=np.float64)
# The characters of each class, indexed by draw: row = class.
_CLASS_CHARS = np.zeros((4, 36), dtype=np.uint8)
_CLASS_CHARS[_DIGIT, :10] = ALNUM[:10]
_CLASS_CHARS[_LETTER, :26] = UPPER
_CLASS_CHARS[_ALNUM] = ALNUM
_MAX_BBAN = 30


@cache
def _iban_tables() -> tuple[tuple[str, ...], npt.NDArray[np.int8], I64]:
    """Countries, the character class of each BBAN position (n, 30), and the BBAN lengths."""
    formats = vocab.iban_formats()
    classes = np.zeros((len(formats), _MAX_BBAN), dtype=np.int8)
    for row, iban_format in enumerate(formats):
        position = 0
        for count, cls in iban_format.bban:
            classes[row, position : position + count] = _CLASS_OF[cls]
            position += count
    lengths = np.array([f.length - 4 for f in formats], dtype=np.int64)
    return tuple(f.country for f in formats), classes, lengths


def _mod97_step(remainder: I64, codes: npt.NDArray[np.integer]) -> I64:
    """Append one character (a digit, or a letter as 10..35) to the number that remainder is mod 97 of."""
    codes = codes.astype(np.int64)
    is_letter = codes >= ord("A")
    value = np.where(is_letter, codes - ord("A") + 10, codes - ord("0"))
    step: I64 = (remainder * np.where(is_letter, 100, 10) + value) % 97
    return step


@generator("iban", IbanParams)
def _iban(params: IbanParams, block: Block) -> pa.Array:
    countries, classes, lengths = _iban_tables()
    if params.country is None:
        which = block.rand.below(len(countries), stream=0)
    else:
        which = np.full(block.size, countries.index(params.country), dtype=np.int64)
    row_classes = classes[which]
    codes = np.zeros((block.size, 4 + _MAX_BBAN), dtype=np.uint8)
    country_codes = np.array([list(c.encode()) for c in countries], dtype=np.uint8)
    codes[:, :2] = country_codes[which]
    remainder = np.zeros(block.size, dtype=np.int64)
    for position in range(_MAX_BBAN):  # BBAN first: the check is over BBAN + country + "00"
        cls = row_classes[:, position]
        draw = np.floor(block.rand.uniform(stream=1 + position) * _CLASS_SIZE[cls]).astype(np.int64)
        chars = _CLASS_CHARS[cls, draw]
        codes[:, 4 + position] = chars
        remainder = np.where(cls == _PAD, remainder, _mod97_step(remainder, chars))
    for position in range(2):
        remainder = _mod97_step(remainder, codes[:, position])
    check = 98 - (remainder * 100) % 97
    codes[:, 2:4] = DIGIT_CODES[base_digits(check, 10, 2)]
    return prefix_strings(codes, 4 + lengths[which])


@cache
def _country_codes() -> Codes:
    return np.array([list(c.encode()) for c in vocab.load(GLOBAL, "country_code").values], dtype=np.uint8)


@generator("bic", BicParams)
def _bic(params: BicParams, block: Block) -> pa.Array:
    # bank (4 letters), country (2 letters), location (2), optional branch (3).
    codes = np.empty((block.size, 11), dtype=np.uint8)
    codes[:, :4] = UPPER[random_symbols(block, 26, 4, stream=0)]
    codes[:, 4:6] = _country_codes()[sample_index(block, GLOBAL, "country_code", stream=1)]
    codes[:, 6:] = ALNUM[random_symbols(block, 36, 5, stream=2)]
    lengths = np.where(block.rand.chance(params.branch_probability, stream=3), 11, 8)
    return prefix_strings(codes, lengths)


@generator("currency_code", CurrencyParams)
def _currency_code(params: CurrencyParams, block: Block) -> pa.Array:
    return sample_list(block, GLOBAL, "currency_code")


@generator("currency_name", CurrencyParams)
def _currency_name(params: CurrencyParams, block: Block) -> pa.Array:
    return sample_list(block, GLOBAL, "currency_name")


@generator("account_number", AccountNumberParams)
def _account_number(params: AccountNumberParams, block: Block) -> pa.Array:
    return digit_strings(random_symbols(block, 10, params.length))


# -- product codes ------------------------------------------------------------------------


@generator("ean13", Ean13Params)
def _ean13(params: Ean13Params, block: Block) -> pa.Array:
    free = 12 - len(params.prefix)
    prefix = np.array([int(d) for d in params.prefix], dtype=np.int64)
    payload = np.concatenate(
        [np.broadcast_to(prefix, (block.size, len(prefix))), base_digits(block.pick(10**free), 10, free)], axis=1
    )
    return with_check(payload, gs1_check_digit(payload))


@generator("isbn13", Isbn13Params)
def _isbn13(params: Isbn13Params, block: Block) -> pa.Array:
    value = block.pick(2 * 10**9)
    payload = base_digits((978 + value // 10**9) * 10**9 + value % 10**9, 10, 12)
    return with_check(payload, gs1_check_digit(payload))


@generator("isbn10", Isbn10Params)
def _isbn10(params: Isbn10Params, block: Block) -> pa.Array:
    payload = base_digits(block.pick(10**9), 10, 9)
    check = (payload * np.arange(1, 10)).sum(axis=1) % 11  # sum of i * d_i; 10 is written X
    codes = np.concatenate([DIGIT_CODES[payload], np.where(check == 10, ord("X"), DIGIT_CODES[check % 10])[:, None]],
                           axis=1).astype(np.uint8)  # fmt: skip
    return fixed_width_strings(codes)


@generator("upc_a", UpcAParams)
def _upc_a(params: UpcAParams, block: Block) -> pa.Array:
    payload = base_digits(block.pick(10**11), 10, 11)
    return with_check(payload, gs1_check_digit(payload))
