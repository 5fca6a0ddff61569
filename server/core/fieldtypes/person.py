"""Person data: names, sex, email addresses, usernames, phone numbers, job titles."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from itertools import combinations
from typing import Annotated, ClassVar, Literal, NamedTuple

from pydantic import AfterValidator, Field, field_validator

from server.core import vocab
from server.core.fieldtypes.base import FieldParams, FieldType, LocaleListParams, NoParams, declare
from server.core.fieldtypes.identifiers import strings_domain

CATEGORY = "person"
Sex = Literal["any", "female", "male"]
SexedKind = Literal["first_name", "prefix", "full_name_first"]
# Number suffixes of emails and usernames: slot 0 is no number, slot s > 0 the number s.
NUMBER_SLOTS = 1000
USERNAME_SEPARATORS = (".", "_")
MAX_PATTERN_LENGTH = 100
_DOMAIN_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_NAME = re.compile(rf"({_DOMAIN_LABEL}\.)+[a-z]([a-z0-9-]{{0,61}}[a-z0-9])?")
_DECIMAL = frozenset("0123456789")
# Letters that NFKD leaves whole, spelled in a-z as email addresses usually spell them.
_SPELLED = str.maketrans({"ß": "ss", "æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ı": "i"})


# -- lists by sex -----------------------------------------------------------------------


class SexedLists(NamedTuple):
    """A locale's female and male entries of one kind, and the orders a unique field draws them in.

    `aligned_female[k]` and `aligned_male[k]` serve a unique field whose rows have a sex each:
    row k gets one of the two. The names on both lists come first, at the same k in both,
    so the two entries of one k may be equal but those of different ks never are. They are
    min(len(female), len(male)) long, the most rows that get distinct entries whatever their
    sexes (all could have the shorter list's).
    """

    female: tuple[str, ...]
    male: tuple[str, ...]
    union: tuple[str, ...]  # each distinct entry once, female first
    aligned_female: tuple[str, ...]
    aligned_male: tuple[str, ...]


@cache
def sexed_lists(locale: str, kind: SexedKind) -> SexedLists:
    if kind == "prefix":
        female, male = vocab.load(locale, "prefix_female").values, vocab.load(locale, "prefix_male").values
    else:
        female, male = vocab.load(locale, "first_name_female").values, vocab.load(locale, "first_name_male").values
    if kind == "full_name_first":
        female, male = _unambiguous_first_names(locale, female), _unambiguous_first_names(locale, male)
    union = tuple(dict.fromkeys((*female, *male)))
    males = set(male)
    both = [name for name in female if name in males]
    size = min(len(female), len(male))
    return SexedLists(female, male, union, _aligned(both, female, size), _aligned(both, male, size))


def _aligned(both: list[str], names: tuple[str, ...], size: int) -> tuple[str, ...]:
    """The shared names, then `size - len(both)` of the others, spread evenly over the list's order."""
    shared = set(both)
    others = [name for name in names if name not in shared]
    wanted = size - len(both)
    return (*both, *(others[j * len(others) // wanted] for j in range(wanted)))


def _unambiguous_first_names(locale: str, names: tuple[str, ...]) -> tuple[str, ...]:
    """First names that make "[prefix ]first last" injective, for a unique full_name.

    Last names may hold spaces ("Da Silva"), so a first name must not ("Ana Belén"), and
    must not be a title: then the first word is the title or the first name, the next the
    first name if the first was a title, and the rest the last name.
    """
    prefixes = set(vocab.load(locale, "prefix_female").values) | set(vocab.load(locale, "prefix_male").values)
    spaced = sorted(prefix for prefix in prefixes if " " in prefix)
    if spaced:
        raise ValueError(f"{locale} titles must be single words, or full names could repeat: {spaced}")
    return tuple(name for name in names if " " not in name and name not in prefixes)


def sexed_domain(locale: str, kind: SexedKind, sex: Sex, sex_field: str | None) -> int:
    lists = sexed_lists(locale, kind)
    if sex_field is not None:
        return len(lists.aligned_female)
    return len(lists.union if sex == "any" else lists.female if sex == "female" else lists.male)


# -- names for emails and usernames --------------------------------------------------------


def ascii_letters(name: str) -> str:
    """`name` in a-z only: accents stripped (NFKD), ß and the like spelled out, everything else dropped.

    html.unescape because a few source entries carry an HTML entity ("Aires&nbsp;").
    """
    decomposed = unicodedata.normalize("NFKD", html.unescape(name).lower().translate(_SPELLED))
    return re.sub("[^a-z]", "", decomposed)


@cache
def folded_names(locale: str, part: Literal["first", "last"]) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """Distinct `ascii_letters` forms of the locale's first or last names, with their shares.

    An entry's share is its list's weight (or 1) over the list's total; names that fold to
    the same form add up; female and male first names make half each.
    """
    lists = ("first_name_female", "first_name_male") if part == "first" else ("last_name",)
    shares: dict[str, float] = {}
    for name in lists:
        entries = vocab.load(locale, name)
        weights = entries.weights or (1,) * len(entries.values)
        total = sum(weights) * len(lists)
        for value, weight in zip(entries.values, weights, strict=True):
            if folded := ascii_letters(value):
                shares[folded] = shares.get(folded, 0.0) + weight / total
    return tuple(shares), tuple(shares.values())


def _folded_count(locale: str, part: Literal["first", "last"]) -> int:
    return len(folded_names(locale, part)[0])


# -- digit patterns ---------------------------------------------------------------------


def _check_pattern(value: str) -> str:
    if "#" not in value:
        raise ValueError("must contain at least one '#' (a random digit)")
    return value


Pattern = Annotated[
    str, Field(min_length=1, max_length=MAX_PATTERN_LENGTH), AfterValidator(_check_pattern)
]  # fmt: skip


@cache
def pattern_cover(patterns: tuple[str, ...]) -> tuple[str, ...]:
    """The patterns whose strings no other pattern makes too; together they make every string once.

    ('#' is any digit.) A unique field draws from these: the others only repeat their strings
    ("0130######" is part of "01########"). ValueError when two of them still share strings.
    """
    groups: dict[int, dict[tuple[bool, ...], list[str]]] = {}
    for pattern in patterns:
        groups.setdefault(len(pattern), {}).setdefault(tuple(c == "#" for c in pattern), []).append(pattern)
    covered: set[str] = set()
    for masks in groups.values():
        # Only patterns with '#'s in different places can meet: two with the same differ in a literal.
        for (mask_a, group_a), (mask_b, group_b) in combinations(masks.items(), 2):
            common = _shared_strings(mask_a, group_a, mask_b, group_b)
            if not common:
                continue
            if all(b or not a for a, b in zip(mask_a, mask_b, strict=True)):  # a's digits are digits of b
                covered.update(a for a, _ in common)
            elif all(a or not b for a, b in zip(mask_a, mask_b, strict=True)):
                covered.update(b for _, b in common)
            else:
                raise ValueError(f"digit patterns {common[0][0]!r} and {common[0][1]!r} overlap partly")
    return tuple(pattern for pattern in patterns if pattern not in covered)


def _shared_strings(
    mask_a: Sequence[bool], group_a: list[str], mask_b: Sequence[bool], group_b: list[str]
) -> list[tuple[str, str]]:
    """Pairs of patterns (a, b) that can make the same string: literals agree, a digit meets a '#'."""
    fixed = [i for i, (a, b) in enumerate(zip(mask_a, mask_b, strict=True)) if not (a or b)]

    def keys(group: list[str], other_mask: Sequence[bool]) -> dict[tuple[str, ...], list[str]]:
        found: dict[tuple[str, ...], list[str]] = {}
        for pattern in group:
            if all(c in _DECIMAL for c, wild in zip(pattern, other_mask, strict=True) if wild and c != "#"):
                found.setdefault(tuple(pattern[i] for i in fixed), []).append(pattern)
        return found

    keys_a, keys_b = keys(group_a, mask_b), keys(group_b, mask_a)
    return [(a, b) for key in keys_a.keys() & keys_b.keys() for a in keys_a[key] for b in keys_b[key]]


def pattern_domain(patterns: tuple[str, ...]) -> int:
    """The number of distinct strings the patterns make (one pattern: as many as a unique field promises)."""
    if len(patterns) == 1:
        return strings_domain(10, patterns[0].count("#"))
    return sum(10 ** p.count("#") for p in pattern_cover(patterns))


# -- params -----------------------------------------------------------------------------

FieldName = Annotated[str, Field(pattern=r"^[a-z_][a-z0-9_]*$", max_length=63)]


class SexedParams(FieldParams):
    """Entries of a female and a male list: by `sex`, or by each row's value of another field."""

    kind: ClassVar[SexedKind] = "first_name"
    sex: Sex = Field(
        "any", description="female, male or any (half each); with sex_field, for the rows whose sex is neither"
    )
    sex_field: FieldName | None = Field(
        None,
        description="a text field whose value (female/male or F/M, any case) sets each row's sex,"
        " e.g. a field of type sex",
    )

    def inputs(self) -> tuple[str, ...]:
        return () if self.sex_field is None else (self.sex_field,)

    def input_problems(self, input_types: Mapping[str, str]) -> Iterator[tuple[str, str]]:
        for name, logical in input_types.items():
            if logical != "text":
                yield "sex_field", f"field {name!r} is {logical}, not text"

    def domain(self, locale: str) -> int | None:
        return sexed_domain(locale, self.kind, self.sex, self.sex_field)


class FirstNameParams(SexedParams):
    kind: ClassVar[SexedKind] = "first_name"


class NamePrefixParams(SexedParams):
    kind: ClassVar[SexedKind] = "prefix"


class FullNameParams(SexedParams):
    kind: ClassVar[SexedKind] = "full_name_first"
    prefix_rate: Annotated[float, Field(ge=0.0, le=1.0)] = Field(
        0.0, description="share of names that start with a title of their sex (Mr., Frau, Dott., ...)"
    )

    def domain(self, locale: str) -> int | None:
        # Unique draws first names that keep "[title ]first last" injective (see _unambiguous_first_names).
        first_names = sexed_domain(locale, self.kind, self.sex, self.sex_field)
        return first_names * len(vocab.load(locale, "last_name").values)


class LastNameParams(LocaleListParams):
    list_name: ClassVar[str] = "last_name"


class JobTitleParams(LocaleListParams):
    list_name: ClassVar[str] = "job_title"


class SexParams(FieldParams):
    format: Literal["word", "letter"] = Field("word", description="'female'/'male', or 'F'/'M'")
    female_rate: Annotated[float, Field(ge=0.0, le=1.0)] = Field(0.5, description="share of female rows")


def _check_domain_name(value: str) -> str:
    if len(value) > 253 or not _DOMAIN_NAME.fullmatch(value):
        raise ValueError("must be a lower-case domain name such as example.com")
    return value


DomainName = Annotated[str, AfterValidator(_check_domain_name)]


class EmailParams(FieldParams):
    domains: Annotated[list[DomainName], Field(min_length=1, max_length=1000)] | None = Field(
        None, description="domains to pick from, e.g. ['example.com']; the locale's free email providers when absent"
    )

    @field_validator("domains")
    @classmethod
    def _distinct(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and len(set(value)) != len(value):
            raise ValueError("must not repeat a domain")
        return value

    def domain_names(self, locale: str) -> tuple[str, ...]:
        return vocab.load(locale, "free_email_domain").values if self.domains is None else tuple(self.domains)

    def domain(self, locale: str) -> int | None:
        names = _folded_count(locale, "first") * _folded_count(locale, "last")
        return names * NUMBER_SLOTS * len(self.domain_names(locale))


class UsernameParams(NoParams):
    def domain(self, locale: str) -> int | None:
        names = _folded_count(locale, "first") * _folded_count(locale, "last")
        return names * len(USERNAME_SEPARATORS) * NUMBER_SLOTS


class PhoneParams(FieldParams):
    format: Pattern | None = Field(
        None,
        description="a pattern where each '#' is a random digit, e.g. '(###) ###-####';"
        " the locale's formats when absent",
    )

    def patterns(self, locale: str) -> tuple[str, ...]:
        return vocab.load(locale, "phone_format").values if self.format is None else (self.format,)

    def domain(self, locale: str) -> int | None:
        return pattern_domain(self.patterns(locale))


declare(
    FieldType("first_name", CATEGORY, "first name", FirstNameParams, "text", "text", True),
    FieldType("last_name", CATEGORY, "last name", LastNameParams, "text", "text", True),
    FieldType("full_name", CATEGORY, "first and last name, optionally after a title", FullNameParams, "text", "text",
              True),
    FieldType("sex", CATEGORY, "female or male", SexParams, "text", "text"),
    FieldType("name_prefix", CATEGORY, "title such as Mr., Mrs., Dr., Herr, Frau", NamePrefixParams, "text", "text",
              True),
    FieldType("email", CATEGORY, "first.last, maybe a number, @ a domain", EmailParams, "text", "text", True),
    FieldType("username", CATEGORY, "first and last name joined by . or _, maybe a number", UsernameParams, "text",
              "text", True),
    FieldType("phone", CATEGORY, "phone number in a locale or custom format", PhoneParams, "text", "text", True),
    FieldType("job_title", CATEGORY, "job title", JobTitleParams, "text", "text", True),
)  # fmt: skip
