"""A follower's relay to the leader ends as soon as the follower learns of another leader.

Found by the chaos campaign (`partition` mix, docs/reliability.md bug 8): pods' heartbeat
attempts sat in followers' relays to a cut-off leader while a new leader had already taken
office, and the pods ran out of attempts before their leases ran out. A real HTTP server on
127.0.0.1 plays the old leader that never answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from protocol.errors import UnavailableError
from protocol.pod import LEADER_HEADER
from raftorch.api.forwarding import Forwarder
from raftorch.raft.node import RaftStatus

STATUS = RaftStatus("r1", "r0", 3, False, 10, 10, True)


class OldLeader:
    """The leader a relay goes to: it hangs (cut off) or answers 200."""

    def __init__(self) -> None:
        self.hang = True
        self.reached = asyncio.Event()
        self.url = ""

    async def handle(self, _request: web.Request) -> web.Response:
        self.reached.set()
        if self.hang:
            await asyncio.Event().wait()  # cancelled when the relay gives up
        return web.json_response({"renewed": True})


@pytest.fixture
async def leader() -> AsyncIterator[OldLeader]:
    old = OldLeader()
    app = web.Application()
    app.router.add_post("/pod/v1/heartbeat", old.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    old.url = f"http://127.0.0.1:{port}"
    yield old
    await runner.cleanup()


def _snapshot(url: str) -> Any:
    return SimpleNamespace(replicas={"r0": SimpleNamespace(api_url=url)})


def _request() -> web.Request:
    return make_mocked_request("POST", "/pod/v1/heartbeat", headers={"Authorization": "x"})


async def test_a_relay_to_a_leader_that_lost_office_ends_at_once(leader: OldLeader) -> None:
    known = {"leader": "r0"}
    forwarder = Forwarder(timeout_seconds=30.0, leader_now=lambda: known["leader"])
    await forwarder.start()
    try:
        relay = asyncio.create_task(
            forwarder.forward(_request(), b"{}", _snapshot(leader.url), STATUS)
        )
        await asyncio.wait_for(leader.reached.wait(), 10.0)
        known["leader"] = "r2"  # this replica hears of the new leader
        changed_at = time.monotonic()
        with pytest.raises(UnavailableError, match="leader changed"):
            await asyncio.wait_for(relay, 10.0)
        # Well within a heartbeat attempt, far from the 30 s relay timeout.
        assert time.monotonic() - changed_at < 1.0
    finally:
        await forwarder.close()


async def test_a_relay_to_a_leader_still_in_office_waits_for_its_answer(
    leader: OldLeader,
) -> None:
    forwarder = Forwarder(timeout_seconds=30.0, leader_now=lambda: "r0")
    await forwarder.start()
    try:
        relay = asyncio.create_task(
            forwarder.forward(_request(), b"{}", _snapshot(leader.url), STATUS)
        )
        await asyncio.wait_for(leader.reached.wait(), 10.0)
        # Several leader checks pass while the leader works on the answer: nothing ends it.
        await asyncio.wait({relay}, timeout=0.3)
        assert not relay.done()
        leader.hang = False
        leader.reached.clear()
        answer = await asyncio.wait_for(
            forwarder.forward(_request(), b"{}", _snapshot(leader.url), STATUS), 10.0
        )
        assert answer.status == 200
        assert answer.headers[LEADER_HEADER] == leader.url
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
    finally:
        await forwarder.close()
