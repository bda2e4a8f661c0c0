"""The Portal's files as every replica serves them: security headers, caching, no file
outside the shipped set, and sources that never turn strings into markup or code."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from raftorch.api.portal import CONTENT_SECURITY_POLICY, add_portal_routes, load_assets
from tests.component.test_admin_api import Harness, harness


@pytest.fixture
async def h(pg_dsn: str) -> AsyncIterator[Harness]:
    async with harness(pg_dsn, routes=add_portal_routes) as running:
        yield running


async def test_the_portal_is_served_at_the_root_with_a_strict_policy(h: Harness) -> None:
    reply = await h.call("GET", "/", token=None)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("text/html")
    policy = reply.headers["Content-Security-Policy"]
    assert policy == CONTENT_SECURITY_POLICY
    for rule in ("default-src 'none'", "script-src 'self'", "require-trusted-types-for 'script'"):
        assert rule in policy
    assert "unsafe" not in policy
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert b'<script type="module" src="/portal/app.js">' in reply.body


async def test_files_are_served_with_their_types_and_revalidated(h: Harness) -> None:
    script = await h.call("GET", "/portal/app.js", token=None)
    assert script.status == 200
    assert script.headers["Content-Type"].startswith("text/javascript")
    etag = script.headers["ETag"]
    again = await h.call("GET", "/portal/app.js", token=None, headers={"If-None-Match": etag})
    assert again.status == 304
    style = await h.call("GET", "/portal/portal.css", token=None)
    assert style.headers["Content-Type"].startswith("text/css")


@pytest.mark.parametrize("name", ["nope.js", "index.html", "..%2Fportal.py", "portal.css%00"])
async def test_nothing_else_is_served(h: Harness, name: str) -> None:
    reply = await h.call("GET", f"/portal/{name}", token=None)
    assert reply.status == 404
    assert reply.body["error"]["code"] == "not_found"


def test_every_module_import_resolves_to_a_shipped_file() -> None:
    assets = load_assets()
    for name, asset in assets.items():
        if not name.endswith(".js"):
            continue
        for target in re.findall(r'from "\./([^"]+)"', asset.body.decode()):
            assert target in assets, f"{name} imports {target}, which is not shipped"


def test_no_source_turns_a_string_into_markup_or_code() -> None:
    for name, asset in load_assets().items():
        text = asset.body.decode()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(",
                     "new Function", "setTimeout(\"", "javascript:"):  # fmt: skip
            assert sink not in text, f"{name} uses {sink}"
        if name.endswith(".html"):
            assert not re.search(r"<script(?![^>]*\bsrc=)", text), "inline script in " + name
            assert not re.search(r"<[^>]+\son[a-z]+\s*=", text), "inline handler in " + name
