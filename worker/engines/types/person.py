"""Generators of the types in `server.core.fieldtypes.person`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from server.core.fieldtypes.person import (
    NUMBER_SLOTS,
    USERNAME_SEPARATORS,
    EmailParams,
    FirstNameParams,
    FullNameParams,
    NamePrefixParams,
    PhoneParams,
    SexedKind,
    SexedParams,
    SexParams,
    UsernameParams,
    folded_names,
    pattern_cover,
    sexed_domain,
    sexed_lists,
)
from worker.engines.types.base import Block, generator, vocab_array
from worker.engines.types.chars import (
    Codes,
    Ints,
    decimal_codes,
    fixed_width_strings,
    list_generators,
    list_index,
    mixed_radix,
    random_digit_codes,
    scatter,
)

Bools = npt.NDArray[np.bool_]
_FEMALE = pa.array(["female", "f"], pa.string())
_MALE = pa.array(["male", "m"], pa.string())
_LIST_NAMES = {"first_name": ("first_name_female", "first_name_male"), "prefix": ("prefix_female", "prefix_male")}


def _string_array(values: tuple[str, ...]) -> pa.Array:
    return pa.array(values, pa.string())


# -- sex ----------------------------------------------------------------------------------

_SEX_STREAM = 100  # above the streams of the entries drawn for each sex


def row_sexes(params: SexedParams, block: Block) -> Bools:
    """True for the rows that get a female entry: by the sex field, else by `sex` (any: half and half)."""
    if params.sex == "any":
        fallback = block.rand.chance(0.5, _SEX_STREAM)
    else:
        fallback = np.full(block.size, params.sex == "female")
    if params.sex_field is None:
        return fallback
    text = pc.utf8_lower(pc.utf8_trim_whitespace(block.inputs[params.sex_field]))
    female = pc.fill_null(pc.is_in(text, value_set=_FEMALE), False).to_numpy(zero_copy_only=False)
    male = pc.fill_null(pc.is_in(text, value_set=_MALE), False).to_numpy(zero_copy_only=False)
    sexes: Bools = np.where(female, True, np.where(male, False, fallback))
    return sexes


@dataclass(frozen=True, slots=True)
class _SexedArrays:
    both: pa.Array  # the female list, then the male one (vocabulary order, for weighted draws)
    female_count: int
    union: pa.Array
    female: pa.Array
    male: pa.Array
    aligned: pa.Array  # aligned_female, then aligned_male
    aligned_count: int


@cache
def _sexed_arrays(locale: str, kind: SexedKind) -> _SexedArrays:
    lists = sexed_lists(locale, kind)
    return _SexedArrays(
        both=_string_array((*lists.female, *lists.male)),
        female_count=len(lists.female),
        union=_string_array(lists.union),
        female=_string_array(lists.female),
        male=_string_array(lists.male),
        aligned=_string_array((*lists.aligned_female, *lists.aligned_male)),
        aligned_count=len(lists.aligned_female),
    )


def sexed_index(block: Block, kind: Literal["first_name", "prefix"], female: Bools, stream: int) -> Ints:
    """Each row's index into `_SexedArrays.both`: an entry of its sex's list, by the list's weights.

    Streams `stream` (female) and `stream + 1` (male); a list no row needs is not drawn from,
    which changes no row.
    """
    female_list, male_list = _LIST_NAMES[kind]
    count = _sexed_arrays(block.locale, kind).female_count
    females = list_index(block.rand, block.locale, female_list, stream) if female.any() else 0
    males = list_index(block.rand, block.locale, male_list, stream + 1) if not female.all() else 0
    index: Ints = np.where(female, females, count + males)
    return index


def sexed_sample(block: Block, kind: Literal["first_name", "prefix"], female: Bools, stream: int) -> pa.Array:
    """Each row's entry of its sex's list, by the list's weights (streams `stream`, `stream + 1`)."""
    return _sexed_arrays(block.locale, kind).both.take(pa.array(sexed_index(block, kind, female, stream)))


def sexed_unique(params: SexedParams, block: Block, female: Bools, index: Ints) -> pa.Array:
    """The entries numbered `index` (distinct, below `sexed_domain`): the same index never makes the same entry.

    With a sex field, row k gets aligned_female[k] or aligned_male[k], which equal
    no other k's entries (see `SexedLists`).
    """
    arrays = _sexed_arrays(block.locale, params.kind)
    if params.sex_field is not None:
        return arrays.aligned.take(pa.array(np.where(female, index, arrays.aligned_count + index)))
    chosen = {"any": arrays.union, "female": arrays.female, "male": arrays.male}[params.sex]
    return chosen.take(pa.array(index))


def _sexed_entries(params: SexedParams, block: Block) -> pa.Array:
    female = row_sexes(params, block)
    if block.unique:
        size = sexed_domain(block.locale, params.kind, params.sex, params.sex_field)
        return sexed_unique(params, block, female, block.pick(size))
    return sexed_sample(block, "prefix" if params.kind == "prefix" else "first_name", female, stream=0)


@generator("sex", SexParams)
def _sex(params: SexParams, block: Block) -> pa.Array:
    female = pa.array(block.rand.chance(params.female_rate))
    if params.format == "letter":
        return pc.if_else(female, "F", "M")
    return pc.if_else(female, "female", "male")


# -- names ------------------------------------------------------------------------------


@generator("first_name", FirstNameParams)
def _first_name(params: FirstNameParams, block: Block) -> pa.Array:
    return _sexed_entries(params, block)


@generator("name_prefix", NamePrefixParams)
def _name_prefix(params: NamePrefixParams, block: Block) -> pa.Array:
    return _sexed_entries(params, block)


_FULL_FIRST, _FULL_LAST, _FULL_PREFIX, _FULL_HAS_PREFIX = 0, 2, 3, 5


@generator("full_name", FullNameParams)
def _full_name(params: FullNameParams, block: Block) -> pa.Array:
    female = row_sexes(params, block)
    lasts = vocab_array(block.locale, "last_name")
    if block.unique:
        # Distinct (first, last) pairs, of first names that keep the text injective (see FullNameParams).
        firsts = sexed_domain(block.locale, params.kind, params.sex, params.sex_field)
        first_index, last_index = mixed_radix(block.pick(firsts * len(lasts), _FULL_FIRST), (firsts, len(lasts)))
        first = sexed_unique(params, block, female, first_index)
        last = lasts.take(pa.array(last_index))
    else:
        first = sexed_sample(block, "first_name", female, _FULL_FIRST)
        last = lasts.take(pa.array(list_index(block.rand, block.locale, "last_name", _FULL_LAST)))
    if params.prefix_rate > 0:
        titles = sexed_index(block, "prefix", female, _FULL_PREFIX)
        titled = np.where(block.rand.chance(params.prefix_rate, _FULL_HAS_PREFIX), titles + 1, 0)
        first = pc.binary_join_element_wise(_title_prefixes(block.locale).take(pa.array(titled)), first, "")
    return pc.binary_join_element_wise(first, last, " ")


@cache
def _title_prefixes(locale: str) -> pa.Array:
    """No title (""), then the titles of `_SexedArrays.both`, each with a space after it."""
    titles = _sexed_arrays(locale, "prefix").both.to_pylist()
    return _string_array(("", *(f"{title} " for title in titles)))


# -- emails and usernames ---------------------------------------------------------------------


@cache
def _folded_arrays(locale: str) -> tuple[pa.Array, pa.Array]:
    return _string_array(folded_names(locale, "first")[0]), _string_array(folded_names(locale, "last")[0])


@cache
def _dotted_firsts(locale: str) -> pa.Array:
    return _string_array(tuple(name + "." for name in folded_names(locale, "first")[0]))


@cache
def _at_domains(names: tuple[str, ...]) -> pa.Array:
    return _string_array(tuple("@" + name for name in names))


@cache
def _number_suffixes() -> pa.Array:
    return _string_array(("", *(str(n) for n in range(1, NUMBER_SLOTS))))


def _sampled_names(block: Block, stream: int) -> tuple[Ints, Ints, Ints]:
    """Folded first and last names by their shares, and a number slot: none for half the rows (3 streams)."""
    first = block.rand.weighted(folded_names(block.locale, "first")[1], stream)
    last = block.rand.weighted(folded_names(block.locale, "last")[1], stream + 1)
    numbered = block.rand.chance(0.5, stream + 2)
    slot = np.where(numbered, block.rand.integers(1, NUMBER_SLOTS - 1, stream + 3), 0)
    return first, last, slot


# Injectivity of unique emails and usernames. A unique field's index is a permutation of
# the row, and each index's mixed-radix digits (first, last, slot, domain or separator) are
# distinct tuples. Distinct tuples make distinct text: the first name is [a-z]+ and ends at
# the first '.' or '_' (which is the separator), the last name is the [a-z]+ after it and
# the number the digits after that ("" for slot 0; no leading zero otherwise, so one slot
# has one spelling); the domain follows the only '@'. The lists are distinct (folded_names
# merges names that fold alike, the domains are checked distinct), so the text gives back
# the tuple.


@generator("email", EmailParams)
def _email(params: EmailParams, block: Block) -> pa.Array:
    firsts, lasts = _folded_arrays(block.locale)
    names = params.domain_names(block.locale)
    if block.unique:
        radices = (len(firsts), len(lasts), NUMBER_SLOTS, len(names))
        first, last, slot, domain = mixed_radix(block.pick(math.prod(radices)), radices)
    else:
        first, last, slot = _sampled_names(block, stream=1)
        if params.domains is None:
            domain = list_index(block.rand, block.locale, "free_email_domain", 5)
        else:
            domain = block.rand.below(len(names), 5)
    # The literals sit in cached copies of the lists ("anna.", "@example.com"): fewer pieces, a faster join.
    return pc.binary_join_element_wise(
        _dotted_firsts(block.locale).take(pa.array(first)),
        lasts.take(pa.array(last)),
        _number_suffixes().take(pa.array(slot)),
        _at_domains(names).take(pa.array(domain)),
        "",
    )


_SEPARATORS = _string_array(USERNAME_SEPARATORS)


@generator("username", UsernameParams)
def _username(params: UsernameParams, block: Block) -> pa.Array:
    firsts, lasts = _folded_arrays(block.locale)
    if block.unique:
        radices = (len(firsts), len(USERNAME_SEPARATORS), len(lasts), NUMBER_SLOTS)
        first, separator, last, slot = mixed_radix(block.pick(math.prod(radices)), radices)
    else:
        first, last, slot = _sampled_names(block, stream=1)
        separator = block.rand.below(len(USERNAME_SEPARATORS), 5)
    return pc.binary_join_element_wise(
        firsts.take(pa.array(first)),
        _SEPARATORS.take(pa.array(separator)),
        lasts.take(pa.array(last)),
        _number_suffixes().take(pa.array(slot)),
        "",
    )


# -- digit patterns -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _MaskGroup:
    """Patterns of one length with their '#'s in the same places: only their literal bytes differ."""

    literals: Codes  # (patterns, width): the UTF-8 bytes of each
    hashes: Ints  # the byte positions of the '#'s


@dataclass(frozen=True, slots=True)
class _PatternTable:
    groups: tuple[_MaskGroup, ...]
    group_of: Ints  # each pattern's group
    row_of: Ints  # each pattern's row in its group's literals
    digits: int  # the most '#'s of a pattern


@cache
def _pattern_table(patterns: tuple[str, ...]) -> _PatternTable:
    by_mask: dict[bytes, list[bytes]] = {}
    places: list[tuple[int, int]] = []
    for raw in (pattern.encode() for pattern in patterns):
        mask = bytes(byte == ord("#") for byte in raw)
        members = by_mask.setdefault(mask, [])
        places.append((list(by_mask).index(mask), len(members)))
        members.append(raw)
    groups = tuple(
        _MaskGroup(np.frombuffer(b"".join(members), dtype=np.uint8).reshape(len(members), len(mask)),
                   np.flatnonzero(np.frombuffer(mask, dtype=np.uint8)))
        for mask, members in by_mask.items()
    )  # fmt: skip
    group_of, row_of = (np.array(column, dtype=np.int64) for column in zip(*places, strict=True))
    return _PatternTable(groups, group_of, row_of, max(len(group.hashes) for group in groups))


def digit_strings(block: Block, patterns: tuple[str, ...], stream: int) -> pa.Array:
    """Text of the patterns with each '#' a digit; distinct across the dataset when the field is unique.

    Several patterns: uniform over the patterns, or (unique) one index over the strings of
    `pattern_cover`, whose patterns share none. Uses the streams from `stream` on.
    """
    if len(patterns) == 1:
        table = _pattern_table(patterns)
        choice = np.zeros(block.size, dtype=np.int64)
        digits = random_digit_codes(block, table.digits, stream)
    elif block.unique:
        cover = pattern_cover(patterns)
        table = _pattern_table(cover)
        sizes = np.array([10 ** p.count("#") for p in cover], dtype=np.int64)
        ends = np.cumsum(sizes)
        index = block.pick(int(ends[-1]), stream)
        choice = np.searchsorted(ends, index, side="right")
        digits = decimal_codes(index - (ends - sizes)[choice], table.digits)  # a pattern of c '#'s: the last c
    else:
        table = _pattern_table(patterns)
        choice = block.rand.below(len(patterns), stream)
        digits = random_digit_codes(block, table.digits, stream + 1)
    return _fill(table, choice, digits)


def _fill(table: _PatternTable, choice: Ints, digits: Codes) -> pa.Array:
    """Each row's pattern with its '#'s replaced by the last digits of its row of `digits`."""
    if len(table.groups) == 1:
        return _fill_group(
            table.groups[0], table.row_of[choice], digits[:, table.digits - len(table.groups[0].hashes) :]
        )
    group_of = table.group_of[choice]
    parts = []
    for number, group in enumerate(table.groups):
        rows = np.flatnonzero(group_of == number)
        own_digits = digits[rows, table.digits - len(group.hashes) :]
        parts.append((rows, _fill_group(group, table.row_of[choice[rows]], own_digits)))
    return scatter(parts, len(choice), pa.string())


def _fill_group(group: _MaskGroup, which: Ints, digits: Codes) -> pa.Array:
    single = len(group.literals) == 1  # repeating one row is cheaper than gathering rows
    codes = np.repeat(group.literals, len(which), axis=0) if single else group.literals[which]
    codes[:, group.hashes] = digits
    return fixed_width_strings(codes)


@generator("phone", PhoneParams)
def _phone(params: PhoneParams, block: Block) -> pa.Array:
    return digit_strings(block, params.patterns(block.locale), stream=0)


list_generators("last_name", "job_title")
