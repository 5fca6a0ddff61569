"""Generators of the derived types: template, expression, foreign_key."""

from __future__ import annotations

import ast
import json
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from server.core.fieldtypes.derived import (
    ExpressionParams,
    ForeignKeyParams,
    TemplateParams,
    parse_expression,
    template_parts,
)
from server.core.schema import SchemaSpec
from worker.engines import rand as rnd
from worker.engines.rand import Rand, derive_key
from worker.engines.types.base import UUID_TYPE, Block, generator
from worker.engines.types.core import round_half_even

_HEX_PAIRS = np.array([[ord(c) for c in f"{i:02x}"] for i in range(256)], dtype=np.uint8)
_UUID_LAYOUT = [0, 1, 2, 3, None, 4, 5, None, 6, 7, None, 8, 9, None, 10, 11, 12, 13, 14, 15]  # None: a dash


def as_text(column: pa.Array) -> pa.Array:
    """A column as strings: UUIDs in their 8-4-4-4-12 form, JSON as its text, the rest by Arrow's cast."""
    if column.type == UUID_TYPE:
        return uuid_text(column)
    if isinstance(column.type, pa.ExtensionType):
        return as_text(column.storage)
    if pa.types.is_string(column.type):
        return column
    return pc.cast(column, pa.string())


def uuid_text(column: pa.Array) -> pa.Array:
    count = len(column)
    raw = np.frombuffer(column.buffers()[1], dtype=np.uint8, count=(column.offset + count) * 16)
    raw = raw[column.offset * 16 :].reshape(count, 16)
    out = np.empty((count, 36), dtype=np.uint8)
    position = 0
    for byte in _UUID_LAYOUT:
        if byte is None:
            out[:, position] = ord("-")
            position += 1
        else:
            out[:, position : position + 2] = _HEX_PAIRS[raw[:, byte]]
            position += 2
    offsets = np.arange(0, 36 * (count + 1), 36, dtype=np.int32)
    validity = column.buffers()[0] if column.null_count and column.offset == 0 else None
    text = pa.Array.from_buffers(pa.string(), count, [validity, pa.py_buffer(offsets), pa.py_buffer(out)])
    if column.null_count and validity is None:
        text = pc.if_else(pc.is_valid(column), text, pa.scalar(None, pa.string()))
    return text


@generator("template", TemplateParams)
def _template(params: TemplateParams, block: Block) -> pa.Array:
    pieces: list[pa.Array | str] = []
    for literal, name in template_parts(params.template):
        if literal:
            pieces.append(literal)
        if name:
            pieces.append(as_text(block.inputs[name]))
    arrays = [p if isinstance(p, pa.Array) else pa.scalar(p, pa.string()) for p in pieces]
    text = pc.binary_join_element_wise(*arrays, "", null_handling="emit_null")
    if params.ascii:
        text = pc.replace_substring_regex(pc.utf8_normalize(text, "NFKD"), r"[^\x00-\x7F]", "")
    if params.case == "lower":
        text = pc.utf8_lower(text)
    elif params.case == "upper":
        text = pc.utf8_upper(text)
    return text


# -- expression -------------------------------------------------------------------

_INT64_LIMIT = 2.0**63
Value = tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]  # values (int64 or float64), and where they are valid


@generator("expression", ExpressionParams)
def _expression(params: ExpressionParams, block: Block) -> pa.Array:
    values, valid = _Evaluator(block).eval(parse_expression(params.expression))
    values = np.broadcast_to(values, (block.size,))
    valid = np.broadcast_to(valid, (block.size,))
    if values.dtype.kind == "f":
        valid = valid & np.isfinite(values)
    if params.result == "float":
        return pa.array(values.astype(np.float64), mask=~valid)
    if params.result == "integer":
        if values.dtype.kind == "f":
            valid = valid & (np.abs(values) < _INT64_LIMIT)
            values = np.rint(np.where(valid, values, 0.0)).astype(np.int64)
        return pa.array(values, mask=~valid)
    units = np.rint(np.where(valid, values.astype(np.float64) * 10.0**params.scale, 0.0))
    valid = valid & (np.abs(units) < _INT64_LIMIT)
    return decimal_from_units(np.where(valid, units, 0.0).astype(np.int64), params.scale, valid)


def decimal_from_units(units: npt.NDArray[np.int64], scale: int, valid: npt.NDArray[np.bool_]) -> pa.Array:
    """decimal128(38, scale) values units * 10**-scale, exactly (two's complement words)."""
    words = np.empty((len(units), 2), dtype=np.int64)
    words[:, 0], words[:, 1] = units, units >> 63
    validity = None if valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(pa.decimal128(38, scale), len(units), [validity, pa.py_buffer(words)])


class _Evaluator:
    """Evaluates a checked expression tree over whole columns, tracking validity."""

    def __init__(self, block: Block) -> None:
        self._block = block

    def eval(self, node: ast.expr) -> Value:
        match node:
            case ast.Constant(value=value):
                return np.asarray(value, dtype=np.int64 if type(value) is int else np.float64), np.asarray(True)
            case ast.Name(id=name):
                return _numeric(self._block.inputs[name])
            case ast.UnaryOp(op=op, operand=operand):
                values, valid = self.eval(operand)
                return (-values if isinstance(op, ast.USub) else values), valid
            case ast.BinOp(left=left, op=ast.Pow(), right=ast.Constant(value=int(power))):
                values, valid = self.eval(left)
                result = np.ones_like(values)
                for _ in range(power):
                    result, ok = _arith(ast.Mult(), (result, valid), (values, valid))
                    valid = valid & ok
                return result, valid
            case ast.BinOp(left=left, op=op, right=right):
                a, b = self.eval(left), self.eval(right)
                values, ok = _arith(op, a, b)
                return values, a[1] & b[1] & ok
            case ast.Call(func=ast.Name(id=name), args=args):
                return self._call(name, args)
        raise ValueError(f"unsupported expression node {type(node).__name__}")  # validation prevents this

    def _call(self, name: str, args: list[ast.expr]) -> Value:
        if name == "round":
            values, valid = self.eval(args[0])
            digits = args[1].value if len(args) == 2 and isinstance(args[1], ast.Constant) else 0
            if values.dtype.kind == "i" or not isinstance(digits, int):
                return values, valid
            return (round_half_even(values, digits) if 0 <= digits <= 15 else values), valid
        if name in ("min", "max"):
            combine = np.minimum if name == "min" else np.maximum
            values, valid = self.eval(args[0])
            for arg in args[1:]:
                other, other_valid = self.eval(arg)
                values, valid = combine(values, other), valid & other_valid
            return values, valid
        values, valid = self.eval(args[0])
        unary: dict[str, Callable[[Any], Any]] = {
            "abs": np.abs,
            "floor": np.floor,
            "ceil": np.ceil,
            "sqrt": lambda v: np.sqrt(np.where(v >= 0, v, np.nan)),
            "log": lambda v: rnd.log(np.where(v > 0, v, np.nan)),
            "exp": rnd.exp,
        }
        if name in ("abs",) and values.dtype.kind == "i":
            return np.abs(values), valid & (values != np.iinfo(np.int64).min)
        floats = values.astype(np.float64)
        return unary[name](floats), valid


def _numeric(column: pa.Array) -> Value:
    valid = np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=np.bool_)
    kind = column.type
    if pa.types.is_integer(kind):
        return np.asarray(pc.fill_null(column, 0).to_numpy(), dtype=np.int64), valid
    if pa.types.is_boolean(kind):
        return np.asarray(pc.fill_null(column, False).to_numpy(zero_copy_only=False), dtype=np.int64), valid
    if pa.types.is_decimal(kind):
        column = pc.cast(column, pa.float64())
    return np.asarray(pc.fill_null(column, 0.0).to_numpy(), dtype=np.float64), valid


def _arith(op: ast.operator, a: Value, b: Value) -> tuple[npt.NDArray[Any], npt.NDArray[np.bool_]]:
    """The operation, and where its result is valid (no overflow, no division by zero)."""
    x, y = a[0], b[0]
    ints = x.dtype.kind == "i" and y.dtype.kind == "i"
    ok = np.asarray(True)
    with np.errstate(all="ignore"):
        if isinstance(op, ast.Div):
            return x.astype(np.float64) / y.astype(np.float64), ok
        if isinstance(op, ast.FloorDiv | ast.Mod):
            nonzero = y != 0
            safe = np.where(nonzero, y, 1)
            result = np.floor_divide(x, safe) if isinstance(op, ast.FloorDiv) else np.mod(x, safe)
            return result, nonzero
        combine = _ADDITIVE[type(op)]
        if not ints:
            return combine(x.astype(np.float64), y.astype(np.float64)), ok
        # An int64 result is exact unless it wrapped: compare with the float result's magnitude.
        approx = combine(x.astype(np.float64), y.astype(np.float64))
        return combine(x, y), np.abs(approx) < 2.0**62 * 1.99


_ADDITIVE: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: np.add,
    ast.Sub: np.subtract,
    ast.Mult: np.multiply,
}


# -- foreign_key --------------------------------------------------------------------


@generator("foreign_key", ForeignKeyParams)
def _foreign_key(params: ForeignKeyParams, block: Block) -> pa.Array:
    from worker.engines.generate import generate_columns  # noqa: PLC0415  # generate imports this module

    target = params.target
    if target is None:
        raise ValueError("foreign_key generated before the server resolved its target")
    rows = int(target["rows"])
    if block.unique:
        picks = block.rand.permutation(rows)
    elif params.skew == 0:
        picks = block.rand.below(rows)
    else:
        # u ** (1 + skew) piles up near 0; a fixed permutation then scatters the
        # hot keys over the referenced rows instead of favouring its first rows.
        skewed = rnd.exp(rnd.log(block.rand.open_uniform()) * (1.0 + params.skew))
        ranks = np.minimum((skewed * rows).astype(np.int64), rows - 1)
        picks = Rand(derive_key(block.rand.key, "hot"), ranks.astype(np.uint64)).permutation(rows)
    spec = _target_spec(json.dumps(target["schema"], sort_keys=True))
    return generate_columns(spec, picks, [target["field"]])[target["field"]]


@lru_cache(maxsize=32)
def _target_spec(schema_json: str) -> SchemaSpec:
    return SchemaSpec.from_json(json.loads(schema_json))
