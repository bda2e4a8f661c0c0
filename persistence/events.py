"""The per-adapter event log: actions, connection changes and system events."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from persistence.changefeed import CHANNEL
from persistence.db import Database
from protocol.errors import ValidationError
from protocol.values import EventCategory, EventLevel


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event not yet stored. `time` is when it happened, which may be long before
    it is written (events wait in a buffer while the database is down)."""

    adapter_id: str | None
    level: EventLevel
    category: EventCategory
    description: str
    details: Mapping[str, Any] = field(default_factory=dict)
    time: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True, slots=True)
class EventRecord:
    id: int
    adapter_id: str | None
    time: datetime
    level: EventLevel
    category: EventCategory
    description: str
    details: dict[str, Any]


def _record(row: asyncpg.Record) -> EventRecord:
    return EventRecord(
        id=row["id"],
        adapter_id=row["adapter_id"],
        time=row["time"],
        level=EventLevel(row["level"]),
        category=EventCategory(row["category"]),
        description=row["description"],
        details=dict(row["details"]),
    )


class EventRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def append(self, events: Sequence[NewEvent]) -> int:
        """Store events in one transaction; events of adapters deleted meanwhile are dropped."""
        if not events:
            return 0
        for event in events:
            if not event.description:
                raise ValidationError("event description must not be empty")
        async with self._db.transaction() as conn:
            result = await conn.fetchval(
                """WITH input AS (
                       SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::text[],
                                            $4::text[], $5::text[], $6::jsonb[])
                           AS t(adapter_id, time, level, category, description, details))
                   , ins AS (
                       INSERT INTO events (adapter_id, time, level, category, description, details)
                       SELECT i.adapter_id, i.time, i.level, i.category, i.description, i.details
                       FROM input i
                       WHERE i.adapter_id IS NULL
                          OR EXISTS (SELECT 1 FROM adapters a WHERE a.id = i.adapter_id)
                       RETURNING 1)
                   SELECT count(*) FROM ins""",
                [e.adapter_id for e in events],
                [e.time for e in events],
                [e.level.value for e in events],
                [e.category.value for e in events],
                [e.description for e in events],
                [dict(e.details) for e in events],
            )
            # Tell the replicas (the Portal's live event log); sent at commit, one per adapter.
            await conn.execute(
                """SELECT pg_notify($1, json_build_object(
                       'table', 'events', 'op', 'insert', 'key', a)::text)
                   FROM (SELECT DISTINCT a FROM unnest($2::text[]) AS t(a)) AS d""",
                CHANNEL,
                sorted({e.adapter_id or "" for e in events}),
            )
        return int(result)

    async def list_all(
        self, adapter_id: str, *, limit: int = 100, before_id: int | None = None
    ) -> list[EventRecord]:
        """Newest first; page with `before_id` (the last id of the previous page)."""
        rows = await self._db.fetch(
            """SELECT id, adapter_id::text AS adapter_id, time, level, category, description,
                      details
               FROM events WHERE adapter_id = $1 AND ($2::bigint IS NULL OR id < $2)
               ORDER BY time DESC, id DESC LIMIT $3""",
            adapter_id,
            before_id,
            limit,
        )
        return [_record(r) for r in rows]
