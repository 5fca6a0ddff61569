"""The vocabularies in server/core/vocab: every locale complete, every file well-formed, and the data
unchanged since scripts/extract_vocab.py wrote the manifest for the current VOCAB_VERSION."""

from __future__ import annotations

import hashlib
import re
import string
from pathlib import Path

import pytest

from server.core import vocab
from server.core.vocab import GLOBAL, LOCALES, IbanFormat, VocabList

DATA = Path(vocab.__file__).parent / "data"
LISTS = [(locale, name) for locale in LOCALES for name in vocab.LOCALE_LISTS] + [
    (GLOBAL, name) for name in vocab.GLOBAL_LISTS
]
PARALLEL = [(locale, "state", "state_abbr") for locale in LOCALES] + [
    (GLOBAL, "country_code", "country_name_en"),
    (GLOBAL, "currency_code", "currency_name"),
]
LINE_BREAKING = re.compile("[\t\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
CLASS_CHARS = {"n": string.digits, "a": string.ascii_uppercase, "c": string.digits + string.ascii_uppercase}
# Examples from the SWIFT IBAN registry: they must fit the table and pass ISO 7064 mod 97-10.
IBAN_EXAMPLES = [
    "AT611904300234573201",
    "BE68539007547034",
    "BR1800360305000010009795493C1",
    "CH9300762011623852957",
    "DE89370400440532013000",
    "ES9121000418450200051332",
    "FR1420041010050500013M02606",
    "GB29NWBK60161331926819",
    "IT60X0542811101000000123456",
    "NL91ABNA0417164300",
    "NO9386011117947",
    "PL61109010140000071219812874",
    "PT50000201231234567890154",
    "SE4550000000058398257466",
]


def test_locales_and_supports() -> None:
    assert LOCALES[0] == "en_US"
    assert len(LOCALES) == 6
    assert all(vocab.supports(locale) for locale in LOCALES)
    assert not vocab.supports(GLOBAL)
    assert not vocab.supports("xx_XX")
    assert re.fullmatch(r"\d{4}\.\d{1,2}\.\d+", vocab.VOCAB_VERSION)


@pytest.mark.parametrize("locale", LOCALES)
def test_every_locale_has_exactly_the_required_lists(locale: str) -> None:
    assert vocab.list_names(locale) == vocab.LOCALE_LISTS


def test_global_has_exactly_the_required_lists() -> None:
    assert vocab.list_names(GLOBAL) == vocab.GLOBAL_LISTS


@pytest.mark.parametrize(("locale", "name"), LISTS, ids=[f"{locale}/{name}" for locale, name in LISTS])
def test_list_is_well_formed(locale: str, name: str) -> None:
    values, weights = vocab.load(locale, name)
    assert values
    assert len(set(values)) == len(values), "duplicates"
    if name != "naughty_string":
        for value in values:
            assert value, "empty entry"
            assert value == value.strip(), f"padded entry {value!r}"
            assert not LINE_BREAKING.search(value), f"entry {value!r} holds a tab or line break"
    if weights is not None:
        assert len(weights) == len(values)
        assert all(isinstance(w, int) and w > 0 for w in weights)


@pytest.mark.parametrize("path", sorted(DATA.rglob("*.txt")), ids=lambda p: p.relative_to(DATA).as_posix())
def test_raw_file_has_one_entry_per_line(path: Path) -> None:
    text = path.read_bytes().decode("utf-8")
    assert text.endswith("\n")
    assert "\r" not in text
    lines = text[:-1].split("\n")
    assert "" not in lines
    tabs = {line.count("\t") for line in lines}
    if path.name == "iban_format.txt":
        assert tabs == {2}
    elif path.name == "naughty_string.txt":
        assert tabs == {0}
        assert all(line.startswith('"') and line.endswith('"') for line in lines)
    else:
        assert tabs in ({0}, {1}), "either every line is weighted or none is"


@pytest.mark.parametrize(("locale", "left", "right"), PARALLEL)
def test_parallel_lists_have_equal_length(locale: str, left: str, right: str) -> None:
    assert len(vocab.load(locale, left).values) == len(vocab.load(locale, right).values)
    assert vocab.load(locale, left).weights is None
    assert vocab.load(locale, right).weights is None


def test_codes_look_like_their_standards() -> None:
    assert all(re.fullmatch(r"[A-Z]{2}", code) for code in vocab.load(GLOBAL, "country_code").values)
    assert all(re.fullmatch(r"[A-Z]{3}", code) for code in vocab.load(GLOBAL, "currency_code").values)
    assert all(re.fullmatch(r"[1-5]\d\d \S.*", status) for status in vocab.load(GLOBAL, "http_status").values)
    assert all(re.fullmatch(r"[\w.+-]+/[\w.+-]+", mime) for mime in vocab.load(GLOBAL, "mime_type").values)
    assert all(not ext.startswith(".") for ext in vocab.load(GLOBAL, "file_extension").values)
    assert "Europe/Berlin" in vocab.load(GLOBAL, "timezone").values
    assert {"GET", "POST", "DELETE"} <= set(vocab.load(GLOBAL, "http_method").values)


@pytest.mark.parametrize("locale", LOCALES)
def test_formats_use_the_documented_syntax(locale: str) -> None:
    for name in ("postcode_format", "phone_format"):
        for fmt in vocab.load(locale, name).values:
            assert "#" in fmt
            assert re.fullmatch(r"[0-9#+()\-. x/]+", fmt), fmt
    for fmt in vocab.load(locale, "street_format").values:
        assert sorted(re.findall(r"\{(\w*)\}", fmt)) == ["building", "name", "suffix"], fmt
        assert fmt.format(building="12", name="N", suffix="S")


@pytest.mark.parametrize("locale", LOCALES)
def test_lists_are_large_enough_to_look_real(locale: str) -> None:
    assert len(vocab.load(locale, "word").values) >= 500
    for name in ("first_name_male", "first_name_female", "last_name", "city", "street_name", "job_title"):
        assert len(vocab.load(locale, name).values) >= 50, name


def test_global_lists_are_large_enough() -> None:
    assert len(vocab.load(GLOBAL, "user_agent").values) >= 50
    assert len(vocab.load(GLOBAL, "naughty_string").values) >= 100
    assert len(vocab.load(GLOBAL, "country_code").values) >= 190


def test_weights_where_the_source_has_frequencies() -> None:
    last = vocab.load("en_US", "last_name")
    assert last.values[0] == "Smith"
    assert last.weights is not None
    assert last.weights[0] == max(last.weights)
    assert vocab.load("en_US", "tld").weights is not None  # Faker repeats "com" to weight it
    assert vocab.load("de_DE", "last_name").weights is None


def test_naughty_strings_decode_their_escapes() -> None:
    naughty = set(vocab.load(GLOBAL, "naughty_string").values)
    for case in ("", "line one\nline two", "\t", "\r\n", "\x00", "\u202eevil\u202c", "\ufeff", "NULL", "undefined"):
        assert case in naughty, repr(case)
    assert any(len(value) >= 10_000 for value in naughty)
    assert any("<script>" in value for value in naughty)
    assert any("DROP TABLE" in value for value in naughty)
    raw = (DATA / GLOBAL / "naughty_string.txt").read_text(encoding="utf-8")
    assert "\u200b" not in raw  # invisible code points are \u-escaped in the file
    assert "\\u200b" in raw


def test_iban_formats_parse_and_fit_the_registry_examples() -> None:
    formats = vocab.iban_formats()
    assert len(formats) >= 20
    assert tuple(f.country for f in formats) == vocab.load(GLOBAL, "bank_iban_country").values
    assert IbanFormat("DE", 22, ((8, "n"), (10, "n"))) in formats
    by_country = {f.country: f for f in formats}
    for iban in IBAN_EXAMPLES:
        fmt = by_country[iban[:2]]
        classes = "".join(cls * count for count, cls in fmt.bban)
        assert len(iban) == fmt.length == 4 + len(classes), iban
        for char, cls in zip(iban[4:], classes, strict=True):
            assert char in CLASS_CHARS[cls], iban
        rearranged = iban[4:] + iban[:4]
        assert int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1, iban


def test_unknown_locale_or_list_raises_key_error_naming_the_alternatives() -> None:
    with pytest.raises(KeyError, match=r"unknown vocabulary locale 'xx_XX'; known: en_US, de_DE, .*, _global"):
        vocab.load("xx_XX", "city")
    with pytest.raises(KeyError, match="unknown vocabulary locale"):
        vocab.list_names("en")
    with pytest.raises(
        KeyError, match=r"no vocabulary list 'surname' for locale 'en_US'; it has: city, .*, last_name,"
    ):
        vocab.load("en_US", "surname")
    with pytest.raises(KeyError, match=r"locale-independent: load\('_global', 'timezone'\)"):
        vocab.load("de_DE", "timezone")
    with pytest.raises(KeyError, match=r"a table, not a list: use iban_formats\(\)"):
        vocab.load(GLOBAL, "iban_format")


def test_load_is_cached() -> None:
    first = vocab.load("fr_FR", "city")
    assert vocab.load("fr_FR", "city") is first
    assert isinstance(first, VocabList)
    assert isinstance(first.values, tuple)
    assert vocab.iban_formats() is vocab.iban_formats()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("a\nb", "end in LF"),
        ("a\r\nb\r\n", "end in LF"),
        ("a\n\nb\n", "blank line"),
        ("a\t0\n", "positive integer"),
        ("a\t1.5\n", "positive integer"),
        ("a\t1\nb\n", "every line has a weight or none"),
        ("a\na\n", "duplicate"),
        ("\t3\n", "empty entry"),
    ],
)
def test_malformed_files_fail_loudly(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        vocab._parse_list("x.txt", vocab._lines("x.txt", text))


def test_manifest_matches_the_data_files_and_version() -> None:
    """Editing data by hand, or regenerating it without bumping VOCAB_VERSION, must not go unnoticed:
    the manifest is written only by scripts/extract_vocab.py, which refuses to change the data under
    an unchanged version."""
    lines = (DATA / "MANIFEST.sha256").read_text(encoding="utf-8").splitlines()
    assert f"# vocab_version {vocab.VOCAB_VERSION}" in lines
    recorded = {path: digest for digest, path in (line.split("  ", 1) for line in lines if not line.startswith("#"))}
    present = {path.relative_to(DATA).as_posix(): path for path in DATA.rglob("*.txt")}
    assert sorted(recorded) == sorted(present)
    for rel, path in present.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == recorded[rel], f"{rel} changed since extraction"


def test_data_stays_small() -> None:
    assert sum(path.stat().st_size for path in DATA.rglob("*") if path.is_file()) < 3_000_000
