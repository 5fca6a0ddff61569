"""Geography: latitudes, longitudes, coordinate pairs, country and language codes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from pydantic import Field

from server.core import vocab
from server.core.fieldtypes.base import FieldParams, FieldType, IntParam, NoParams, declare
from server.core.fieldtypes.numbers import units

# ISO 639-1 two-letter language codes (the 183 current ones).
LANGUAGE_CODES = (
    "aa", "ab", "ae", "af", "ak", "am", "an", "ar", "as", "av", "ay", "az", "ba", "be", "bg", "bi", "bm", "bn", "bo",
    "br", "bs", "ca", "ce", "ch", "co", "cr", "cs", "cu", "cv", "cy", "da", "de", "dv", "dz", "ee", "el", "en", "eo",
    "es", "et", "eu", "fa", "ff", "fi", "fj", "fo", "fr", "fy", "ga", "gd", "gl", "gn", "gu", "gv", "ha", "he", "hi",
    "ho", "hr", "ht", "hu", "hy", "hz", "ia", "id", "ie", "ig", "ii", "ik", "io", "is", "it", "iu", "ja", "jv", "ka",
    "kg", "ki", "kj", "kk", "kl", "km", "kn", "ko", "kr", "ks", "ku", "kv", "kw", "ky", "la", "lb", "lg", "li", "ln",
    "lo", "lt", "lu", "lv", "mg", "mh", "mi", "mk", "ml", "mn", "mr", "ms", "mt", "my", "na", "nb", "nd", "ne", "ng",
    "nl", "nn", "no", "nr", "nv", "ny", "oc", "oj", "om", "or", "os", "pa", "pi", "pl", "ps", "pt", "qu", "rm", "rn",
    "ro", "ru", "rw", "sa", "sc", "sd", "se", "sg", "si", "sk", "sl", "sm", "sn", "so", "sq", "sr", "ss", "st", "su",
    "sv", "sw", "ta", "te", "tg", "th", "ti", "tk", "tl", "tn", "to", "tr", "ts", "tt", "tw", "ty", "ug", "uk", "ur",
    "uz", "ve", "vi", "vo", "wa", "wo", "xh", "yi", "yo", "za", "zh", "zu",
)  # fmt: skip


class _DegreesParams(FieldParams):
    """Uniform degrees in [min, max], multiples of 10**-decimals."""

    LIMIT: ClassVar[float] = 90.0
    min: float = Field(-90.0, description="smallest value in degrees")
    max: float = Field(90.0, description="largest value in degrees")
    decimals: IntParam = Field(6, ge=0, le=10, description="decimal places (6 is about 10 cm)")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        for name in ("min", "max"):
            if abs(getattr(self, name)) > self.LIMIT:
                yield name, f"must be between -{self.LIMIT:g} and {self.LIMIT:g}"
        if self.min > self.max:
            yield "max", f"must be >= min ({self.min})"
        elif self.range[0] > self.range[1]:
            yield "max", f"no multiple of 10**-{self.decimals} lies between min and max"

    @property
    def range(self) -> tuple[int, int]:
        return units(self.min, self.decimals, up=True), units(self.max, self.decimals, up=False)


class LatitudeParams(_DegreesParams):
    pass


class LongitudeParams(_DegreesParams):
    LIMIT: ClassVar[float] = 180.0
    min: float = Field(-180.0, description="smallest value in degrees")
    max: float = Field(180.0, description="largest value in degrees")


class CoordinatesParams(FieldParams):
    """'lat, lon' text with a fixed number of decimals, uniform in a box."""

    min_latitude: float = Field(-90.0, ge=-90.0, le=90.0, description="southern edge")
    max_latitude: float = Field(90.0, ge=-90.0, le=90.0, description="northern edge")
    min_longitude: float = Field(-180.0, ge=-180.0, le=180.0, description="western edge")
    max_longitude: float = Field(180.0, ge=-180.0, le=180.0, description="eastern edge")
    decimals: IntParam = Field(6, ge=0, le=10, description="decimal places of both numbers")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        for axis in ("latitude", "longitude"):
            low, high = self.range(axis)
            if getattr(self, f"min_{axis}") > getattr(self, f"max_{axis}"):
                yield f"max_{axis}", f"must be >= min_{axis}"
            elif low > high:
                yield f"max_{axis}", f"no multiple of 10**-{self.decimals} lies between min_{axis} and max_{axis}"

    def range(self, axis: str) -> tuple[int, int]:
        low: float = getattr(self, f"min_{axis}")
        high: float = getattr(self, f"max_{axis}")
        return units(low, self.decimals, up=True), units(high, self.decimals, up=False)


class CountryCodeParams(NoParams):
    def domain(self, locale: str) -> int | None:
        return len(vocab.load("_global", "country_code").values)


class LanguageCodeParams(NoParams):
    def domain(self, locale: str) -> int | None:
        return len(LANGUAGE_CODES)


declare(
    FieldType("latitude", "geography", "uniform latitudes in degrees", LatitudeParams, "float", "double precision"),
    FieldType("longitude", "geography", "uniform longitudes in degrees", LongitudeParams, "float",
              "double precision"),
    FieldType("coordinates", "geography", "'latitude, longitude' text", CoordinatesParams, "text", "text"),
    FieldType("country_code", "geography", "ISO 3166-1 alpha-2 country code", CountryCodeParams, "text", "text",
              True),
    FieldType("language_code", "geography", "ISO 639-1 language code", LanguageCodeParams, "text", "text", True),
)  # fmt: skip
