"""Versioned SQL migrations, applied in order under an advisory lock.

Files are `migrations/NNNN_name.sql`; each runs in its own transaction together
with its row in `schema_migrations`, so a crash leaves either all or none of it.
The advisory lock makes concurrent starts (several server replicas, the
migrate Job) safe: one applies, the others wait and then find nothing to do.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from importlib import resources

import psycopg
import structlog

log = structlog.get_logger(__name__)

# Any constant works; it only has to be the same for every datamill process.
MIGRATION_LOCK_ID = 0x6461_7461_6D69_6C6C % (2**63)
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("server.core.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration versions must be 1..n without gaps, found {versions}")
    return found


async def apply_migrations(conninfo: str) -> list[int]:
    """Apply the migrations not yet applied; return the versions applied now."""
    applied_now: list[int] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for migration in load_migrations():
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql.encode())
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                log.info("migration_applied", version=migration.version, name=migration.name)
                applied_now.append(migration.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    return applied_now


def migrate_command(database_url: str | None) -> int:
    """`datamill migrate`: apply migrations to DATAMILL_DATABASE_URL (or the given URL)."""
    from server.core.logging import configure_logging  # noqa: PLC0415  # only the CLI path needs it
    from server.core.settings import load_settings  # noqa: PLC0415

    url = database_url or load_settings().database_url
    configure_logging("info", "json")
    applied = asyncio.run(apply_migrations(url))
    log.info("migrations_done", applied=applied)
    return 0
