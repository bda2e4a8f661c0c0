"""Repositories against the real schema: constraints, conflicts, hashing, ordering."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from persistence.adapters import AdapterChanges, AdapterRepository
from persistence.artifacts import ArtifactRepository
from persistence.db import Database
from persistence.events import EventRepository, NewEvent
from persistence.lease_history import LeaseGrant, LeaseHistoryRepository
from persistence.plugins import PluginRepository
from persistence.session_state import SessionStateStore
from persistence.tokens import Role, TokenRepository, hash_token
from protocol.errors import ConflictError, NotFoundError, ValidationError
from protocol.values import AdminState, DeploymentMode, EventCategory, EventLevel


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[Database]:
    async with Database(pg_dsn) as database:
        yield database


async def test_adapter_lifecycle(db: Database) -> None:
    repo = AdapterRepository(db)
    a = await repo.create("venue-a", "fix", DeploymentMode.ACTIVE_PASSIVE, {"host": "h"})
    assert a.admin_state is AdminState.DISABLED and a.revision == 1
    assert (await repo.get(a.id)) == a
    assert (await repo.get_by_name("venue-a")).id == a.id

    with pytest.raises(ConflictError, match="already exists"):
        await repo.create("venue-a", "fix", DeploymentMode.SINGLE, {})

    updated = await repo.update(a.id, AdapterChanges(config={"host": "h2"}), expected_revision=1)
    assert updated.config == {"host": "h2"} and updated.revision == 2
    with pytest.raises(ConflictError, match="revision"):
        await repo.update(a.id, AdapterChanges(config={}), expected_revision=1)

    [enabled] = await repo.set_admin_state([a.id], AdminState.ENABLED)
    assert enabled.admin_state is AdminState.ENABLED
    with pytest.raises(ConflictError, match="disabled before deletion"):
        await repo.delete(a.id)
    await repo.set_admin_state([a.id], AdminState.DISABLED)
    await repo.delete(a.id)
    with pytest.raises(NotFoundError):
        await repo.get(a.id)


async def test_adapter_bad_input_changes_nothing(db: Database) -> None:
    repo = AdapterRepository(db)
    with pytest.raises(ValidationError, match="adapter name"):
        await repo.create("bad name!", "fix", DeploymentMode.SINGLE, {})
    with pytest.raises(ValidationError, match="instances must be 1"):
        await repo.create("x", "fix", DeploymentMode.SINGLE, {}, instances=3)
    with pytest.raises(NotFoundError):
        await repo.get("not-a-uuid")
    a = await repo.create("ok", "fix", DeploymentMode.SCALE_OUT, {}, instances=3)
    b = await repo.create("ok2", "fix", DeploymentMode.SINGLE, {})
    # One unknown id in a bulk change: nothing changes.
    with pytest.raises(NotFoundError):
        await repo.set_admin_state(
            [a.id, "00000000-0000-0000-0000-000000000000"], AdminState.ENABLED
        )
    assert {x.admin_state for x in await repo.list_all()} == {AdminState.DISABLED}
    assert len(await repo.set_admin_state(None, AdminState.ENABLED)) == 2
    assert (await repo.get(b.id)).admin_state is AdminState.ENABLED


async def test_artifacts_are_versioned_and_protected_while_referenced(db: Database) -> None:
    artifacts = ArtifactRepository(db)
    v1 = await artifacts.put("FIX44", b"<v1/>", "application/xml")
    v2 = await artifacts.put("FIX44", b"<v2/>", "application/xml")
    assert (v1.version, v2.version) == (1, 2)
    assert v2.sha256 == hashlib.sha256(b"<v2/>").hexdigest()
    assert (await artifacts.get("FIX44")).content == b"<v2/>"
    assert (await artifacts.get("FIX44", 1)).content == b"<v1/>"
    with pytest.raises(NotFoundError):
        await artifacts.get("FIX44", 3)

    adapters = AdapterRepository(db)
    user = await adapters.create("v", "fix", DeploymentMode.SINGLE, {}, artifacts=["FIX44"])
    with pytest.raises(ConflictError, match="used by adapters: v"):
        await artifacts.delete("FIX44")
    assert len(await artifacts.list_all()) == 2
    await adapters.update(user.id, AdapterChanges(artifacts=[]))
    assert await artifacts.delete("FIX44") == 2
    with pytest.raises(NotFoundError):
        await artifacts.delete("FIX44")


async def test_tokens_are_stored_hashed(db: Database) -> None:
    tokens = TokenRepository(db)
    plain, record = await tokens.create("ci", Role.OPERATOR)
    stored = await db.fetch("SELECT * FROM api_tokens")
    assert len(stored) == 1
    row_text = " ".join(str(v) for v in stored[0].values())
    assert plain not in row_text
    assert stored[0]["token_sha256"] == hash_token(plain)
    verified = await tokens.verify(plain)
    assert verified is not None and verified.role is Role.OPERATOR and verified.id == record.id
    assert await tokens.verify(plain + "x") is None
    await tokens.revoke("ci")
    assert await tokens.verify(plain) is None


async def test_events_newest_first_and_dropped_for_deleted_adapters(db: Database) -> None:
    adapters = AdapterRepository(db)
    a = await adapters.create("a", "fix", DeploymentMode.SINGLE, {})
    gone = await adapters.create("gone", "fix", DeploymentMode.SINGLE, {})
    await adapters.delete(gone.id)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    events = EventRepository(db)
    stored = await events.append(
        [
            NewEvent(a.id, EventLevel.INFO, EventCategory.ACTION, "enabled", {"by": "x"}, t0),
            NewEvent(
                a.id, EventLevel.WARNING, EventCategory.SYSTEM, "expired", {}, t0 + timedelta(1)
            ),
            NewEvent(gone.id, EventLevel.INFO, EventCategory.ACTION, "lost", {}, t0),
        ]
    )
    assert stored == 2
    listed = await events.list_all(a.id)
    assert [e.description for e in listed] == ["expired", "enabled"]
    assert listed[1].details == {"by": "x"} and listed[1].time == t0
    assert [e.description for e in await events.list_all(a.id, before_id=listed[0].id)] == [
        "enabled"
    ]


async def test_max_epoch_covers_lease_history_and_fences(db: Database) -> None:
    history = LeaseHistoryRepository(db)
    assert await history.max_epoch() == 0
    await history.record_grants([LeaseGrant("s1", "pod-a", 3), LeaseGrant("s2", "pod-b", 7)])
    await history.record_grants([LeaseGrant("s1", "pod-a", 3)])  # idempotent
    await history.record_end("s1", 3, "expired")
    assert await history.max_epoch() == 7
    await SessionStateStore(db).claim("s9", 12, "pod-c")
    assert await history.max_epoch() == 12
    [record] = await history.for_session("s1")
    assert record.ended_at is not None and record.reason == "expired"


async def test_plugins_recorded_idempotently(db: Database) -> None:
    plugins = PluginRepository(db)
    first = await plugins.record("fix", "1.0", "adapter.connectors.fix:FixConnector")
    again = await plugins.record("fix", "1.0", "adapter.connectors.fix:FixConnector")
    assert first.first_seen == again.first_seen and again.last_seen >= first.last_seen
    assert [p.connector for p in await plugins.list_all()] == ["fix"]
