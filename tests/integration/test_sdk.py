"""The connector SDK's context: artifacts pinned at start, fenced state bound to the epoch."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from adapter.sdk import FencedState, SessionContext, SessionInfo, SessionStatus
from persistence.artifacts import ArtifactRepository
from persistence.db import Database
from persistence.session_state import SessionStateStore
from protocol.errors import NotFoundError, StaleEpochError
from protocol.values import EventCategory, EventLevel


def _context(db: Database, epoch: int, pod: str, recorded: list[Any]) -> SessionContext:
    info = SessionInfo("a1/0", "a1", epoch, pod, "demo", {}, ("dict",))

    def emit(adapter: str, level: EventLevel, category: EventCategory, text: str,
             details: Mapping[str, Any]) -> None:  # fmt: skip
        recorded.append((adapter, level, category, text))

    def report(slot: str, status: SessionStatus, detail: str) -> None:
        recorded.append((slot, status, detail))

    state = FencedState(SessionStateStore(db), info)
    return SessionContext(info, db, state, ArtifactRepository(db), emit, report)


async def test_artifacts_stay_at_the_version_pinned_at_start(pg_dsn: str) -> None:
    async with Database(pg_dsn) as db:
        artifacts = ArtifactRepository(db)
        await artifacts.put("dict", b"<v1/>", "application/xml")
        context = _context(db, 1, "pod-a", [])
        await context.pin_artifacts()
        await artifacts.put("dict", b"<v2/>", "application/xml")
        assert await context.artifact("dict") == b"<v1/>"
        with pytest.raises(NotFoundError):
            await context.artifact("not-referenced")
        restarted = _context(db, 2, "pod-a", [])
        await restarted.pin_artifacts()
        assert await restarted.artifact("dict") == b"<v2/>"


async def test_state_is_bound_to_the_epoch_and_events_and_status_are_forwarded(
    pg_dsn: str,
) -> None:
    async with Database(pg_dsn) as db:
        recorded: list[Any] = []
        old = _context(db, 1, "pod-a", recorded)
        await old.state.claim()
        await old.state.put("seq", 41)
        new = _context(db, 2, "pod-b", recorded)
        await new.state.claim()
        with pytest.raises(StaleEpochError):
            await old.state.put("seq", 42)
        async with new.state.transaction() as tx:
            await tx.put("seq", 43)
        assert await new.state.get("seq") == 43
        old.event("hello", level=EventLevel.WARNING)
        new.report(SessionStatus.ACTIVE)
        assert ("a1", EventLevel.WARNING, EventCategory.CONNECTION, "hello") in recorded
        assert ("a1/0", SessionStatus.ACTIVE, "") in recorded
