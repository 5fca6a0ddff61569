from __future__ import annotations

import re
import statistics
import string
from collections import Counter
from decimal import Decimal
from functools import cache
from typing import Any

import pytest

from server.core import vocab
from server.core.fieldtypes import commerce
from tests.unit.types.helpers import check_arrow_type, check_chunking, check_unique, values, violations
from worker.engines.types.commerce import COMPANY_FORMATS

CASES: list[tuple[str, dict[str, Any]]] = [
    ("company_name", {}),
    ("company_suffix", {}),
    ("product_name", {}),
    ("product_material", {}),
    ("price", {}),
    ("price", {"charm": True}),
    ("price", {"distribution": "uniform", "min": 0, "max": 50}),
    ("sku", {}),
    ("sku", {"letters": 0, "digits": 4, "separator": ""}),
    ("sku", {"letters": 8, "digits": 12}),
    ("color_name", {}),
]
GLOBAL = "_global"
LOCALES = vocab.LOCALES
PRODUCT_LISTS = ("product_adjective", "product_material", "product_noun")


def all_product_names() -> set[str]:
    adjectives, materials, nouns = (vocab.load(GLOBAL, name).values for name in PRODUCT_LISTS)
    return {f"{a} {m} {n}" for a in adjectives for m in materials for n in nouns}


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_makes_its_declared_arrow_type(type_name: str, params: dict[str, Any]) -> None:
    check_arrow_type(type_name, params)


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_rows_do_not_depend_on_the_chunking(type_name: str, params: dict[str, Any]) -> None:
    check_chunking(type_name, params)


@pytest.mark.parametrize(
    ("type_name", "params", "rows"),
    [("sku", {}, 1_000_000), ("sku", {"letters": 8, "digits": 12}, 1_000_000), ("product_name", {}, 5_544)],
)
def test_unique_rows_do_not_depend_on_the_chunking(type_name: str, params: dict[str, Any], rows: int) -> None:
    check_chunking(type_name, params, rows=rows, unique=True)


@pytest.mark.parametrize(
    ("type_name", "params", "path", "message"),
    [
        ("company_name", {"format": "{last}"}, "format", "unknown parameter"),
        ("color_name", {"locale": "de_DE"}, "locale", "unknown parameter"),
        ("price", {"min": 0}, "min", "must be > 0 for the log_uniform distribution"),
        ("price", {"min": -1, "distribution": "uniform"}, "min", "greater than or equal to 0"),
        ("price", {"min": 10, "max": 5}, "max", "must be >= min (10.0)"),
        ("price", {"max": 1e10}, "max", "less than 10000000000"),
        ("price", {"min": 1.001, "max": 1.009}, "max", "no whole number of cents lies between min and max"),
        ("price", {"min": 5, "max": 5.5, "charm": True}, "max", "no price ending in .99 lies between min and max"),
        ("price", {"distribution": "normal"}, "distribution", "'log_uniform' or 'uniform'"),
        ("price", {"charm": 1}, "charm", "valid boolean"),
        ("sku", {"letters": 9}, "letters", "less than or equal to 8"),
        ("sku", {"letters": -1}, "letters", "greater than or equal to 0"),
        ("sku", {"digits": 0}, "digits", "greater than or equal to 1"),
        ("sku", {"digits": 13}, "digits", "less than or equal to 12"),
        ("sku", {"separator": "/"}, "separator", "'-', '' or '_'"),
    ],
)
def test_bad_params_are_rejected_on_the_param(type_name: str, params: dict[str, Any], path: str, message: str) -> None:
    found = violations(type_name, params)
    assert list(found) == [path]
    assert message in found[path]


@pytest.mark.parametrize("type_name", ["company_name", "price"])
def test_types_without_a_finite_domain_reject_unique(type_name: str) -> None:
    assert violations(type_name, {}, unique=True) == {"unique": f"type {type_name} cannot promise distinct values"}


@pytest.mark.parametrize(
    ("type_name", "params", "domain"),
    [
        ("company_suffix", {}, len(vocab.load("en_US", "company_suffix").values)),
        ("color_name", {}, len(vocab.load("en_US", "color_name").values)),
        ("product_material", {}, len(vocab.load(GLOBAL, "product_material").values)),
        ("product_name", {}, len(all_product_names())),
        ("sku", {"letters": 1, "digits": 2}, 2_600),
        ("sku", {"letters": 0, "digits": 3}, 1_000),
        ("sku", {}, 26**3 * 10**6),
        ("sku", {"letters": 8, "digits": 12}, 26**8 * 10**12),
    ],
)
def test_unique_values_are_distinct(type_name: str, params: dict[str, Any], domain: int) -> None:
    check_unique(type_name, params, domain)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("list_name", ["company_suffix", "color_name"])
def test_unique_locale_lists_give_each_entry_once(locale: str, list_name: str) -> None:
    entries = vocab.load(locale, list_name).values
    made = values(list_name, {}, len(entries), unique=True, rows=len(entries), locale=locale)
    assert sorted(made) == sorted(entries)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("list_name", ["company_suffix", "color_name"])
def test_locale_lists_draw_from_the_locale(locale: str, list_name: str) -> None:
    assert set(values(list_name, {}, locale=locale)) <= set(vocab.load(locale, list_name).values)


def test_company_suffixes_follow_their_weights() -> None:
    suffixes = vocab.load("de_DE", "company_suffix")
    assert suffixes.weights is not None
    weights = dict(zip(suffixes.values, suffixes.weights, strict=True))
    counts = Counter(values("company_suffix", {}, 6_000, locale="de_DE"))
    for suffix in ("GmbH", "e.V."):  # weights 4 and 1 (of 26): about 923 and 231 of 6,000
        assert counts[suffix] == pytest.approx(6_000 * weights[suffix] / sum(weights.values()), rel=0.2)


# -- company names --------------------------------------------------------------------


@cache
def company_parts(locale: str) -> dict[str, frozenset[str]]:
    return {
        "last": frozenset(vocab.load(locale, "last_name").values),
        "suffix": frozenset(vocab.load(locale, "company_suffix").values),
    }


def follows(name: str, pieces: list[tuple[str, str | None]], parts: dict[str, frozenset[str]]) -> bool:
    """Whether name is the pieces' literal texts with an entry of the named list at each placeholder."""
    if not pieces:
        return name == ""
    (text, placeholder), rest = pieces[0], pieces[1:]
    if not name.startswith(text):
        return False
    name = name[len(text) :]
    if placeholder is None:
        return follows(name, rest, parts)
    return any(name[:end] in parts[placeholder] and follows(name[end:], rest, parts) for end in range(1, len(name) + 1))


def company_format(name: str, locale: str) -> str | None:
    """The first format that name follows, with real last names and suffixes of the locale."""
    for template, _ in COMPANY_FORMATS:
        pieces = [(text, placeholder) for text, placeholder, _, _ in string.Formatter().parse(template)]
        if follows(name, pieces, company_parts(locale)):
            return template
    return None


@pytest.mark.parametrize("locale", LOCALES)
def test_company_names_are_made_of_the_locales_names_and_suffixes(locale: str) -> None:
    made = values("company_name", {}, 3_000, locale=locale)
    formats = Counter(company_format(name, locale) for name in made)
    assert None not in formats, [name for name in made if company_format(name, locale) is None][:5]
    assert set(formats) == {template for template, _ in COMPANY_FORMATS}
    weights = dict(COMPANY_FORMATS)
    total = sum(weights.values())
    for template, count in formats.items():
        assert template is not None
        assert count == pytest.approx(3_000 * weights[template] / total, rel=0.25)


def test_company_names_follow_the_suffix_weights() -> None:
    made = values("company_name", {}, 6_000, locale="es_ES")
    # S.A. weighs about 19 times S.A.D, and both end "{last} {suffix}" and "{last} & {last} {suffix}".
    assert sum(name.endswith(" S.A.") for name in made) > 8 * sum(name.endswith(" S.A.D") for name in made)


# -- products -------------------------------------------------------------------------


def test_product_names_are_an_adjective_a_material_and_a_noun() -> None:
    adjectives, materials, nouns = (set(vocab.load(GLOBAL, name).values) for name in PRODUCT_LISTS)
    made = values("product_name", {}, 5_000)
    words = [name.rsplit(" ", 2) for name in made]
    assert all(len(w) == 3 and w[0] in adjectives and w[1] in materials and w[2] in nouns for w in words)
    assert {w[0] for w in words} == adjectives  # every word is used
    assert {w[1] for w in words} == materials
    assert {w[2] for w in words} == nouns


def test_unique_product_names_are_every_composition_once() -> None:
    names = all_product_names()
    assert commerce.product_name_count() == len(names)  # the composition is injective
    assert set(values("product_name", {}, len(names), unique=True, rows=len(names))) == names


def test_product_names_refuse_materials_that_could_make_names_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    real = vocab.load

    def with_spaced_material(locale: str, name: str) -> vocab.VocabList:
        if name == "product_material":
            return vocab.VocabList(("Stainless Steel", "Steel"), None)
        return real(locale, name)

    monkeypatch.setattr(vocab, "load", with_spaced_material)
    with pytest.raises(ValueError, match="single words"):
        commerce.product_words.__wrapped__()


def test_product_materials_come_from_their_list() -> None:
    assert set(values("product_material", {})) == set(vocab.load(GLOBAL, "product_material").values)


# -- prices ---------------------------------------------------------------------------


def prices(params: dict[str, Any], count: int = 6_000) -> list[Decimal]:
    made: list[Decimal] = values("price", params, count)
    assert all(isinstance(p, Decimal) and p.as_tuple().exponent == -2 for p in made)
    return made


@pytest.mark.parametrize("distribution", ["log_uniform", "uniform"])
@pytest.mark.parametrize(("low", "high"), [(1.0, 1000.0), (0.5, 3.2), (2.999, 3.011), (9_000_000, 9_999_999_999.99)])
def test_prices_are_in_range_with_cents(distribution: str, low: float, high: float) -> None:
    made = prices({"min": low, "max": high, "distribution": distribution})
    assert all(Decimal(repr(low)) <= p <= Decimal(repr(high)) for p in made)


@pytest.mark.parametrize("distribution", ["log_uniform", "uniform"])
def test_small_price_ranges_reach_every_cent(distribution: str) -> None:
    assert set(prices({"min": 2.999, "max": 3.05, "distribution": distribution})) == {
        Decimal(f"3.{c:02}") for c in range(6)
    }


@pytest.mark.parametrize("distribution", ["log_uniform", "uniform"])
def test_charm_prices_end_in_99(distribution: str) -> None:
    made = prices({"min": 0.5, "max": 20.5, "charm": True, "distribution": distribution})
    assert set(made) == {Decimal(f"{units}.99") for units in range(20)}


def test_charm_price_bounds_may_be_charm_prices() -> None:
    assert set(prices({"min": 0.99, "max": 2.99, "charm": True})) == {Decimal("0.99"), Decimal("1.99"), Decimal("2.99")}


def test_log_uniform_prices_skew_low() -> None:
    made = prices({"min": 1, "max": 1000})
    assert statistics.median(made) < 100  # about sqrt(1000) = 32; the midpoint is 500
    decades = Counter(len(str(int(p))) for p in made)  # 1 to 9.99, 10 to 99.99, 100 to 1000
    for digits in (1, 2, 3):
        assert decades[digits] == pytest.approx(2_000, rel=0.1)


def test_uniform_prices_are_even() -> None:
    made = prices({"min": 1, "max": 1000, "distribution": "uniform"})
    assert statistics.median(made) == pytest.approx(500, rel=0.06)


def test_a_price_range_of_one_cent() -> None:
    assert set(prices({"min": 4.25, "max": 4.25}, 50)) == {Decimal("4.25")}


# -- SKUs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "pattern"),
    [
        ({}, r"[A-Z]{3}-[0-9]{6}"),
        ({"letters": 0, "digits": 4, "separator": "-"}, r"[0-9]{4}"),
        ({"letters": 2, "digits": 1, "separator": "_"}, r"[A-Z]{2}_[0-9]"),
        ({"letters": 5, "digits": 3, "separator": ""}, r"[A-Z]{5}[0-9]{3}"),
        ({"letters": 8, "digits": 12}, r"[A-Z]{8}-[0-9]{12}"),
    ],
)
@pytest.mark.parametrize("unique", [False, True])
def test_skus_have_letters_a_separator_and_digits(params: dict[str, Any], pattern: str, unique: bool) -> None:
    made = values("sku", params, 3_000, unique=unique, rows=3_000)
    assert all(re.fullmatch(pattern, sku) for sku in made)


def test_every_sku_position_varies() -> None:
    for params in ({}, {"letters": 8, "digits": 12}):  # the second draws its first letters apart from the pick
        made = values("sku", params, 3_000, unique=True)
        columns = [{sku[i] for sku in made} for i in range(len(made[0]))]
        assert all(len(chars) in (1, 10, 26) for chars in columns)
        assert [len(chars) for chars in columns].count(1) == 1  # only the separator is constant
