"""The pod agent against stand-in replicas: hung replicas, answers out of order or late."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

import msgspec
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from adapter.agent import REGISTER_RETRY_SECONDS, Agent
from adapter.client import ATTEMPTS_PER_REPLICA, PodClient
from adapter.config import AgentConfig
from adapter.metrics import PodMetrics
from protocol.codec import JSON
from protocol.pod import (
    HEDGE_HEADER,
    Assignment,
    AssignmentsReply,
    HeartbeatReply,
    RegisterReply,
)
from protocol.secret import Secret

TTL = 3.0


async def _hanging_server() -> tuple[asyncio.Server, int, list[asyncio.StreamWriter]]:
    """Accepts connections and never answers: a paused leader, as a pod sees it."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], held


async def _close(hanging: list[tuple[asyncio.Server, int, list[asyncio.StreamWriter]]]) -> None:
    for server, _, held in hanging:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def _serving(
    heartbeat: Callable[[web.Request], Awaitable[web.Response]],
) -> tuple[web.AppRunner, str]:
    """A stand-in replica on loopback answering heartbeats with `heartbeat`; its URL."""
    app = web.Application()
    app.router.add_post("/pod/v1/heartbeat", heartbeat)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


def _offline_agent(clock: Callable[[], float] = time.monotonic) -> Agent:
    """An agent whose replica and database are unreachable (its logic alone is tested)."""
    config = AgentConfig(
        pod_id="pod-1",
        orchestrators=("http://127.0.0.1:1",),
        bootstrap_token=Secret("t"),
        database_dsn=Secret("postgresql://nobody@127.0.0.1:1/none"),
    )
    return Agent(config, {}, PodMetrics(CollectorRegistry()), clock=clock)


def _replica() -> web.Application:
    """A stand-in that answers with the real wire types (so it cannot drift from them)."""

    async def register(_request: web.Request) -> web.Response:
        reply = RegisterReply(pod_id="pod-1", credential="c", lease_ttl_seconds=TTL,
                              heartbeat_interval_seconds=TTL / 3, term=1, leader=None)  # fmt: skip
        return web.Response(body=msgspec.json.encode(reply), status=201, content_type=JSON)

    async def heartbeat(_request: web.Request) -> web.Response:
        reply = HeartbeatReply(term=1, leader=None, lease_ttl_seconds=TTL, version="1",
                               revision=1, assignments=[], stop=[])  # fmt: skip
        return web.Response(body=msgspec.json.encode(reply), content_type=JSON)

    app = web.Application()
    app.router.add_post("/pod/v1/register", register)
    app.router.add_post("/pod/v1/heartbeat", heartbeat)
    return app


async def test_a_hanging_replica_does_not_use_up_the_lease(tmp_path: Path) -> None:
    server, hanging_port, held = await _hanging_server()
    runner = web.AppRunner(_replica())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    good_port = runner.addresses[0][1]
    config = AgentConfig(
        pod_id="pod-1",
        orchestrators=(f"http://127.0.0.1:{good_port}", f"http://127.0.0.1:{hanging_port}"),
        bootstrap_token=Secret("t"),
        database_dsn=Secret("postgresql://nobody@127.0.0.1:1/none"),
        audit_file=str(tmp_path / "pod.audit"),
        follow_leader=False,
    )
    agent = Agent(config, {}, PodMetrics(CollectorRegistry()))
    await agent.start()
    try:
        assert await agent.register()
        # The hanging replica is now the one tried first (as a leader that just froze).
        agent._urls.insert(0, agent._urls.pop())
        loop = asyncio.get_running_loop()
        sent = loop.time()
        await agent.heartbeat()
        took = loop.time() - sent
        assert agent.last_heartbeat_ok
        # Acknowledged through the other replica within half an interval of trying the
        # hung one, so the lease (TTL - margin past the send time) is extended, not lost.
        assert took < TTL / 3, f"heartbeat took {took:.2f}s"
        assert agent.lease_remaining() > TTL - config.safety_margin_seconds - TTL / 3
        assert held, "the hanging replica was tried first"
        trail = (tmp_path / "pod.audit").read_text().splitlines()
        kinds = [json.loads(line)["kind"] for line in trail]
        assert kinds == ["registered", "lease"]
    finally:
        await agent.close()
        await runner.cleanup()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_assignments_read_from_older_state_are_not_applied() -> None:
    """A heartbeat reply computed just before a grant can arrive after the long-poll reply
    that carried the grant; it must not stop the session the newer reply started."""
    agent = _offline_agent()
    applied: list[tuple[list[str], bool]] = []

    def record(assignments: list[Assignment], *, may_stop: bool) -> None:
        applied.append(([a.slot for a in assignments], may_stop))

    agent._apply = record  # type: ignore[method-assign]
    slot = Assignment(slot="s/0", adapter_id="s", role="ACTIVE", epoch=3, connector="c",
                      config={}, artifacts=[])  # fmt: skip
    granted = AssignmentsReply(version="b", revision=12, term=1, leader=None, assignments=[slot])
    before = HeartbeatReply(term=1, leader=None, lease_ttl_seconds=TTL, version="a",
                            revision=11, assignments=[], stop=[])  # fmt: skip
    agent._apply_newer(granted, may_stop=False)
    agent._apply_newer(before, may_stop=True)
    assert applied == [(["s/0"], False)]
    assert (agent.version, agent.revision) == ("b", 12)
    same = HeartbeatReply(term=1, leader=None, lease_ttl_seconds=TTL, version="b",
                          revision=12, assignments=[slot], stop=[])  # fmt: skip
    agent._apply_newer(same, may_stop=True)
    assert applied[-1] == (["s/0"], True)


async def test_replicas_that_hold_attempts_leave_room_for_the_one_that_answers() -> None:
    """Bug 8 in docs/reliability.md: a leader cut off from the others holds heartbeats
    until it steps down. Two such replicas must not take every attempt the pod may have
    open: the third, which answers 503 until it has a leader, is tried again and again
    and its first 200 wins."""
    hanging = [await _hanging_server() for _ in range(2)]
    opens_at = asyncio.get_running_loop().time() + 1.0
    tried = 0

    async def heartbeat(_request: web.Request) -> web.Response:
        nonlocal tried
        tried += 1
        if asyncio.get_running_loop().time() < opens_at:
            return web.Response(status=503)
        return web.Response(body=b"{}", content_type=JSON)

    runner, answering = await _serving(heartbeat)
    urls = [f"http://127.0.0.1:{port}" for _, port, _ in hanging]
    client = PodClient((*urls, answering), follow_leader=False)
    await client.start()
    try:
        won = await client.hedged_post("/pod/v1/heartbeat", {}, "c", budget=2.5, hedge=0.1)
        assert won is not None and won[1][0] == 200, (
            f"no answer; the answering replica was tried {tried} times"
        )
        for _, _, held in hanging:  # each hung replica holds at most its share
            assert 1 <= len(held) <= ATTEMPTS_PER_REPLICA
    finally:
        await client.close()
        await runner.cleanup()
        await _close(hanging)


async def test_hedging_against_replicas_that_all_hang_does_not_spin() -> None:
    """Every replica holding its attempts: the pod waits for one to end, it does not
    loop on the CPU (which starves its own watchdog, bug 8)."""
    hanging = [await _hanging_server() for _ in range(3)]
    client = PodClient(tuple(f"http://127.0.0.1:{port}" for _, port, _ in hanging),
                       follow_leader=False)  # fmt: skip
    await client.start()
    try:
        cpu = time.process_time()
        assert (
            await client.hedged_post("/pod/v1/heartbeat", {}, "c", budget=1.5, hedge=0.05) is None
        )
        used = time.process_time() - cpu
        # A tight loop would burn most of the 1.5 s; the waits themselves cost milliseconds.
        assert used < 0.5, f"hedging used {used:.2f}s of CPU in 1.5s"
    finally:
        await client.close()
        await _close(hanging)


def test_a_renewal_acknowledged_after_the_deadline_fences_what_was_running() -> None:
    """Bug 8: the answer came after the lease ran out and before the watchdog ran (a busy
    event loop). The pod fences what it was running, as the watchdog would have; an
    answer in time fences nothing. The session manager is a stand-in (logic only)."""
    now = [100.0]
    agent = _offline_agent(clock=lambda: now[0])
    fenced: list[str] = []
    running = SimpleNamespace(info=SimpleNamespace(slot="s/0", adapter_id="s", epoch=3),
                              stopping=None)  # fmt: skip
    agent.sessions = SimpleNamespace(  # type: ignore[assignment]
        active=lambda: [running],
        emit=lambda *args: None,
        begin_fence=lambda reason, budget, standbys: fenced.append(reason),
        reported=lambda stopped: None,
        sessions={},
    )
    agent._apply = lambda assignments, may_stop: None  # type: ignore[method-assign]
    answer = HeartbeatReply(term=1, leader=None, lease_ttl_seconds=TTL, version="a",
                            revision=1, assignments=[], stop=[])  # fmt: skip
    agent.deadline = 100.5
    agent._renewed_by(99.9, answer, {})  # in time
    assert fenced == []
    assert agent.deadline == 99.9 + TTL - agent.margin
    now[0] = agent.deadline + 0.2  # the answer to the next heartbeat comes late
    agent._renewed_by(agent.deadline - 1.0, answer, {})
    assert fenced == ["lease expired: fenced itself"]
    assert agent.metrics.self_fencing._value.get() == 1
    running.stopping = object()  # being stopped: another late answer fences nothing more
    now[0] = agent.deadline + 0.1
    agent._renewed_by(agent.deadline - 1.0, answer, {})
    assert fenced == ["lease expired: fenced itself"]


async def test_the_watchdog_ends_when_cancelled_as_a_renewal_arrives() -> None:
    """Bug 10: SIGTERM cancelled the pod's loops in the same loop iteration as a renewal
    woke the watchdog; `asyncio.wait_for` swallowed the cancellation, the watchdog ran on
    (it fenced every session 2.4 s later) and the pod never drained. Both at once: the
    watchdog must end."""
    agent = _offline_agent()
    agent.deadline = asyncio.get_running_loop().time() + 30.0  # waits for a renewal
    watchdog = asyncio.create_task(agent._watchdog())
    deadline = asyncio.get_running_loop().time() + 5.0
    while not agent._renewed._waiters:  # type: ignore[attr-defined]
        assert asyncio.get_running_loop().time() < deadline, "the watchdog never waited"
        await asyncio.sleep(0)
    agent._renewed.set()  # a renewal ...
    watchdog.cancel()  # ... and the shutdown, in one step
    done, _ = await asyncio.wait({watchdog}, timeout=2.0)
    assert done, "the watchdog swallowed its cancellation and runs on"
    assert watchdog.cancelled()


def test_a_slow_answer_does_not_push_the_next_heartbeat_back() -> None:
    """The next heartbeat is due an interval after the last one began: the timing budget
    counts one interval between sends, whatever the leader's answer took."""
    now = [100.0]
    agent = _offline_agent(clock=lambda: now[0])
    agent.credential, agent.interval, agent.retry = "c", 1.0, 0.1
    agent.last_heartbeat_ok = True
    now[0] = 100.6  # answered 0.6 s after it was sent
    assert agent._next_wait(100.0) == pytest.approx(0.4)
    now[0] = 101.3  # answered after more than an interval: the next one goes at once
    assert agent._next_wait(100.0) == 0.0
    agent.last_heartbeat_ok = False  # unanswered: the lease is ticking
    assert agent._next_wait(100.0) == 0.1
    agent.credential = None
    assert agent._next_wait(100.0) == REGISTER_RETRY_SECONDS  # registering again


async def test_only_the_copies_of_a_heartbeat_are_marked_as_hedges() -> None:
    """The first attempt goes unmarked; the copy sent to the next replica carries
    HEDGE_HEADER, which lets a follower hold it while the leader still answers."""
    server, hanging_port, held = await _hanging_server()
    marks: list[str | None] = []

    async def heartbeat(request: web.Request) -> web.Response:
        marks.append(request.headers.get(HEDGE_HEADER))
        return web.Response(body=b"{}", content_type=JSON)

    runner, answering = await _serving(heartbeat)
    client = PodClient((answering,), follow_leader=False)
    hedging = PodClient((f"http://127.0.0.1:{hanging_port}", answering), follow_leader=False)
    await client.start()
    await hedging.start()
    try:
        assert await client.hedged_post("/pod/v1/heartbeat", {}, "c", budget=2.0, hedge=0.1)
        assert await hedging.hedged_post("/pod/v1/heartbeat", {}, "c", budget=2.0, hedge=0.1)
        assert marks == [None, "1"]  # answered at once: unmarked; after the hang: a hedge
        assert len(held) == 1  # the hung replica got the unmarked first attempt
    finally:
        await client.close()
        await hedging.close()
        await runner.cleanup()
        await _close([(server, hanging_port, held)])


async def test_an_attempt_after_a_refusal_is_not_marked_as_a_hedge() -> None:
    """A replica that refused at once (a dead leader, no leader known) left no attempt
    open: the next one is the pod's only live attempt, not a copy a follower may hold."""
    marks: list[str | None] = []

    async def refuse(_request: web.Request) -> web.Response:
        return web.Response(status=503)

    async def heartbeat(request: web.Request) -> web.Response:
        marks.append(request.headers.get(HEDGE_HEADER))
        return web.Response(body=b"{}", content_type=JSON)

    (refusing, first), (answering, second) = await _serving(refuse), await _serving(heartbeat)
    runners = [refusing, answering]
    client = PodClient((first, second), follow_leader=False)
    await client.start()
    try:
        assert await client.hedged_post("/pod/v1/heartbeat", {}, "c", budget=2.0, hedge=0.1)
        assert marks == [None]
    finally:
        await client.close()
        for runner in runners:
            await runner.cleanup()


def _refusing_url() -> str:
    """A loopback URL nothing listens on: connections are refused (a killed replica)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


class CountingClient(PodClient):
    """A PodClient that records which replica each attempt went to."""

    asked: list[str]

    async def attempt(self, method: str, url: str, path: str, request, timeout):  # type: ignore[no-untyped-def]
        self.asked.append(url)
        return await super().attempt(method, url, path, request, timeout)


async def test_a_replica_that_refused_the_connection_is_not_asked_again_meanwhile() -> None:
    """A killed leader refuses connections; asking it again every hedge interval while a
    follower holds the pod's attempt (until a new leader is known) only adds load: a
    thousand pods doing it kept the load generator busy for a second (docs/performance.md,
    "The leader kill's second")."""
    server, port, held = await _hanging_server()  # the follower, holding the attempt
    follower, dead = f"http://127.0.0.1:{port}", _refusing_url()
    client = CountingClient((dead, follower), follow_leader=False)
    client.asked = []
    await client.start()
    try:
        # A budget of several hedge intervals, shorter than the back-off.
        assert await client.hedged_post("/pod/v1/heartbeat", {}, "c", budget=0.6, hedge=0.1) is None
        assert client.asked == [dead, follower]  # not: dead, follower, dead, dead, ...
    finally:
        await client.close()
        await _close([(server, port, held)])


async def test_when_every_replica_refuses_the_connection_each_is_still_tried() -> None:
    """Every replica refusing is most likely the pod's own network: no back-off then,
    any replica may be the first one back."""
    dead = (_refusing_url(), _refusing_url())
    client = CountingClient(dead, follow_leader=False)
    client.asked = []
    await client.start()
    try:
        assert await client.hedged_post("/pod/v1/heartbeat", {}, "c", budget=0.6, hedge=0.1) is None
        assert set(client.asked) == set(dead)
        assert len(client.asked) >= 4  # about one per hedge interval, not one per replica
    finally:
        await client.close()


async def test_a_call_that_found_its_replica_gone_asks_the_next_one_after_a_pause(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When a replica dies, every pod's long-poll to it ends at the same instant, and a
    thousand of them reached the next replica in the same milliseconds, while it may be
    electing (docs/performance.md, "The long-polls' reconnection after a leader kill").
    With `spread` the next replica is asked after a random pause of up to that long;
    without it, at once."""
    pauses: list[tuple[float, float]] = []

    def longest(low: float, high: float) -> float:
        pauses.append((low, high))
        return high

    monkeypatch.setattr("adapter.client.random.uniform", longest)
    arrivals: list[float] = []

    async def assignments(_request: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        return web.Response(body=b"{}", content_type=JSON)

    app = web.Application()
    app.router.add_get("/pod/v1/assignments", assignments)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    alive = f"http://127.0.0.1:{runner.addresses[0][1]}"
    client = PodClient((_refusing_url(), alive), follow_leader=False)
    await client.start()
    try:
        began = time.monotonic()
        assert await client.call("GET", "/pod/v1/assignments", None, "c", 2.0, spread=0.4)
        assert pauses == [(0.0, 0.4)]
        assert arrivals[0] - began >= 0.4
        assert await client.call("GET", "/pod/v1/assignments", None, "c", 2.0)  # register
        assert pauses == [(0.0, 0.4)]  # no pause asked for
    finally:
        await client.close()
        await runner.cleanup()


async def test_long_polls_ask_for_waits_spread_below_the_configured_one(tmp_path: Path) -> None:
    """Pods whose long-polls began together would time out together every
    `long_poll_seconds` for as long as they run (at 1,000 pods of 100 sessions: 100,000
    assignments answered in one instant every 20 s); each poll asks for a random 75-100 %
    of it instead (docs/performance.md, "The long-polls' timeouts in step")."""
    waits: list[float] = []
    enough = asyncio.Event()

    async def assignments(request: web.Request) -> web.Response:
        waits.append(float(request.query["wait_seconds"]))
        if len(waits) >= 20:
            enough.set()
        reply = AssignmentsReply(version="1", revision=len(waits), term=1, leader=None,
                                 assignments=[])  # fmt: skip
        return web.Response(body=msgspec.json.encode(reply), content_type=JSON)

    app = _replica()
    app.router.add_get("/pod/v1/assignments", assignments)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    config = AgentConfig(
        pod_id="pod-1",
        orchestrators=(f"http://127.0.0.1:{runner.addresses[0][1]}",),
        bootstrap_token=Secret("t"),
        database_dsn=Secret("postgresql://nobody@127.0.0.1:1/none"),
        audit_file=str(tmp_path / "pod.audit"),
        long_poll_seconds=8.0,
    )
    agent = Agent(config, {}, PodMetrics(CollectorRegistry()))
    await agent.start()
    polling = asyncio.create_task(agent._poll_loop())
    try:
        assert await agent.register()
        async with asyncio.timeout(10):
            await enough.wait()
        assert all(6.0 <= wait <= 8.0 for wait in waits), waits
        assert len(set(waits)) > 10, waits  # not one wait repeated
    finally:
        polling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await polling
        await agent.close()
        await runner.cleanup()
