"""Token management through the admin API: admin only, the secret shown once, bad input
refused, and a revocation dropping the token from this replica's cache at once."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from persistence.tokens import Role
from raftorch.api.tokens import TokenCreated, TokenList, WhoAmI
from tests.component.test_admin_api import ADMIN, Harness, conforms, harness


@pytest.fixture
async def h(pg_dsn: str) -> AsyncIterator[Harness]:
    async with harness(pg_dsn) as running:
        yield running


async def _count(h: Harness) -> int:
    return len((await h.ok("GET", "/api/v1/tokens"))["items"])


async def test_admin_creates_a_token_shown_once_and_stored_hashed(h: Harness, pg_dsn: str) -> None:
    created = await h.call("POST", "/api/v1/tokens", {"name": "ops-dashboard", "role": "viewer"})
    assert created.status == 201
    assert created.headers["Cache-Control"] == "no-store"
    conforms(created.body, TokenCreated)
    secret = created.body["token"]
    assert (created.body["name"], created.body["role"]) == ("ops-dashboard", "viewer")

    who = await h.ok("GET", "/api/v1/whoami", token=secret)
    conforms(who, WhoAmI)
    assert who == {"name": "ops-dashboard", "role": "viewer"}

    listed = await h.ok("GET", "/api/v1/tokens")
    conforms(listed, TokenList)
    [item] = listed["items"]
    assert item["id"] == created.body["id"] and item["revoked_at"] is None
    assert "token" not in item and secret not in json.dumps(listed)

    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch("SELECT * FROM api_tokens")
    finally:
        await conn.close()
    assert [r["token_sha256"] for r in rows] == [hashlib.sha256(secret.encode()).hexdigest()]
    assert secret not in repr([dict(r) for r in rows])


async def test_only_admins_manage_tokens_and_everyone_may_ask_who_they_are(h: Harness) -> None:
    for role in (Role.VIEWER, Role.OPERATOR):
        secret, record = await h.ctx.repos.tokens.create(f"a-{role.value}", role)
        for method, path, body in (
            ("POST", "/api/v1/tokens", {"name": "escalate", "role": "admin"}),
            ("GET", "/api/v1/tokens", None),
            ("DELETE", f"/api/v1/tokens/{record.id}", None),
        ):
            refused = await h.call(method, path, body, token=secret)
            assert refused.status == 403, (role, method, path)
            assert refused.body["error"]["code"] == "forbidden"
        assert (await h.ok("GET", "/api/v1/whoami", token=secret))["role"] == role.value
    assert (await h.call("GET", "/api/v1/tokens", token=None)).status == 401
    names = {t["name"] for t in (await h.ok("GET", "/api/v1/tokens"))["items"]}
    assert names == {"a-viewer", "a-operator"}  # nothing was created or revoked
    assert await h.ok("GET", "/api/v1/whoami") == {"name": "bootstrap", "role": "admin"}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"name": "x", "role": "root"}, 400, "role"),
        ({"name": "<script>", "role": "viewer"}, 400, "name"),
        ({"name": "x", "role": "viewer", "token": "mine"}, 400, "token"),
        ({"role": "viewer"}, 400, "name"),
        ({"name": "taken", "role": "viewer"}, 409, "already exists"),
    ],
)
async def test_bad_create_requests_are_refused_and_change_nothing(
    h: Harness, body: dict[str, str], status: int, words: str
) -> None:
    await h.ok("POST", "/api/v1/tokens", {"name": "taken", "role": "admin"})
    refused = await h.call("POST", "/api/v1/tokens", body)
    assert refused.status == status, refused.body
    assert words in refused.body["error"]["message"]
    assert await _count(h) == 1


async def test_revoke_refuses_the_token_at_once_and_twice_is_404(h: Harness) -> None:
    made = await h.ok("POST", "/api/v1/tokens", {"name": "on-call", "role": "operator"})
    assert (await h.call("GET", "/api/v1/adapters", token=made["token"])).status == 200  # cached
    assert (await h.call("DELETE", f"/api/v1/tokens/{made['id']}")).status == 204
    refused = await h.call("GET", "/api/v1/adapters", token=made["token"])
    assert refused.status == 401
    [item] = (await h.ok("GET", "/api/v1/tokens"))["items"]
    assert item["revoked_at"] is not None
    again = await h.call("DELETE", f"/api/v1/tokens/{made['id']}")
    assert again.status == 404 and again.body["error"]["code"] == "not_found"
    for bad in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        assert (await h.call("DELETE", f"/api/v1/tokens/{bad}")).status == 404
    recreated = await h.call("POST", "/api/v1/tokens", {"name": "on-call", "role": "viewer"})
    assert recreated.status == 409  # names stay taken: the event log refers to them


async def test_the_bootstrap_token_is_not_a_stored_token(h: Harness) -> None:
    assert (await h.ok("GET", "/api/v1/tokens"))["items"] == []
    assert (await h.ok("GET", "/api/v1/whoami", token=ADMIN))["name"] == "bootstrap"
