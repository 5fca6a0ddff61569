"""The counter-based RNG: exact integer maths, draws that depend only on (key, counter), and accurate math."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worker.engines.rand import Rand, exp, inverse_normal_cdf, log, mulhi

SAMPLE = np.array(
    [0, 1, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 0x9E37_79B9_7F4A_7C15, 0xDEAD_BEEF_CAFE_F00D], dtype=np.uint64
)


@pytest.mark.parametrize("n", [0, 1, 7, 2**31 + 11, 2**32 - 1, 2**32, 2**32 + 1, 2**63, 2**64 - 1, 2**64])
def test_mulhi_is_exact_on_both_sides_of_the_32_bit_shortcut(n: int) -> None:
    values = np.concatenate([SAMPLE, Rand(7, np.arange(1000, dtype=np.uint64)).u64()])
    assert [int(v) for v in mulhi(values, n)] == [int(a) * n >> 64 for a in values]


def test_draws_depend_only_on_key_and_counter() -> None:
    whole = Rand(11, np.arange(10_000, dtype=np.uint64))
    part = Rand(11, np.arange(4_000, 6_000, dtype=np.uint64))
    assert np.array_equal(whole.u64(3)[4_000:6_000], part.u64(3))
    assert not np.array_equal(whole.u64(3), whole.u64(4)), "streams are independent"
    assert not np.array_equal(whole.u64(3), Rand(12, whole.counters).u64(3)), "keys are independent"


def test_below_is_in_range_and_close_to_uniform() -> None:
    draws = Rand(5, np.arange(200_000, dtype=np.uint64)).below(10)
    counts = np.bincount(draws, minlength=10)
    assert draws.min() == 0 and draws.max() == 9
    assert counts.min() > 19_400 and counts.max() < 20_600  # about 4.5 sigma either side of 20,000


def test_expanded_slots_do_not_depend_on_the_other_rows() -> None:
    counts = np.array([3, 0, 5, 1, 4])
    rand = Rand(9, np.arange(100, 105, dtype=np.uint64))
    slots, offsets = rand.expand(counts)
    assert offsets.tolist() == [0, 3, 3, 8, 9, 13]
    alone, _ = rand.take(np.array([2])).expand(counts[2:3])
    assert np.array_equal(slots.counters[3:8], alone.counters)
    assert len(set(slots.counters.tolist())) == 13


def test_expanded_slots_are_the_same_alone_with_empty_runs_anywhere() -> None:
    counts = np.random.default_rng(0).integers(0, 4, 300)
    counts[-5:] = 0
    rand = Rand(4, np.arange(300, dtype=np.uint64))
    slots, offsets = rand.expand(counts)
    for row in range(300):
        alone, _ = rand.take(np.array([row])).expand(counts[row : row + 1])
        assert np.array_equal(slots.counters[offsets[row] : offsets[row + 1]], alone.counters)


def test_permutation_is_a_bijection_for_awkward_sizes() -> None:
    for n in (1, 2, 3, 1000, 4097):
        values = Rand(3, np.arange(n, dtype=np.uint64)).permutation(n)
        assert sorted(values.tolist()) == list(range(n))


def test_own_log_exp_and_normal_quantile_match_the_platform() -> None:
    x = np.geomspace(1e-300, 1e300, 20_001)
    assert np.max(np.abs(log(x) - np.log(x)) / np.abs(np.log(x) + 1e-300)) < 1e-15
    y = np.linspace(-700, 700, 20_001)
    assert np.max(np.abs(exp(y) - np.exp(y)) / np.exp(y)) < 1e-15
    p = np.linspace(1e-12, 1 - 1e-6, 20_001)  # nearer 1, p itself is too coarse to check against
    expected = np.array([_normal_quantile(q) for q in p[::400]])
    assert np.max(np.abs(inverse_normal_cdf(p[::400]) - expected)) < 1e-8


def _normal_quantile(p: float) -> float:
    """Bisection on the exact CDF via math.erfc: slow, but independent of the code under test."""
    low, high = -40.0, 40.0
    for _ in range(200):
        mid = (low + high) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < p:
            low = mid
        else:
            high = mid
    return (low + high) / 2


@pytest.mark.parametrize(
    "weights",
    [
        (1.0,),
        (1.0, 3.0, 0.0),
        (0.0, 0.0, 5.0, 0.0, 1.0),
        tuple(1.0 / (k + 1) ** 1.5 for k in range(3_000)),  # a long tail of tiny shares in few buckets
        tuple(float(w) for w in np.random.default_rng(1).integers(0, 1_000_000, 997)),
    ],
)
def test_weighted_gives_the_binary_search_index(weights: tuple[float, ...]) -> None:
    rand = Rand(21, np.arange(300_000, dtype=np.uint64))
    bounds = np.cumsum(np.array(weights) / math.fsum(weights))
    bounds[-1] = 1.0
    expected = np.searchsorted(bounds, rand.uniform(4), side="right")
    assert np.array_equal(rand.weighted(weights, 4), expected)
