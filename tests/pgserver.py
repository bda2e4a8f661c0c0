"""Throwaway PostgreSQL servers for the tests, and the pytest fixtures that hand them out.

`PostgresServer` (in `devtools.postgres`, shared with `raftorch demo`) runs a real
PostgreSQL from the binaries on PATH (`initdb`, `pg_ctl`) in a temporary directory, listening on
127.0.0.1 on a port from the OS that stays the same across stop/start. PostgreSQL refuses to run
as root, so under root every server process runs as the ``postgres`` system user.

Fixtures (load with ``pytest_plugins = ["tests.pgserver"]``):

- ``pg_server`` (session): one started server shared by the whole session.
- ``pg_template_setup`` (session): override it to return ``setup(template_dsn)``, sync or async;
  it runs once on the template database (e.g. to apply migrations) and must close every
  connection it opens. The default does nothing.
- ``pg_template`` (session): the name of that template database, created lazily.
- ``pg_dsn`` (function): the DSN of a fresh database cloned from the template, dropped after.
- ``pg_dedicated`` (function): a separate started server for tests that stop or restart it.

The session fixtures are synchronous: SQL runs on a private event loop in a worker thread, so
they never touch pytest-asyncio's function-scoped loops.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest

from devtools.postgres import (
    DEFAULT_SETTINGS,
    PostgresServer,
    StopMode,
    _quote_ident,
    run_coroutine,
)

TemplateSetup = Callable[[str], Awaitable[None] | None]

TEMPLATE_DATABASE = "raftorch_template"

__all__ = ["DEFAULT_SETTINGS", "PostgresServer", "StopMode", "TemplateSetup", "run_coroutine"]


async def _await(awaitable: Awaitable[None]) -> None:
    await awaitable


def create_template(server: PostgresServer, name: str, setup: TemplateSetup) -> None:
    """Create database ``name``, run ``setup(dsn)`` on it, then seal it as a template.

    An awaitable returned by ``setup`` runs on a private event loop in a worker thread. Once
    sealed nobody can connect to the template any more, so clones never find it busy.
    """
    server.create_database(name)
    result = setup(server.dsn(name))
    if result is not None:
        awaitable = result
        run_coroutine(lambda: _await(awaitable))
    server.execute(
        f"ALTER DATABASE {_quote_ident(name)} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false"
    )


def _no_template_setup(dsn: str) -> None:
    del dsn


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The session's shared PostgreSQL; never stop it (use ``pg_dedicated`` for that)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def pg_template_setup() -> TemplateSetup:
    """Override (session scope) to prepare the template, e.g. apply migrations."""
    return _no_template_setup


@pytest.fixture(scope="session")
def pg_template(pg_server: PostgresServer, pg_template_setup: TemplateSetup) -> str:
    """The name of the session's template database, created and set up on first use."""
    create_template(pg_server, TEMPLATE_DATABASE, pg_template_setup)
    return TEMPLATE_DATABASE


@pytest.fixture
def pg_dsn(pg_server: PostgresServer, pg_template: str) -> Iterator[str]:
    """The DSN of a fresh database cloned from the template; dropped after the test."""
    name = f"t_{uuid.uuid4().hex}"
    pg_server.create_database(name, template=pg_template)
    yield pg_server.dsn(name)
    pg_server.drop_database(name)


@pytest.fixture
def pg_dedicated() -> Iterator[PostgresServer]:
    """A started PostgreSQL of the test's own, to stop and start at will; removed after."""
    with PostgresServer() as server:
        yield server
