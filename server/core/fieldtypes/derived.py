"""Fields computed from other fields: templates, arithmetic expressions, foreign keys.

A derived field names its inputs (`inputs`); validation checks that they
exist, form no cycle and have usable types, and the generator receives their
values for the same rows, nulls included.
"""

from __future__ import annotations

import ast
import re
import string
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Literal

from pydantic import Field

from server.core.fieldtypes.base import ColumnType, FieldParams, FieldType, IntParam, declare

NUMERIC_TYPES = frozenset({"integer", "float", "decimal"})
_PLACEHOLDER_RE = re.compile(r"[a-z_][a-z0-9_]*")


class TemplateParams(FieldParams):
    template: Annotated[
        str,
        Field(
            min_length=1,
            max_length=4096,
            description="text with {field} placeholders naming other fields, e.g. '{first}.{last}@{domain}';"
            " '{{' and '}}' are literal braces; a NULL input makes a NULL value",
        ),
    ]
    case: Literal["keep", "lower", "upper"] = Field("keep", description="change the case of the result")
    ascii: bool = Field(False, description="strip accents and drop other non-ASCII characters (for emails)")

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        try:
            parts = template_parts(self.template)
        except ValueError as exc:
            yield "template", str(exc)
            return
        if not any(name for _, name in parts):
            yield "template", "has no {field} placeholder; use choice for a constant"

    def inputs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for _, name in template_parts(self.template) if name))


def template_parts(template: str) -> list[tuple[str, str | None]]:
    """(literal text, placeholder name or None) pairs; raises ValueError naming the problem."""
    parts: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        if name is not None and not _PLACEHOLDER_RE.fullmatch(name):
            raise ValueError(f"placeholder {{{name}}} must name a field: [a-z_][a-z0-9_]*")
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} takes no format spec or conversion")
        parts.append((literal, name))
    return parts


_BINARY_OPS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%"}
EXPRESSION_FUNCTIONS = {
    "abs": 1,
    "round": 2,
    "floor": 1,
    "ceil": 1,
    "sqrt": 1,
    "log": 1,
    "exp": 1,
    "min": -1,
    "max": -1,
}


class ExpressionParams(FieldParams):
    expression: Annotated[
        str,
        Field(
            min_length=1,
            max_length=4096,
            description="arithmetic over numeric fields, e.g. 'price * quantity': + - * / // % ** (small integer"
            " powers), parentheses, numbers and abs, round(x, n), floor, ceil, sqrt, log, exp, min, max;"
            " a NULL input, a division by zero or a non-finite result makes a NULL value",
        ),
    ]
    result: Literal["float", "integer", "decimal"] = Field("float", description="the column's type")
    scale: Annotated[IntParam, Field(ge=0, le=18, description="decimal places of a decimal result")] = 2

    def problems(self, *, rows: int) -> Iterator[tuple[str, str]]:
        try:
            parse_expression(self.expression)
        except ValueError as exc:
            yield "expression", str(exc)

    def inputs(self) -> tuple[str, ...]:
        tree = parse_expression(self.expression)
        return tuple(dict.fromkeys(n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and _is_field(n)))

    def input_problems(self, input_types: Mapping[str, str]) -> Iterator[tuple[str, str]]:
        for name, logical in input_types.items():
            if logical not in NUMERIC_TYPES:
                yield "expression", f"field {name!r} is {logical}, not a number"

    def column_type(self) -> ColumnType:
        if self.result == "integer":
            return ColumnType("integer", "bigint")
        if self.result == "decimal":
            return ColumnType("decimal", f"numeric(38,{self.scale})")
        return ColumnType("float", "double precision")


def _is_field(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id not in EXPRESSION_FUNCTIONS


#: Deepest expression tree accepted: the worker evaluates it recursively.
MAX_EXPRESSION_DEPTH = 100


def parse_expression(text: str) -> ast.expr:
    """The expression's tree, after checking that it uses only what the evaluator supports."""
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"is not a valid expression: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ValueError(f"nests more than {MAX_EXPRESSION_DEPTH} levels deep") from None
    if _depth(tree) > MAX_EXPRESSION_DEPTH:
        raise ValueError(f"nests more than {MAX_EXPRESSION_DEPTH} levels deep (a+b+c counts one level per +)")
    for node in ast.walk(tree):
        _check_node(node)
    return tree


def _depth(tree: ast.AST) -> int:
    """The tree's depth in expression nodes, counted without recursion."""
    deepest, pending = 0, [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr))
    return deepest


def _check_node(node: ast.AST) -> None:
    match node:
        case ast.BinOp(op=ast.Pow(), right=right):
            if not (isinstance(right, ast.Constant) and type(right.value) is int and 0 <= right.value <= 16):
                raise ValueError("** takes a whole-number literal power from 0 to 16")
        case ast.BinOp(op=op) if type(op) not in _BINARY_OPS:
            raise ValueError(f"operator {type(op).__name__} is not supported")
        case ast.UnaryOp(op=op) if not isinstance(op, ast.USub | ast.UAdd):
            raise ValueError(f"operator {type(op).__name__} is not supported")
        case ast.Constant(value=value) if type(value) not in (int, float):
            raise ValueError(f"only numbers may appear as literals, not {value!r}")
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]) if name in EXPRESSION_FUNCTIONS:
            arity = EXPRESSION_FUNCTIONS[name]
            if name == "round" and len(args) not in (1, 2):
                raise ValueError("round takes 1 or 2 arguments")
            if (
                name == "round"
                and len(args) == 2
                and not (isinstance(args[1], ast.Constant) and type(args[1].value) is int)
            ):
                raise ValueError("round's second argument must be a whole-number literal")
            if arity == 1 and len(args) != 1:
                raise ValueError(f"{name} takes 1 argument")
            if arity == -1 and len(args) < 2:
                raise ValueError(f"{name} takes at least 2 arguments")
        case ast.Call():
            known = ", ".join(EXPRESSION_FUNCTIONS)
            raise ValueError(f"only these functions may be called: {known}")
        case ast.Name(id=name) if not _PLACEHOLDER_RE.fullmatch(name):
            raise ValueError(f"{name!r} is not a field name")
        case (
            ast.BinOp() | ast.UnaryOp() | ast.Constant() | ast.Name() | ast.Load()
            | ast.operator() | ast.unaryop()
        ):  # fmt: skip
            pass
        case _:
            raise ValueError(f"{type(node).__name__} is not supported in an expression")


class ForeignKeyParams(FieldParams):
    dataset: Annotated[str, Field(min_length=1, max_length=63, description="name of a ready generated dataset")]
    column: Annotated[str, Field(min_length=1, max_length=63, description="its column: unique and never NULL")]
    skew: Annotated[
        float, Field(ge=0.0, le=100.0, description="0: every key equally likely; higher: a few hot keys")
    ] = 0.0
    # Filled in by the server from the referenced dataset (never by a client):
    # what the worker needs to remake the referenced column's values.
    target: dict[str, Any] | None = Field(None, description="set by the server; leave out")

    def domain(self, locale: str) -> int | None:
        return None if self.target is None else int(self.target["rows"])

    def column_type(self) -> ColumnType | None:
        if self.target is None:
            return None
        column = self.target["column"]
        return ColumnType(column["type"], column["pg_type"])


declare(
    FieldType("template", "derived", "text combining other fields", TemplateParams, "text", "text"),
    FieldType("expression", "derived", "arithmetic over other fields", ExpressionParams, "float", "double precision"),
    FieldType(
        "foreign_key",
        "derived",
        "a key of another dataset's rows",
        ForeignKeyParams,
        "text",
        "text",
        supports_unique=True,
    ),
)
