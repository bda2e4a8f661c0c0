"""Versioned SQL migrations, applied exactly once even when several replicas start together.

Migrations are the files `persistence/migrations/NNNN_name.sql`, applied in number
order, each in its own transaction. A session-level advisory lock serialises
migrators: the second and third replica wait, then find nothing left to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources

from persistence.db import Database

log = logging.getLogger(__name__)

# An arbitrary constant shared by every raftorch migrator ("raftorch" in ASCII, truncated).
_ADVISORY_LOCK_KEY = 0x7261667430
_FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    """Every migration shipped with the package, in version order."""
    found: list[Migration] = []
    for entry in resources.files("persistence.migrations").iterdir():
        match = _FILE_RE.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migration versions must be 1..n without gaps, found {versions}")
    return found


def latest_version() -> int:
    return len(available_migrations())


async def current_version(db: Database) -> int:
    """The schema version of the database (0 when never migrated)."""
    async with db.connection() as conn:
        exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            return 0
        return int(await conn.fetchval("SELECT COALESCE(max(version), 0) FROM schema_migrations"))


async def migrate(db: Database) -> list[int]:
    """Bring the schema to the latest version; returns the versions this call applied."""
    migrations = available_migrations()
    applied: list[int] = []
    async with db.connection() as conn:
        await conn.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
            for migration in migrations:
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                        migration.version,
                        migration.name,
                    )
                applied.append(migration.version)
                log.info("migration applied version=%d name=%s", migration.version, migration.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_KEY)
    return applied
