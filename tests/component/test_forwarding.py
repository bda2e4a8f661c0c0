"""A follower's relay to the leader: it ends as soon as the follower learns of another
leader, and a call that finds no leader able to take it waits for one.

Found by the chaos campaign (`partition` mix, docs/reliability.md bug 8): pods' heartbeat
attempts sat in followers' relays to a cut-off leader while a new leader had already taken
office, and the pods ran out of attempts before their leases ran out.

Found with the leader-failover bench (docs/performance.md, "The leader kill's second"):
refused at once, every pod asked again every retry interval, round all the replicas,
during the election it was waiting for; with 1,000 pods that load delayed the first
renewal by a second and most pods' leases lapsed.

Real HTTP on 127.0.0.1 plays the leaders: one that hangs or answers, and a dead one whose
port refuses connections.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from protocol.errors import UnavailableError
from protocol.pod import FORWARDED_HEADER, LEADER_HEADER
from raftorch.api.forwarding import Changes, Forwarder
from raftorch.raft.bridge import NotLeaderError
from raftorch.raft.node import RaftStatus

STATUS = RaftStatus("r1", "r0", 3, False, 10, 10, True)
AWAITING = 3.0  # long, so that "relayed when the leader came" has a wide margin


class Node:
    """What replica r1 knows: who leads (r1 itself, another one, or nobody)."""

    def __init__(self, urls: dict[str, str]) -> None:
        self.leader: str | None = None
        self.urls = urls

    def leader_id(self) -> str | None:
        return self.leader

    def status(self) -> RaftStatus:
        return RaftStatus("r1", self.leader, 3, self.leader == "r1", 10, 10, True)

    def snapshot(self) -> Any:
        return SimpleNamespace(
            replicas={k: SimpleNamespace(api_url=u) for k, u in self.urls.items()}
        )


class OldLeader:
    """The leader a relay goes to: it hangs (cut off) or answers 200; counts the calls."""

    def __init__(self) -> None:
        self.hang = True
        self.reached = asyncio.Event()
        self.calls = 0
        self.url = ""

    async def handle(self, _request: web.Request) -> web.Response:
        self.calls += 1
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


def _dead_url() -> str:
    """A loopback URL nothing listens on: a killed leader's."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def _request(*, forwarded: bool = False, closed: dict[str, bool] | None = None) -> web.Request:
    headers = {"Authorization": "x", **({FORWARDED_HEADER: "1"} if forwarded else {})}
    state = closed if closed is not None else {"closed": False}
    transport = SimpleNamespace(is_closing=lambda: state["closed"], get_extra_info=lambda _k: None)
    return make_mocked_request("POST", "/pod/v1/heartbeat", headers=headers, transport=transport)


async def _forwarder(node: Node, awaiting: float = AWAITING) -> Forwarder:
    forwarder = Forwarder(
        timeout_seconds=30.0, leader_now=node.leader_id, awaiting_seconds=awaiting
    )
    await forwarder.start()
    return forwarder


async def _still_waiting(call: asyncio.Task[Any]) -> None:
    """Several of the follower's checks pass and the call is still kept."""
    await asyncio.wait({call}, timeout=0.2)
    assert not call.done()


async def test_a_call_that_finds_no_leader_waits_and_goes_to_the_new_one(leader: OldLeader) -> None:
    leader.hang = False
    node = Node({"r2": leader.url})
    forwarder = await _forwarder(node)
    try:
        call = asyncio.create_task(forwarder.route(_request(), b"{}", node))
        await _still_waiting(call)
        node.leader = "r2"  # elected; this follower hears of it
        known_at = time.monotonic()
        answer = await asyncio.wait_for(call, AWAITING)
        assert answer is not None and answer.status == 200
        assert answer.headers[LEADER_HEADER] == leader.url
        assert time.monotonic() - known_at < AWAITING / 2  # relayed on the news, not later
    finally:
        await forwarder.close()


async def test_a_call_to_a_leader_that_refuses_connections_waits_for_the_next_one(
    leader: OldLeader,
) -> None:
    leader.hang = False
    node = Node({"r0": _dead_url(), "r2": leader.url})
    node.leader = "r0"  # killed; the followers have not noticed yet
    forwarder = await _forwarder(node)
    try:
        call = asyncio.create_task(forwarder.route(_request(), b"{}", node))
        await _still_waiting(call)
        node.leader = None  # noticed: an election runs
        await _still_waiting(call)
        node.leader = "r2"
        answer = await asyncio.wait_for(call, AWAITING)
        assert answer is not None and answer.status == 200
        assert leader.calls == 1
    finally:
        await forwarder.close()


async def test_with_no_leader_for_the_whole_wait_the_call_is_refused_after_it() -> None:
    node = Node({})
    forwarder = await _forwarder(node, awaiting=0.3)
    try:
        began = time.monotonic()
        with pytest.raises(NotLeaderError, match="no leader is known"):
            await asyncio.wait_for(forwarder.route(_request(), b"{}", node), 5.0)
        assert 0.25 <= time.monotonic() - began < 2.0
    finally:
        await forwarder.close()


async def test_a_replica_elected_while_a_call_waits_has_the_pod_ask_again() -> None:
    """Its body was read for relaying: the pod's next attempt is served in full."""
    node = Node({})
    forwarder = await _forwarder(node)
    try:
        call = asyncio.create_task(forwarder.route(_request(), b"{}", node))
        await _still_waiting(call)
        node.leader = "r1"
        with pytest.raises(NotLeaderError, match="just become the leader"):
            await asyncio.wait_for(call, AWAITING)
    finally:
        await forwarder.close()


async def test_a_forwarded_call_that_finds_no_leader_is_refused_at_once() -> None:
    """The follower that relayed it waits (and relays once more) if anyone does."""
    node = Node({})
    forwarder = await _forwarder(node)
    try:
        with pytest.raises(NotLeaderError, match="was forwarded here"):
            await asyncio.wait_for(forwarder.route(_request(forwarded=True), b"{}", node), 0.5)
    finally:
        await forwarder.close()


async def test_a_call_the_pod_gave_up_while_it_waited_is_not_relayed(leader: OldLeader) -> None:
    leader.hang = False
    node = Node({"r2": leader.url})
    forwarder = await _forwarder(node)
    closed = {"closed": False}
    try:
        call = asyncio.create_task(forwarder.route(_request(closed=closed), b"{}", node))
        await _still_waiting(call)
        closed["closed"] = True  # another attempt of the pod's was answered
        node.leader = "r2"
        with pytest.raises(NotLeaderError):
            await asyncio.wait_for(call, AWAITING)
        assert leader.calls == 0
    finally:
        await forwarder.close()


async def test_a_thousand_waiting_calls_are_watched_by_one_poller() -> None:
    """Each waiter reads the value when it starts and when woken; only one task polls."""
    reads = 0
    value = "r0"

    def leader_now() -> str:
        nonlocal reads
        reads += 1
        return value

    changes = Changes(leader_now, time.monotonic)
    deadline = time.monotonic() + AWAITING
    waiting = [asyncio.create_task(changes.after("r0", deadline)) for _ in range(1000)]
    await asyncio.wait(waiting, timeout=0.3)  # about fifteen polls
    assert not any(task.done() for task in waiting)
    assert reads < 1000 + 100
    value = "r2"
    assert all(await asyncio.wait_for(asyncio.gather(*waiting), AWAITING))
    assert reads < 2 * 1000 + 100
