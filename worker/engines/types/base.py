"""What a generator gets (a `Block`) and how it registers.

A generator makes one column for a set of rows with numpy and Arrow compute
only (no loop per row). Its output must depend on nothing but its params and
the `Block`: the rows' numbers, the field's counter-based `Rand`, the locale
and the values of the fields it declared as inputs. So any process makes any
row alone and gets the same value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from server.core import vocab
from server.core.fieldtypes import FIELD_TYPES, FieldParams
from worker.engines.rand import Rand

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
UUID_TYPE = pa.binary(16)


@dataclass(frozen=True, slots=True)
class Block:
    rows: npt.NDArray[np.int64]  # the rows' numbers in the dataset
    rand: Rand  # the field's draws, one counter per row
    locale: str
    unique: bool  # values must be distinct across the whole dataset (validation checked the domain)
    inputs: Mapping[str, pa.Array]  # the declared input fields' values for these rows

    @property
    def size(self) -> int:
        return len(self.rows)

    def pick(self, n: int, stream: int = 0) -> npt.NDArray[np.int64]:
        """Indexes into n things: random, or distinct across the dataset when the field is unique."""
        return self.rand.pick(n, unique=self.unique, stream=stream)

    def vocab(self, name: str) -> pa.Array:
        return vocab_array(self.locale, name)


_ARROW_OF_LOGICAL = {
    "integer": pa.int64(),
    "float": pa.float64(),
    "boolean": pa.bool_(),
    "uuid": UUID_TYPE,
    "text": pa.string(),
    "timestamp": TIMESTAMP_TYPE,
    "date": pa.date32(),
    "time": pa.time64("us"),
    "interval": pa.month_day_nano_interval(),
    "json": pa.json_(pa.string()),
}
_NUMERIC_RE = re.compile(r"numeric\((\d+), ?(\d+)\)")


def arrow_type_of(logical: str, pg_type: str) -> pa.DataType:
    """The Arrow type a generator makes for a column type (the contract between catalogue and encoder)."""
    if logical.endswith("[]"):
        return pa.list_(arrow_type_of(logical[:-2], pg_type.removesuffix("[]")))
    if logical == "timestamp" and pg_type == "timestamp without time zone":
        return pa.timestamp("us")  # wall-clock time: no zone
    if logical == "decimal":
        match = _NUMERIC_RE.fullmatch(pg_type)
        if match is None:
            raise ValueError(f"a decimal column needs numeric(p,s), not {pg_type!r}")
        return pa.decimal128(int(match[1]), int(match[2]))
    return _ARROW_OF_LOGICAL[logical]


@cache
def vocab_array(locale: str, name: str) -> pa.Array:
    return pa.array(vocab.load(locale, name).values, pa.string())


P = TypeVar("P", bound=FieldParams)
ColumnGenerator = Callable[[P, Block], pa.Array]
GENERATORS: dict[str, ColumnGenerator[Any]] = {}


def generator(name: str, params: type[P]) -> Callable[[ColumnGenerator[P]], ColumnGenerator[P]]:
    """Register the generator of the declared type `name`, whose params must be `params`."""
    if FIELD_TYPES[name].params is not params:
        raise TypeError(f"{name} is declared with {FIELD_TYPES[name].params.__name__}, not {params.__name__}")

    def register(fn: ColumnGenerator[P]) -> ColumnGenerator[P]:
        if name in GENERATORS:
            raise ValueError(f"generator {name!r} is registered twice")
        GENERATORS[name] = fn
        return fn

    return register


NULL_STREAM = 1 << 32  # far from the small stream numbers generators use


def make_values(
    type_name: str,
    params: FieldParams,
    block: Block,
    *,
    null_rate: float,
) -> pa.Array:
    """A field's values for a block, with its nulls drawn from their own stream.

    Used for top-level fields and nested ones (JSON values, array elements) alike,
    so a nested field is made exactly as the same field at the top level.
    """
    column = GENERATORS[type_name](params, block)
    if null_rate > 0 and len(column):
        column = with_nulls(column, block.rand.chance(null_rate, stream=NULL_STREAM))
    return column


def with_nulls(column: pa.Array, nulls: npt.NDArray[np.bool_]) -> pa.Array:
    """The column with NULL where `nulls` is true (also for extension types such as JSON, which if_else lacks)."""
    if isinstance(column.type, pa.BaseExtensionType):
        storage = pc.if_else(nulls, pa.scalar(None, column.type.storage_type), column.storage)
        return pa.ExtensionArray.from_storage(column.type, storage)
    return pc.if_else(nulls, pa.scalar(None, column.type), column)


def uuid_array(hi: npt.NDArray[np.uint64], lo: npt.NDArray[np.uint64]) -> pa.Array:
    """16-byte UUIDs from their two big-endian halves."""
    raw = np.empty((len(hi), 2), dtype=">u8")
    raw[:, 0], raw[:, 1] = hi, lo
    return pa.FixedSizeBinaryArray.from_buffers(UUID_TYPE, len(hi), [None, pa.py_buffer(raw)])


def join_parts(parts: pa.Array, offsets: npt.NDArray[np.int64], separator: str) -> pa.Array:
    """Join parts[offsets[i]:offsets[i+1]] with separator, for each i."""
    lists = pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), parts)
    return pc.binary_join(lists, separator)
