"""The change feed delivers repository changes to a LISTEN subscriber within a second."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from persistence.adapters import AdapterChanges, AdapterRecord, AdapterRepository
from persistence.artifacts import ArtifactRepository
from persistence.changefeed import RESYNC, ChangeFeed
from persistence.db import Database, PoolSettings
from protocol.values import AdminState, DeploymentMode
from raftorch.config.cache import ConfigCache


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


async def _until(cache: ConfigCache, condition: Callable[[], bool]) -> None:
    """Wait (at most 10 s) for `condition`, looked at again whenever the cache changes."""
    async with asyncio.timeout(10):
        while not condition():
            cache.changed.clear()
            if not condition():
                await cache.changed.wait()


class CountingRepository:
    """The cache's repository, counting the queries it makes for single adapters."""

    def __init__(self, repo: AdapterRepository) -> None:
        self._repo = repo
        self.queries = 0

    async def list_all(self) -> list[AdapterRecord]:
        return await self._repo.list_all()

    async def get(self, adapter_id: str) -> AdapterRecord:
        self.queries += 1
        return await self._repo.get(adapter_id)

    async def get_many(self, adapter_ids: list[str]) -> list[AdapterRecord]:
        self.queries += 1
        return await self._repo.get_many(adapter_ids)


async def test_a_bulk_change_reaches_the_cache_in_a_few_queries(pg_dsn: str) -> None:
    """Enabling many adapters in one call notifies one change per adapter, all at once.
    Fetched one by one they were a round trip each on every replica, and as many wake-ups
    of the leader loop, while heartbeats waited (docs/performance.md, "Enabling 100,000
    at once"); the cache applies the changes that arrived together in one query."""
    async with Database(pg_dsn) as db:
        repo = AdapterRepository(db)
        ids = [
            (await repo.create(f"bulk-{i:03d}", "tcp-client", DeploymentMode.SCALE_OUT, {})).id
            for i in range(200)
        ]
        cache = ConfigCache(db, pg_dsn, PoolSettings(), resync_interval_seconds=300.0)
        counting = CountingRepository(cache._repo)
        cache._repo = counting  # type: ignore[assignment]
        following = asyncio.create_task(cache.run())
        try:
            await _until(cache, lambda: cache.loaded)
            await repo.set_admin_state(ids, AdminState.ENABLED)
            await _until(cache, lambda: all(cache.specs()[i].enabled for i in ids))
            assert counting.queries <= 10, counting.queries  # one per adapter: 200
        finally:
            following.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await following
