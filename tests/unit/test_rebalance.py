"""Placement spread and rebalancing by graceful handoff: examples and random pod sets.

The planner runs against the real appliers; pods are simulated as the pod runtime
behaves: a granted session reports ACTIVE, a session handed off (or revoked) is stopped
cleanly and released. Every plan is checked: within its move budget, at most one move
per adapter, none for an adapter with a move still in flight, never two owners.
"""

from __future__ import annotations

import math
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.values import DeploymentMode, PodState, SlotStatus
from raftorch.core.model import (
    AdapterSpec,
    Command,
    Handoff,
    Moves,
    Plan,
    Policy,
    RegisterPod,
    Release,
    ReportStatus,
    SetPodDrain,
    View,
)
from raftorch.core.ownership import OwnershipState
from raftorch.core.planner import plan

TTL = 10.0
SCALE, AP, SINGLE = DeploymentMode.SCALE_OUT, DeploymentMode.ACTIVE_PASSIVE, DeploymentMode.SINGLE
BUSY = (SlotStatus.HANDING_OFF, SlotStatus.CLAIMING)


class Sim:
    """The replicated state, the configuration, renewals, and pods that do what pods do."""

    def __init__(self) -> None:
        self.state = OwnershipState()
        self.adapters: dict[str, AdapterSpec] = {}
        self.now = 100.0
        self.n = 0

    def apply(self, commands: tuple[Command, ...] | list[Command]) -> None:
        self.n += 1
        result = self.state.apply(f"e{self.n}", self.now, commands)
        assert not result.error and not result.rejected, result

    def join(self, pod_id: str, zone: str | None = None) -> None:
        labels = (("zone", zone),) if zone else ()
        self.apply([RegisterPod(pod_id, f"{pod_id}-1", "", frozenset({"fix"}), 1000, labels)])

    def view(self, moves: Moves = Moves(), *, place_new: bool = True) -> View:  # noqa: B008
        snap = self.state.snapshot()
        renewals = dict.fromkeys(snap.pods, self.now)
        return View(dict(self.adapters), snap.pods, snap.slots, renewals, place_new=place_new,
                    moves=moves)  # fmt: skip

    def tick(self, moves: Moves = Moves(), *, place_new: bool = True) -> Plan:  # noqa: B008
        before = self.state.snapshot()
        decided = plan(self.view(moves, place_new=place_new), self.now, Policy(ttl_seconds=TTL))
        check_plan(decided, before, moves)
        if decided.commands:
            self.apply(decided.commands)
        self.pods_act()
        return decided

    def pods_act(self) -> None:
        """Granted sessions come up; sessions handed off are stopped and released."""
        snap, commands = self.state.snapshot(), []
        for s in snap.slots.values():
            if s.owner is None:
                continue
            if s.status is SlotStatus.CLAIMING:
                commands.append(ReportStatus(s.slot, s.owner, s.epoch, SlotStatus.ACTIVE))
            elif s.status in (SlotStatus.HANDING_OFF, SlotStatus.REVOKING):
                commands.append(Release(s.slot, s.owner, s.epoch, "stopped by pod"))
        if commands:
            self.apply(commands)

    def settle(self, moves: Moves, rounds: int = 200) -> int:
        """Tick until a plan changes nothing; how many ticks that took."""
        for round_ in range(rounds):
            if not self.tick(moves).commands and not self.busy():
                return round_
        raise AssertionError("the plans did not settle")

    def busy(self) -> bool:
        return any(s.status in BUSY or s.owner is None for s in self.state.slots.values())

    def owned(self) -> Counter[str]:
        counts: Counter[str] = Counter(dict.fromkeys(self.state.pods, 0))
        counts.update(s.owner for s in self.state.slots.values() if s.owner is not None)
        return counts

    def instances(self, adapter_id: str) -> Counter[str]:
        return Counter(s.owner for s in self.state.slots.values()
                       if s.adapter_id == adapter_id and s.owner is not None)  # fmt: skip


def check_plan(decided: Plan, before: object, moves: Moves) -> None:
    """The rules every plan obeys, whatever the cluster."""
    from raftorch.core.snapshot import Snapshot

    assert isinstance(before, Snapshot)
    handoffs = [c for c in decided.commands if isinstance(c, Handoff)]
    assert len(handoffs) <= moves.rebalance + moves.drain
    per_adapter = Counter(before.slots[h.slot].adapter_id for h in handoffs)
    assert all(n == 1 for n in per_adapter.values()), per_adapter
    for h in handoffs:
        adapter = before.slots[h.slot].adapter_id
        for key in before.adapter_slots.get(adapter, {}):
            s = before.slots[key]
            assert s.status not in BUSY, f"moved {h.slot} while {key} was {s.status}"
            assert not (s.owner is None and s.handoff_to), f"moved {h.slot} mid-handoff"
    if handoffs:
        assert all(isinstance(c, Handoff) for c in decided.commands), "moves only when settled"


def spread_holds(sim: Sim) -> None:
    owned = sim.owned()
    active = [p for p, pod in sim.state.pods.items() if pod.state is PodState.ACTIVE]
    loads = [owned[p] for p in active]
    assert max(loads) - min(loads) <= 1, dict(owned)
    for adapter_id, spec in sim.adapters.items():
        if spec.mode is SCALE and spec.enabled:
            share = math.ceil(spec.instances / len(active))
            assert max(sim.instances(adapter_id).values()) <= share, (adapter_id, dict(owned))


# --- examples ---------------------------------------------------------------------------


def test_instances_of_a_scale_out_adapter_land_on_distinct_pods() -> None:
    sim = Sim()
    for p in ("p1", "p2", "p3"):
        sim.join(p)
    sim.adapters["feed"] = AdapterSpec("feed", "fix", SCALE, 3, enabled=True)
    sim.settle(Moves())
    assert sorted(sim.instances("feed").values()) == [1, 1, 1]


def test_an_active_and_its_standby_go_to_different_zones() -> None:
    sim = Sim()
    sim.join("p1", "a")
    sim.join("p2", "a")
    sim.join("p3", "b")
    sim.adapters["q"] = AdapterSpec("q", "fix", AP, enabled=True)
    sim.settle(Moves())
    slot = sim.state.slots["q/0"]
    zones = {p: dict(sim.state.pods[p].labels)["zone"] for p in ("p1", "p2", "p3")}
    assert zones[slot.owner or ""] != zones[slot.standbys[0]]


def test_a_pod_that_joins_later_gets_its_share_by_handoff_not_by_expiry() -> None:
    sim = Sim()
    sim.join("p1")
    sim.join("p2")
    for i in range(6):
        sim.adapters[f"a{i}"] = AdapterSpec(f"a{i}", "fix", SINGLE, enabled=True)
    sim.adapters["feed"] = AdapterSpec("feed", "fix", SCALE, 3, enabled=True)
    sim.settle(Moves())
    epochs_before = {k: s.epoch for k, s in sim.state.slots.items()}
    sim.join("p3")
    sim.settle(Moves(rebalance=2))
    spread_holds(sim)
    moved = [k for k, s in sim.state.slots.items() if s.epoch != epochs_before[k]]
    assert moved and all(sim.state.slots[k].owner == "p3" for k in moved)  # moved to the newcomer


def test_without_a_move_budget_nothing_moves() -> None:
    sim = Sim()
    sim.join("p1")
    for i in range(4):
        sim.adapters[f"a{i}"] = AdapterSpec(f"a{i}", "fix", SINGLE, enabled=True)
    sim.settle(Moves())
    sim.join("p2")
    assert not sim.tick(Moves()).commands
    assert sim.owned()["p2"] == 0


def test_a_drained_pod_is_emptied_by_handoff_and_gets_nothing_new() -> None:
    sim = Sim()
    for p in ("p1", "p2", "p3"):
        sim.join(p)
    for i in range(6):
        sim.adapters[f"a{i}"] = AdapterSpec(f"a{i}", "fix", AP if i % 2 else SINGLE, enabled=True)
    sim.settle(Moves())
    sim.apply([SetPodDrain("p1", True)])
    sim.settle(Moves(drain=20))
    assert sim.owned()["p1"] == 0
    assert all("p1" not in s.standbys for s in sim.state.slots.values())
    sim.adapters["late"] = AdapterSpec("late", "fix", SINGLE, enabled=True)
    sim.settle(Moves(drain=20))
    assert sim.state.slots["late/0"].owner != "p1"
    sim.apply([SetPodDrain("p1", False)])
    sim.settle(Moves(rebalance=2))
    spread_holds(sim)


def test_new_sessions_wait_while_pods_settle_but_failovers_do_not() -> None:
    sim = Sim()
    sim.join("p1")
    sim.join("p2")
    sim.adapters["old"] = AdapterSpec("old", "fix", SINGLE, enabled=True)
    sim.settle(Moves())
    sim.adapters["new"] = AdapterSpec("new", "fix", SINGLE, enabled=True)
    owner = sim.state.slots["old/0"].owner
    sim.apply([Release("old/0", owner or "", sim.state.slots["old/0"].epoch, "stopped by pod")])
    decided = sim.tick(place_new=False)
    assert "new/0" not in sim.state.slots
    assert sim.state.slots["old/0"].owner is not None  # the failover went ahead
    assert "new" in decided.pending
    sim.tick()
    assert sim.state.slots["new/0"].owner is not None


# --- random pod sets ------------------------------------------------------------------


adapters = st.lists(
    st.tuples(st.sampled_from([SINGLE, AP, SCALE]), st.integers(1, 6)), min_size=1, max_size=8
)


@settings(max_examples=100, deadline=None)
@given(
    first=st.integers(1, 3),
    later=st.integers(1, 3),
    specs=adapters,
    zoned=st.booleans(),
    budget=st.integers(1, 3),
)
def test_rebalancing_converges_to_the_spread_for_random_pod_sets(
    first: int, later: int, specs: list[tuple[DeploymentMode, int]], zoned: bool, budget: int
) -> None:
    sim = Sim()
    zones = ("a", "b", "c")
    for i in range(first):
        sim.join(f"p{i}", zones[i % 3] if zoned else None)
    for i, (mode, instances) in enumerate(specs):
        count = instances if mode is SCALE else 1
        sim.adapters[f"a{i}"] = AdapterSpec(f"a{i}", "fix", mode, count, enabled=True)
    sim.settle(Moves())
    for i in range(first, first + later):
        sim.join(f"p{i}", zones[i % 3] if zoned else None)
    sim.settle(Moves(rebalance=budget))
    spread_holds(sim)
    owners = [s.owner for s in sim.state.slots.values()]
    assert all(o is not None for o in owners)  # every session runs somewhere
