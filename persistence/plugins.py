"""Plugins: the connector types pods have advertised, kept so operators can see them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from persistence.db import Database
from protocol.errors import ValidationError


@dataclass(frozen=True, slots=True)
class PluginRecord:
    connector: str
    version: str
    entry_point: str
    first_seen: datetime
    last_seen: datetime


class PluginRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record(self, connector: str, version: str, entry_point: str) -> PluginRecord:
        """Note that a pod offers `connector` at `version` (idempotent; refreshes last_seen)."""
        for field, value in (("connector", connector), ("version", version)):
            if not value or len(value) > 128:
                raise ValidationError(f"plugin {field} must be 1-128 characters, got {value!r}")
        row = await self._db.fetchrow(
            """INSERT INTO plugins (connector, version, entry_point) VALUES ($1, $2, $3)
               ON CONFLICT (connector, version) DO UPDATE
                   SET entry_point = EXCLUDED.entry_point, last_seen = now()
               RETURNING connector, version, entry_point, first_seen, last_seen""",
            connector,
            version,
            entry_point,
        )
        assert row is not None
        return PluginRecord(**dict(row))

    async def list_all(self) -> list[PluginRecord]:
        rows = await self._db.fetch(
            "SELECT connector, version, entry_point, first_seen, last_seen FROM plugins "
            "ORDER BY connector, version"
        )
        return [PluginRecord(**dict(r)) for r in rows]
