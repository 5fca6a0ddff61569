"""API keys: created, listed and revoked by operators (`datamill keys`), checked on every call that sends one.

A key reads `dmk_<id>_<secret>`: the id (32 hex digits) finds the row, and the
secret (43 base64url characters, 32 random bytes) is checked against its salted
hash in constant time. The tenant and role come from the row. A key is sent as
a bearer token, like a JWT: `authorization: Bearer dmk_...`.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from server.core.auth import TENANT_PATTERN, AuthError, Principal, Role

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import AsyncConnectionPool

PREFIX = "dmk_"
_KEY = re.compile(r"^dmk_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$")
MAX_NAME_CHARS = 200


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    id: str
    tenant: str
    role: str
    name: str
    created_at: datetime
    revoked_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "role": self.role,
            "name": self.name,
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def looks_like_api_key(token: str) -> bool:
    return token.startswith(PREFIX)


def _hash(salt: bytes, secret: str) -> bytes:
    return hmac.new(salt, secret.encode(), hashlib.sha256).digest()


def _info(row: Any) -> ApiKeyInfo:
    key_id, tenant, role, name, created_at, revoked_at = row
    return ApiKeyInfo(str(key_id).replace("-", ""), tenant, role, name, created_at, revoked_at)


_COLUMNS = "id, tenant, role, name, created_at, revoked_at"


def create_key(conn: psycopg.Connection[Any], *, tenant: str, role: str, name: str) -> tuple[str, ApiKeyInfo]:
    """A new key (the only time its secret is seen) and its record; ValueError for a bad tenant, role or name."""
    if not TENANT_PATTERN.fullmatch(tenant):
        raise ValueError(f"tenant must match {TENANT_PATTERN.pattern}")
    if role not in {r.label for r in Role}:
        raise ValueError("role must be viewer, editor or admin")
    if not 0 < len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise ValueError(f"name must be 1 to {MAX_NAME_CHARS} printable characters")
    key_id, secret, salt = uuid.uuid4(), secrets.token_urlsafe(32), secrets.token_bytes(16)
    row = conn.execute(
        f"INSERT INTO api_keys (id, tenant, role, name, salt, secret_hash) VALUES (%s, %s, %s, %s, %s, %s)"
        f" RETURNING {_COLUMNS}",
        (key_id, tenant, role, name, salt, _hash(salt, secret)),
    ).fetchone()
    return f"{PREFIX}{key_id.hex}_{secret}", _info(row)


def list_keys(conn: psycopg.Connection[Any], *, tenant: str | None = None) -> list[ApiKeyInfo]:
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM api_keys WHERE %(tenant)s::text IS NULL OR tenant = %(tenant)s"
        " ORDER BY created_at DESC, id",
        {"tenant": tenant},
    ).fetchall()
    return [_info(row) for row in rows]


def revoke_key(conn: psycopg.Connection[Any], key_id: str) -> ApiKeyInfo | None:
    """Revoke a key by id (idempotent); None if there is no such key."""
    try:
        parsed = uuid.UUID(hex=key_id)
    except ValueError:
        return None
    row = conn.execute(
        f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = %s RETURNING {_COLUMNS}", (parsed,)
    ).fetchone()
    return _info(row) if row else None


class ApiKeyVerifier:
    """Checks keys against the database: one indexed read per call, so a revocation counts at once."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    async def verify(self, token: str) -> Principal:
        match = _KEY.fullmatch(token)
        if match is None:
            raise AuthError("malformed API key")
        key_id, secret = uuid.UUID(hex=match.group(1)), match.group(2)
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT tenant, role, salt, secret_hash, revoked_at FROM api_keys WHERE id = %s", (key_id,)
            )
            row = await cur.fetchone()
        if row is None:
            _hash(b"\0" * 16, secret)  # the same work as for a known key
            raise AuthError("unknown API key")
        if not hmac.compare_digest(_hash(bytes(row["salt"]), secret), bytes(row["secret_hash"])):
            raise AuthError("API key secret does not match")
        if row["revoked_at"] is not None:
            raise AuthError("API key revoked")
        return Principal(subject=f"key:{key_id.hex}", tenant=row["tenant"], role=Role[row["role"].upper()])
