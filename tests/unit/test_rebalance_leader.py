"""The leader loop's side of rebalancing: when it may move sessions, and how many a second.

The loop runs against the real appliers behind a fake Raft that commits at once, a fake
clock, and pods simulated as in tests/unit/test_rebalance.py (a granted session comes up,
a session handed off is stopped and released). Shipped placement settings (on_join, 2
moves a second, a 60 s window).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, cast

from protocol.values import DeploymentMode, SlotStatus
from raftorch.core.model import (
    AdapterSpec,
    ApplyResult,
    Command,
    Handoff,
    Plan,
    Policy,
    RaiseEpochFloor,
    RegisterPod,
    Release,
    ReportStatus,
)
from raftorch.core.ownership import OwnershipState
from raftorch.core.snapshot import Snapshot
from raftorch.leader.loop import LeaderLoop
from raftorch.raft.bridge import RaftBridge
from raftorch.raft.node import RaftStatus

TTL = 10.0
TERM = 1


class FakeRaft:
    """One replica that leads and commits every entry at once (StateSource and bridge)."""

    blocked: str | None = None

    def __init__(self) -> None:
        self.state = OwnershipState()
        self.entries = 0
        self.apply([RaiseEpochFloor(0, from_database=True)])

    def apply(self, commands: Sequence[Command]) -> ApplyResult:
        self.entries += 1
        result = self.state.apply(f"e{self.entries}", 0.0, tuple(commands))
        assert result.ok, result
        return result

    async def submit(self, commands: Sequence[Command], **_: Any) -> ApplyResult:
        return self.apply(commands)

    def snapshot(self) -> Snapshot:
        return self.state.snapshot()

    def status(self) -> RaftStatus:
        return RaftStatus("r0", "r0", TERM, True, self.entries, self.entries, True)

    def request_leadership_transfer(self) -> None:
        raise AssertionError("the leader must not hand over")


class Adapters:
    loaded = True

    def __init__(self, specs: Mapping[str, AdapterSpec]) -> None:
        self._specs = dict(specs)

    def specs(self) -> Mapping[str, AdapterSpec]:
        return self._specs

    def take_changed(self) -> set[str] | None:
        return None  # plan everything, every tick


class Floor:
    async def max_epoch(self) -> int:
        return 0


class Cluster:
    """The loop, its fake Raft and clock, and pods that renew and do what they are told."""

    def __init__(self, mode: DeploymentMode, adapters: int) -> None:
        self.raft = FakeRaft()
        self.now = 1000.0
        self.incarnations = 0
        specs = {f"a{i}": AdapterSpec(f"a{i}", "fix", mode, enabled=True) for i in range(adapters)}
        self.loop = LeaderLoop(self.raft, cast(RaftBridge, self.raft), Adapters(specs), Floor(),
                               Policy(ttl_seconds=TTL), tick_seconds=0.1,
                               clock=lambda: self.now)  # fmt: skip

    def join(self, pod_id: str) -> None:
        """A pod process starts (again, under the same id: a new incarnation)."""
        self.incarnations += 1
        command = RegisterPod(pod_id, f"{pod_id}-{self.incarnations}", "", frozenset({"fix"}), 100)
        self.raft.apply([command])

    def tick(self, seconds: float, *, act: bool = True) -> Plan:
        """`seconds` pass, every pod renews, the leader plans; then the pods act (or not)."""
        self.now += seconds
        for pod_id in self.raft.snapshot().pods:
            self.loop.tracker.renew(pod_id, self.now, TERM)
        outcome = asyncio.run(self.loop.run_once())
        if act:
            self.pods_act()
        return outcome.plan

    def pods_act(self) -> None:
        commands: list[Command] = []
        for s in self.raft.snapshot().slots.values():
            if s.owner is not None and s.status is SlotStatus.CLAIMING:
                commands.append(ReportStatus(s.slot, s.owner, s.epoch, SlotStatus.ACTIVE))
            elif s.owner is not None and s.status is SlotStatus.HANDING_OFF:
                commands.append(Release(s.slot, s.owner, s.epoch, "handoff"))
        if commands:
            self.raft.apply(commands)

    def settle(self) -> list[Handoff]:
        """Tick a second at a time until nothing changes; the handoffs on the way."""
        moved: list[Handoff] = []
        for _ in range(60):
            decided = self.tick(1.0)
            moved += [c for c in decided.commands if isinstance(c, Handoff)]
            slots = self.raft.snapshot().slots.values()
            if (
                not decided
                and not decided.pending
                and all(s.status is SlotStatus.ACTIVE for s in slots)
            ):
                return moved
        raise AssertionError("the cluster did not settle")

    def owned(self) -> Counter[str]:
        snap = self.raft.snapshot()
        counts: Counter[str] = Counter(dict.fromkeys(snap.pods, 0))
        counts.update(s.owner for s in snap.slots.values() if s.owner is not None)
        return counts


def handoffs(decided: Plan) -> list[Handoff]:
    return [c for c in decided.commands if isinstance(c, Handoff)]


def test_an_operators_rebalance_does_not_lift_the_moves_per_second() -> None:
    cluster = Cluster(DeploymentMode.SINGLE, adapters=8)
    cluster.join("p0")
    cluster.settle()
    assert cluster.owned() == Counter(p0=8)
    cluster.join("p1")  # on_join: the spread is restored, 2 moves a second
    first = handoffs(cluster.tick(1.0, act=False))
    assert len(first) == 2, first
    cluster.loop.request_rebalance()  # an operator asks again, 0.1 s later
    assert handoffs(cluster.tick(0.1, act=False)) == []  # still the same second
    assert len(handoffs(cluster.tick(1.0))) == 2  # the next second's budget


def test_a_pod_restarted_under_the_same_id_gets_its_share_back() -> None:
    # Active-passive sessions: when p0's process restarts, its sessions fail over to the
    # standbys on p1 and p2 at once; only moves bring p0 its share back.
    cluster = Cluster(DeploymentMode.ACTIVE_PASSIVE, adapters=6)
    for pod_id in ("p0", "p1", "p2"):
        cluster.join(pod_id)
    cluster.settle()
    for _ in range(61):  # the windows the first joins opened close
        cluster.tick(1.0)
    assert cluster.owned() == Counter(p0=2, p1=2, p2=2)
    cluster.join("p0")  # a new incarnation, before the old registration expired
    moved = cluster.settle()
    assert moved and {h.to_pod for h in moved} == {"p0"}, moved
    assert max(cluster.owned().values()) - min(cluster.owned().values()) <= 1, cluster.owned()
