"""Opaque keyset page tokens: the (created_at, id) of the last item of a page."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

from server.core.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


def page_size(requested: int, *, field: str = "page_size") -> int:
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise InvalidArgument.single(field, f"must be between 0 and {MAX_PAGE_SIZE}")
    return requested or DEFAULT_PAGE_SIZE


def encode_token(created_at: datetime, item_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(item_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str, *, field: str = "page_token") -> tuple[datetime, uuid.UUID] | None:
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        created, item_id = json.loads(base64.urlsafe_b64decode(padded))
        return datetime.fromisoformat(created), uuid.UUID(item_id)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument.single(field, "is not a token returned by a previous page") from exc
