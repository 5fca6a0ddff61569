from __future__ import annotations

import re
from collections import Counter
from functools import cache
from typing import Any

import pyarrow as pa
import pytest

from server.core import vocab
from server.core.errors import InvalidArgument
from server.core.fieldtypes.person import NUMBER_SLOTS, ascii_letters, pattern_cover, sexed_lists
from tests.unit.types.helpers import (
    check_arrow_type,
    check_chunking,
    check_unique,
    make_spec,
    values,
    violations,
)
from worker.engines.generate import generate_chunk

CASES: list[tuple[str, dict[str, Any]]] = [
    ("first_name", {}),
    ("first_name", {"sex": "female"}),
    ("last_name", {}),
    ("full_name", {}),
    ("full_name", {"sex": "male", "prefix_rate": 0.5}),
    ("sex", {}),
    ("sex", {"format": "letter", "female_rate": 0.2}),
    ("name_prefix", {}),
    ("email", {}),
    ("email", {"domains": ["example.com", "mail.example.org"]}),
    ("username", {}),
    ("phone", {}),
    ("phone", {"format": "(###) ###-####"}),
    ("phone", {"format": "+ " + "#" * 30}),
    ("job_title", {}),
]
LOCALES = vocab.LOCALES
SEX = {"name": "s", "type": "sex", "params": {"format": "letter"}}


def sexed_field(type_name: str, params: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": "c", "type": type_name, "params": {"sex_field": "s", **(params or {})}, **extra}


def rows_of(*fields: dict[str, Any], rows: int = 2_000, locale: str = "", start: int = 0) -> dict[str, list[Any]]:
    made: dict[str, list[Any]] = generate_chunk(make_spec(*fields, rows=rows, locale=locale), start, rows).to_pydict()
    return made


@cache
def names_of(locale: str, kind: str) -> dict[str, frozenset[str]]:
    """The female and male entries of first names or titles."""
    return {sex: frozenset(vocab.load(locale, f"{kind}_{sex}").values) for sex in ("female", "male")}


def follows_a_pattern(text: str, patterns: tuple[str, ...]) -> bool:
    """Whether text is one of the patterns with a digit at each '#'."""
    for positions in _digit_positions(patterns).get(len(text), ()):
        if all(text[i].isdecimal() for i in positions):
            masked = list(text)
            for i in positions:
                masked[i] = "#"
            if "".join(masked) in frozenset(patterns):
                return True
    return False


@cache
def _digit_positions(patterns: tuple[str, ...]) -> dict[int, set[tuple[int, ...]]]:
    """The distinct places of the '#'s of the patterns, by length."""
    found: dict[int, set[tuple[int, ...]]] = {}
    for pattern in patterns:
        found.setdefault(len(pattern), set()).add(tuple(i for i, c in enumerate(pattern) if c == "#"))
    return found


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_makes_its_declared_arrow_type(type_name: str, params: dict[str, Any]) -> None:
    check_arrow_type(type_name, params)


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_rows_do_not_depend_on_the_chunking(type_name: str, params: dict[str, Any]) -> None:
    check_chunking(type_name, params)


@pytest.mark.parametrize(
    ("type_name", "params", "rows"),
    [
        ("last_name", {}, 1_000),
        ("full_name", {"prefix_rate": 0.3}, 100_000),
        ("email", {}, 1_000_000),
        ("username", {}, 1_000_000),
        ("phone", {}, 1_000_000),
        ("phone", {"format": "###-####"}, 1_000_000),
        ("phone", {"format": "#" * 25}, 1_000_000),
    ],
)
def test_unique_rows_do_not_depend_on_the_chunking(type_name: str, params: dict[str, Any], rows: int) -> None:
    check_chunking(type_name, params, rows=rows, unique=True)


@pytest.mark.parametrize("unique", [False, True])
def test_rows_with_a_sex_field_do_not_depend_on_the_chunking(unique: bool) -> None:
    spec = make_spec(SEX, sexed_field("full_name", {"prefix_rate": 0.5}, unique=unique), rows=20_000)
    whole = generate_chunk(spec, 5_000, 1_000).column(1)
    parts = [generate_chunk(spec, 5_000, 300).column(1), generate_chunk(spec, 5_300, 700).column(1)]
    assert pa.concat_arrays(parts).equals(whole)


@pytest.mark.parametrize(
    ("type_name", "params", "path", "message"),
    [
        ("first_name", {"sex": "other"}, "sex", "'any', 'female' or 'male'"),
        ("first_name", {"sex_field": "Sex"}, "sex_field", "should match pattern"),
        ("name_prefix", {"sex_field": 3}, "sex_field", "valid string"),
        ("full_name", {"prefix_rate": 1.5}, "prefix_rate", "less than or equal to 1"),
        ("full_name", {"prefix_rate": -0.1}, "prefix_rate", "greater than or equal to 0"),
        ("last_name", {"sex": "female"}, "sex", "unknown parameter"),
        ("sex", {"format": "char"}, "format", "'word' or 'letter'"),
        ("sex", {"female_rate": 2}, "female_rate", "less than or equal to 1"),
        ("email", {"domains": []}, "domains", "at least 1 item"),
        ("email", {"domains": ["Example.com"]}, "domains[0]", "lower-case domain name such as example.com"),
        ("email", {"domains": ["localhost"]}, "domains[0]", "lower-case domain name"),
        ("email", {"domains": ["-a.com"]}, "domains[0]", "lower-case domain name"),
        ("email", {"domains": ["a.com", "a.com"]}, "domains", "must not repeat a domain"),
        ("username", {"separator": "-"}, "separator", "unknown parameter"),
        ("phone", {"format": "555-1234"}, "format", "must contain at least one '#'"),
        ("phone", {"format": ""}, "format", "at least 1 character"),
        ("phone", {"format": "#" * 101}, "format", "at most 100 characters"),
        ("job_title", {"locale": "de_DE"}, "locale", "unknown parameter"),
    ],
)
def test_bad_params_are_rejected_on_the_param(type_name: str, params: dict[str, Any], path: str, message: str) -> None:
    found = violations(type_name, params)
    assert list(found) == [path]
    assert message in found[path]


def test_sex_rejects_unique() -> None:
    assert violations("sex", {}, unique=True) == {"unique": "type sex cannot promise distinct values"}


def test_the_sex_field_must_exist_and_be_text() -> None:
    number = {"name": "n", "type": "integer"}
    with pytest.raises(InvalidArgument) as info:
        make_spec(number, {"name": "a", "type": "first_name", "params": {"sex_field": "n"}},
                  {"name": "b", "type": "name_prefix", "params": {"sex_field": "nope"}})  # fmt: skip
    found = {v.field: v.description for v in info.value.violations}
    assert found == {
        "schema.fields[1].params.sex_field": "field 'n' is integer, not text",
        "schema.fields[2].params": "refers to unknown field 'nope'; known: a, b, n",
    }


# -- unique -----------------------------------------------------------------------------


def union(*lists: tuple[str, ...]) -> set[str]:
    return set().union(*lists)


FEMALE = vocab.load("en_US", "first_name_female").values
MALE = vocab.load("en_US", "first_name_male").values
LAST = vocab.load("en_US", "last_name").values
FOLDED_FIRST = {ascii_letters(name) for name in FEMALE + MALE}
FOLDED_LAST = {ascii_letters(name) for name in LAST}


@pytest.mark.parametrize(
    ("type_name", "params", "domain"),
    [
        ("first_name", {}, len(union(FEMALE, MALE))),
        ("first_name", {"sex": "female"}, len(FEMALE)),
        ("first_name", {"sex": "male"}, len(MALE)),
        ("last_name", {}, len(LAST)),
        ("full_name", {}, len(union(FEMALE, MALE)) * len(LAST)),  # en_US first names are single words
        ("full_name", {"sex": "female", "prefix_rate": 0.5}, len(FEMALE) * len(LAST)),
        ("name_prefix", {}, len(union(vocab.load("en_US", "prefix_female").values,
                                      vocab.load("en_US", "prefix_male").values))),
        ("name_prefix", {"sex": "male"}, len(vocab.load("en_US", "prefix_male").values)),
        ("email", {}, len(FOLDED_FIRST) * len(FOLDED_LAST) * NUMBER_SLOTS * 3),
        ("email", {"domains": ["example.com"]}, len(FOLDED_FIRST) * len(FOLDED_LAST) * NUMBER_SLOTS),
        ("username", {}, len(FOLDED_FIRST) * 2 * len(FOLDED_LAST) * NUMBER_SLOTS),
        ("phone", {"format": "##"}, 100),
        ("phone", {"format": "(###) ##-##"}, 10**7),
        ("phone", {"format": "#" * 40}, 10**18),  # the first 18 digits are distinct
        ("phone", {}, sum(10 ** p.count("#") for p in vocab.load("en_US", "phone_format").values)),
        ("job_title", {}, len(vocab.load("en_US", "job_title").values)),
    ],
)  # fmt: skip
def test_unique_values_are_distinct(type_name: str, params: dict[str, Any], domain: int) -> None:
    check_unique(type_name, params, domain)


@pytest.mark.parametrize("locale", LOCALES)
def test_unique_first_names_are_every_name_once(locale: str) -> None:
    names = names_of(locale, "first_name")
    everyone = names["female"] | names["male"]
    made = values("first_name", {}, len(everyone), unique=True, rows=len(everyone), locale=locale)
    assert sorted(made) == sorted(everyone)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("type_name", ["first_name", "name_prefix", "full_name"])
def test_unique_names_with_a_sex_field_match_each_rows_sex(locale: str, type_name: str) -> None:
    """As many rows as the shorter list: enough for a dataset whose rows all have the same sex."""
    kind = "prefix" if type_name == "name_prefix" else "first_name"
    lists = sexed_lists(locale, "full_name_first" if type_name == "full_name" else kind)
    rows = min(len(lists.female), len(lists.male))
    if type_name == "full_name":
        rows = min(rows * len(vocab.load(locale, "last_name").values), 20_000)
    made = rows_of(SEX, sexed_field(type_name, unique=True), rows=rows, locale=locale)
    assert len(set(made["c"])) == rows
    names = names_of(locale, kind)
    for sex, name in zip(made["s"], made["c"], strict=True):
        first = name if type_name != "full_name" else name.split(" ")[0]
        assert first in names["female" if sex == "F" else "male"], (sex, name)
    if type_name != "full_name":
        found = violations_of(SEX, sexed_field(type_name, unique=True), rows=rows + 1, locale=locale)
        assert list(found) == ["schema.fields[1].unique"]
        assert f"only {rows:,} distinct values" in found["schema.fields[1].unique"]


def violations_of(*fields: dict[str, Any], rows: int, locale: str) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as info:
        make_spec(*fields, rows=rows, locale=locale)
    return {v.field: v.description for v in info.value.violations}


@pytest.mark.parametrize("locale", LOCALES)
def test_unique_full_names_are_distinct_where_names_have_spaces(locale: str) -> None:
    made = values("full_name", {"prefix_rate": 0.5}, 20_000, unique=True, rows=20_000, locale=locale)
    assert len(set(made)) == len(made)
    # The first names of unique full names are single words, so the last name is the rest.
    assert all(" " not in split_name(name, locale)[1] for name in made[:3_000])


# -- values ------------------------------------------------------------------------------


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("type_name", ["first_name", "name_prefix"])
def test_names_follow_the_sex_field(locale: str, type_name: str) -> None:
    """female/male in any case and F/M pick the list; other values and NULL fall back to `sex`."""
    sexes = {"name": "s", "type": "choice", "null_rate": 0.2,
             "params": {"values": ["female", "MALE", "f", "m", " Female ", "x"]}}  # fmt: skip
    kind = "prefix" if type_name == "name_prefix" else "first_name"
    names = names_of(locale, kind)
    made = rows_of(sexes, sexed_field(type_name, {"sex": "male"}), rows=3_000, locale=locale)
    for sex, name in zip(made["s"], made["c"], strict=True):
        female = sex is not None and sex.strip().lower() in ("female", "f")
        assert name in names["female" if female else "male"], (sex, name)


@pytest.mark.parametrize("locale", LOCALES)
def test_sex_any_draws_both_lists(locale: str) -> None:
    names = names_of(locale, "first_name")
    made = values("first_name", {}, 4_000, locale=locale)
    female = sum(name in names["female"] for name in made)
    male = sum(name in names["male"] for name in made)
    assert female + male >= len(made)
    assert female == pytest.approx(2_000, rel=0.15)
    assert male == pytest.approx(2_000, rel=0.15)


@pytest.mark.parametrize("female_rate", [0.0, 0.3, 1.0])
def test_sex_honours_the_female_rate(female_rate: float) -> None:
    words = values("sex", {"female_rate": female_rate}, 10_000)
    assert set(words) <= {"female", "male"}
    assert words.count("female") == pytest.approx(10_000 * female_rate, abs=300)
    letters = values("sex", {"female_rate": female_rate, "format": "letter"}, 10_000)
    assert letters == ["F" if word == "female" else "M" for word in words]  # the same draws


def split_name(name: str, locale: str) -> tuple[str | None, str, str]:
    """(title or None, first, last) of a full name; AssertionError when no split fits the locale's lists."""
    titles = names_of(locale, "prefix")
    firsts = names_of(locale, "first_name")
    lasts = frozenset(vocab.load(locale, "last_name").values)
    words = name.split(" ")
    title = words[0] if words[0] in titles["female"] | titles["male"] else None
    words = words[1:] if title else words
    for end in range(1, len(words)):
        first, last = " ".join(words[:end]), " ".join(words[end:])
        if first in firsts["female"] | firsts["male"] and last in lasts:
            return title, first, last
    raise AssertionError(f"{name!r} is not [title ]first last")


@pytest.mark.parametrize("locale", LOCALES)
def test_full_names_have_the_prefix_rate_and_matching_titles(locale: str) -> None:
    made = rows_of(SEX, sexed_field("full_name", {"prefix_rate": 0.25}), rows=8_000, locale=locale)
    titles = names_of(locale, "prefix")
    firsts = names_of(locale, "first_name")
    titled = 0
    for sex, name in zip(made["s"], made["c"], strict=True):
        own = "female" if sex == "F" else "male"
        title, first, _ = split_name(name, locale)
        assert first in firsts[own], (sex, name)
        assert title is None or title in titles[own], (sex, name)
        titled += title is not None
    assert titled == pytest.approx(2_000, rel=0.12)


def test_names_follow_the_weights() -> None:
    last = Counter(values("last_name", {}, 20_000))
    assert last.most_common(1)[0][0] == "Smith"
    weights = vocab.load("en_US", "last_name").weights
    assert weights is not None
    assert last["Smith"] == pytest.approx(20_000 * weights[LAST.index("Smith")] / sum(weights), rel=0.15)
    female = vocab.load("en_US", "first_name_female")
    assert female.weights is not None
    heaviest = female.values[female.weights.index(max(female.weights))]
    firsts = Counter(values("first_name", {"sex": "female"}, 20_000))
    assert firsts.most_common(1)[0][0] == heaviest
    prefixes = Counter(values("name_prefix", {"sex": "male"}, 10_000))
    assert prefixes["Mr."] == pytest.approx(7_000, rel=0.05)  # Mr. 7, Dr. 3


def test_unique_last_names_are_the_whole_list() -> None:
    made = values("last_name", {}, 1_000, unique=True, rows=1_000)
    assert sorted(made) == sorted(LAST)


# -- emails, usernames, phones ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "folded"),
    [("Müller", "muller"), ("Strauß", "strauss"), ("D’Angelo", "dangelo"), ("Ana Belén", "anabelen"),
     ("Aires&nbsp;", "aires"), ("Bjørn", "bjorn"), ("L'Oréal", "loreal"), ("Hans-J.", "hansj"), ("Ægir", "aegir")],
)  # fmt: skip
def test_names_fold_to_lower_case_ascii_letters(name: str, folded: str) -> None:
    assert ascii_letters(name) == folded


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("unique", [False, True])
def test_emails_are_first_dot_last_number_at_a_domain(locale: str, unique: bool) -> None:
    made = values("email", {}, 3_000, locale=locale, unique=unique, rows=3_000)
    domains = "|".join(re.escape(d) for d in vocab.load(locale, "free_email_domain").values)
    pattern = re.compile(rf"([a-z]+)\.([a-z]+)([1-9][0-9]{{0,2}})?@({domains})")
    matches = [pattern.fullmatch(email) for email in made]
    assert all(matches), [e for e, m in zip(made, matches, strict=True) if not m][:5]
    firsts = {
        ascii_letters(n) for n in names_of(locale, "first_name")["female"] | names_of(locale, "first_name")["male"]
    }
    lasts = {ascii_letters(n) for n in vocab.load(locale, "last_name").values}
    assert all(m and m[1] in firsts and m[2] in lasts for m in matches)
    numbered = sum(1 for m in matches if m and m[3])
    if unique:
        assert len(set(made)) == len(made)
        assert numbered > 2_900  # 999 of the 1000 number slots
    else:
        assert numbered == pytest.approx(1_500, rel=0.1)


def test_emails_use_the_given_domains() -> None:
    made = values("email", {"domains": ["example.com", "mail.example.org"]}, 2_000)
    assert {email.split("@")[1] for email in made} == {"example.com", "mail.example.org"}


def test_emails_follow_the_name_weights() -> None:
    lasts = Counter(email.split("@")[0].split(".")[1].rstrip("0123456789") for email in values("email", {}, 20_000))
    assert lasts.most_common(1)[0][0] == "smith"


@pytest.mark.parametrize("locale", LOCALES)
def test_usernames_are_first_separator_last_number(locale: str) -> None:
    made = values("username", {}, 3_000, locale=locale)
    matches = [re.fullmatch(r"([a-z]+)([._])([a-z]+)([1-9][0-9]{0,2})?", name) for name in made]
    assert all(matches), [n for n, m in zip(made, matches, strict=True) if not m][:5]
    assert Counter(m[2] for m in matches if m)["."] == pytest.approx(1_500, rel=0.1)


@pytest.mark.parametrize("locale", LOCALES)
def test_phones_follow_a_format_of_the_locale(locale: str) -> None:
    formats = vocab.load(locale, "phone_format").values
    made = values("phone", {}, 3_000, locale=locale)
    assert all(follows_a_pattern(phone, formats) for phone in made), [
        p for p in made if not follows_a_pattern(p, formats)
    ][:5]
    assert len(set(made)) > 2_990


@pytest.mark.parametrize("locale", ["fr_FR", "it_IT"])
def test_unique_phones_with_overlapping_formats_are_distinct(locale: str) -> None:
    formats = vocab.load(locale, "phone_format").values
    made = values("phone", {}, 20_000, unique=True, rows=20_000, locale=locale)
    assert len(set(made)) == len(made)
    assert all(follows_a_pattern(phone, formats) for phone in made)


def test_phones_follow_a_custom_format() -> None:
    made = values("phone", {"format": "(###) ###-####"}, 3_000, locale="de_DE")
    assert all(re.fullmatch(r"\([0-9]{3}\) [0-9]{3}-[0-9]{4}", phone) for phone in made)
    assert {phone[1] for phone in made} == set("0123456789")
    assert set(values("phone", {"format": "ü#"}, 10, unique=True, rows=10)) == {f"ü{d}" for d in range(10)}


def test_the_cover_of_digit_patterns_drops_those_another_contains() -> None:
    assert pattern_cover(("01########", "0130######", "02 ## ##", "0#", "05")) == ("01########", "02 ## ##", "0#")
    with pytest.raises(ValueError, match="overlap partly"):
        pattern_cover(("0#1", "01#"))


def test_job_titles_come_from_the_locale() -> None:
    for locale in LOCALES:
        assert set(values("job_title", {}, 500, locale=locale)) <= set(vocab.load(locale, "job_title").values)
