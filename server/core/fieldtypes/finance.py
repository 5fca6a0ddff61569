"""Finance: card numbers and their expiry and CVV, IBAN and BIC, currencies, EAN/UPC/ISBN codes, account numbers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Literal

from pydantic import Field, field_validator

from server.core import vocab
from server.core.fieldtypes.base import FieldParams, FieldType, IntParam, NoParams, declare
from server.core.fieldtypes.datetime import IsoDate

GLOBAL = "_global"
CardBrand = Literal["visa", "mastercard", "amex", "discover", "jcb", "diners"]


@dataclass(frozen=True, slots=True)
class CardBrandSpec:
    """A brand's number length and its issuer prefixes, as inclusive ranges of equal digit count."""

    length: int
    prefixes: tuple[tuple[int, int], ...]


CARD_BRANDS: dict[str, CardBrandSpec] = {
    "visa": CardBrandSpec(16, ((4, 4),)),
    "mastercard": CardBrandSpec(16, ((51, 55), (2221, 2720))),
    "amex": CardBrandSpec(15, ((34, 34), (37, 37))),
    "discover": CardBrandSpec(16, ((6011, 6011), (644, 649), (65, 65))),
    "jcb": CardBrandSpec(16, ((3528, 3589),)),
    "diners": CardBrandSpec(14, ((300, 305), (36, 36), (38, 39))),
}


class CreditCardNumberParams(FieldParams):
    brands: list[CardBrand] | None = Field(
        None,
        min_length=1,
        description="brands to pick from (visa, mastercard, amex, discover, jcb, diners); all when absent",
    )

    def chosen(self) -> list[str]:
        return list(self.brands) if self.brands else list(CARD_BRANDS)

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.brands and len(set(self.brands)) != len(self.brands):
            yield "brands", "must not repeat a brand"


class CreditCardExpiryParams(FieldParams):
    """MM/YY of a month in the `years` years from `start`."""

    start: IsoDate = Field(date(2025, 1, 1), description="the earliest expiry is this date's month")
    years: IntParam = Field(5, ge=1, le=20, description="how many years of months after start to draw from")


class CvvParams(FieldParams):
    length: IntParam = Field(3, ge=3, le=4, description="3 digits, or 4 as on American Express cards")


class IbanParams(FieldParams):
    country: str | None = Field(
        None, description="ISO 3166 alpha-2 code of the country whose IBAN format to use; any of them when absent"
    )

    @field_validator("country")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        known = [f.country for f in vocab.iban_formats()]
        if value is not None and value not in known:
            raise ValueError(f"no IBAN format for {value!r}; known: {', '.join(known)}")
        return value


class BicParams(FieldParams):
    branch_probability: float = Field(
        0.5, ge=0.0, le=1.0, description="chance of an 11-character BIC with a branch code (8 characters otherwise)"
    )


class CurrencyParams(NoParams):
    def domain(self, locale: str) -> int | None:
        return len(vocab.load(GLOBAL, "currency_code").values)


class Ean13Params(FieldParams):
    prefix: str = Field("", pattern=r"^[0-9]{0,11}$", description="leading digits of every code (e.g. a GS1 prefix)")

    def domain(self, locale: str) -> int | None:
        return int(10 ** (12 - len(self.prefix)))


class Isbn13Params(NoParams):
    def domain(self, locale: str) -> int | None:
        return 2 * 10**9  # 978 or 979, and nine digits


class Isbn10Params(NoParams):
    def domain(self, locale: str) -> int | None:
        return 10**9


class UpcAParams(NoParams):
    def domain(self, locale: str) -> int | None:
        return 10**11


class AccountNumberParams(FieldParams):
    length: IntParam = Field(10, ge=4, le=34, description="number of digits (leading zeros included)")

    def domain(self, locale: str) -> int | None:
        return int(10 ** min(self.length, 18))


declare(
    FieldType(
        "credit_card_number", "finance", "card number with a brand's prefix and length and a valid Luhn digit",
        CreditCardNumberParams, "text", "text",
    ),
    FieldType("credit_card_expiry", "finance", "card expiry date as MM/YY", CreditCardExpiryParams, "text", "text"),
    FieldType("cvv", "finance", "card verification value of 3 or 4 digits", CvvParams, "text", "text"),
    FieldType("iban", "finance", "IBAN with valid check digits", IbanParams, "text", "text"),
    FieldType("bic", "finance", "BIC (SWIFT code) of 8 or 11 characters", BicParams, "text", "text"),
    FieldType("currency_code", "finance", "ISO 4217 currency code", CurrencyParams, "text", "text", True),
    FieldType("currency_name", "finance", "English currency name", CurrencyParams, "text", "text", True),
    FieldType("ean13", "finance", "EAN-13 barcode number with its check digit", Ean13Params, "text", "text", True),
    FieldType("isbn13", "finance", "ISBN-13 (978 or 979) with its check digit", Isbn13Params, "text", "text", True),
    FieldType("isbn10", "finance", "ISBN-10 with its check digit (0-9 or X)", Isbn10Params, "text", "text", True),
    FieldType("upc_a", "finance", "UPC-A barcode number with its check digit", UpcAParams, "text", "text", True),
    FieldType("account_number", "finance", "bank account number of fixed length", AccountNumberParams, "text",
              "text", True),
)  # fmt: skip
