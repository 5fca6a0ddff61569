"""Named SQL queries loaded from the `.sql` files beside this module."""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from psycopg import sql

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def _load(filename: str) -> dict[str, str]:
    text = resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    return {name: body.strip().rstrip(";") for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def query(name: str, filename: str = "queries.sql") -> sql.SQL:
    """The query called `name`, ready for `cursor.execute`."""
    return sql.SQL(_load(filename)[name])  # our own files, never user input
