"""Generators of the types in `server.core.fieldtypes.core`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from server.core.fieldtypes import NoParams
from server.core.fieldtypes.core import (
    BooleanParams,
    ChoiceParams,
    FloatParams,
    IntegerParams,
    SequenceParams,
    TimestampParams,
)
from worker.engines.rand import mix64
from worker.engines.types.base import TIMESTAMP_TYPE, Block, generator, uuid_array

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_POW10 = [10.0**k for k in range(16)]


@generator("integer", IntegerParams)
def _integer(params: IntegerParams, block: Block) -> pa.Array:
    if block.unique:
        return pa.array(block.rand.permutation(params.max - params.min + 1) + params.min)
    return pa.array(block.rand.integers(params.min, params.max))


@generator("float", FloatParams)
def _float(params: FloatParams, block: Block) -> pa.Array:
    values = block.rand.floats(params.min, params.max)
    return pa.array(values if params.decimals is None else round_half_even(values, params.decimals))


def round_half_even(values: np.ndarray, decimals: int) -> np.ndarray:
    """np.round by scaling with exact powers of ten: basic operations only, so deterministic."""
    scale = _POW10[decimals]
    return np.rint(values * scale) / scale


@generator("boolean", BooleanParams)
def _boolean(params: BooleanParams, block: Block) -> pa.Array:
    if block.unique:
        return pa.array(block.rand.permutation(2) == 1)
    return pa.array(block.rand.chance(params.probability))


@generator("sequence", SequenceParams)
def _sequence(params: SequenceParams, block: Block) -> pa.Array:
    return pa.array(params.start + params.step * block.rows)


@generator("uuid4", NoParams)
def _uuid4(params: NoParams, block: Block) -> pa.Array:
    # 64 of the 122 free bits are a bijection of the row number, so values are
    # distinct by construction (unique holds without a check); 58 are random.
    mixed = mix64(block.rows.astype(np.uint64) + np.uint64(block.rand.key))
    random = block.rand.u64()
    hi = ((mixed << np.uint64(4)) & np.uint64(0xFFFF_FFFF_FFFF_0000)) | np.uint64(0x4000) | (mixed & np.uint64(0xFFF))
    lo = (random & np.uint64(0x3FFF_FFFF_FFFF_FFF0)) | np.uint64(0x8000_0000_0000_0000) | (mixed >> np.uint64(60))
    return uuid_array(hi, lo)


@generator("choice", ChoiceParams)
def _choice(params: ChoiceParams, block: Block) -> pa.Array:
    values = pa.array(params.values, pa.string())
    if params.weights is None or block.unique:
        return values.take(block.pick(len(values)))
    return values.take(block.rand.weighted(params.weights))


@generator("timestamp", TimestampParams)
def _timestamp(params: TimestampParams, block: Block) -> pa.Array:
    start, end = epoch_micros(params.start), epoch_micros(params.end)
    if block.unique:
        return pa.array(block.rand.permutation(end - start + 1) + start, TIMESTAMP_TYPE)
    return pa.array(block.rand.integers(start, end), TIMESTAMP_TYPE)


def epoch_micros(instant: datetime) -> int:
    return (instant - _UNIX_EPOCH) // timedelta(microseconds=1)
