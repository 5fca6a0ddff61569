"""Generators of the types in `server.core.fieldtypes.numbers`."""

from __future__ import annotations

import math
from functools import lru_cache
from itertools import accumulate

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from server.core.fieldtypes.numbers import (
    MONEY_PRECISION,
    BinomialParams,
    DecimalParams,
    DiceParams,
    DigitParams,
    ExponentialParams,
    GeometricParams,
    LognormalParams,
    MoneyParams,
    NormalParams,
    ParetoParams,
    PercentParams,
    PoissonParams,
    TriangularParams,
    units,
)
from worker.engines.rand import exp, log
from worker.engines.types.base import Block, generator
from worker.engines.types.core import round_half_even

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
_POW10 = [10.0**k for k in range(20)]


def _rounded(values: F64, decimals: int | None) -> pa.Array:
    return pa.array(values if decimals is None else round_half_even(values, decimals), pa.float64())


@generator("normal", NormalParams)
def _normal(params: NormalParams, block: Block) -> pa.Array:
    return _rounded(block.rand.normal(params.mean, params.stddev), params.decimals)


@generator("lognormal", LognormalParams)
def _lognormal(params: LognormalParams, block: Block) -> pa.Array:
    return _rounded(block.rand.lognormal(params.mu, params.sigma), params.decimals)


@generator("exponential", ExponentialParams)
def _exponential(params: ExponentialParams, block: Block) -> pa.Array:
    return _rounded(-log(block.rand.open_uniform()) * params.mean, params.decimals)


@generator("poisson", PoissonParams)
def _poisson(params: PoissonParams, block: Block) -> pa.Array:
    return pa.array(block.rand.poisson(params.lam), pa.int64())


@generator("binomial", BinomialParams)
def _binomial(params: BinomialParams, block: Block) -> pa.Array:
    if params.p in (0.0, 1.0) or params.n == 0:
        return pa.array(np.full(block.size, round(params.n * params.p), dtype=np.int64))
    low, cdf = binomial_cdf(params.n, params.p)
    picks = np.searchsorted(cdf, block.rand.uniform(), side="right")
    return pa.array(low + np.minimum(picks, len(cdf) - 1).astype(np.int64), pa.int64())


@lru_cache(maxsize=64)
def binomial_cdf(n: int, p: float) -> tuple[int, F64]:
    """The CDF of Binomial(n, p) over [low, high], where the tails outside hold below 2**-60 together.

    From the mode outwards by the pmf's ratio recurrence, in basic operations
    and our own log/exp only, so every platform gets the same table.
    """
    q = 1.0 - p
    mode = min(n, math.floor((n + 1) * p))
    # log C(n, mode) as a sum of logs of the ratios (n - mode + i) / i, added in order.
    i = np.arange(1, mode + 1, dtype=np.float64)
    log_choose = math.fsum(log((n - mode + i) / i).tolist())
    logs = log(np.array([p, q]))
    log_pmf_mode = log_choose + mode * float(logs[0]) + (n - mode) * float(logs[1])
    pmf_mode = float(exp(np.array([log_pmf_mode]))[0])
    spread = 12 * math.isqrt(math.ceil(n * p * q) + 1) + 40
    low, high = max(0, mode - spread), min(n, mode + spread)
    pmf = np.zeros(high - low + 1, dtype=np.float64)
    pmf[mode - low] = pmf_mode
    for k in range(mode + 1, high + 1):
        pmf[k - low] = pmf[k - 1 - low] * (n - k + 1) / k * p / q
    for k in range(mode - 1, low - 1, -1):
        pmf[k - low] = pmf[k + 1 - low] * (k + 1) / (n - k) * q / p
    cdf = np.array(list(accumulate(pmf.tolist())), dtype=np.float64)
    return low, cdf / cdf[-1]


@generator("geometric", GeometricParams)
def _geometric(params: GeometricParams, block: Block) -> pa.Array:
    if params.p >= 1.0:
        return pa.array(np.ones(block.size, dtype=np.int64))
    # Inversion: 1 + floor(log U / log(1 - p)).
    trials = np.floor(log(block.rand.open_uniform()) / log1m(params.p)) + 1.0
    return pa.array(np.minimum(trials, 2.0**62).astype(np.int64), pa.int64())


def log1m(p: float) -> float:
    """log(1 - p) without cancellation for small p: the series -(p + p^2/2 + p^3/3 + ...)."""
    if p > 1e-4:
        return float(log(np.array([1.0 - p]))[0])
    p2 = p * p
    return -(p + p2 / 2.0 + p2 * p / 3.0 + p2 * p2 / 4.0)


@generator("pareto", ParetoParams)
def _pareto(params: ParetoParams, block: Block) -> pa.Array:
    values = params.scale * exp(-log(block.rand.open_uniform()) / params.shape)
    return _rounded(values, params.decimals)


@generator("triangular", TriangularParams)
def _triangular(params: TriangularParams, block: Block) -> pa.Array:
    low, mode, high = params.min, params.mode, params.max
    if low == high:
        return _rounded(np.full(block.size, low), params.decimals)
    u = block.rand.uniform()
    split = (mode - low) / (high - low)
    rising = low + np.sqrt(u * (high - low) * (mode - low))
    falling = high - np.sqrt((1.0 - u) * (high - low) * (high - mode))
    return _rounded(np.where(u < split, rising, falling), params.decimals)


def decimal_array(unit_values: I64, precision: int, scale: int) -> pa.Array:
    """decimal128(precision, scale) values from int64 counts of 10**-scale (two's complement, 128 bits)."""
    raw = np.empty((len(unit_values), 2), dtype="<i8")
    raw[:, 0] = unit_values
    raw[:, 1] = unit_values >> 63  # the sign, extended
    return pa.Array.from_buffers(pa.decimal128(precision, scale), len(unit_values), [None, pa.py_buffer(raw)])


def draw_range(block: Block, low: int, high: int) -> I64:
    """Integers in [low, high]: distinct across the dataset when the field is unique."""
    if block.unique:  # a permutation of at most 2**63 values: more than any row count
        return block.rand.permutation(min(high - low + 1, 1 << 63)) + low
    return block.rand.integers(low, high)


@generator("decimal", DecimalParams)
def _decimal(params: DecimalParams, block: Block) -> pa.Array:
    low, high = params.unit_range
    return decimal_array(draw_range(block, low, high), params.column_precision, params.scale)


@generator("money", MoneyParams)
def _money(params: MoneyParams, block: Block) -> pa.Array:
    low, high = params.unit_range
    return decimal_array(draw_range(block, low, high), MONEY_PRECISION, 2)


@generator("percent", PercentParams)
def _percent(params: PercentParams, block: Block) -> pa.Array:
    low, high = units(params.min, params.decimals, up=True), units(params.max, params.decimals, up=False)
    return pa.array(block.rand.integers(low, high).astype(np.float64) / _POW10[params.decimals], pa.float64())


@generator("digit", DigitParams)
def _digit(params: DigitParams, block: Block) -> pa.Array:
    return pa.array(block.pick(10), pa.int64())


@generator("dice", DiceParams)
def _dice(params: DiceParams, block: Block) -> pa.Array:
    total = np.zeros(block.size, dtype=np.int64)
    for die in range(params.count):  # at most 100 draws of a whole column each
        total += block.rand.integers(1, params.sides, stream=die)
    return pa.array(total, pa.int64())
