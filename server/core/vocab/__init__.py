"""Versioned vocabularies for synthetic data: names, places, formats and word lists for six locales.

Stdlib only, so the server can import it to validate schemas. Lists load lazily, once per process,
as tuples that a generator can index with an array of random integers.

    load("de_DE", "last_name")      -> VocabList(values=("Ackermann", ...), weights=None)
    load("en_US", "last_name")      -> VocabList(values=("Smith", ...), weights=(21712045, ...))
    load("_global", "timezone")     -> locale-independent lists live under the pseudo-locale "_global"
    iban_formats()                  -> the IBAN table, which is not a list

Files
    ``data/<locale>/<name>.txt``, UTF-8, one entry per line, every line ending in ``\\n``, no blank
    lines, no duplicates. A weighted list puts a positive integer after a TAB on every line
    (``Smith\\t21712045``); weights are relative (draw with probability weight / sum), exact integer
    rescalings of the source's floats or the number of times the source repeated an entry.
    ``data/MANIFEST.sha256`` holds the sha256 of every file and the versions of the sources;
    ``LICENSES.md`` credits the sources and says where each list of each locale comes from, including
    the substitutes used where a source lacked a list (pt_BR ``word`` is European Portuguese, it_IT
    ``color_name`` and ``job_title`` come from Mimesis, es_ES prefixes from Faker's es_CO, ...).

Every locale in LOCALES has every list in LOCALE_LISTS; "_global" has GLOBAL_LISTS. Parallel lists
have equal length and order: ``state``/``state_abbr`` (the abbreviation is the ISO 3166-2 subdivision
code without its country prefix, or the source's own: US postal codes, Italian province sigle,
Brazilian UF), ``country_code``/``country_name_en`` (ISO 3166-1 alpha-2, English names),
``currency_code``/``currency_name`` (ISO 4217) and ``bank_iban_country``/``iban_formats()``.

Formats
    ``postcode_format``, ``phone_format``: ``#`` is one digit 0-9, every other character is literal
    (``#####-###``, ``+49 (0) #### ######``).
    ``street_format``: a template using each of ``{building}``, ``{name}`` (from ``street_name``) and
    ``{suffix}`` (from ``street_suffix``: the street type, whether it comes first or last) exactly once:
    ``{building} {name} {suffix}`` (en_US), ``{name}{suffix} {building}`` (de_DE: Goethe + straße),
    ``{suffix} {name}, {building}`` (es_ES, it_IT, pt_BR).
    ``http_status``: code, space, reason phrase (``404 Not Found``).
    ``file_extension``: without the dot (``tar.gz``).

Naughty strings
    ``_global/naughty_string`` holds input-handling test cases (SQL and script injection, format
    strings, RTL and zero-width characters, emoji sequences, control characters, very long strings,
    null-like words). Its lines are JSON string literals, decoded by ``load``: ``"line one\\nline two"``.
    Newlines, tabs and every other invisible or line-breaking code point are ``\\u``-escaped in the
    file, so every entry stays on one line and shows in a diff. It is the one list that holds the empty
    string, surrounding whitespace and control characters, including U+0000, which PostgreSQL text
    cannot store.

IBAN formats
    ``_global/iban_format.txt`` has lines ``CC<TAB>length<TAB>bban`` (``DE\\t22\\t8n10n``), after the
    SWIFT IBAN registry. ``length`` is the whole IBAN: country code, two check digits and the BBAN.
    ``bban`` is a sequence of runs ``<count><class>``, all of fixed length, where class ``n`` is a digit
    0-9, ``a`` an upper-case letter A-Z and ``c`` an upper-case letter or a digit; so ``4a6n8n`` is four
    letters then fourteen digits. The check digits are computed by the caller (ISO 7064 mod 97-10).
    National check digits inside a BBAN (ES, FR, IT, BE...) are not modelled.

Versioning
    VOCAB_VERSION names the data, not the code: bump it whenever a data file changes, then regenerate
    with ``python scripts/extract_vocab.py``, which writes the manifest under the new version and refuses
    to write changed data under an unchanged one. The unit tests check the files against the manifest.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from importlib.resources.abc import Traversable
from typing import NamedTuple

__all__ = [
    "GLOBAL",
    "GLOBAL_LISTS",
    "LOCALES",
    "LOCALE_LISTS",
    "VOCAB_VERSION",
    "IbanFormat",
    "VocabList",
    "iban_formats",
    "list_names",
    "load",
    "supports",
]

LOCALES: tuple[str, ...] = ("en_US", "de_DE", "fr_FR", "es_ES", "it_IT", "pt_BR")
GLOBAL = "_global"
VOCAB_VERSION: str = "2026.11.2"

LOCALE_LISTS: tuple[str, ...] = (
    "city",
    "color_name",
    "company_suffix",
    "country",
    "first_name_female",
    "first_name_male",
    "free_email_domain",
    "job_title",
    "last_name",
    "phone_format",
    "postcode_format",
    "prefix_female",
    "prefix_male",
    "state",
    "state_abbr",
    "street_format",
    "street_name",
    "street_suffix",
    "tld",
    "word",
)
GLOBAL_LISTS: tuple[str, ...] = (
    "bank_iban_country",
    "country_code",
    "country_name_en",
    "currency_code",
    "currency_name",
    "file_extension",
    "http_method",
    "http_status",
    "language",
    "mime_type",
    "naughty_string",
    "product_adjective",
    "product_material",
    "product_noun",
    "timezone",
    "user_agent",
)

_JSON_LISTS = frozenset({"naughty_string"})
_TABLES = {"iban_format": "iban_formats()"}  # files under data/ that are not lists, and what reads them
_BBAN_RUN = re.compile(r"([1-9][0-9]*)([nac])")


class VocabList(NamedTuple):
    """A list's entries in file order, with one weight per entry when the list is weighted."""

    values: tuple[str, ...]
    weights: tuple[int, ...] | None


class IbanFormat(NamedTuple):
    """One country's IBAN: total length and the BBAN as (count, class) runs, class one of n, a, c."""

    country: str
    length: int
    bban: tuple[tuple[int, str], ...]


def supports(locale: str) -> bool:
    """Whether ``locale`` is one of LOCALES (the pseudo-locale "_global" is not a locale)."""
    return locale in LOCALES


@functools.cache
def list_names(locale: str) -> tuple[str, ...]:
    """The lists that ``locale`` (or "_global") provides, sorted."""
    folder = _folder(locale)
    names = (entry.name.removesuffix(".txt") for entry in folder.iterdir() if entry.name.endswith(".txt"))
    return tuple(sorted(name for name in names if name not in _TABLES))


@functools.cache
def load(locale: str, name: str) -> VocabList:
    """The list ``name`` of ``locale``; KeyError, naming what exists, for an unknown locale or list."""
    available = list_names(locale)
    if name not in available:
        raise KeyError(_unknown_list_message(locale, name, available))
    where = f"{locale}/{name}.txt"
    lines = _lines(where, _read(_folder(locale) / f"{name}.txt", where))
    if name in _JSON_LISTS:
        values = tuple(_json_string(where, number, line) for number, line in enumerate(lines, 1))
        return VocabList(_distinct(where, values), None)
    return _parse_list(where, lines)


@functools.cache
def iban_formats() -> tuple[IbanFormat, ...]:
    """The IBAN table, in the order of the ``bank_iban_country`` list."""
    where = f"{GLOBAL}/iban_format.txt"
    formats = []
    for number, line in enumerate(_lines(where, _read(_folder(GLOBAL) / "iban_format.txt", where)), 1):
        fields = line.split("\t")
        if len(fields) != 3 or not re.fullmatch(r"[A-Z]{2}", fields[0]) or not fields[1].isdecimal():
            raise ValueError(f"{where}:{number}: expected CC<TAB>length<TAB>bban, got {line!r}")
        runs = tuple((int(count), cls) for count, cls in _BBAN_RUN.findall(fields[2]))
        if "".join(f"{count}{cls}" for count, cls in runs) != fields[2]:
            raise ValueError(f"{where}:{number}: bad BBAN pattern {fields[2]!r}")
        if 4 + sum(count for count, _ in runs) != int(fields[1]):
            raise ValueError(f"{where}:{number}: the BBAN does not fill an IBAN of length {fields[1]}")
        formats.append(IbanFormat(fields[0], int(fields[1]), runs))
    return tuple(formats)


def _folder(locale: str) -> Traversable:
    if locale not in LOCALES and locale != GLOBAL:
        raise KeyError(f"unknown vocabulary locale {locale!r}; known: {', '.join((*LOCALES, GLOBAL))}")
    folder = resources.files(__name__).joinpath("data", locale)
    if not folder.is_dir():
        raise FileNotFoundError(f"vocabulary data for {locale} is missing from the installed package")
    return folder


def _unknown_list_message(locale: str, name: str, available: tuple[str, ...]) -> str:
    if locale == GLOBAL and name in _TABLES:
        return f"{name!r} is a table, not a list: use {_TABLES[name]}"
    message = f"no vocabulary list {name!r} for locale {locale!r}; it has: {', '.join(available)}"
    if locale != GLOBAL and name in list_names(GLOBAL):
        return f"{message}. {name!r} is locale-independent: load({GLOBAL!r}, {name!r})"
    return message


def _read(file: Traversable, where: str) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"vocabulary file {where} is missing from the installed package") from None


def _lines(where: str, text: str) -> list[str]:
    if not text.endswith("\n") or "\r" in text:
        raise ValueError(f"{where}: lines must end in LF only, the last one included")
    # split("\n"), not splitlines(): an entry may hold U+2028 or U+0085, which splitlines() breaks on.
    lines = text[:-1].split("\n")
    if "" in lines:
        raise ValueError(f"{where}:{lines.index('') + 1}: blank line")
    return lines


def _parse_list(where: str, lines: list[str]) -> VocabList:
    values: list[str] = []
    weights: list[int] = []
    for number, line in enumerate(lines, 1):
        value, tab, weight = line.partition("\t")
        if tab and not (weight.isascii() and weight.isdecimal() and int(weight) > 0):
            raise ValueError(f"{where}:{number}: the weight after the tab must be a positive integer: {line!r}")
        if not value:
            raise ValueError(f"{where}:{number}: empty entry")
        values.append(value)
        if tab:
            weights.append(int(weight))
    if weights and len(weights) != len(values):
        raise ValueError(f"{where}: either every line has a weight or none does")
    return VocabList(_distinct(where, tuple(values)), tuple(weights) if weights else None)


def _distinct(where: str, values: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(values)) != len(values):
        raise ValueError(f"{where}: duplicate entries")
    return values


def _json_string(where: str, number: int, line: str) -> str:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}:{number}: not a JSON string literal: {exc}") from None
    if not isinstance(value, str):
        raise ValueError(f"{where}:{number}: not a JSON string literal: {line!r}")
    return value
