"""Bad input at the admin API's edge: a 4xx with the JSON error shape, and nothing changes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from protocol.errors import RaftorchError
from tests.component.test_admin_api import FIX_CONFIG, NEW, Harness, harness

LIMIT = 4096
MISSING = "00000000-0000-0000-0000-000000000000"
DEEP = b'{"config": ' + b"[" * 1500 + b"]" * 1500 + b"}"
BIG = json.dumps({**NEW, "config": {"blob": "x" * LIMIT}}).encode()


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


@pytest.fixture
async def seeded(pg_dsn: str) -> AsyncIterator[tuple[Harness, dict[str, str]]]:
    """A disabled adapter `a1` using artifact `dict`, and an enabled adapter `a2`."""
    async with harness(pg_dsn, api={"max_body_bytes": LIMIT}) as h:
        await h.ok("POST", "/api/v1/artifacts/dict", data=b"<fix/>")
        a1 = await h.ok("POST", "/api/v1/adapters", {**NEW, "name": "a1", "artifacts": ["dict"]})
        a2 = await h.ok("POST", "/api/v1/adapters", {**NEW, "name": "a2"})
        await h.ok("POST", f"/api/v1/adapters/{a2['id']}/enable")
        assert await h.ctx.events.flush_once()
        yield h, {"a1": a1["id"], "a2": a2["id"], "missing": MISSING}


A = "/api/v1/adapters"
ONE = "/api/v1/adapters/{a1}"
BAD_JSON = b'{"name": "x",'

# Cases grouped by route: each group runs on one fresh database; each case is checked alone.
# (case id, method, path, body, expected status, expected error code)
CASES: dict[str, list[tuple[str, str, str, bytes | None, int, str]]] = {
    "create": [
        ("malformed-json", "POST", A, BAD_JSON, 400, "invalid_input"),
        ("not-an-object", "POST", A, b"[1, 2]", 400, "invalid_input"),
        ("unknown-field", "POST", A, _json({**NEW, "colour": "red"}), 400, "invalid_input"),
        ("wrong-type", "POST", A, _json({**NEW, "instances": "2"}), 400, "invalid_input"),
        ("bad-mode", "POST", A, _json({**NEW, "mode": "cluster"}), 400, "invalid_input"),
        ("bad-name", "POST", A, _json({**NEW, "name": "no spaces"}), 400, "invalid_input"),
        ("missing-config", "POST", A, _json({"name": "n", "connector": "c", "mode": "single"}),
         400, "invalid_input"),
        ("instances-vs-mode", "POST", A, _json({**NEW, "instances": 2}), 400, "invalid_input"),
        ("unknown-artifact", "POST", A, _json({**NEW, "artifacts": ["nope"]}), 400,
         "invalid_input"),
        ("duplicate-name", "POST", A, _json({**NEW, "name": "a1"}), 409, "conflict"),
        ("nested-too-deeply", "POST", A, DEEP, 400, "invalid_input"),
        ("oversized", "POST", A, BIG, 413, "body_too_large"),
    ],
    "patch": [
        ("malformed-json", "PATCH", ONE, BAD_JSON, 400, "invalid_input"),
        ("unknown-field", "PATCH", ONE, _json({"name": "renamed"}), 400, "invalid_input"),
        ("wrong-type", "PATCH", ONE, _json({"config": "x"}), 400, "invalid_input"),
        ("nothing-to-change", "PATCH", ONE, _json({"revision": 1}), 400, "invalid_input"),
        ("instances-vs-mode", "PATCH", ONE, _json({"instances": 3}), 400, "invalid_input"),
        ("unknown-artifact", "PATCH", ONE, _json({"artifacts": ["nope"]}), 400, "invalid_input"),
        ("stale-revision", "PATCH", ONE, _json({"config": FIX_CONFIG, "revision": 5}), 409,
         "conflict"),
        ("oversized", "PATCH", ONE, BIG, 413, "body_too_large"),
        ("unknown-id", "PATCH", f"{A}/{{missing}}", _json({"config": {}}), 404, "not_found"),
        ("not-a-uuid", "PATCH", f"{A}/not-a-uuid", _json({"config": {}}), 404, "not_found"),
    ],
    "bulk": [
        ("malformed-json", "POST", f"{A}/bulk", BAD_JSON, 400, "invalid_input"),
        ("unknown-field", "POST", f"{A}/bulk", _json({"action": "enable", "all": True, "x": 1}),
         400, "invalid_input"),
        ("wrong-type", "POST", f"{A}/bulk", _json({"action": "enable", "ids": "{a1}"}), 400,
         "invalid_input"),
        ("bad-action", "POST", f"{A}/bulk", _json({"action": "start", "all": True}), 400,
         "invalid_input"),
        ("ids-and-all", "POST", f"{A}/bulk", _json({"action": "enable", "ids": [], "all": True}),
         400, "invalid_input"),
        ("neither", "POST", f"{A}/bulk", _json({"action": "enable"}), 400, "invalid_input"),
        ("unknown-id", "POST", f"{A}/bulk",
         _json({"action": "enable", "ids": ["{a1}", "{missing}"]}), 404, "not_found"),
        ("oversized", "POST", f"{A}/bulk", BIG, 413, "body_too_large"),
    ],
    "one-adapter": [
        ("get-unknown-id", "GET", f"{A}/{{missing}}", None, 404, "not_found"),
        ("enable-unknown-id", "POST", f"{A}/{{missing}}/enable", None, 404, "not_found"),
        ("enable-not-a-uuid", "POST", f"{A}/not-a-uuid/enable", None, 404, "not_found"),
        ("disable-unknown-id", "POST", f"{A}/{{missing}}/disable", None, 404, "not_found"),
        ("reset-unknown-id", "POST", f"{A}/{{missing}}/reset", None, 404, "not_found"),
        ("delete-unknown-id", "DELETE", f"{A}/{{missing}}", None, 404, "not_found"),
        ("delete-enabled", "DELETE", f"{A}/{{a2}}", None, 409, "conflict"),
    ],
    "events": [
        ("limit-zero", "GET", f"{ONE}/events?limit=0", None, 400, "invalid_input"),
        ("limit-too-high", "GET", f"{ONE}/events?limit=1001", None, 400, "invalid_input"),
        ("limit-text", "GET", f"{ONE}/events?limit=ten", None, 400, "invalid_input"),
        ("before-negative", "GET", f"{ONE}/events?before=-1", None, 400, "invalid_input"),
        ("given-twice", "GET", f"{ONE}/events?limit=1&limit=2", None, 400, "invalid_input"),
        ("unknown-param", "GET", f"{ONE}/events?page=2", None, 400, "invalid_input"),
        ("unknown-id", "GET", f"{A}/{{missing}}/events", None, 404, "not_found"),
    ],
    "artifacts": [
        ("oversized", "POST", "/api/v1/artifacts/dict", b"x" * (LIMIT + 1), 413,
         "body_too_large"),
        ("empty", "POST", "/api/v1/artifacts/dict", b"", 400, "invalid_input"),
        ("bad-name", "POST", "/api/v1/artifacts/no%20spaces", b"x", 400, "invalid_input"),
        ("version-text", "GET", "/api/v1/artifacts/dict?version=new", None, 400,
         "invalid_input"),
        ("version-zero", "GET", "/api/v1/artifacts/dict?version=0", None, 400, "invalid_input"),
        ("unknown-param", "GET", "/api/v1/artifacts/dict?v=1", None, 400, "invalid_input"),
        ("unknown-version", "GET", "/api/v1/artifacts/dict?version=9", None, 404, "not_found"),
        ("unknown-name", "GET", "/api/v1/artifacts/nope", None, 404, "not_found"),
        ("delete-unknown", "DELETE", "/api/v1/artifacts/nope", None, 404, "not_found"),
        ("delete-in-use", "DELETE", "/api/v1/artifacts/dict", None, 409, "conflict"),
    ],
    "routing": [
        ("unknown-route", "GET", "/api/v1/nothing-here", None, 404, "not_found"),
        ("wrong-method", "PUT", A, _json(NEW), 405, "method_not_allowed"),
    ],
}  # fmt: skip


async def _state(h: Harness) -> tuple[Any, Any]:
    return await h.ok("GET", "/api/v1/adapters"), await h.ok("GET", "/api/v1/artifacts")


@pytest.mark.parametrize("group", CASES)
async def test_bad_input_is_refused_with_json_and_changes_nothing(
    seeded: tuple[Harness, dict[str, str]], group: str
) -> None:
    h, ids = seeded
    before = await _state(h)
    for case_id, method, path, template, status, code in CASES[group]:
        where = f"{group}/{case_id}"
        data = template
        for key, value in ids.items():
            data = data and data.replace(f"{{{key}}}".encode(), value.encode())
        headers = {"Content-Type": "application/json"}
        reply = await h.call(method, path.format(**ids), data=data, headers=headers)

        assert reply.status == status, (where, reply.body)
        assert reply.headers["Content-Type"].startswith("application/json"), where
        assert list(reply.body) == ["error"], where
        assert sorted(reply.body["error"]) == ["code", "message"], where
        assert reply.body["error"]["code"] == code, (where, reply.body)
        assert reply.body["error"]["message"], where
        assert await _state(h) == before, f"{where} changed the state"
        assert len(h.ctx.events) == 0, f"{where} recorded an action"


async def test_a_chunked_body_over_the_limit_is_refused(
    seeded: tuple[Harness, dict[str, str]],
) -> None:
    h, _ = seeded
    before = await _state(h)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * (LIMIT // 2)

    reply = await h.call("POST", "/api/v1/artifacts/dict", data=chunks())
    assert reply.status == 413 and reply.body["error"]["code"] == "body_too_large"
    assert await _state(h) == before


async def test_405_names_the_allowed_methods(seeded: tuple[Harness, dict[str, str]]) -> None:
    h, _ = seeded
    reply = await h.call("PUT", "/api/v1/adapters")
    assert reply.status == 405
    assert set(reply.headers["Allow"].split(",")) == {"GET", "POST"}


async def test_unexpected_failures_are_500_without_internals(pg_dsn: str) -> None:
    async def crash(_request: web.Request) -> web.Response:
        raise RuntimeError("secret internals /etc/raftorch")

    async def database_oddity(_request: web.Request) -> web.Response:
        raise RaftorchError("database error XX000: secret internals")

    def routes(app: web.Application) -> None:
        app.router.add_get("/crash", crash)
        app.router.add_get("/oddity", database_oddity)

    async with harness(pg_dsn, routes=routes) as h:
        for path in ("/crash", "/oddity"):
            reply = await h.call("GET", path)
            assert reply.status == 500
            assert reply.body == {"error": {"code": "internal", "message": "internal error"}}


async def test_reads_before_the_configuration_is_loaded_are_503(pg_dsn: str) -> None:
    async with harness(pg_dsn, load_cache=False) as h:
        reply = await h.call("GET", "/api/v1/adapters")
        assert reply.status == 503
        assert reply.body["error"]["code"] == "unavailable"
        assert reply.headers["Retry-After"] == "1"
