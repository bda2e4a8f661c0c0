"""The change stream the Portal follows: answers when what users see changed, not on the
renewal barriers that commit every heartbeat window, and on change-feed notifications."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from persistence.changefeed import Change
from raftorch.api.assignments import Signal as AppliedSignal
from raftorch.api.changes import CHANGE_STREAM, ChangesOut, add_change_routes
from raftorch.core.model import RegisterPod
from tests.component.test_admin_api import Harness, conforms, harness

SIGNAL = web.AppKey("test_applied", AppliedSignal)


def _routes(app: web.Application) -> None:
    applied = AppliedSignal()
    app[SIGNAL] = applied
    add_change_routes(app, applied)


@pytest.fixture
async def h(pg_dsn: str) -> AsyncIterator[Harness]:
    async with harness(pg_dsn, routes=_routes) as running:
        yield running


async def _poll(h: Harness, since: str, wait: int) -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    body = await h.ok("GET", f"/api/v1/changes?since={since}&wait_seconds={wait}")
    return body, time.monotonic() - started


def _register(h: Harness, pod: str) -> None:
    h.node.apply(RegisterPod(pod, f"inc-{pod}", "", frozenset({"fix"}), 10, ()))
    h.app[SIGNAL].fire()


async def test_first_call_answers_at_once_with_the_revision(h: Harness) -> None:
    body = await h.ok("GET", "/api/v1/changes")
    conforms(body, ChangesOut)
    assert body["changed"] is True and body["term"] == 1
    again = await h.ok("GET", f"/api/v1/changes?since={body['revision']}")
    assert (again["revision"], again["changed"]) == (body["revision"], False)


async def test_a_visible_raft_change_answers_the_long_poll(h: Harness) -> None:
    first = await h.ok("GET", "/api/v1/changes")
    waiting = asyncio.create_task(_poll(h, first["revision"], 20))
    await asyncio.sleep(0)  # let the poll start waiting
    _register(h, "pod-a")
    body, took = await asyncio.wait_for(waiting, 10)
    assert body["changed"] is True and body["revision"] != first["revision"]
    assert took < 20


async def test_an_entry_that_changes_nothing_visible_does_not(h: Harness) -> None:
    first = await h.ok("GET", "/api/v1/changes")
    waiting = asyncio.create_task(_poll(h, first["revision"], 1))
    await asyncio.sleep(0)
    h.node.apply()  # a renewal barrier: an applied entry with no commands
    h.app[SIGNAL].fire()
    body, took = await asyncio.wait_for(waiting, 10)
    assert (body["revision"], body["changed"]) == (first["revision"], False)
    assert took >= 0.9  # it waited out its time


async def test_feed_notifications_and_configuration_changes_answer_it(h: Harness) -> None:
    first = await h.ok("GET", "/api/v1/changes")
    waiting = asyncio.create_task(_poll(h, first["revision"], 20))
    await asyncio.sleep(0)
    h.app[CHANGE_STREAM].on_change(Change("events", "insert", "some-adapter"))
    body, _ = await asyncio.wait_for(waiting, 10)
    assert body["changed"] is True
    second = body["revision"]
    await h.ok("POST", "/api/v1/adapters",
               {"name": "a1", "connector": "tcp", "mode": "single", "config": {}})  # fmt: skip
    third = await h.ok("GET", f"/api/v1/changes?since={second}")
    assert third["changed"] is True


@pytest.mark.parametrize(
    "query", ["wait_seconds=31", "wait_seconds=-1", "wait_seconds=soon", "since=a&since=b", "x=1"]
)
async def test_bad_queries_are_refused(h: Harness, query: str) -> None:
    reply = await h.call("GET", f"/api/v1/changes?{query}")
    assert reply.status == 400 and reply.body["error"]["code"] == "invalid_input"


async def test_it_needs_a_token(h: Harness) -> None:
    assert (await h.call("GET", "/api/v1/changes", token=None)).status == 401
