"""Fixtures of the browser tests: one real cluster per module, Debian's Chromium, a page."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

from devtools.postgres import PostgresServer
from tests.browser.harness import CHROMIUM, CHROMIUM_ARGS, System, screenshot_dir, start_system
from tests.browser.portalpage import PortalPage
from tests.integration.processes import running_cluster


@pytest.fixture(scope="module")
def module_dsn(pg_server: PostgresServer, pg_template: str) -> Iterator[str]:
    """A migrated database shared by one module's tests (they share one cluster)."""
    name = f"b_{uuid.uuid4().hex}"
    pg_server.create_database(name, template=pg_template)
    yield pg_server.dsn(name)
    pg_server.drop_database(name)


@pytest.fixture(scope="module")
def system(module_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    root = tmp_path_factory.mktemp("portal-cluster")
    with running_cluster(root, module_dsn) as cluster:
        started = start_system(cluster, root)
        try:
            yield started
        finally:
            started.close()
            started.venue.shutdown()
            started.venue.server_close()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Module scope: Playwright's sync API runs an event loop of its own while it lives,
    and the asyncio tests that follow the browser tests need theirs."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def portal(
    chromium: Browser, system: System, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PortalPage]:
    """A fresh browser context on a follower's Portal, with the baseline settled."""
    system.wait_baseline()
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    context.set_default_timeout(10_000)
    page = PortalPage(context.new_page(), system.follower().api_url,
                      screenshot_dir(tmp_path_factory.mktemp("shots")))  # fmt: skip
    try:
        yield page
        page.check_clean()
    finally:
        context.close()
