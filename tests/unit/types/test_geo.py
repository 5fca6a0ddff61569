from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from server.core import vocab
from server.core.fieldtypes.geo import LANGUAGE_CODES
from tests.unit.types.helpers import check_arrow_type, check_chunking, check_unique, column, values, violations

CASES: list[tuple[str, dict[str, Any]]] = [
    ("latitude", {}),
    ("longitude", {"min": 2.2, "max": 2.5, "decimals": 3}),
    ("coordinates", {}),
    ("coordinates", {"min_latitude": -1, "max_latitude": 1, "decimals": 0}),
    ("country_code", {}),
    ("language_code", {}),
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
        ("latitude", {"max": 90.5}, "max", "between -90 and 90"),
        ("latitude", {"min": 10, "max": 0}, "max", "must be >= min (10.0)"),
        ("latitude", {"decimals": 11}, "decimals", "less than or equal to 10"),
        ("longitude", {"min": -181}, "min", "between -180 and 180"),
        ("longitude", {"min": 1.01, "max": 1.09, "decimals": 1}, "max", "no multiple of 10**-1"),
        ("coordinates", {"max_latitude": 91}, "max_latitude", "less than or equal to 90"),
        ("coordinates", {"min_longitude": 5, "max_longitude": 4}, "max_longitude", "must be >= min_longitude"),
        ("country_code", {"continent": "EU"}, "continent", "unknown parameter"),
        ("language_code", {"region": True}, "region", "unknown parameter"),
    ],
)
def test_bad_params_are_rejected_on_the_param(type_name: str, params: dict[str, Any], path: str, message: str) -> None:
    found = violations(type_name, params)
    assert list(found) == [path]
    assert message in found[path]


@pytest.mark.parametrize(
    ("type_name", "domain"),
    [("country_code", len(vocab.load("_global", "country_code").values)), ("language_code", len(LANGUAGE_CODES))],
)
def test_unique_values_are_distinct(type_name: str, domain: int) -> None:
    check_unique(type_name, {}, domain)


@pytest.mark.parametrize(
    ("type_name", "params", "low", "high"),
    [
        ("latitude", {}, -90, 90),
        ("latitude", {"min": 45.5, "max": 45.6, "decimals": 2}, 45.5, 45.6),
        ("longitude", {}, -180, 180),
        ("longitude", {"min": -0.5, "max": 0.5, "decimals": 0}, 0, 0),
    ],
)
def test_degrees_are_in_range_with_fixed_decimals(
    type_name: str, params: dict[str, Any], low: float, high: float
) -> None:
    made = column(type_name, params, 10_000).to_numpy()
    assert low <= made.min() <= made.max() <= high
    decimals = params.get("decimals", 6)
    np.testing.assert_array_equal(made, np.round(made, decimals))
    if decimals == 2:
        assert set(made.tolist()) == {45.5, 45.51, 45.52, 45.53, 45.54, 45.55, 45.56, 45.57, 45.58, 45.59, 45.6}


def test_coordinates_are_latitude_comma_longitude_with_fixed_decimals() -> None:
    params = {"min_latitude": -0.5, "max_latitude": 0.5, "min_longitude": 179, "max_longitude": 180, "decimals": 4}
    made = values("coordinates", params, 5_000)
    for text in made:
        match = re.fullmatch(r"(-?\d+\.\d{4}), (-?\d+\.\d{4})", text)
        assert match, text
        assert -0.5 <= float(match[1]) <= 0.5
        assert 179 <= float(match[2]) <= 180
    assert any(text.startswith("-0.") for text in made)
    assert any(text.startswith("0.") for text in made)


def test_country_and_language_codes() -> None:
    countries = set(values("country_code", {}, 5_000))
    assert countries <= set(vocab.load("_global", "country_code").values)
    assert len(countries) > 150
    languages = set(values("language_code", {}, 5_000))
    assert languages <= set(LANGUAGE_CODES)
    assert {"en", "de", "zh"} <= languages
    assert all(re.fullmatch("[a-z]{2}", code) for code in languages)
