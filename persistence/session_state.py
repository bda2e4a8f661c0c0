"""The fenced session-state store: connectors' state, writable only by the current epoch.

Every write first passes the session's fence row: it succeeds when its epoch is
higher than the stored one (and raises the fence to it), or equal and from the same
owner. Anything else raises `StaleEpochError` and the whole transaction is rolled
back, so a zombie owner can never overwrite its successor. This is the last line of
defence against process pauses, clock jumps and bugs above it.

The fence check takes the fence row's lock until the transaction ends, so a writer
and its successor are totally ordered: either the old owner's transaction commits
before the new epoch reaches the fence, or it is rejected whole.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from persistence.db import Connection, Database
from protocol.errors import StaleEpochError, ValidationError

_FENCE_SQL = """
INSERT INTO session_fences AS f (session, epoch, owner) VALUES ($1, $2, $3)
ON CONFLICT (session) DO UPDATE
    SET epoch = EXCLUDED.epoch, owner = EXCLUDED.owner, updated_at = now()
    WHERE f.epoch < EXCLUDED.epoch OR (f.epoch = EXCLUDED.epoch AND f.owner = EXCLUDED.owner)
RETURNING epoch
"""


@dataclass(frozen=True, slots=True)
class ResetRequest:
    id: int
    requested_by: str


@dataclass(frozen=True, slots=True)
class Fence:
    session: str
    epoch: int
    owner: str


def _check_args(session: str, epoch: int, owner: str) -> None:
    if not session:
        raise ValidationError("session must not be empty")
    if not owner:
        raise ValidationError("owner must not be empty")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise ValidationError(f"epoch must be a positive integer, got {epoch!r}")


async def pass_fence(conn: Connection, session: str, epoch: int, owner: str) -> None:
    """Inside the caller's transaction: check and raise the fence, or raise StaleEpochError."""
    _check_args(session, epoch, owner)
    accepted = await conn.fetchval(_FENCE_SQL, session, epoch, owner)
    if accepted is None:
        current = await conn.fetchrow(
            "SELECT epoch, owner FROM session_fences WHERE session = $1", session
        )
        held = f"epoch {current['epoch']} by {current['owner']}" if current else "unknown"
        raise StaleEpochError(
            f"session={session} write with epoch {epoch} by {owner} rejected: fence is at {held}"
        )


class SessionStateStore:
    """Fenced reads and writes of per-session key/value state (values are JSON)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @asynccontextmanager
    async def fenced(self, session: str, epoch: int, owner: str) -> AsyncIterator[Connection]:
        """A transaction that has passed the fence; the caller adds its own rows.

        Everything written on the yielded connection commits together with the
        fence check, or not at all.
        """
        async with self._db.transaction() as conn:
            await pass_fence(conn, session, epoch, owner)
            yield conn

    async def claim(self, session: str, epoch: int, owner: str) -> None:
        """Raise the fence to `epoch` without writing state (a new owner's first act)."""
        async with self.fenced(session, epoch, owner):
            pass

    async def put(self, session: str, key: str, value: Any, epoch: int, owner: str) -> None:
        """Write one value; raises StaleEpochError (changing nothing) if fenced off."""
        async with self.fenced(session, epoch, owner) as conn:
            await put_in(conn, session, key, value, epoch)

    async def get(self, session: str, key: str) -> Any:
        """The stored value, or None."""
        async with self._db.connection() as conn:
            return await conn.fetchval(
                "SELECT value FROM session_state WHERE session = $1 AND key = $2", session, key
            )

    async def get_all(self, session: str) -> dict[str, Any]:
        rows = await self._db.fetch(
            "SELECT key, value FROM session_state WHERE session = $1", session
        )
        return {r["key"]: r["value"] for r in rows}

    async def fence(self, session: str) -> Fence | None:
        row = await self._db.fetchrow(
            "SELECT epoch, owner FROM session_fences WHERE session = $1", session
        )
        return Fence(session, int(row["epoch"]), str(row["owner"])) if row else None

    async def reset(self, session: str) -> None:
        """Forget a session's state (the admin "reset session" action); the fence stays."""
        await self._db.execute("DELETE FROM session_state WHERE session = $1", session)

    # Reset requests: the admin "reset" action for connectors that reset through their own
    # fenced writes (a running owner picks the request up; nothing is deleted under it).

    async def request_reset(self, session: str, requested_by: str) -> int:
        """Ask the session's owner (now, or the next one) to reset; returns the request id."""
        request_id: int = await self._db.fetchval(
            "INSERT INTO session_reset_requests (session, requested_by) VALUES ($1, $2) "
            "RETURNING id",
            session,
            requested_by,
        )
        return request_id

    async def pending_reset(self, session: str) -> ResetRequest | None:
        """The newest reset request not yet carried out, or None."""
        row = await self._db.fetchrow(
            "SELECT id, requested_by FROM session_reset_requests "
            "WHERE session = $1 AND done_at IS NULL ORDER BY id DESC LIMIT 1",
            session,
        )
        return ResetRequest(int(row["id"]), str(row["requested_by"])) if row else None


async def put_in(conn: Connection, session: str, key: str, value: Any, epoch: int) -> None:
    """Upsert a value on a connection that has already passed the fence."""
    if not key:
        raise ValidationError("key must not be empty")
    await conn.execute(
        """INSERT INTO session_state (session, key, value, epoch) VALUES ($1, $2, $3, $4)
           ON CONFLICT (session, key) DO UPDATE
               SET value = EXCLUDED.value, epoch = EXCLUDED.epoch, updated_at = now()""",
        session,
        key,
        value,
        epoch,
    )


async def complete_reset_in(conn: Connection, session: str, request_id: int, epoch: int) -> None:
    """Mark every reset request up to `request_id` as carried out (on a fenced connection)."""
    await conn.execute(
        "UPDATE session_reset_requests SET done_at = now(), done_epoch = $3 "
        "WHERE session = $1 AND id <= $2 AND done_at IS NULL",
        session,
        request_id,
        epoch,
    )
