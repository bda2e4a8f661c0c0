"""The agent asks for its assignments again when a start could not happen yet.

A pod's assignments' version moves only with what they show (slots, roles, epochs),
not with the statuses it reports, so a start that did not happen (here: the slot came
back at a newer epoch while its previous session was still stopping) must not wait
for something else to move it. A real PostgreSQL holds the sessions' fences.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry

from adapter.agent import Agent
from adapter.config import AgentConfig
from adapter.metrics import PodMetrics
from adapter.sdk import Connector, SessionContext
from protocol.pod import Assignment, HeartbeatReply
from protocol.secret import Secret
from tests.component.raftcluster import wait_for

INTERVAL = 1.0  # the shipped TTL of 3 s over 3
ADAPTER = "0b6f3c1e-8d1a-4c55-9a43-1c2d3e4f5a6b"
SLOT = f"{ADAPTER}/0"


class Gated(Connector):
    """Starts at once; its stop lasts until the test lets it end."""

    release = asyncio.Event()

    async def start(self, context: SessionContext) -> None:
        pass

    async def stop(self) -> None:
        await Gated.release.wait()


def _answer(epoch: int, revision: int) -> HeartbeatReply:
    assignment = Assignment(slot=f"{ADAPTER}/0", adapter_id=ADAPTER, role="ACTIVE", epoch=epoch,
                            connector="gated", config={}, artifacts=[])  # fmt: skip
    return HeartbeatReply(term=1, leader=None, lease_ttl_seconds=3 * INTERVAL,
                          version=f"{epoch}.1", revision=revision, assignments=[assignment],
                          stop=[])  # fmt: skip


async def test_a_start_behind_a_stopping_session_is_asked_for_again(pg_dsn: str) -> None:
    Gated.release = asyncio.Event()  # of this test's event loop
    now = [100.0]
    config = AgentConfig(pod_id="pod-1", orchestrators=("http://127.0.0.1:1",),
                         bootstrap_token=Secret("t"), database_dsn=Secret(pg_dsn))  # fmt: skip
    agent = Agent(config, {"gated": Gated}, PodMetrics(CollectorRegistry()),
                  clock=lambda: now[0])  # fmt: skip
    agent.interval, agent.deadline = INTERVAL, now[0] + 60.0  # a valid lease throughout
    sessions = agent.sessions.sessions
    await agent.start()

    def running(epoch: int) -> bool:
        session = sessions.get(SLOT)
        return (session is not None and session.info.epoch == epoch
                and session.work is not None and session.work.done()
                and session.stopping is None)  # fmt: skip

    try:
        agent._apply_newer(_answer(7, revision=1), may_stop=True)
        await wait_for(lambda: running(7), 20.0, "epoch 7 running")

        # The slot comes back at epoch 9 (say the pod's registration lapsed and it was
        # granted again) while epoch 7 is still stopping: 9 cannot start yet.
        agent._apply_newer(_answer(9, revision=2), may_stop=True)
        assert sessions[SLOT].info.epoch == 7 and sessions[SLOT].stopping is not None
        Gated.release.set()
        await wait_for(lambda: SLOT not in sessions, 20.0, "epoch 7 stopped")

        # Nothing moves the version now; the agent asks again an interval later.
        assert agent._heartbeat_body()[0]["version"] == "9.1"
        now[0] += INTERVAL
        assert agent._heartbeat_body()[0]["version"] == ""
        agent._apply_newer(_answer(9, revision=3), may_stop=True)  # that heartbeat's answer
        await wait_for(lambda: running(9), 20.0, "epoch 9 running")
        assert agent._heartbeat_body()[0]["version"] == "9.1"
    finally:
        Gated.release.set()
        await agent.close()
