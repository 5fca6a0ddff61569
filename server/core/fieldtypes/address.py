"""Addresses: streets, buildings, cities, states, postcodes, countries, whole addresses."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from pydantic import Field

from server.core import vocab
from server.core.fieldtypes.base import (
    FieldParams,
    FieldType,
    IntParam,
    LocaleListParams,
    NoParams,
    declare,
)
from server.core.fieldtypes.person import pattern_domain

CATEGORY = "address"
MAX_BUILDING_NUMBER = 999_999
# One line per locale, in the order and punctuation of its postal convention.
ADDRESS_LAYOUTS = {
    "en_US": "{street_address}, {city}, {state_abbr} {postcode}",
    "de_DE": "{street_address}, {postcode} {city}",
    "fr_FR": "{street_address}, {postcode} {city}",
    "es_ES": "{street_address}, {postcode} {city}",
    "it_IT": "{street_address}, {postcode} {city} ({state_abbr})",
    "pt_BR": "{street_address}, {city} - {state_abbr}, {postcode}",
}


class BuildingNumberParams(FieldParams):
    """Numbers in [min, max]; each number of digits is equally likely, so short numbers are common."""

    min: IntParam = Field(1, ge=1, le=MAX_BUILDING_NUMBER, description="smallest number")
    max: IntParam = Field(9999, ge=1, le=MAX_BUILDING_NUMBER, description="largest number")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.min > self.max:
            yield "max", f"must be >= min ({self.min})"

    def domain(self, locale: str) -> int | None:
        return self.max - self.min + 1


class CityParams(LocaleListParams):
    list_name: ClassVar[str] = "city"


class CountryParams(LocaleListParams):
    list_name: ClassVar[str] = "country"


class StateParams(FieldParams):
    abbreviation: bool = Field(False, description="the short code (CA, BY, RJ...) instead of the name")

    @property
    def list_name(self) -> str:
        return "state_abbr" if self.abbreviation else "state"

    def domain(self, locale: str) -> int | None:
        return len(vocab.load(locale, self.list_name).values)


class PostcodeParams(NoParams):
    def domain(self, locale: str) -> int | None:
        return pattern_domain(vocab.load(locale, "postcode_format").values)


declare(
    FieldType("building_number", CATEGORY, "house number", BuildingNumberParams, "text", "text", True),
    FieldType("street_name", CATEGORY, "street name with its type (Oak Street, Goethestraße)", NoParams, "text",
              "text"),
    FieldType("street_address", CATEGORY, "street and building number in the locale's order", NoParams, "text",
              "text"),
    FieldType("city", CATEGORY, "city", CityParams, "text", "text", True),
    FieldType("state", CATEGORY, "state, region or province", StateParams, "text", "text", True),
    FieldType("postcode", CATEGORY, "postal code in a format of the locale", PostcodeParams, "text", "text", True),
    FieldType("country", CATEGORY, "country name in the locale's language", CountryParams, "text", "text", True),
    FieldType("address", CATEGORY, "a whole address on one line, laid out as the locale does", NoParams, "text",
              "text"),
)  # fmt: skip
