"""Counter-based random numbers: every value is a pure function of (key, stream, counter).

Why not numpy's `Generator`: NumPy promises the same stream only on the same
build, and a stateful stream ties a value to everything drawn before it, so
a shard or a retry would have to replay its predecessors. Here a draw is
splitmix64 applied to (counter, key, stream), as in dbldatagen: any process
makes any row alone, with any chunking, and gets the same bits.

Everything after the draw uses integer arithmetic or IEEE-754 basic
operations (+ - * / sqrt, exactly rounded on every platform) in elementwise
order: ranges by a 128-bit multiply-high, floats from the top 53 bits, and
`log`/`exp` from our own polynomials instead of libm's, whose last bit
differs between platforms and SIMD paths. No reductions whose order a build
may change (np.sum), no transcendental ufuncs.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from functools import lru_cache
from itertools import accumulate

import numpy as np
import numpy.typing as npt

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFF_FFFF)
_S30, _S27, _S31, _S32, _S11 = (np.uint64(s) for s in (30, 27, 31, 32, 11))
_TWO_POW_MINUS_53 = 2.0**-53


def mix64(x: U64) -> U64:
    """splitmix64's finalizer: a bijection on uint64 that scatters consecutive inputs."""
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def mix64_int(x: int) -> int:
    """`mix64` of one Python int (for keys), without numpy's scalar overflow warnings."""
    x &= _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


@lru_cache(maxsize=4096)
def derive_key(*parts: int | str) -> int:
    """A 64-bit key from parts, stable across processes, platforms and versions (BLAKE2b)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def mulhi(a: U64, n: int) -> U64:
    """floor(a * n / 2**64) for uint64 a and 0 <= n <= 2**64, exactly, in 32-bit limbs."""
    if n == 1 << 64:
        return a.copy()
    a0, a1 = a & _LOW32, a >> _S32
    if n < 1 << 32:  # floor((a1*n + floor(a0*n / 2**32)) / 2**32): the same value, with no carry to track
        small = np.uint64(n)
        fast: U64 = (a1 * small + ((a0 * small) >> _S32)) >> _S32
        return fast
    n0, n1 = np.uint64(n & 0xFFFF_FFFF), np.uint64(n >> 32)
    lo_lo, hi_lo, lo_hi = a0 * n0, a1 * n0, a0 * n1
    carry = ((lo_lo >> _S32) + (hi_lo & _LOW32) + (lo_hi & _LOW32)) >> _S32
    high: U64 = a1 * n1 + (hi_lo >> _S32) + (lo_hi >> _S32) + carry
    return high


class Rand:
    """Draws for a set of counters (row numbers, or slots made by `expand`) under one key.

    Each `stream` is an independent sequence: give each use of randomness in a
    generator its own stream number, so that adding one never shifts another.
    """

    __slots__ = ("counters", "key")

    def __init__(self, key: int, counters: U64) -> None:
        self.key = key & _MASK64
        self.counters = counters

    @classmethod
    def for_rows(cls, key: int, rows: npt.NDArray[np.integer]) -> Rand:
        return cls(key, rows.astype(np.uint64, copy=False))

    def __len__(self) -> int:
        return len(self.counters)

    def child(self, *parts: int | str) -> Rand:
        """The same counters under a key derived from this one: a sub-generator's own randomness."""
        return Rand(derive_key(self.key, *parts), self.counters)

    def take(self, indexes: npt.NDArray[np.integer] | npt.NDArray[np.bool_]) -> Rand:
        """Only some of the counters (by position or mask)."""
        return Rand(self.key, self.counters[indexes])

    def expand(self, counts: npt.NDArray[np.integer]) -> tuple[Rand, I64]:
        """counts[i] slots for counter i, each with its own draws; also the slots' offsets (len + 1).

        For values made of a variable number of parts, such as the words of a sentence.
        """
        counts = np.asarray(counts, dtype=np.int64)
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        base: U64 = np.repeat(mix64(self.counters * _GOLDEN + np.uint64(mix64_int(self.key ^ 0x5EED))), counts)
        # Each slot's position in its counter's run, from 1: a running count restarted at each run.
        steps = np.ones(len(base), dtype=np.int64)
        runs = np.flatnonzero(counts > 0)
        ends = offsets[runs + 1]
        followed = ends < len(base)  # the slot after a run starts the next one
        steps[ends[followed]] = 1 - counts[runs[followed]]
        position: U64 = np.cumsum(steps).astype(np.uint64)
        return Rand(self.key, mix64(base + position * _GOLDEN)), offsets

    # -- raw draws --------------------------------------------------------------

    def u64(self, stream: int = 0) -> U64:
        """One uniform 64-bit draw per counter."""
        stream_key = np.uint64(mix64_int(self.key + mix64_int(stream + 1)))
        return mix64(self.counters * _GOLDEN + stream_key)

    # -- integers ---------------------------------------------------------------

    def below(self, n: int, stream: int = 0) -> I64:
        """Uniform integers in [0, n), 1 <= n <= 2**63."""
        if not 1 <= n <= 1 << 63:
            raise ValueError(f"below() needs 1 <= n <= 2**63, got {n}")
        return mulhi(self.u64(stream), n).astype(np.int64)

    def integers(self, low: int, high: int, stream: int = 0) -> I64:
        """Uniform int64 values in [low, high], both ends included."""
        if low > high:
            raise ValueError(f"integers() needs low <= high, got {low} > {high}")
        offset = mulhi(self.u64(stream), high - low + 1)
        return (offset + np.uint64(low & _MASK64)).view(np.int64)

    def permutation(self, n: int, stream: int = 0) -> I64:
        """A bijection of the counters (each < n) onto [0, n): distinct counters give distinct values.

        Cycle-walking over a 4-round Feistel network of the next even bit width,
        so no table is kept and any shard computes its own rows' values.
        """
        if n < 1 or n > 1 << 63:
            raise ValueError(f"permutation() needs 1 <= n <= 2**63, got {n}")
        if len(self.counters) and int(self.counters.max()) >= n:
            raise ValueError(f"a counter is outside the permuted domain [0, {n})")
        half = max(1, ((n - 1).bit_length() + 1) // 2)
        mask, shift = np.uint64((1 << half) - 1), np.uint64(half)
        round_keys = [np.uint64(mix64_int(derive_key(self.key, "feistel", stream, r))) for r in range(4)]
        values = self.counters.copy()
        todo = np.arange(len(values))
        while len(todo):
            x = values[todo]
            left, right = x >> shift, x & mask
            for round_key in round_keys:
                left, right = right, left ^ (mix64(right ^ round_key) & mask)
            x = (left << shift) | right
            values[todo] = x
            todo = todo[x >= np.uint64(n)]
        return values.astype(np.int64)

    def pick(self, n: int, *, unique: bool, stream: int = 0) -> I64:
        """Indexes into n things: drawn independently, or (unique) all distinct via `permutation`."""
        return self.permutation(n, stream) if unique else self.below(n, stream)

    # -- floats -----------------------------------------------------------------

    def uniform(self, stream: int = 0) -> F64:
        """Uniform floats in [0, 1), multiples of 2**-53."""
        return (self.u64(stream) >> _S11).astype(np.float64) * _TWO_POW_MINUS_53

    def open_uniform(self, stream: int = 0) -> F64:
        """Uniform floats in (0, 1): safe to take the log of."""
        return ((self.u64(stream) >> _S11).astype(np.float64) + 0.5) * _TWO_POW_MINUS_53

    def floats(self, low: float, high: float, stream: int = 0) -> F64:
        """Uniform floats in [low, high)."""
        return low + (high - low) * self.uniform(stream)

    def chance(self, probability: float, stream: int = 0) -> npt.NDArray[np.bool_]:
        """True with the given probability, decided in integers."""
        if probability >= 1.0:
            return np.ones(len(self.counters), dtype=np.bool_)
        threshold = int(max(probability, 0.0) * 2.0**64)  # exact: scaling by a power of two
        return self.u64(stream) < np.uint64(threshold)

    def weighted(self, weights: Sequence[float], stream: int = 0) -> I64:
        """Indexes drawn with the given non-negative weights (at least one positive).

        Index i for a uniform u when bounds[i - 1] <= u < bounds[i] (the cumulative shares):
        a guide table gives, for u's bucket of [0, 1), the first index that can hold u, and a
        few steps on settle it. The same indexes as a binary search, found in about O(1).
        """
        bounds, guide = _weighted_table(tuple(weights))
        draws = self.uniform(stream)
        picks = guide[(draws * len(guide)).astype(np.intp)]  # exact: len(guide) is a power of two
        ahead = np.flatnonzero(bounds[picks] <= draws)
        while ahead.size:
            picks[ahead] += 1
            ahead = ahead[bounds[picks[ahead]] <= draws[ahead]]
        return picks

    def normal(self, mean: float = 0.0, stddev: float = 1.0, stream: int = 0) -> F64:
        return mean + stddev * inverse_normal_cdf(self.open_uniform(stream))

    def exponential(self, rate: float = 1.0, stream: int = 0) -> F64:
        return -log(self.open_uniform(stream)) / rate

    def lognormal(self, mu: float = 0.0, sigma: float = 1.0, stream: int = 0) -> F64:
        return exp(self.normal(mu, sigma, stream))

    def poisson(self, lam: float, stream: int = 0) -> I64:
        """Poisson counts: exact inversion for lam <= 500, a rounded normal above (error < 1%)."""
        if lam <= 500.0:
            return np.searchsorted(_poisson_cdf(lam), self.uniform(stream), side="right").astype(np.int64)
        approx = np.floor(self.normal(lam, math.sqrt(lam), stream) + 0.5)
        return np.maximum(approx, 0.0).astype(np.int64)


@lru_cache(maxsize=256)
def _weighted_table(weights: tuple[float, ...]) -> tuple[F64, I64]:
    """Cumulative shares (the last exactly 1.0), and the first index above each of 4n+ buckets' start."""
    total = math.fsum(weights)
    bounds = np.array(list(accumulate(w / total for w in weights)), dtype=np.float64)
    bounds[-1] = 1.0
    buckets = 1 << (4 * len(weights)).bit_length()
    starts = np.arange(buckets, dtype=np.float64) / buckets
    guide = np.searchsorted(bounds, starts, side="right").astype(np.int64)
    return bounds, guide


@lru_cache(maxsize=64)
def _poisson_cdf(lam: float) -> F64:
    """P(X <= k) for k = 0.. until the tail is below 2**-60, from basic operations only."""
    # Start at the mode in log space so that exp(-lam) cannot underflow.
    mode = math.floor(lam)
    log_pmf_mode = -lam + mode * float(log(np.array([lam]))[0]) - _log_factorial(mode) if mode > 0 else -lam
    pmf_mode = float(exp(np.array([log_pmf_mode]))[0])
    upper = mode + 12 * math.isqrt(mode + 1) + 40
    pmf = np.zeros(upper + 1, dtype=np.float64)
    pmf[mode] = pmf_mode
    for k in range(mode + 1, upper + 1):
        pmf[k] = pmf[k - 1] * lam / k
    for k in range(mode - 1, -1, -1):
        pmf[k] = pmf[k + 1] * (k + 1) / lam
    cdf = np.array(list(accumulate(pmf.tolist())), dtype=np.float64)
    normalized: F64 = cdf / cdf[-1]
    return normalized


def _log_factorial(n: int) -> float:
    """log(n!) from our own log, summed in order (deterministic)."""
    return math.fsum(log(np.arange(1, n + 1, dtype=np.float64)).tolist())


# -- deterministic elementary functions ------------------------------------------

_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that k * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.4426950408889634  # 1 / ln 2
_SQRT_HALF = math.sqrt(0.5)
# 2*atanh(s) = log((1 + s) / (1 - s)) as 2s(1 + s^2/3 + s^4/5 + ...), |s| <= 0.1716.
_ATANH_COEFFS = [1.0 / (2 * k + 1) for k in range(13)][::-1]
_EXP_COEFFS = [1.0 / math.factorial(k) for k in range(16)][::-1]


def log(x: F64) -> F64:
    """Natural log from basic IEEE operations (within 2 ulp); -inf at 0, nan below."""
    x = np.asarray(x, dtype=np.float64)
    mantissa, exponent = np.frexp(x)
    small = mantissa < _SQRT_HALF
    mantissa = np.where(small, mantissa * 2.0, mantissa)
    exponent = (exponent - small).astype(np.float64)
    f = mantissa - 1.0
    s = f / (2.0 + f)
    s2 = s * s
    poly = np.full_like(s, _ATANH_COEFFS[0])
    for c in _ATANH_COEFFS[1:]:
        poly = poly * s2 + c
    result = exponent * _LN2_HI + (2.0 * s * poly + exponent * _LN2_LO)
    result = np.where(x == 0.0, -np.inf, result)
    return np.where(x < 0.0, np.nan, result)


def exp(x: F64) -> F64:
    """e**x from basic IEEE operations (within 2 ulp); 0 below -745, inf above 709.78."""
    x = np.asarray(x, dtype=np.float64)
    clipped = np.clip(x, -746.0, 710.0)
    k = np.rint(clipped * _INV_LN2)
    r = (clipped - k * _LN2_HI) - k * _LN2_LO
    poly = np.full_like(r, _EXP_COEFFS[0])
    for c in _EXP_COEFFS[1:]:
        poly = poly * r + c
    # Two ldexp steps keep 2**k representable near the ends of the range.
    half = np.floor(k / 2.0).astype(np.int64)
    result = np.ldexp(np.ldexp(poly, half), (k - half).astype(np.int64))
    result = np.where(x > 709.782712893384, np.inf, result)
    return np.where(x < -745.2, 0.0, result)


# Acklam's rational approximation of the normal quantile (relative error < 1.2e-9).
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02,
      1.383577518672690e02, -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02,
      6.680131188771972e01, -1.328068155288572e01)  # fmt: skip
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00,
      -2.549732539343734e00, 4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
_P_LOW = 0.02425


def inverse_normal_cdf(p: F64) -> F64:
    """The standard normal quantile of p in (0, 1)."""
    p = np.asarray(p, dtype=np.float64)
    q = p - 0.5
    r = q * q
    num = ((((_A[0] * r + _A[1]) * r + _A[2]) * r + _A[3]) * r + _A[4]) * r + _A[5]
    den = ((((_B[0] * r + _B[1]) * r + _B[2]) * r + _B[3]) * r + _B[4]) * r + 1.0
    central = q * num / den
    tail_p = np.minimum(p, 1.0 - p)
    t = np.sqrt(-2.0 * log(np.maximum(tail_p, 1e-300)))
    num_t = ((((_C[0] * t + _C[1]) * t + _C[2]) * t + _C[3]) * t + _C[4]) * t + _C[5]
    den_t = (((_D[0] * t + _D[1]) * t + _D[2]) * t + _D[3]) * t + 1.0
    tail = num_t / den_t  # the lower tail's quantile; the upper one is its negation
    tail = np.where(p > 0.5, -tail, tail)
    return np.where(tail_p < _P_LOW, tail, central)
