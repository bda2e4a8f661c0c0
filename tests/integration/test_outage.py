"""PostgreSQL going away mid-test: calls fail as "unavailable", then the same pool recovers."""

from __future__ import annotations

import asyncio
import time

import pytest

from persistence.adapters import AdapterRepository
from persistence.changefeed import RESYNC, ChangeFeed
from persistence.db import Database, PoolSettings
from persistence.migrate import migrate
from protocol.errors import UnavailableError
from protocol.values import DeploymentMode
from tests.pgserver import PostgresServer

FAST = PoolSettings(
    connect_timeout_seconds=1.0,
    connect_attempts=3,
    retry_backoff_initial_seconds=0.05,
    retry_backoff_max_seconds=0.2,
    command_timeout_seconds=2.0,
)


async def _wait_until_ok(db: Database, deadline_seconds: float) -> None:
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            await db.fetchval("SELECT 1")
            return
        except UnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_stopped_database_raises_unavailable_then_same_pool_recovers(
    pg_dedicated: PostgresServer,
) -> None:
    async with Database(pg_dedicated.dsn(), FAST) as db:
        await migrate(db)
        repo = AdapterRepository(db)
        await repo.create("before", "tcp-client", DeploymentMode.SINGLE, {})

        pg_dedicated.stop()
        with pytest.raises(UnavailableError):
            await repo.list_all()
        with pytest.raises(UnavailableError):
            await repo.create("during", "tcp-client", DeploymentMode.SINGLE, {})

        pg_dedicated.start()
        await _wait_until_ok(db, 10.0)
        await repo.create("after", "tcp-client", DeploymentMode.SINGLE, {})
        assert [a.name for a in await repo.list_all()] == ["after", "before"]


async def test_start_against_a_dead_server_fails_with_a_clear_error(
    pg_dedicated: PostgresServer,
) -> None:
    pg_dedicated.stop()
    db = Database(pg_dedicated.dsn(), FAST)
    with pytest.raises(UnavailableError) as err:
        await db.start()
    assert "cannot reach the database after 3 attempts" in err.value.message


async def test_change_feed_resyncs_after_database_restart(pg_dedicated: PostgresServer) -> None:
    async with Database(pg_dedicated.dsn(), FAST) as db:
        await migrate(db)
        repo = AdapterRepository(db)
        async with ChangeFeed(pg_dedicated.dsn(), FAST, check_interval_seconds=0.2) as feed:
            assert await asyncio.wait_for(feed.get(), 1.0) == RESYNC
            pg_dedicated.stop()
            pg_dedicated.start()
            # Lost notifications cannot be replayed: the feed must ask for a resync.
            assert await asyncio.wait_for(feed.get(), 15.0) == RESYNC
            await _wait_until_ok(db, 10.0)
            created = await repo.create("later", "tcp-client", DeploymentMode.SINGLE, {})
            change = await asyncio.wait_for(feed.get(), 1.0)
            assert (change.table, change.op, change.key) == ("adapters", "insert", created.id)
