"""Migrations: applied exactly once, even by three migrators starting together."""

from __future__ import annotations

import asyncio
import uuid

from persistence.db import Database
from persistence.migrate import available_migrations, current_version, latest_version, migrate
from tests.pgserver import PostgresServer


async def test_three_concurrent_migrators_apply_each_version_once(
    pg_server: PostgresServer,
) -> None:
    name = f"m_{uuid.uuid4().hex}"
    pg_server.create_database(name)
    dbs = [Database(pg_server.dsn(name)) for _ in range(3)]
    for db in dbs:
        await db.start()
    try:
        results = await asyncio.gather(*(migrate(db) for db in dbs))
        applied = sorted(v for result in results for v in result)
        assert applied == [m.version for m in available_migrations()]
        rows = await dbs[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [r["version"] for r in rows] == list(range(1, latest_version() + 1))
        assert await current_version(dbs[0]) == latest_version()
        # A later start finds nothing to do.
        assert await migrate(dbs[1]) == []
    finally:
        for db in dbs:
            await db.close()


async def test_fresh_database_reports_version_zero(pg_server: PostgresServer) -> None:
    name = f"m_{uuid.uuid4().hex}"
    pg_server.create_database(name)
    async with Database(pg_server.dsn(name)) as db:
        assert await current_version(db) == 0
