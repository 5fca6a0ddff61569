from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest

from server.core import vocab
from tests.unit.types.helpers import check_arrow_type, check_chunking, check_unique, values, violations

CASES: list[tuple[str, dict[str, Any]]] = [
    ("credit_card_number", {}),
    ("credit_card_number", {"brands": ["amex"]}),
    ("credit_card_expiry", {}),
    ("cvv", {}),
    ("iban", {}),
    ("iban", {"country": "DE"}),
    ("bic", {}),
    ("currency_code", {}),
    ("currency_name", {}),
    ("ean13", {}),
    ("isbn13", {}),
    ("isbn10", {}),
    ("upc_a", {}),
    ("account_number", {}),
]
GLOBAL = "_global"


def luhn_valid(number: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(number)):
        digit = int(char) * (2 if position % 2 else 1)
        total += digit - 9 if digit > 9 else digit
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    return int("".join(str(int(c, 36)) for c in rearranged)) % 97 == 1


def gs1_valid(code: str) -> bool:
    weights = [3 if i % 2 else 1 for i in range(len(code))][::-1]  # the check digit weighs 1
    return sum(int(d) * w for d, w in zip(code, weights, strict=True)) % 10 == 0


def isbn10_valid(code: str) -> bool:
    digits = [10 if c == "X" else int(c) for c in code]
    return sum((10 - i) * d for i, d in enumerate(digits)) % 11 == 0


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_makes_its_declared_arrow_type(type_name: str, params: dict[str, Any]) -> None:
    check_arrow_type(type_name, params)


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_rows_do_not_depend_on_the_chunking(type_name: str, params: dict[str, Any]) -> None:
    check_chunking(type_name, params)


@pytest.mark.parametrize(
    ("type_name", "params", "path", "message"),
    [
        ("credit_card_number", {"brands": ["visa", "maestro"]}, "brands[1]", "'visa'"),
        ("credit_card_number", {"brands": []}, "brands", "at least 1 item"),
        ("credit_card_number", {"brands": ["visa", "visa"]}, "brands", "must not repeat"),
        ("credit_card_expiry", {"years": 0}, "years", "greater than or equal to 1"),
        ("credit_card_expiry", {"start": "2025-13-01"}, "start", "date"),
        ("cvv", {"length": 5}, "length", "less than or equal to 4"),
        ("iban", {"country": "US"}, "country", "no IBAN format for 'US'"),
        ("bic", {"branch_probability": -0.1}, "branch_probability", "greater than or equal to 0"),
        ("currency_code", {"only": ["EUR"]}, "only", "unknown parameter"),
        ("ean13", {"prefix": "12a"}, "prefix", "should match pattern"),
        ("ean13", {"prefix": "1" * 12}, "prefix", "should match pattern"),
        ("isbn13", {"hyphens": True}, "hyphens", "unknown parameter"),
        ("account_number", {"length": 35}, "length", "less than or equal to 34"),
    ],
)
def test_bad_params_are_rejected_on_the_param(type_name: str, params: dict[str, Any], path: str, message: str) -> None:
    found = violations(type_name, params)
    assert list(found) == [path]
    assert message in found[path]


@pytest.mark.parametrize(
    ("type_name", "params", "domain"),
    [
        ("currency_code", {}, len(vocab.load(GLOBAL, "currency_code").values)),
        ("currency_name", {}, len(vocab.load(GLOBAL, "currency_name").values)),
        ("ean13", {"prefix": "40012345678"}, 10),
        ("ean13", {}, 10**12),
        ("isbn13", {}, 2 * 10**9),
        ("isbn10", {}, 10**9),
        ("upc_a", {}, 10**11),
        ("account_number", {"length": 4}, 10_000),
        ("account_number", {"length": 30}, 10**18),
    ],
)
def test_unique_values_are_distinct(type_name: str, params: dict[str, Any], domain: int | None) -> None:
    check_unique(type_name, params, domain)


CARD_RULES = {
    "visa": (r"4\d{15}", 16),
    "mastercard": (r"(5[1-5]\d{2}|222[1-9]|22[3-9]\d|2[3-6]\d{2}|27[01]\d|2720)\d{12}", 16),
    "amex": (r"3[47]\d{13}", 15),
    "discover": (r"(6011\d{2}|64[4-9]\d{3}|65\d{4})\d{10}", 16),
    "jcb": (r"35(2[89]|[3-8]\d)\d{12}", 16),
    "diners": (r"(30[0-5]\d|36\d{2}|3[89]\d{2})\d{10}", 14),
}


@pytest.mark.parametrize("brand", sorted(CARD_RULES))
def test_card_numbers_have_the_brands_prefix_length_and_luhn_digit(brand: str) -> None:
    pattern, length = CARD_RULES[brand]
    for number in values("credit_card_number", {"brands": [brand]}):
        assert len(number) == length
        assert re.fullmatch(pattern, number), number
        assert luhn_valid(number), number


def test_card_numbers_of_several_brands() -> None:
    made = values("credit_card_number", {}, 6_000)
    assert all(luhn_valid(n) for n in made)
    brands = Counter(next(b for b, (p, _) in CARD_RULES.items() if re.fullmatch(p, n)) for n in made)
    assert set(brands) == set(CARD_RULES)
    assert min(brands.values()) > 800


def test_card_expiry_months_follow_the_start() -> None:
    made = values("credit_card_expiry", {"start": "2025-11-20", "years": 1})
    assert all(re.fullmatch(r"(0[1-9]|1[0-2])/\d{2}", v) for v in made)
    expected = {"11/25", "12/25"} | {f"{m:02d}/26" for m in range(1, 11)}
    assert set(made) == expected


@pytest.mark.parametrize("length", [3, 4])
def test_cvv_digits(length: int) -> None:
    made = values("cvv", {"length": length})
    assert all(re.fullmatch(rf"\d{{{length}}}", v) for v in made)
    assert any(v.startswith("0") for v in made)


def _bban_regex(country: str) -> str:
    iban_format = next(f for f in vocab.iban_formats() if f.country == country)
    classes = {"n": "[0-9]", "a": "[A-Z]", "c": "[0-9A-Z]"}
    return "".join(f"{classes[cls]}{{{count}}}" for count, cls in iban_format.bban)


@pytest.mark.parametrize("country", ["DE", "GB", "FR", "BR", "NO", "MT"])
def test_ibans_of_a_country_follow_its_format_with_valid_check_digits(country: str) -> None:
    for iban in values("iban", {"country": country}, 1_000):
        assert re.fullmatch(f"{country}[0-9]{{2}}{_bban_regex(country)}", iban), iban
        assert iban_valid(iban), iban


def test_ibans_of_any_country() -> None:
    made = values("iban", {}, 5_000)
    formats = {f.country: f.length for f in vocab.iban_formats()}
    assert {iban[:2] for iban in made} == set(formats)
    for iban in made:
        assert len(iban) == formats[iban[:2]]
        assert re.fullmatch(f"{iban[:2]}[0-9]{{2}}{_bban_regex(iban[:2])}", iban), iban
        assert iban_valid(iban), iban


def test_bics() -> None:
    made = values("bic", {"branch_probability": 0.25})
    countries = set(vocab.load(GLOBAL, "country_code").values)
    assert all(re.fullmatch(r"[A-Z]{6}[0-9A-Z]{2}([0-9A-Z]{3})?", b) for b in made)
    assert {b[4:6] for b in made} <= countries
    assert sum(len(b) == 11 for b in made) == pytest.approx(500, abs=80)


def test_currency_codes_and_names_come_from_their_lists() -> None:
    assert set(values("currency_code", {})) <= set(vocab.load(GLOBAL, "currency_code").values)
    assert set(values("currency_name", {})) <= set(vocab.load(GLOBAL, "currency_name").values)


@pytest.mark.parametrize(
    ("type_name", "params", "pattern"),
    [
        ("ean13", {}, r"\d{13}"),
        ("ean13", {"prefix": "400"}, r"400\d{10}"),
        ("isbn13", {}, r"97[89]\d{10}"),
        ("upc_a", {}, r"\d{12}"),
    ],
)
def test_gs1_codes_have_valid_check_digits(type_name: str, params: dict[str, Any], pattern: str) -> None:
    for code in values(type_name, params):
        assert re.fullmatch(pattern, code), code
        assert gs1_valid(code), code


def test_isbn10_check_digit_may_be_x() -> None:
    made = values("isbn10", {}, 5_000)
    assert all(re.fullmatch(r"\d{9}[\dX]", c) and isbn10_valid(c) for c in made)
    assert sum(c.endswith("X") for c in made) == pytest.approx(5_000 / 11, rel=0.2)


def test_account_numbers_have_their_length() -> None:
    made = values("account_number", {"length": 24})
    assert all(re.fullmatch(r"\d{24}", a) for a in made)
