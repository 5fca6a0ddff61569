from __future__ import annotations

import re
from collections import Counter
from functools import cache
from typing import Any

import pytest

from server.core import vocab
from server.core.fieldtypes.address import ADDRESS_LAYOUTS
from tests.unit.types.helpers import check_arrow_type, check_chunking, check_unique, values, violations
from tests.unit.types.test_person import follows_a_pattern
from worker.engines.types.address import street_templates

CASES: list[tuple[str, dict[str, Any]]] = [
    ("building_number", {}),
    ("building_number", {"min": 95, "max": 105}),
    ("street_name", {}),
    ("street_address", {}),
    ("city", {}),
    ("state", {}),
    ("state", {"abbreviation": True}),
    ("postcode", {}),
    ("country", {}),
    ("address", {}),
]
LOCALES = vocab.LOCALES
# How the locales write a street without its building number.
STREET_ORDER = {"en_US": "{name} {suffix}", "de_DE": "{name}{suffix}", "fr_FR": "{suffix} {name}",
                "es_ES": "{suffix} {name}", "it_IT": "{suffix} {name}", "pt_BR": "{suffix} {name}"}  # fmt: skip
# A street address: the street and the building number, up to 9999 or 999 as the locale's are.
STREET_ADDRESS = {
    "en_US": r"(?P<number>[1-9][0-9]{0,3}) (?P<street>.+)",
    "de_DE": r"(?P<street>.+) (?P<number>[1-9][0-9]{0,2})",
    "fr_FR": r"(?P<number>[1-9][0-9]{0,2}),? (?P<street>.+)",
    "es_ES": r"(?P<street>.+?),? (?P<number>[1-9][0-9]{0,2})",
    "it_IT": r"(?P<street>.+?),? (?P<number>[1-9][0-9]{0,2})",
    "pt_BR": r"(?P<street>.+), (?P<number>[1-9][0-9]{0,3})",
}
# A whole address: street address, city, state abbreviation (or nothing), postcode.
ADDRESS = {
    "en_US": r"(?P<street>.+), (?P<city>[^,]+), (?P<state>[A-Z]{2}) (?P<postcode>[0-9]{5}(-[0-9]{4})?)",
    "de_DE": r"(?P<street>.+), (?P<postcode>[0-9]{5}) (?P<city>.+)",
    "fr_FR": r"(?P<street>.+), (?P<postcode>[0-9]{5}) (?P<city>.+)",
    "es_ES": r"(?P<street>.+), (?P<postcode>[0-9]{5}) (?P<city>.+)",
    "it_IT": r"(?P<street>.+), (?P<postcode>[0-9]{5}) (?P<city>.+) \((?P<state>[A-Z]{2})\)",
    "pt_BR": r"(?P<street>.+), (?P<city>.+) - (?P<state>[A-Z]{2}), (?P<postcode>[0-9]{8}|[0-9]{5}-[0-9]{3})",
}


@cache
def entries(locale: str, name: str) -> frozenset[str]:
    return frozenset(vocab.load(locale, name).values)


@cache
def street_names(locale: str) -> frozenset[str]:
    """Every street name the locale can make: its order of name and street type, with each pair."""
    order = STREET_ORDER[locale]
    return frozenset(
        order.format(name=name, suffix=suffix)
        for name in entries(locale, "street_name")
        for suffix in entries(locale, "street_suffix")
    )


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_makes_its_declared_arrow_type(type_name: str, params: dict[str, Any]) -> None:
    check_arrow_type(type_name, params)


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_rows_do_not_depend_on_the_chunking(type_name: str, params: dict[str, Any]) -> None:
    check_chunking(type_name, params)


@pytest.mark.parametrize(
    ("type_name", "params", "rows"),
    [("building_number", {"min": 1, "max": 5_000}, 5_000), ("postcode", {}, 1_000_000), ("city", {}, 1_500)],
)
def test_unique_rows_do_not_depend_on_the_chunking(type_name: str, params: dict[str, Any], rows: int) -> None:
    check_chunking(type_name, params, rows=rows, unique=True)


@pytest.mark.parametrize(
    ("type_name", "params", "path", "message"),
    [
        ("building_number", {"min": 0}, "min", "greater than or equal to 1"),
        ("building_number", {"max": 10**6}, "max", "less than or equal to 999999"),
        ("building_number", {"min": 5, "max": 4}, "max", "must be >= min (5)"),
        ("building_number", {"min": "5"}, "min", "valid integer"),
        ("street_name", {"suffix": "Street"}, "suffix", "unknown parameter"),
        ("state", {"abbreviation": "yes"}, "abbreviation", "valid boolean"),
        ("postcode", {"format": "#####"}, "format", "unknown parameter"),
        ("address", {"layout": "{city}"}, "layout", "unknown parameter"),
    ],
)
def test_bad_params_are_rejected_on_the_param(type_name: str, params: dict[str, Any], path: str, message: str) -> None:
    found = violations(type_name, params)
    assert list(found) == [path]
    assert message in found[path]


@pytest.mark.parametrize("type_name", ["street_name", "street_address", "address"])
def test_composed_types_reject_unique(type_name: str) -> None:
    assert violations(type_name, {}, unique=True) == {"unique": f"type {type_name} cannot promise distinct values"}


@pytest.mark.parametrize(
    ("type_name", "params", "domain"),
    [
        ("building_number", {}, 9_999),
        ("building_number", {"min": 100, "max": 1_099}, 1_000),
        ("city", {}, len(entries("en_US", "city"))),
        ("state", {}, 50),
        ("state", {"abbreviation": True}, 50),
        ("postcode", {}, 10**5 + 10**9),
        ("country", {}, len(entries("en_US", "country"))),
    ],
)
def test_unique_values_are_distinct(type_name: str, params: dict[str, Any], domain: int) -> None:
    check_unique(type_name, params, domain)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize(("type_name", "list_name"), [("city", "city"), ("country", "country"), ("state", "state")])
def test_unique_lists_give_each_entry_once(locale: str, type_name: str, list_name: str) -> None:
    whole = entries(locale, list_name)
    made = values(type_name, {}, len(whole), unique=True, rows=len(whole), locale=locale)
    assert sorted(made) == sorted(whole)


@pytest.mark.parametrize("locale", ["de_DE", "pt_BR"])
def test_unique_postcodes_are_distinct_in_the_locales_formats(locale: str) -> None:
    formats = vocab.load(locale, "postcode_format").values
    made = values("postcode", {}, 20_000, unique=True, rows=20_000, locale=locale)
    assert len(set(made)) == len(made)
    assert all(follows_a_pattern(code, formats) for code in made)


# -- values ------------------------------------------------------------------------------


def test_building_numbers_favour_short_numbers_within_the_range() -> None:
    made = [int(n) for n in values("building_number", {}, 8_000)]
    assert min(made) >= 1
    assert max(made) <= 9_999
    digits = Counter(len(str(n)) for n in made)
    assert sorted(digits) == [1, 2, 3, 4]
    assert all(count == pytest.approx(2_000, rel=0.1) for count in digits.values())
    bounded = {int(n) for n in values("building_number", {"min": 95, "max": 105}, 2_000)}
    assert bounded == set(range(95, 106))


def test_building_numbers_are_plain_decimal_text() -> None:
    assert all(re.fullmatch("[1-9][0-9]*", n) for n in values("building_number", {"min": 1, "max": 999_999}))


@pytest.mark.parametrize("locale", LOCALES)
def test_street_names_follow_the_locales_order(locale: str) -> None:
    made = values("street_name", {}, 2_000, locale=locale)
    assert set(made) <= street_names(locale), sorted(set(made) - street_names(locale))[:5]


@pytest.mark.parametrize("locale", LOCALES)
def test_street_formats_lose_the_building_cleanly(locale: str) -> None:
    (template,) = street_templates(locale, building=False)
    assert "".join(f"{text}{{{name}}}" if name else text for text, name in template) == STREET_ORDER[locale]


@pytest.mark.parametrize("locale", LOCALES)
def test_street_addresses_put_the_building_number_where_the_locale_does(locale: str) -> None:
    made = values("street_address", {}, 2_000, locale=locale)
    matches = [re.fullmatch(STREET_ADDRESS[locale], address) for address in made]
    assert all(matches), [a for a, m in zip(made, matches, strict=True) if not m][:5]
    streets = {m["street"] for m in matches if m}
    assert streets <= street_names(locale), sorted(streets - street_names(locale))[:5]
    formats = vocab.load(locale, "street_format").values
    if len(formats) > 1:  # es_ES, it_IT: with and without a comma; fr_FR: after the number
        assert sum("," in address for address in made) == pytest.approx(1_000, rel=0.15)


@pytest.mark.parametrize("locale", LOCALES)
def test_places_come_from_the_locale(locale: str) -> None:
    assert set(values("city", {}, 1_000, locale=locale)) <= entries(locale, "city")
    assert set(values("country", {}, 1_000, locale=locale)) <= entries(locale, "country")
    states = values("state", {}, 1_000, locale=locale)
    abbreviations = values("state", {"abbreviation": True}, 1_000, locale=locale)
    names, codes = vocab.load(locale, "state").values, vocab.load(locale, "state_abbr").values
    assert [codes[names.index(state)] for state in states] == abbreviations  # the same draws, parallel lists


@pytest.mark.parametrize("locale", LOCALES)
def test_postcodes_follow_the_locales_formats(locale: str) -> None:
    formats = vocab.load(locale, "postcode_format").values
    made = values("postcode", {}, 3_000, locale=locale)
    assert all(follows_a_pattern(code, formats) for code in made), made[:5]
    assert {len(code) for code in made} == {len(f) for f in formats}


@pytest.mark.parametrize("locale", LOCALES)
def test_addresses_follow_the_locales_layout(locale: str) -> None:
    made = values("address", {}, 2_000, locale=locale)
    matches = [re.fullmatch(ADDRESS[locale], address) for address in made]
    assert all(matches), [a for a, m in zip(made, matches, strict=True) if not m][:5]
    for match in matches:
        assert match
        assert re.fullmatch(STREET_ADDRESS[locale], match["street"])
        assert match["city"] in entries(locale, "city")
        assert follows_a_pattern(match["postcode"], vocab.load(locale, "postcode_format").values)
        if "state" in match.groupdict():
            assert match["state"] in entries(locale, "state_abbr")


def test_every_locale_has_an_address_layout() -> None:
    assert set(ADDRESS_LAYOUTS) == set(LOCALES)
