from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tests.unit.types.helpers import check_arrow_type, check_chunking, check_unique, column, values, violations

CASES: list[tuple[str, dict[str, Any]]] = [
    ("normal", {}),
    ("normal", {"mean": 100, "stddev": 15, "decimals": 1}),
    ("lognormal", {}),
    ("exponential", {}),
    ("exponential", {"scale": 3.5, "decimals": 2}),
    ("poisson", {}),
    ("poisson", {"lam": 10_000}),
    ("binomial", {}),
    ("binomial", {"n": 1_000_000, "p": 0.001}),
    ("geometric", {}),
    ("pareto", {}),
    ("triangular", {}),
    ("decimal", {}),
    ("decimal", {"min": -5, "max": 5, "scale": 7, "precision": 20}),
    ("money", {}),
    ("percent", {}),
    ("digit", {}),
    ("dice", {}),
]


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_makes_its_declared_arrow_type(type_name: str, params: dict[str, Any]) -> None:
    check_arrow_type(type_name, params)


@pytest.mark.parametrize(("type_name", "params"), CASES)
def test_rows_do_not_depend_on_the_chunking(type_name: str, params: dict[str, Any]) -> None:
    check_chunking(type_name, params)


@pytest.mark.parametrize(
    ("type_name", "params", "path", "message"),
    [
        ("normal", {"stddev": -1}, "stddev", "greater than or equal to 0"),
        ("normal", {"stddev": 1e308}, "stddev", "overflow"),
        ("normal", {"decimals": 16}, "decimals", "less than or equal to 15"),
        ("lognormal", {"mu": 600, "sigma": 20}, "sigma", "at most 700"),
        ("exponential", {"rate": 2, "scale": 0.5}, "scale", "not both"),
        ("exponential", {"rate": 0}, "rate", "greater than 0"),
        ("exponential", {"scale": 1e307}, "scale", "overflow"),
        ("poisson", {"lam": 0}, "lam", "greater than 0"),
        ("binomial", {"p": 1.5}, "p", "less than or equal to 1"),
        ("binomial", {"n": -1}, "n", "greater than or equal to 0"),
        ("geometric", {"p": 0}, "p", "greater than or equal to 0.000000000001"),
        ("pareto", {"shape": 0.06, "scale": 1e200}, "shape", "overflow"),
        ("triangular", {"mode": 2}, "mode", "between min (0.0) and max (1.0)"),
        ("decimal", {"min": 2, "max": 1}, "max", "must be >= min"),
        ("decimal", {"min": 0.001, "max": 0.009, "scale": 2}, "max", "no multiple of 10**-2"),
        ("decimal", {"max": 1e17, "scale": 3}, "scale", "units of 10**-3"),
        ("decimal", {"max": 1000, "precision": 5}, "precision", "at least 6"),
        ("decimal", {"scale": 19}, "scale", "less than or equal to 18"),
        ("money", {"max": 1e10}, "max", "less than 10000000000"),
        ("money", {"min": 5, "max": 1}, "max", "must be >= min"),
        ("percent", {"max": 101}, "max", "less than or equal to 100"),
        ("percent", {"min": 50.001, "max": 50.002}, "max", "no value with 2 decimals"),
        ("digit", {"max": 5}, "max", "unknown parameter"),
        ("dice", {"sides": 1}, "sides", "greater than or equal to 2"),
        ("dice", {"count": 101}, "count", "less than or equal to 100"),
    ],
)
def test_bad_params_are_rejected_on_the_param(type_name: str, params: dict[str, Any], path: str, message: str) -> None:
    found = violations(type_name, params)
    assert list(found) == [path]
    assert message in found[path]


@pytest.mark.parametrize(
    ("type_name", "params", "domain"),
    [
        ("digit", {}, 10),
        ("decimal", {"min": -1, "max": 1, "scale": 3}, 2_001),
        ("decimal", {"max": 1e6, "scale": 4}, None),
        ("money", {"min": 0, "max": 99.99}, 10_000),
    ],
)
def test_unique_values_are_distinct(type_name: str, params: dict[str, Any], domain: int | None) -> None:
    check_unique(type_name, params, domain)


def _floats(type_name: str, params: dict[str, Any], count: int = 20_000) -> np.ndarray:
    made: np.ndarray = column(type_name, params, count).to_numpy()
    return made


def test_normal_moments_and_rounding() -> None:
    made = _floats("normal", {"mean": 100, "stddev": 15, "decimals": 1})
    assert made.mean() == pytest.approx(100, abs=0.5)
    assert made.std() == pytest.approx(15, rel=0.03)
    np.testing.assert_array_equal(made, np.round(made, 1))


def test_lognormal_median_and_positivity() -> None:
    made = _floats("lognormal", {"mu": 1.0, "sigma": 0.5})
    assert made.min() > 0
    assert np.median(made) == pytest.approx(np.e, rel=0.03)


@pytest.mark.parametrize("params", [{"rate": 4.0}, {"scale": 0.25}])
def test_exponential_mean(params: dict[str, Any]) -> None:
    made = _floats("exponential", params)
    assert made.min() > 0
    assert made.mean() == pytest.approx(0.25, rel=0.03)


@pytest.mark.parametrize("lam", [0.5, 7.0, 10_000.0])
def test_poisson_mean_and_variance(lam: float) -> None:
    made = _floats("poisson", {"lam": lam})
    assert made.min() >= 0
    assert made.mean() == pytest.approx(lam, rel=0.03)
    assert made.var() == pytest.approx(lam, rel=0.06)


@pytest.mark.parametrize(("n", "p"), [(1, 0.3), (10, 0.5), (200, 0.99), (1_000_000, 0.001), (5, 0.0), (5, 1.0)])
def test_binomial_stays_in_range_with_its_moments(n: int, p: float) -> None:
    made = _floats("binomial", {"n": n, "p": p})
    assert 0 <= made.min() <= made.max() <= n
    assert made.mean() == pytest.approx(n * p, rel=0.03, abs=0.01)
    assert made.var() == pytest.approx(n * p * (1 - p), rel=0.06, abs=0.01)


@pytest.mark.parametrize("p", [1.0, 0.5, 0.01, 1e-9])
def test_geometric_counts_trials_to_the_first_success(p: float) -> None:
    made = _floats("geometric", {"p": p})
    assert made.min() >= 1
    assert made.mean() == pytest.approx(1 / p, rel=0.04)


def test_pareto_is_at_least_its_scale_with_the_right_median() -> None:
    made = _floats("pareto", {"shape": 2.0, "scale": 3.0})
    assert made.min() >= 3.0
    assert np.median(made) == pytest.approx(3.0 * 2 ** (1 / 2.0), rel=0.03)


def test_triangular_range_and_mode() -> None:
    made = _floats("triangular", {"min": -1, "mode": 3, "max": 4})
    assert -1 <= made.min() <= made.max() <= 4
    assert made.mean() == pytest.approx(2.0, abs=0.05)
    counts, edges = np.histogram(made, bins=10, range=(-1, 4))
    assert edges[counts.argmax()] == pytest.approx(2.5)


@pytest.mark.parametrize(
    ("params", "kind", "low", "high"),
    [
        ({}, pa.decimal128(6, 2), Decimal("0.00"), Decimal("1000.00")),
        ({"min": -0.005, "max": 0.1, "scale": 2}, pa.decimal128(3, 2), Decimal("0.00"), Decimal("0.10")),
        ({"min": -2.5, "max": 2.5, "scale": 0}, pa.decimal128(1, 0), Decimal("-2"), Decimal("2")),
        (
            {"min": 1e-5, "max": 2e-5, "scale": 6, "precision": 30},
            pa.decimal128(30, 6),
            Decimal("1E-5"),
            Decimal("2E-5"),
        ),
        ({"min": -9e12, "max": 9e12, "scale": 6}, pa.decimal128(19, 6), Decimal("-9e12"), Decimal("9e12")),
    ],
)
def test_decimal_is_exact_within_its_range(
    params: dict[str, Any], kind: pa.DataType, low: Decimal, high: Decimal
) -> None:
    made = column("decimal", params, 20_000)
    assert made.type == kind
    decimals = made.to_pylist()
    assert low <= min(decimals) <= max(decimals) <= high
    assert all(d.as_tuple().exponent == -kind.scale for d in decimals)
    if high - low < 1_000:
        assert min(decimals) == low
        assert max(decimals) == high


def test_money_has_cents() -> None:
    made = values("money", {"min": -10, "max": 10}, 20_000)
    assert column("money", {}).type == pa.decimal128(12, 2)
    assert min(made) == Decimal("-10.00")
    assert max(made) == Decimal("10.00")
    assert len(set(made)) > 1_500


def test_percent_has_fixed_decimals() -> None:
    made = _floats("percent", {"decimals": 1, "min": 10, "max": 20})
    assert made.min() == 10.0
    assert made.max() == 20.0
    np.testing.assert_array_equal(made, np.round(made, 1))


def test_digit_is_every_digit_evenly() -> None:
    counts = Counter(values("digit", {}, 20_000))
    assert set(counts) == set(range(10))
    assert min(counts.values()) > 1_800


@pytest.mark.parametrize(("sides", "count"), [(6, 1), (6, 3), (20, 2), (2, 100)])
def test_dice_totals(sides: int, count: int) -> None:
    made = _floats("dice", {"sides": sides, "count": count})
    assert count <= made.min() <= made.max() <= sides * count
    assert made.mean() == pytest.approx(count * (sides + 1) / 2, rel=0.02)
    if count == 1:
        assert set(made.tolist()) == set(range(1, sides + 1))
