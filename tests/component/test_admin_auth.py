"""Admin API authentication and roles: bearer tokens, admin > operator > viewer, hashed storage."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from persistence.db import Database
from persistence.migrate import migrate
from persistence.tokens import Role
from raftorch.api.admin import ADMIN_ROUTES
from raftorch.api.edge import TokenCache
from raftorch.api.openapi import document_path
from tests.component.test_admin_api import ADMIN, NEW, Harness, harness
from tests.pgserver import PostgresServer

MISSING = "00000000-0000-0000-0000-000000000000"
RANK = {"viewer": 0, "operator": 1, "admin": 2}
ADMIN_PREFIX_TRICK = ADMIN[:-1]  # a prefix of the bootstrap token is no token


@pytest.fixture
async def h(pg_dsn: str) -> AsyncIterator[Harness]:
    async with harness(pg_dsn) as running:
        yield running


async def _token(h: Harness, name: str, role: Role) -> str:
    token, _ = await h.ctx.repos.tokens.create(name, role)
    return token


async def test_no_token_is_401_with_a_bearer_challenge(h: Harness) -> None:
    reply = await h.call("GET", "/api/v1/adapters", token=None)
    assert reply.status == 401
    assert reply.body["error"]["code"] == "unauthorized"
    assert reply.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "header",
    ["Basic YWRtaW46YWRtaW4=", "Bearer", "Bearer ", "Bearer two words", "Token abc", "x" * 20],
)
async def test_malformed_authorization_is_401(h: Harness, header: str) -> None:
    reply = await h.call("GET", "/api/v1/adapters", token=None, headers={"Authorization": header})
    assert reply.status == 401 and reply.body["error"]["code"] == "unauthorized"


async def test_unknown_and_overlong_tokens_are_401(h: Harness) -> None:
    for token in ("rt_not-a-token", "rt_" + "x" * 600, ADMIN_PREFIX_TRICK):
        reply = await h.call("GET", "/api/v1/adapters", token=token)
        assert reply.status == 401, token
        assert reply.body["error"]["code"] == "unauthorized"


async def test_viewer_reads_everything_but_cannot_act(h: Harness) -> None:
    adapter = await h.ok("POST", "/api/v1/adapters", NEW)
    viewer = await _token(h, "ops-dashboard", Role.VIEWER)
    one = f"/api/v1/adapters/{adapter['id']}"
    for path in ("/api/v1/adapters", one, f"{one}/events", "/api/v1/pods", "/api/v1/cluster",
                 "/api/v1/artifacts", "/api/v1/plugins"):  # fmt: skip
        assert (await h.call("GET", path, token=viewer)).status == 200, path

    refused = await h.call("POST", f"{one}/enable", token=viewer)
    assert refused.status == 403
    assert refused.body["error"]["code"] == "forbidden"
    assert "viewer" in refused.body["error"]["message"]
    assert (await h.ok("GET", one))["admin_state"] == "DISABLED"


async def test_operator_acts_but_cannot_configure(h: Harness) -> None:
    adapter = await h.ok("POST", "/api/v1/adapters", NEW)
    operator = await _token(h, "on-call", Role.OPERATOR)
    one = f"/api/v1/adapters/{adapter['id']}"
    assert (await h.call("POST", f"{one}/enable", token=operator)).status == 202
    assert (await h.call("POST", f"{one}/disable", token=operator)).status == 202
    assert (await h.call("POST", f"{one}/reset", token=operator)).status == 202
    bulk = {"action": "enable", "all": True}
    assert (await h.call("POST", "/api/v1/adapters/bulk", bulk, token=operator)).status == 202
    await h.ok("POST", f"{one}/disable")

    for method, path, body in [
        ("POST", "/api/v1/adapters", {**NEW, "name": "second"}),
        ("PATCH", one, {"config": {}}),
        ("DELETE", one, None),
    ]:
        reply = await h.call(method, path, body, token=operator)
        assert reply.status == 403, (method, path)
        assert reply.body["error"]["code"] == "forbidden"
    upload = await h.call("POST", "/api/v1/artifacts/x", data=b"x", token=operator)
    assert upload.status == 403
    assert [a["name"] for a in (await h.ok("GET", "/api/v1/adapters"))["items"]] == ["fix-lse"]
    assert (await h.ok("GET", "/api/v1/artifacts"))["items"] == []


async def test_every_route_enforces_its_documented_role(h: Harness) -> None:
    tokens = {
        "viewer": await _token(h, "v", Role.VIEWER),
        "operator": await _token(h, "o", Role.OPERATOR),
        "admin": await _token(h, "a", Role.ADMIN),
    }
    for spec in ADMIN_ROUTES:
        path = re.sub(r"{id}", MISSING, document_path(spec.path)).replace("{name}", "missing")
        for role, token in tokens.items():
            reply = await h.call(spec.method, path, token=token)
            if RANK[role] < RANK[spec.role]:
                assert reply.status == 403, (spec.method, spec.path, role, reply.status)
            else:
                assert reply.status not in (401, 403), (spec.method, spec.path, role)


async def test_tokens_are_stored_hashed_never_in_plain_text(h: Harness) -> None:
    plain = [await _token(h, f"t{i}", role) for i, role in enumerate(Role)]
    for token in plain:
        assert (await h.call("GET", "/api/v1/adapters", token=token)).status == 200
    rows = await h.ctx.db.fetch("SELECT t::text AS row_text FROM api_tokens t")
    assert len(rows) == len(plain)
    for token in plain:
        assert not any(token in r["row_text"] for r in rows)
        assert not any(token.removeprefix("rt_") in r["row_text"] for r in rows)


async def test_a_revoked_token_stops_working_when_its_cache_entry_expires(pg_dsn: str) -> None:
    now = [0.0]
    cache = TokenCache(30.0, clock=lambda: now[0])
    async with harness(pg_dsn, token_cache=cache) as h:
        token = await _token(h, "temp", Role.VIEWER)
        assert (await h.call("GET", "/api/v1/pods", token=token)).status == 200
        await h.ctx.repos.tokens.revoke("temp")
        now[0] = 29.0
        assert (await h.call("GET", "/api/v1/pods", token=token)).status == 200
        now[0] = 30.0
        assert (await h.call("GET", "/api/v1/pods", token=token)).status == 401


async def test_known_tokens_keep_reading_while_postgresql_is_down(
    pg_dedicated: PostgresServer,
) -> None:
    dsn = pg_dedicated.dsn()
    async with Database(dsn) as db:
        await migrate(db)
    async with harness(dsn) as h:
        adapter = await h.ok("POST", "/api/v1/adapters", NEW)
        known = await _token(h, "known", Role.OPERATOR)
        fresh = await _token(h, "fresh", Role.VIEWER)
        assert (await h.call("GET", "/api/v1/pods", token=known)).status == 200

        pg_dedicated.stop()
        listed = await h.call("GET", "/api/v1/adapters", token=known)
        assert listed.status == 200 and listed.body["items"] == [adapter]
        assert (await h.call("GET", "/api/v1/cluster")).status == 200  # bootstrap token

        unchecked = await h.call("GET", "/api/v1/adapters", token=fresh)
        assert unchecked.status == 503
        assert unchecked.body["error"]["code"] == "unavailable"
        assert unchecked.headers["Retry-After"] == "1"
        write = await h.call("POST", f"/api/v1/adapters/{adapter['id']}/enable", token=known)
        assert write.status == 503 and write.headers["Retry-After"] == "1"
        pg_dedicated.start()
