"""A start the session store refuses is tried again a heartbeat interval later.

The slot stays assigned to the pod (the leader keeps it CLAIMING there), and nothing
has to change the assignments' version for a while: a pod's version moves only with
what its assignments show. The agent therefore asks for its assignments again itself.
Here the store is down for real (the database's port is closed), so every claim is
refused with UnavailableError, as in a database outage.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry

from adapter.agent import Agent
from adapter.config import AgentConfig
from adapter.metrics import PodMetrics
from adapter.sdk import Connector, SessionContext
from protocol.pod import Assignment, HeartbeatReply
from protocol.secret import Secret
from tests.component.raftcluster import wait_for

INTERVAL = 1.0  # the shipped TTL of 3 s over 3


class Idle(Connector):
    async def start(self, context: SessionContext) -> None:
        pass

    async def stop(self) -> None:
        pass


def _dropped(agent: Agent, slot: str) -> Callable[[], bool]:
    """The manager has tried `slot` and dropped it (the refusal)."""
    return lambda: slot not in agent.sessions.sessions


async def test_a_refused_start_is_tried_again_an_interval_later() -> None:
    now = [100.0]
    config = AgentConfig(
        pod_id="pod-1",
        orchestrators=("http://127.0.0.1:1",),
        bootstrap_token=Secret("t"),
        database_dsn=Secret("postgresql://nobody@127.0.0.1:1/none"),
    )
    agent = Agent(config, {"idle": Idle}, PodMetrics(CollectorRegistry()), clock=lambda: now[0])
    agent.interval, agent.deadline = INTERVAL, now[0] + 60.0  # a valid lease throughout
    assignment = Assignment(slot="a/0", adapter_id="a", role="ACTIVE", epoch=7,
                            connector="idle", config={}, artifacts=[])  # fmt: skip
    answer = HeartbeatReply(term=1, leader=None, lease_ttl_seconds=3 * INTERVAL, version="v1",
                            revision=1, assignments=[assignment], stop=[])  # fmt: skip
    await agent.start()  # the pool starts lazily: each claim tries to connect, and fails
    try:
        assert agent._apply_newer(answer, may_stop=True)
        assert "a/0" in agent.sessions.sessions  # starting: claiming the fence
        await wait_for(_dropped(agent, "a/0"), 20.0, "the start refused")

        # Within the interval the heartbeats name the applied version (nothing moved it).
        body, _ = agent._heartbeat_body()
        assert body["version"] == "v1"
        now[0] += INTERVAL / 2
        assert agent._heartbeat_body()[0]["version"] == "v1"

        # An interval after the refusal: no version, so the answer carries the
        # assignments, and applying them starts the session again.
        now[0] += INTERVAL / 2
        assert agent._heartbeat_body()[0]["version"] == ""
        assert agent._heartbeat_body()[0]["version"] == ""  # until an answer is applied
        again = HeartbeatReply(term=1, leader=None, lease_ttl_seconds=3 * INTERVAL,
                               version="v1", revision=2, assignments=[assignment],
                               stop=[])  # fmt: skip
        assert agent._apply_newer(again, may_stop=True)
        assert agent.version == "v1"
        assert "a/0" in agent.sessions.sessions  # tried again

        # Refused again: the next try is one more interval away, not at once.
        await wait_for(_dropped(agent, "a/0"), 20.0, "the start refused")
        assert agent._heartbeat_body()[0]["version"] == "v1"
        now[0] += INTERVAL
        assert agent._heartbeat_body()[0]["version"] == ""
    finally:
        await agent.close()
