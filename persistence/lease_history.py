"""Lease history: every grant and its end, and the highest epoch ever issued."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from persistence.db import Database


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    session: str
    pod_id: str
    epoch: int
    role: str
    granted_at: datetime
    ended_at: datetime | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class LeaseGrant:
    session: str
    pod_id: str
    epoch: int
    role: str = "ACTIVE"


class LeaseHistoryRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def record_grants(self, grants: list[LeaseGrant]) -> None:
        """Record grants in one statement (idempotent on session and epoch)."""
        if not grants:
            return
        await self._db.execute(
            """INSERT INTO lease_history (session, pod_id, epoch, role)
               SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[])
               ON CONFLICT (session, epoch) DO NOTHING""",
            [g.session for g in grants],
            [g.pod_id for g in grants],
            [g.epoch for g in grants],
            [g.role for g in grants],
        )

    async def record_end(self, session: str, epoch: int, reason: str) -> None:
        await self._db.execute(
            """UPDATE lease_history SET ended_at = now(), reason = $3
               WHERE session = $1 AND epoch = $2 AND ended_at IS NULL""",
            session,
            epoch,
            reason,
        )

    async def for_session(self, session: str) -> list[LeaseRecord]:
        rows = await self._db.fetch(
            """SELECT session, pod_id, epoch, role, granted_at, ended_at, reason
               FROM lease_history WHERE session = $1 ORDER BY epoch""",
            session,
        )
        return [LeaseRecord(**dict(r)) for r in rows]

    async def max_epoch(self) -> int:
        """The highest epoch recorded anywhere in PostgreSQL: grants and session fences.

        A new Raft leader raises its epoch floor above this before granting, so epochs
        never repeat, even after the Raft state is lost and the database restored.
        """
        value = await self._db.fetchval(
            """SELECT GREATEST(
                   (SELECT COALESCE(max(epoch), 0) FROM lease_history),
                   (SELECT COALESCE(max(epoch), 0) FROM session_fences))"""
        )
        return int(value)
