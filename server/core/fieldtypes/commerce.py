"""Companies and commerce: company names, products, prices, SKUs, colour names."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from server.core import vocab
from server.core.fieldtypes.base import (
    FieldParams,
    FieldType,
    GlobalListParams,
    IntParam,
    LocaleListParams,
    NoParams,
    declare,
)
from server.core.fieldtypes.numbers import MONEY_PRECISION, units

CATEGORY = "company and commerce"
# A charm price is a whole number of currency units less one cent: 0.99, 1.99, 2.99, ...
CHARM_STEP = 100  # cents between charm prices
CHARM_DISCOUNT = 1  # cents below the whole unit
_PRICE_LIMIT = 1e10  # numeric(12,2) holds less than ten billion
SKU_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@cache
def product_words() -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The adjectives, materials and nouns of "{adjective} {material} {noun}" product names.

    When materials and nouns are single words, a name's last two words are its
    material and noun and the rest its adjective (which may hold spaces, as
    "Gently Used" does), so distinct triples make distinct names and the
    product of the lists' lengths is the exact number of names. A list change
    that breaks this fails here rather than repeating "unique" names.
    """
    adjectives, materials, nouns = (
        vocab.load(vocab.GLOBAL, f"product_{part}").values for part in ("adjective", "material", "noun")
    )
    spaced = [word for word in (*materials, *nouns) if " " in word]
    if spaced:
        raise ValueError(f"product materials and nouns must be single words, or names could repeat: {spaced}")
    return adjectives, materials, nouns


def product_name_count() -> int:
    adjectives, materials, nouns = product_words()
    return len(adjectives) * len(materials) * len(nouns)


class CompanySuffixParams(LocaleListParams):
    list_name: ClassVar[str] = "company_suffix"


class ColorNameParams(LocaleListParams):
    list_name: ClassVar[str] = "color_name"


class ProductMaterialParams(GlobalListParams):
    list_name: ClassVar[str] = "product_material"


class ProductNameParams(NoParams):
    def domain(self, locale: str) -> int | None:
        return product_name_count()


PriceBound = Annotated[float, Field(ge=0.0, lt=_PRICE_LIMIT)]


class PriceParams(FieldParams):
    """Shop prices with cents, stored as numeric(12,2) like money.

    log_uniform draws the logarithm of the price uniformly, so each decade
    (1 to 10, 10 to 100, ...) gets as many prices and cheap items are the most
    common; with charm it is the price plus one cent (the whole amount) that is
    log-uniform.
    """

    min: PriceBound = Field(1.0, description="lowest price (rounded up to a cent, or to the next .99 with charm)")
    max: PriceBound = Field(1000.0, description="highest price (rounded down to a cent, or to the last .99 with charm)")
    distribution: Literal["log_uniform", "uniform"] = Field(
        "log_uniform",
        description="log_uniform: as many prices in each decade, so low prices are common (min must be > 0);"
        " uniform: every price in [min, max] equally likely",
    )
    charm: bool = Field(False, description="every price ends in .99 (0.99, 4.99, 19.99)")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        first, last = self.step_range
        if self.distribution == "log_uniform" and self.min <= 0.0:
            yield "min", "must be > 0 for the log_uniform distribution (or use uniform)"
        elif self.min > self.max:
            yield "max", f"must be >= min ({self.min})"
        elif first > last:
            what = "price ending in .99" if self.charm else "whole number of cents"
            yield "max", f"no {what} lies between min and max"

    @property
    def cents_range(self) -> tuple[int, int]:
        return units(self.min, 2, up=True), units(self.max, 2, up=False)

    @property
    def step_range(self) -> tuple[int, int]:
        """The prices as steps: cents, or with charm whole units (step k is k - 0.01); at least 1 with charm."""
        low, high = self.cents_range
        if not self.charm:
            return low, high
        # ceil and floor of (cents + discount) / step
        return -(-(low + CHARM_DISCOUNT) // CHARM_STEP), (high + CHARM_DISCOUNT) // CHARM_STEP


class SkuParams(FieldParams):
    """Stock-keeping units such as QXR-482913: upper-case letters, a separator, digits."""

    letters: IntParam = Field(3, ge=0, le=8, description="letters A-Z at the start")
    digits: IntParam = Field(6, ge=1, le=12, description="digits 0-9 after the letters")
    separator: Literal["-", "", "_"] = Field(
        "-", description="between the letters and the digits (none when letters is 0)"
    )

    def domain(self, locale: str) -> int | None:
        count: int = len(SKU_LETTERS) ** self.letters * 10**self.digits
        return count


declare(
    FieldType("company_name", CATEGORY, "company name from the locale's last names and legal suffixes", NoParams,
              "text", "text"),
    FieldType("company_suffix", CATEGORY, "legal form of a company, such as GmbH or LLC", CompanySuffixParams, "text",
              "text", True),
    FieldType("product_name", CATEGORY, "product name such as Ergonomic Steel Chair", ProductNameParams, "text",
              "text", True),
    FieldType("product_material", CATEGORY, "material of a product, such as Steel", ProductMaterialParams, "text",
              "text", True),
    FieldType("price", CATEGORY, "shop price with cents, optionally ending in .99", PriceParams, "decimal",
              f"numeric({MONEY_PRECISION},2)"),
    FieldType("sku", CATEGORY, "stock-keeping unit such as QXR-482913", SkuParams, "text", "text", True),
    FieldType("color_name", CATEGORY, "the locale's name of a colour", ColorNameParams, "text", "text", True),
)  # fmt: skip
