"""Placement spread and rebalancing by graceful handoff: examples and random pod sets.

The planner runs against the real appliers; pods are simulated as the pod runtime
behaves: a granted session reports ACTIVE, a session handed off (or revoked) is stopped
cleanly and released -- at once, or (slow pods) some ticks later, or never (the pod died
and its lease runs out). Every plan is checked: within each move budget, at most one move
per adapter, none for an adapter with a move still in flight; every grant is checked:
never while the pod that ran the slot before still runs it (never two owners).
"""

from __future__ import annotations

import math
import random
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
    SlotState,
    View,
)
from raftorch.core.ownership import OwnershipState
from raftorch.core.planner import plan

TTL = 10.0
SCALE, AP, SINGLE = DeploymentMode.SCALE_OUT, DeploymentMode.ACTIVE_PASSIVE, DeploymentMode.SINGLE
BUSY = (SlotStatus.HANDING_OFF, SlotStatus.CLAIMING)


class Sim:
    """The replicated state, the configuration, renewals, and pods that do what pods do."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self.state = OwnershipState()
        self.adapters: dict[str, AdapterSpec] = {}
        self.now = 100.0
        self.n = 0
        self.rng = rng  # None: pods act at once; else each act waits a random while
        self.renewed: dict[str, float] = {}  # dead pods: their last renewal
        self.holders: dict[str, tuple[str, str]] = {}  # slot -> (pod, incarnation) running it
        self.joins = 0
        self.acted = False  # did pods act on the last tick

    def apply(self, commands: tuple[Command, ...] | list[Command]) -> None:
        self.n += 1
        result = self.state.apply(f"e{self.n}", self.now, commands)
        assert not result.error and not result.rejected, result
        for slot, pod_id, _ in result.granted:
            held = self.holders.get(slot)
            if held is not None:  # its pod released it, or that incarnation is gone
                pod = self.state.pods.get(held[0])
                assert pod is None or pod.incarnation != held[1], (
                    f"{slot} granted to {pod_id} while {held[0]} still runs it")  # fmt: skip
            self.holders[slot] = (pod_id, self.state.pods[pod_id].incarnation)
        for c in commands:
            if isinstance(c, Release) and self.holders.get(c.slot, ("",))[0] == c.pod_id:
                del self.holders[c.slot]

    def join(self, pod_id: str, zone: str | None = None) -> None:
        self.joins += 1
        labels = (("zone", zone),) if zone else ()
        self.renewed.pop(pod_id, None)
        self.apply([RegisterPod(pod_id, f"{pod_id}-{self.joins}", "", frozenset({"fix"}), 1000,
                                labels)])  # fmt: skip

    def die(self, pod_id: str) -> None:
        """The pod stops (kill -9): it acts no more, its lease runs out a TTL later."""
        self.renewed.setdefault(pod_id, self.now)

    def view(self, moves: Moves = Moves(), *, place_new: bool = True) -> View:  # noqa: B008
        snap = self.state.snapshot()
        renewals = {p: self.renewed.get(p, self.now) for p in snap.pods}
        return View(dict(self.adapters), snap.pods, snap.slots, renewals, place_new=place_new,
                    moves=moves)  # fmt: skip

    def tick(self, moves: Moves = Moves(), *, place_new: bool = True) -> Plan:  # noqa: B008
        before = self.state.snapshot()
        decided = plan(self.view(moves, place_new=place_new), self.now, Policy(ttl_seconds=TTL))
        check_plan(decided, before, moves)
        if decided.commands:
            self.apply(decided.commands)
        self.pods_act()
        if self.rng is not None:
            self.now += 1.0  # slow pods: a tick a second, so dead pods expire
        return decided

    def pods_act(self) -> None:
        """Granted sessions come up; sessions handed off are stopped and released (live
        pods only; slow ones get round to each only now and then)."""
        snap, commands = self.state.snapshot(), list[Command]()
        for s in snap.slots.values():
            if s.owner is None or s.owner in self.renewed:
                continue
            if self.rng is not None and self.rng.random() < 0.6:
                continue  # not yet
            if s.status is SlotStatus.CLAIMING:
                commands.append(ReportStatus(s.slot, s.owner, s.epoch, SlotStatus.ACTIVE))
            elif s.status in (SlotStatus.HANDING_OFF, SlotStatus.REVOKING):
                commands.append(Release(s.slot, s.owner, s.epoch, "stopped by pod"))
        self.acted = bool(commands)
        if commands:
            self.apply(commands)

    def settle(self, moves: Moves, rounds: int = 200) -> int:
        """Tick until a plan changes nothing and no pod acts; how many ticks that took."""
        for round_ in range(rounds):
            if not self.tick(moves).commands and not self.acted and not self.busy():
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
    reasons = Counter(h.reason for h in handoffs)
    assert reasons["rebalance"] <= moves.rebalance and reasons["drain"] <= moves.drain, reasons
    assert set(reasons) <= {"rebalance", "drain"}, reasons
    per_adapter = Counter(before.slots[h.slot].adapter_id for h in handoffs)
    assert all(n == 1 for n in per_adapter.values()), per_adapter
    for h in handoffs:
        moved: SlotState = before.slots[h.slot]
        assert (moved.owner, moved.epoch) == (h.pod_id, h.epoch), (h, moved)
        assert moved.status in (SlotStatus.ACTIVE, SlotStatus.ERROR), (h, moved)
        assert before.pods[h.to_pod].state is PodState.ACTIVE and h.to_pod != h.pod_id, h
        if h.reason == "drain":
            assert before.pods[h.pod_id].state is PodState.DRAINING, h
        adapter = moved.adapter_id
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


def test_a_second_instance_moves_only_once_the_first_move_has_landed() -> None:
    sim = Sim()
    sim.join("p1")
    sim.adapters["feed"] = AdapterSpec("feed", "fix", SCALE, 3, enabled=True)
    sim.settle(Moves())
    sim.join("p2")
    sim.join("p3")
    moves = Moves(rebalance=5)

    def step() -> list[Handoff]:
        """One plan, no pod acting on it."""
        decided = plan(sim.view(moves), sim.now, Policy(ttl_seconds=TTL))
        check_plan(decided, sim.state.snapshot(), moves)
        sim.apply(decided.commands)
        return [c for c in decided.commands if isinstance(c, Handoff)]

    [first] = step()  # budget for five, but one move per adapter at a time
    assert sim.state.slots[first.slot].status is SlotStatus.HANDING_OFF
    assert step() == []  # the owner has not stopped yet: mid-handoff
    sim.apply([Release(first.slot, first.pod_id, first.epoch, "handoff")])
    assert step() == []  # granted to the target now, still starting
    granted = sim.state.slots[first.slot]
    assert (granted.owner, granted.status) == (first.to_pod, SlotStatus.CLAIMING)
    assert granted.epoch > first.epoch
    assert step() == []  # still starting: a move of the adapter is in flight
    sim.apply([ReportStatus(first.slot, first.to_pod, granted.epoch, SlotStatus.ACTIVE)])
    [second] = step()
    assert second.slot != first.slot and second.to_pod not in (first.to_pod, "p1")


steps = st.lists(
    st.tuples(st.sampled_from(["join", "die", "drain", "undrain"]), st.integers(0, 5)),
    min_size=1,
    max_size=8,
)


@settings(max_examples=100, deadline=None)
@given(
    first=st.integers(1, 3),
    specs=adapters,
    events=steps,
    budget=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_slow_pods_deaths_and_drains_never_give_a_slot_two_owners_and_it_converges(
    first: int,
    specs: list[tuple[DeploymentMode, int]],
    events: list[tuple[str, int]],
    budget: int,
    seed: int,
) -> None:
    sim = Sim(random.Random(seed))
    for i in range(first):
        sim.join(f"p{i}")
    for i, (mode, instances) in enumerate(specs):
        count = instances if mode is SCALE else 1
        sim.adapters[f"a{i}"] = AdapterSpec(f"a{i}", "fix", mode, count, enabled=True)
    moves = Moves(rebalance=budget, drain=budget)
    for _ in range(5):
        sim.tick(moves)
    for what, n in events:  # each change lands while moves of the last may be under way
        pod_id, pod = f"p{n}", sim.state.pods.get(f"p{n}")
        if what == "join":
            sim.join(pod_id)
        elif what == "die" and pod is not None:
            sim.die(pod_id)
        elif what in ("drain", "undrain") and pod is not None and pod_id not in sim.renewed:
            sim.apply([SetPodDrain(pod_id, what == "drain")])
        for _ in range(sim.rng.randrange(1, 6) if sim.rng else 1):
            sim.tick(moves)
    if not any(p.state is PodState.ACTIVE and p.pod_id not in sim.renewed
               for p in sim.state.pods.values()):  # fmt: skip
        sim.join("spare")  # something must be able to run the sessions
    for _ in range(int(TTL) + 2):  # the dead expire
        sim.tick(moves)
    sim.rng = None  # from now on pods act at once
    sim.settle(moves)
    spread_holds(sim)
    assert all(s.owner is not None for s in sim.state.slots.values())
    owned = sim.owned()
    assert all(owned[p] == 0 for p, pod in sim.state.pods.items()
               if pod.state is PodState.DRAINING), dict(owned)  # fmt: skip
