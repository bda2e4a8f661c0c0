"""The change feed delivers repository changes to a LISTEN subscriber within a second."""

from __future__ import annotations

import asyncio

from persistence.adapters import AdapterChanges, AdapterRepository
from persistence.artifacts import ArtifactRepository
from persistence.changefeed import RESYNC, ChangeFeed
from persistence.db import Database
from protocol.values import AdminState, DeploymentMode


async def test_changes_reach_a_subscriber_within_a_second(pg_dsn: str) -> None:
    async with Database(pg_dsn) as db, ChangeFeed(pg_dsn) as feed:
        assert await asyncio.wait_for(feed.get(), 1.0) == RESYNC
        repo = AdapterRepository(db)

        created = await repo.create("fix-venue-a", "fix", DeploymentMode.ACTIVE_PASSIVE, {})
        change = await asyncio.wait_for(feed.get(), 1.0)
        assert (change.table, change.op, change.key) == ("adapters", "insert", created.id)

        await repo.update(created.id, AdapterChanges(config={"host": "x"}))
        change = await asyncio.wait_for(feed.get(), 1.0)
        assert (change.op, change.key) == ("update", created.id)

        await repo.set_admin_state([created.id], AdminState.ENABLED)
        assert (await asyncio.wait_for(feed.get(), 1.0)).op == "update"
        await repo.set_admin_state([created.id], AdminState.DISABLED)
        assert (await asyncio.wait_for(feed.get(), 1.0)).op == "update"

        await repo.delete(created.id)
        change = await asyncio.wait_for(feed.get(), 1.0)
        assert (change.op, change.key) == ("delete", created.id)

        await ArtifactRepository(db).put("dict", b"<fix/>", "application/xml")
        change = await asyncio.wait_for(feed.get(), 1.0)
        assert (change.table, change.key) == ("artifacts", "dict")
