"""Generators of the types in `server.core.fieldtypes.geo`."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from server.core.fieldtypes.geo import (
    LANGUAGE_CODES,
    CoordinatesParams,
    CountryCodeParams,
    LanguageCodeParams,
    LatitudeParams,
    LongitudeParams,
)
from worker.engines.types.base import Block, generator
from worker.engines.types.chars import int_strings, sample_list

I64 = npt.NDArray[np.int64]
_POW10 = [10.0**k for k in range(16)]


def _degrees(units: I64, decimals: int) -> pa.Array:
    """Counts of 10**-decimals degrees as floats (a division by an exact power of ten: correctly rounded)."""
    return pa.array(units.astype(np.float64) / _POW10[decimals], pa.float64())


@generator("latitude", LatitudeParams)
def _latitude(params: LatitudeParams, block: Block) -> pa.Array:
    return _degrees(block.rand.integers(*params.range), params.decimals)


@generator("longitude", LongitudeParams)
def _longitude(params: LongitudeParams, block: Block) -> pa.Array:
    return _degrees(block.rand.integers(*params.range), params.decimals)


def fixed_point(units: I64, decimals: int) -> pa.Array:
    """Counts of 10**-decimals as text with exactly `decimals` decimals (-0.5 as -0.500000)."""
    whole = int_strings(np.abs(units) // 10**decimals)
    sign = pa.array(np.where(units < 0, "-", ""), pa.string())
    if decimals == 0:
        return pc.binary_join_element_wise(sign, whole, "")
    fraction = pc.utf8_lpad(int_strings(np.abs(units) % 10**decimals), decimals, "0")
    return pc.binary_join_element_wise(sign, whole, ".", fraction, "")


@generator("coordinates", CoordinatesParams)
def _coordinates(params: CoordinatesParams, block: Block) -> pa.Array:
    latitude = block.rand.integers(*params.range("latitude"), stream=0)
    longitude = block.rand.integers(*params.range("longitude"), stream=1)
    return pc.binary_join_element_wise(
        fixed_point(latitude, params.decimals), fixed_point(longitude, params.decimals), ", "
    )


@generator("country_code", CountryCodeParams)
def _country_code(params: CountryCodeParams, block: Block) -> pa.Array:
    return sample_list(block, "_global", "country_code")


_LANGUAGES = pa.array(LANGUAGE_CODES, pa.string())


@generator("language_code", LanguageCodeParams)
def _language_code(params: LanguageCodeParams, block: Block) -> pa.Array:
    return _LANGUAGES.take(pa.array(block.pick(len(LANGUAGE_CODES))))
