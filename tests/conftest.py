"""Shared fixtures: a throwaway PostgreSQL (tests.pgserver) whose template carries the schema."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from persistence.db import Database
from persistence.migrate import migrate

if TYPE_CHECKING:  # imported by pytest as a plugin below; importing it here would pre-empt that
    from tests.pgserver import TemplateSetup

pytest_plugins = ["tests.pgserver"]


async def _migrate(dsn: str) -> None:
    async with Database(dsn) as db:
        await migrate(db)


@pytest.fixture(scope="session")
def pg_template_setup() -> TemplateSetup:
    """Every `pg_dsn` database starts at the latest schema version."""
    return _migrate
