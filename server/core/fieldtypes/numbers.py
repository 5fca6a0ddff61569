"""Numbers from distributions, exact decimals and money, percentages, digits and dice."""

from __future__ import annotations

import math
from collections.abc import Iterator
from decimal import Decimal
from typing import Annotated

from pydantic import Field

from server.core.fieldtypes.base import ColumnType, FieldParams, FieldType, IntParam, declare

_MAX_NUMERIC_PRECISION = 38  # what an Arrow decimal128 holds
_MAX_UNITS = 2**63 - 1  # units of 10**-scale are drawn as int64
# The largest |z| the normal sampler can return (at p = 2**-54), with a margin.
_MAX_NORMAL_Z = 9.0
_MAX_EXPONENTIAL = 38.0  # -log of the smallest open uniform draw (2**-54), with a margin

PositiveFloat = Annotated[float, Field(gt=0.0)]
_PRECISION = "total digits of the column; the fewest that hold min and max when absent"
_DECIMALS = "round to this many decimal places; none when absent"


class NormalParams(FieldParams):
    mean: float = Field(0.0, description="the mean")
    stddev: Annotated[float, Field(ge=0.0)] = Field(1.0, description="the standard deviation")
    decimals: IntParam | None = Field(None, ge=0, le=15, description=_DECIMALS)

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if not math.isfinite(abs(self.mean) + _MAX_NORMAL_Z * self.stddev):
            yield "stddev", "is so large that values overflow a double"


class LognormalParams(FieldParams):
    """exp(X) for a normal X of mean mu and standard deviation sigma."""

    mu: Annotated[float, Field(ge=-700.0, le=700.0)] = Field(0.0, description="mean of the logarithm")
    sigma: Annotated[float, Field(ge=0.0)] = Field(1.0, description="standard deviation of the logarithm")
    decimals: IntParam | None = Field(None, ge=0, le=15, description=_DECIMALS)

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.mu + _MAX_NORMAL_Z * self.sigma > 700.0:
            yield "sigma", "mu + 9 * sigma must be at most 700, or values overflow a double"


class ExponentialParams(FieldParams):
    """Waiting times of a Poisson process: give the rate or the scale (1 / rate), not both."""

    rate: PositiveFloat | None = Field(None, description="events per unit (1 when neither rate nor scale is given)")
    scale: PositiveFloat | None = Field(None, description="mean waiting time, 1 / rate")
    decimals: IntParam | None = Field(None, ge=0, le=15, description=_DECIMALS)

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.rate is not None and self.scale is not None:
            yield "scale", "give rate or scale, not both"
        elif not math.isfinite(_MAX_EXPONENTIAL * self.mean):
            yield "rate" if self.rate is not None else "scale", "makes values overflow a double"

    @property
    def mean(self) -> float:
        if self.scale is not None:
            return self.scale
        return 1.0 / self.rate if self.rate is not None else 1.0


class PoissonParams(FieldParams):
    lam: Annotated[float, Field(gt=0.0, le=1e12)] = Field(
        1.0, description="lambda, the mean number of events (exact up to 500, a rounded normal above)"
    )


class BinomialParams(FieldParams):
    """Successes in n trials, by exact inversion of the distribution."""

    n: IntParam = Field(10, ge=0, le=1_000_000, description="number of trials")
    p: Annotated[float, Field(ge=0.0, le=1.0)] = Field(0.5, description="chance of success of each trial")


class GeometricParams(FieldParams):
    """The number of trials up to and including the first success (1, 2, ...)."""

    p: Annotated[float, Field(ge=1e-12, le=1.0)] = Field(0.5, description="chance of success of each trial")


class ParetoParams(FieldParams):
    """scale / U**(1 / shape) for a uniform U: at least scale, heavy-tailed."""

    shape: Annotated[float, Field(ge=0.05)] = Field(3.0, description="alpha, the tail index (smaller: heavier)")
    scale: PositiveFloat = Field(1.0, description="x_m, the smallest value")
    decimals: IntParam | None = Field(None, ge=0, le=15, description=_DECIMALS)

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if math.log(self.scale) + _MAX_EXPONENTIAL / self.shape > 700.0:
            yield "shape", "is so small for this scale that values overflow a double"


class TriangularParams(FieldParams):
    min: float = Field(0.0, description="lower bound")
    mode: float = Field(0.5, description="most likely value, between min and max")
    max: float = Field(1.0, description="upper bound")
    decimals: IntParam | None = Field(None, ge=0, le=15, description=_DECIMALS)

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if not self.min <= self.mode <= self.max:
            yield "mode", f"must be between min ({self.min}) and max ({self.max})"
        elif not math.isfinite(self.max - self.min):
            yield "max", "max - min must be a finite float"


def units(value: float, scale: int, *, up: bool) -> int:
    """value in units of 10**-scale, rounded up or down; from its shortest repr, so exact."""
    scaled = Decimal(repr(value)).scaleb(scale)
    return int(scaled.to_integral_value(rounding="ROUND_CEILING" if up else "ROUND_FLOOR"))


class DecimalParams(FieldParams):
    """Uniform exact decimals: a whole number of units of 10**-scale in [min, max]."""

    min: float = Field(0.0, description="smallest value (rounded up to the scale)")
    max: float = Field(1000.0, description="largest value (rounded down to the scale)")
    scale: IntParam = Field(2, ge=0, le=18, description="digits after the decimal point")
    precision: IntParam | None = Field(None, ge=1, le=_MAX_NUMERIC_PRECISION, description=_PRECISION)

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.min > self.max:
            yield "max", f"must be >= min ({self.min})"
            return
        low, high = self.unit_range
        if max(abs(low), abs(high)) > _MAX_UNITS:
            yield "scale", f"min and max must be within {_MAX_UNITS} units of 10**-{self.scale}"
        elif low > high:
            yield "max", f"no multiple of 10**-{self.scale} lies between min and max"
        elif self.precision is not None and not self.scale <= self.precision <= _MAX_NUMERIC_PRECISION:
            yield "precision", f"must be between scale ({self.scale}) and {_MAX_NUMERIC_PRECISION}"
        elif self.precision is not None and self.precision < self.fitting_precision:
            yield "precision", f"must be at least {self.fitting_precision} to hold min and max"

    @property
    def unit_range(self) -> tuple[int, int]:
        return units(self.min, self.scale, up=True), units(self.max, self.scale, up=False)

    @property
    def fitting_precision(self) -> int:
        low, high = self.unit_range
        return max(len(str(abs(low))), len(str(abs(high))), self.scale + 1)

    def domain(self, locale: str) -> int | None:
        low, high = self.unit_range
        return high - low + 1

    @property
    def column_precision(self) -> int:
        return self.precision if self.precision is not None else self.fitting_precision

    def column_type(self) -> ColumnType | None:
        return ColumnType("decimal", f"numeric({self.column_precision},{self.scale})")


MONEY_PRECISION = 12  # numeric(12,2): below ten billion


class MoneyParams(FieldParams):
    """Uniform amounts with cents, stored as numeric(12,2)."""

    min: Annotated[float, Field(gt=-1e10, lt=1e10)] = Field(0.0, description="smallest amount")
    max: Annotated[float, Field(gt=-1e10, lt=1e10)] = Field(1000.0, description="largest amount")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        low, high = self.unit_range
        if self.min > self.max:
            yield "max", f"must be >= min ({self.min})"
        elif low > high:
            yield "max", "no whole number of cents lies between min and max"

    @property
    def unit_range(self) -> tuple[int, int]:
        return units(self.min, 2, up=True), units(self.max, 2, up=False)

    def domain(self, locale: str) -> int | None:
        low, high = self.unit_range
        return high - low + 1


class PercentParams(FieldParams):
    decimals: IntParam = Field(2, ge=0, le=6, description="decimal places")
    min: Annotated[float, Field(ge=0.0, le=100.0)] = Field(0.0, description="smallest percentage")
    max: Annotated[float, Field(ge=0.0, le=100.0)] = Field(100.0, description="largest percentage")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        if self.min > self.max:
            yield "max", f"must be >= min ({self.min})"
        elif units(self.min, self.decimals, up=True) > units(self.max, self.decimals, up=False):
            yield "max", f"no value with {self.decimals} decimals lies between min and max"


class DigitParams(FieldParams):
    def domain(self, locale: str) -> int | None:
        return 10


class DiceParams(FieldParams):
    """The total of `count` fair dice with `sides` sides each."""

    sides: IntParam = Field(6, ge=2, le=1000, description="sides of each die")
    count: IntParam = Field(1, ge=1, le=100, description="number of dice rolled and added")


declare(
    FieldType("normal", "numbers", "normally distributed floats", NormalParams, "float", "double precision"),
    FieldType("lognormal", "numbers", "log-normally distributed floats", LognormalParams, "float", "double precision"),
    FieldType(
        "exponential", "numbers", "exponentially distributed floats", ExponentialParams, "float", "double precision"
    ),
    FieldType("poisson", "numbers", "Poisson-distributed counts", PoissonParams, "integer", "bigint"),
    FieldType("binomial", "numbers", "successes in n trials", BinomialParams, "integer", "bigint"),
    FieldType("geometric", "numbers", "trials until the first success", GeometricParams, "integer", "bigint"),
    FieldType("pareto", "numbers", "Pareto-distributed floats (heavy tail)", ParetoParams, "float", "double precision"),
    FieldType("triangular", "numbers", "floats from a triangular distribution", TriangularParams, "float",
              "double precision"),
    FieldType("decimal", "numbers", "exact decimals in a range", DecimalParams, "decimal", "numeric", True),
    FieldType("money", "numbers", "amounts with cents", MoneyParams, "decimal",
              f"numeric({MONEY_PRECISION},2)", True),
    FieldType("percent", "numbers", "percentages with fixed decimals", PercentParams, "float", "double precision"),
    FieldType("digit", "numbers", "one digit, 0 to 9", DigitParams, "integer", "bigint", True),
    FieldType("dice", "numbers", "the total of a roll of dice", DiceParams, "integer", "bigint"),
)  # fmt: skip
