"""Generators of the types in `server.core.fieldtypes.datetime`."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from server.core.fieldtypes.datetime import (
    MICROS_PER_UNIT,
    MONTHS,
    WEEKDAYS,
    DateOfBirthParams,
    DateParams,
    IntervalParams,
    MonthNameParams,
    TimeParams,
    TimestampLocalParams,
    TimezoneParams,
    UnixTimeParams,
    WeekdayNameParams,
    YearParams,
    days_since_epoch,
    epoch_micros,
)
from worker.engines.types.base import Block, generator
from worker.engines.types.chars import sample_list
from worker.engines.types.numbers import draw_range

I64 = npt.NDArray[np.int64]
_MICROS_PER_DAY = 86_400_000_000
_INTERVAL = np.dtype([("months", "<i4"), ("days", "<i4"), ("nanos", "<i8")])


def date_array(days: I64) -> pa.Array:
    return pa.array(days.astype(np.int32), pa.date32())


@generator("date", DateParams)
def _date(params: DateParams, block: Block) -> pa.Array:
    return date_array(draw_range(block, days_since_epoch(params.start), days_since_epoch(params.end)))


@generator("iso_date_string", DateParams)
def _iso_date_string(params: DateParams, block: Block) -> pa.Array:
    return _date(params, block).cast(pa.string())


@generator("time", TimeParams)
def _time(params: TimeParams, block: Block) -> pa.Array:
    low, high = params.steps
    return pa.array(draw_range(block, low, high) * MICROS_PER_UNIT[params.precision], pa.time64("us"))


@generator("interval", IntervalParams)
def _interval(params: IntervalParams, block: Block) -> pa.Array:
    low, high = params.steps
    micros = block.rand.integers(low, high) * MICROS_PER_UNIT[params.precision]
    # Whole days in the days field, truncated towards zero so that -1h is "-01:00:00", not "-1 days +23:00:00".
    days = np.sign(micros) * (np.abs(micros) // _MICROS_PER_DAY)
    raw = np.zeros(block.size, dtype=_INTERVAL)
    raw["days"] = days
    raw["nanos"] = (micros - days * _MICROS_PER_DAY) * 1000
    return pa.Array.from_buffers(pa.month_day_nano_interval(), block.size, [None, pa.py_buffer(raw)])


@generator("timestamp_local", TimestampLocalParams)
def _timestamp_local(params: TimestampLocalParams, block: Block) -> pa.Array:
    micros = block.rand.integers(epoch_micros(params.start), epoch_micros(params.end))
    instants = pa.array(micros, pa.timestamp("us", tz=params.timezone))
    try:
        # Arrow reads the system's IANA database (as zoneinfo does, which validation used).
        return pc.local_timestamp(instants)
    except pa.ArrowInvalid as exc:
        raise ValueError(f"time zone {params.timezone!r} is missing from this host's tz database") from exc


@generator("unix_time", UnixTimeParams)
def _unix_time(params: UnixTimeParams, block: Block) -> pa.Array:
    low, high = params.steps
    return pa.array(draw_range(block, low, high), pa.int64())


@generator("date_of_birth", DateOfBirthParams)
def _date_of_birth(params: DateOfBirthParams, block: Block) -> pa.Array:
    earliest, latest = params.dates
    return date_array(draw_range(block, days_since_epoch(earliest), days_since_epoch(latest)))


@generator("year", YearParams)
def _year(params: YearParams, block: Block) -> pa.Array:
    return pa.array(draw_range(block, params.min, params.max), pa.int64())


def _names(names: tuple[str, ...], abbreviated: bool, block: Block) -> pa.Array:
    values = pa.array([name[:3] if abbreviated else name for name in names], pa.string())
    return values.take(pa.array(block.pick(len(names))))


@generator("month_name", MonthNameParams)
def _month_name(params: MonthNameParams, block: Block) -> pa.Array:
    return _names(MONTHS, params.abbreviated, block)


@generator("weekday_name", WeekdayNameParams)
def _weekday_name(params: WeekdayNameParams, block: Block) -> pa.Array:
    return _names(WEEKDAYS, params.abbreviated, block)


@generator("timezone", TimezoneParams)
def _timezone(params: TimezoneParams, block: Block) -> pa.Array:
    return sample_list(block, "_global", "timezone")
