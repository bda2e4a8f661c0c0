"""The lease planner: example plans, each also applied to the real replicated state."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import pytest

from protocol.values import DeploymentMode, PodState, SlotStatus
from raftorch.core import planner
from raftorch.core.model import (
    MAX_REASONS,
    AdapterSpec,
    AddStandby,
    ApplyResult,
    Command,
    DrainPod,
    DropStandby,
    Grant,
    Plan,
    PodInfo,
    Policy,
    RegisterPod,
    Release,
    RemovePod,
    Revoke,
    SlotState,
    View,
)
from raftorch.core.ownership import OwnershipState
from raftorch.core.planner import plan

TTL = 10.0
SINGLE, AP, SCALE = (
    DeploymentMode.SINGLE,
    DeploymentMode.ACTIVE_PASSIVE,
    DeploymentMode.SCALE_OUT,
)


def spec(
    adapter_id: str,
    connector: str = "fix",
    mode: DeploymentMode = SINGLE,
    instances: int = 1,
    *,
    enabled: bool = True,
) -> AdapterSpec:
    return AdapterSpec(adapter_id, connector, mode, instances, enabled)


class Cluster:
    """The real replicated state, plus what the leader keeps beside it (specs, renewals)."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy(ttl_seconds=TTL)
        self.state = OwnershipState()
        self.adapters: dict[str, AdapterSpec] = {}
        self.renewals: dict[str, float] = {}
        self.now = 1000.0
        self._requests = 0

    def join(
        self,
        pod_id: str,
        connectors: Iterable[str] = ("fix",),
        capacity: int = 5,
        zone: str | None = None,
    ) -> None:
        labels = (("zone", zone),) if zone is not None else ()
        self.apply(
            RegisterPod(
                pod_id, f"{pod_id}-inc", f"{pod_id}:1", frozenset(connectors), capacity, labels
            )
        )
        self.renewals[pod_id] = self.now

    def add(self, *specs: AdapterSpec) -> None:
        for one in specs:
            self.adapters[one.adapter_id] = one

    def apply(self, *commands: Command) -> ApplyResult:
        self._requests += 1
        result = self.state.apply(f"r{self._requests}", self.now, commands)
        assert result.ok, result
        return result

    def view(self) -> View:
        snap = self.state.snapshot()
        return View(dict(self.adapters), snap.pods, snap.slots, dict(self.renewals))

    def plan(self) -> Plan:
        return plan(self.view(), self.now, self.policy)

    def tick(self) -> Plan:
        """Plan, then apply the plan as one entry: the applier must accept every command."""
        decided = self.plan()
        self.apply(*decided.commands)
        return decided

    def advance(self, seconds: float, *, silent: Iterable[str] = ()) -> None:
        """Time passes; every pod but the silent ones renews."""
        self.now += seconds
        for pod_id in self.state.pods:
            if pod_id not in set(silent):
                self.renewals[pod_id] = self.now

    def slot(self, key: str) -> SlotState:
        return self.state.slots[key]

    def owners(self) -> dict[str, str | None]:
        return {key: s.owner for key, s in sorted(self.state.slots.items())}


def grants(decided: Plan) -> list[Grant]:
    return [c for c in decided.commands if isinstance(c, Grant)]


# --- expiry ---------------------------------------------------------------------------


def test_pod_without_renewal_for_the_ttl_is_removed_as_expired() -> None:
    c = Cluster()
    c.join("p1")
    c.join("p2")
    c.join("p3")
    c.advance(TTL + 0.5, silent=["p1"])
    c.renewals["p2"] = c.now - TTL  # exactly the TTL: still alive
    del c.renewals["p3"]  # no renewal entry at all: expired

    decided = c.tick()

    assert decided.commands == (
        RemovePod("p1", "p1-inc", reason="expired"),
        RemovePod("p3", "p3-inc", reason="expired"),
    )
    assert "expired pod p1 (no renewal for 10.5s)" in decided.reasons
    assert "expired pod p3 (never renewed)" in decided.reasons
    assert set(c.state.pods) == {"p2"}


def test_expired_owner_loses_its_slot_and_another_pod_gets_it_in_the_same_plan() -> None:
    c = Cluster()
    c.add(spec("a"))
    c.join("p1")
    c.tick()
    first_epoch = c.slot("a/0").epoch
    c.join("p2")
    c.advance(TTL + 1, silent=["p1"])

    decided = c.tick()

    assert decided.commands == (
        RemovePod("p1", "p1-inc", reason="expired"),
        Grant("a/0", "a", "p2", expected_epoch=first_epoch, reason="grant"),
    )
    assert c.slot("a/0").owner == "p2"
    assert c.slot("a/0").epoch > first_epoch


# --- placement --------------------------------------------------------------------------


def test_grant_goes_to_the_least_loaded_pod() -> None:
    c = Cluster()
    c.join("p1")
    c.add(spec("a"), spec("b"))
    c.tick()
    assert c.owners() == {"a/0": "p1", "b/0": "p1"}
    c.join("p2")
    c.add(spec("c"))

    decided = c.tick()

    assert decided.commands == (Grant("c/0", "c", "p2", expected_epoch=0, reason="grant"),)
    assert decided.reasons == ("granted 1 slot(s) (0 by failover)",)


def test_ties_are_broken_by_pod_id() -> None:
    c = Cluster()
    for pod_id in ("p3", "p1", "p2"):
        c.join(pod_id)
    c.add(spec("a"), spec("b"), spec("c"), spec("d"))
    c.tick()
    assert c.owners() == {"a/0": "p1", "b/0": "p2", "c/0": "p3", "d/0": "p1"}


def test_only_pods_offering_the_connector_are_chosen() -> None:
    c = Cluster()
    c.join("kafka-pod", connectors=["kafka"])
    c.join("fix-pod", connectors=["fix", "mq"])
    c.add(spec("a", "fix"), spec("b", "fix"), spec("k", "kafka"), spec("x", "amqp"))

    decided = c.tick()

    assert c.owners() == {"a/0": "fix-pod", "b/0": "fix-pod", "k/0": "kafka-pod"}
    assert "slot x/0: no pod offers connector amqp" in decided.reasons


def test_capacity_is_never_exceeded() -> None:
    c = Cluster()
    c.join("p1", capacity=1)
    c.join("p2", capacity=2)
    c.add(*(spec(name) for name in "abcde"))

    decided = c.tick()

    assert c.owners() == {"a/0": "p1", "b/0": "p2", "c/0": "p2"}
    # One slot is named; the others of the same connector are counted (see below).
    assert "slot d/0: no capacity for connector fix" in decided.reasons
    assert "1 more slots cannot be placed" in decided.reasons
    assert c.tick().commands == ()


def _count_choices(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Placement choices the planner makes, by connector."""
    made: Counter[str] = Counter()
    real = planner._Work.choose

    def counted(work: planner._Work, one: AdapterSpec, exclude: Iterable[str]) -> str | None:
        made[one.connector] += 1
        return real(work, one, exclude)

    monkeypatch.setattr(planner._Work, "choose", counted)
    return made


def test_a_connector_no_pod_offers_is_looked_at_once_per_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """100,000 slots of a connector nobody offered cost every full pass 0.5 s of the
    leader's event loop, one placement choice each; the first answer holds for all."""
    c = Cluster(Policy(ttl_seconds=TTL, max_grants_per_tick=1000))
    c.join("p1", connectors=["fix"], capacity=100)
    # Sorted by id, the adapters of the two connectors alternate.
    c.add(*(spec(f"a{i:02d}", "amqp" if i % 2 else "fix", SCALE, 20) for i in range(40)))
    made = _count_choices(monkeypatch)

    decided = c.tick()

    assert made == {"amqp": 1, "fix": 101}  # fix: p1 is full after 100
    assert sum(isinstance(one, Grant) for one in decided.commands) == 100
    assert decided.reasons[1:] == (
        "slot a01/0: no pod offers connector amqp",
        "slot a10/0: no capacity for connector fix",
        "698 more slots cannot be placed",  # 399 of amqp, 299 of fix
    )


def test_pods_filled_within_an_adapter_end_its_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    c = Cluster(Policy(ttl_seconds=TTL, max_grants_per_tick=1000))
    c.join("p1", capacity=3)
    c.join("p2", capacity=2)
    c.add(spec("a", instances=20, mode=SCALE), spec("b", instances=10, mode=SCALE))
    made = _count_choices(monkeypatch)

    decided = c.tick()

    assert made["fix"] == 6  # five placed, the sixth found no room
    assert sorted(o for o in c.owners().values() if o) == ["p1", "p1", "p1", "p2", "p2"]
    assert decided.reasons[-2:] == (
        "slot a/5: no capacity for connector fix",
        "24 more slots cannot be placed",
    )


def test_a_failover_is_promoted_after_its_connector_ran_out_of_room() -> None:
    """Failovers come first, new slots after: a full connector stops only new slots."""
    c = Cluster()
    c.join("p1", capacity=2)
    c.join("p2", capacity=2)
    c.add(spec("a", mode=AP))
    c.tick()
    c.tick()  # a/0 owned with a standby
    owner = c.slot("a/0").owner
    assert owner is not None and c.slot("a/0").standbys
    c.add(spec("b"), spec("c"), spec("d"))
    c.advance(TTL + 1, silent=[owner])

    c.tick()  # the owner expires; its standby takes over, new slots get what room is left

    assert c.slot("a/0").owner not in (None, owner)


def test_zero_capacity_pod_gets_nothing() -> None:
    c = Cluster()
    c.join("p1", capacity=0)
    c.add(spec("a"))
    assert c.tick().reasons == ("slot a/0: no capacity for connector fix",)


def test_scale_out_instances_spread_over_zones() -> None:
    c = Cluster()
    c.join("a1", zone="a", capacity=10)
    c.join("a2", zone="a", capacity=10)
    c.join("b1", zone="b", capacity=10)
    c.add(spec("s", mode=SCALE, instances=4))

    c.tick()

    assert c.owners() == {"s/0": "a1", "s/1": "b1", "s/2": "a2", "s/3": "b1"}


def test_zone_spread_counts_members_of_the_same_adapter_only() -> None:
    c = Cluster()
    c.join("a1", connectors=["fix", "kafka"], zone="a", capacity=10)
    c.join("b1", connectors=["fix"], zone="b", capacity=10)
    c.add(spec("other", "kafka", mode=SCALE, instances=2))
    c.tick()  # both on a1, in zone a
    c.add(spec("s", mode=SCALE, instances=2))
    c.tick()
    # s/0 -> b1 (less loaded); s/1 -> a1: zone a holds no member of s, despite a1's load.
    assert c.owners() == {"other/0": "a1", "other/1": "a1", "s/0": "b1", "s/1": "a1"}


def test_pods_without_a_zone_never_conflict() -> None:
    c = Cluster()
    c.join("a1", zone="a", capacity=10)
    c.join("nz", capacity=10)
    c.add(spec("s", mode=SCALE, instances=3))
    c.tick()
    # s/0 -> a1 (tie on crowd and load: pod id); then zone a is crowded, nz never is.
    assert c.owners() == {"s/0": "a1", "s/1": "nz", "s/2": "nz"}


def test_standby_goes_to_another_zone_and_never_to_the_owner() -> None:
    c = Cluster()
    c.join("a1", zone="a")
    c.join("a2", zone="a")
    c.join("b1", zone="b")
    c.add(spec("ap", mode=AP))

    decided = c.tick()

    assert decided.commands == (
        Grant("ap/0", "ap", "a1", expected_epoch=0, reason="grant"),
        AddStandby("ap/0", "b1"),
    )
    assert c.slot("ap/0").standbys == ("b1",)


def test_active_passive_with_a_single_pod_has_no_standby() -> None:
    c = Cluster()
    c.join("p1")
    c.add(spec("ap", mode=AP))
    decided = c.tick()
    assert decided.commands == (Grant("ap/0", "ap", "p1", expected_epoch=0, reason="grant"),)
    assert "1 active_passive slot(s) lack a standby: no able pod" in decided.reasons
    assert c.tick().commands == ()


def test_standbys_per_slot_is_honoured() -> None:
    c = Cluster(Policy(ttl_seconds=TTL, standbys_per_slot=2))
    for pod_id in ("p1", "p2", "p3", "p4"):
        c.join(pod_id)
    c.add(spec("ap", mode=AP))
    c.tick()
    assert c.slot("ap/0").owner == "p1"
    assert c.slot("ap/0").standbys == ("p2", "p3")

    c.policy = Policy(ttl_seconds=TTL, standbys_per_slot=1)
    assert c.tick().commands == (DropStandby("ap/0", "p3"),)


# --- failover ---------------------------------------------------------------------------


def test_owner_expiry_promotes_the_standby_in_the_same_plan() -> None:
    c = Cluster()
    c.join("p1", zone="a")
    c.join("p2", zone="b")
    c.add(spec("ap", mode=AP))
    c.tick()
    before = c.slot("ap/0")
    assert (before.owner, before.standbys) == ("p1", ("p2",))
    c.join("p3", zone="a")
    c.advance(TTL + 1, silent=["p1"])

    decided = c.tick()

    assert decided.commands == (
        RemovePod("p1", "p1-inc", reason="expired"),
        Grant("ap/0", "ap", "p2", expected_epoch=before.epoch, reason="failover"),
        AddStandby("ap/0", "p3"),
    )
    after = c.slot("ap/0")
    assert (after.owner, after.standbys, after.status) == ("p2", ("p3",), SlotStatus.CLAIMING)
    assert after.epoch > before.epoch
    assert "granted 1 slot(s) (1 by failover)" in decided.reasons


def test_expired_standby_is_not_dropped_explicitly() -> None:
    c = Cluster()
    c.join("p1")
    c.join("p2")
    c.join("p3")
    c.add(spec("ap", mode=AP))
    c.tick()
    assert c.slot("ap/0").standbys == ("p2",)
    c.advance(TTL + 1, silent=["p2"])

    decided = c.tick()

    # RemovePod drops the standby itself; a DropStandby would be rejected.
    assert decided.commands == (
        RemovePod("p2", "p2-inc", reason="expired"),
        AddStandby("ap/0", "p3"),
    )


def test_a_plan_gives_work_to_at_most_the_pods_budget() -> None:
    """Sessions spread over many pods: the plan stops taking new pods at the pods budget
    (each pod given work costs the leader a few requests) and gives those it took up to
    `max_grants_per_pod` each; the next plan goes on where it stopped."""
    c = Cluster(Policy(ttl_seconds=TTL, max_grants_per_tick=1000, max_pods_per_tick=3,
                       max_grants_per_pod=2))  # fmt: skip
    for index in range(6):
        c.join(f"p{index}", capacity=10)
    c.add(spec("wide", mode=DeploymentMode.SCALE_OUT, instances=30))

    first = c.tick()

    given = {g.pod_id for g in grants(first)}
    assert len(given) == 3
    assert len(grants(first)) == 6  # two each (an even share would be 5)
    assert "grant budget for 3 pods reached: 24 slot(s) wait" in first.reasons
    assert first.pending == frozenset({"wide"})
    second = c.tick()
    assert len(grants(second)) == 6
    assert given.isdisjoint(g.pod_id for g in grants(second))
    while c.tick().commands:
        pass
    assert {len(c.state.snapshot().pod_slots[p]) for p in c.state.pods} == {5}


def test_filling_the_pods_budget_never_goes_past_a_fair_share() -> None:
    """Few sessions over many pods: the pods a plan took get no more than they will hold
    once everything is placed, so the placement ends as even as without the budget."""
    c = Cluster(Policy(ttl_seconds=TTL, max_grants_per_tick=1000, max_pods_per_tick=2,
                       max_grants_per_pod=50))  # fmt: skip
    for index in range(4):
        c.join(f"p{index}", capacity=50)
    c.add(*(spec(f"s{n}", mode=DeploymentMode.SCALE_OUT, instances=3) for n in range(3)))

    while c.tick().commands:
        pass

    loads = {p: len(c.state.snapshot().pod_slots.get(p, ())) for p in c.state.pods}
    assert sorted(loads.values()) == [2, 2, 2, 3]


def test_a_failover_waits_for_its_standby_when_the_pods_budget_is_spent() -> None:
    """The standby of a dead owner sits on a pod the plan may no longer give work to: the
    slot waits for the next plan and is promoted there, not granted cold elsewhere."""
    c = Cluster(Policy(ttl_seconds=TTL, max_grants_per_tick=1000, max_pods_per_tick=1))
    for pod_id in ("doomed", "w1", "w2"):
        c.join(pod_id, capacity=10)
    c.add(spec("a", mode=AP), spec("b", mode=AP))
    c.apply(Grant("a/0", "a", "doomed", 0), AddStandby("a/0", "w1"),
            Grant("b/0", "b", "doomed", 0), AddStandby("b/0", "w2"))  # fmt: skip
    c.advance(TTL + 1, silent=["doomed"])

    first = c.tick()

    assert [(g.slot, g.pod_id, g.reason) for g in grants(first)] == [("a/0", "w1", "failover")]
    assert "b" in first.pending
    assert "grant budget for 1 pods reached: 1 slot(s) wait" in first.reasons
    assert [(g.slot, g.pod_id, g.reason) for g in grants(c.tick())] == [("b/0", "w2", "failover")]


def test_a_dead_pods_sessions_move_in_one_plan_when_few_pods_take_them() -> None:
    """A mass failover to a few pods is bound by the grants, not by the pods budget."""
    c = Cluster(Policy(ttl_seconds=TTL, max_grants_per_tick=1000, max_pods_per_tick=3))
    c.join("doomed", capacity=100)
    c.add(spec("wide", mode=DeploymentMode.SCALE_OUT, instances=40))
    c.tick()
    c.join("p1", capacity=100)
    c.join("p2", capacity=100)
    c.advance(TTL + 1, silent=["doomed"])

    decided = c.tick()

    assert len(grants(decided)) == 40
    assert {g.pod_id for g in grants(decided)} == {"p1", "p2"}
    assert decided.pending == frozenset()


def test_mass_failover_comes_before_new_slots_and_in_slot_order() -> None:
    c = Cluster(Policy(ttl_seconds=TTL, max_grants_per_tick=2))
    c.join("p1", capacity=10)
    c.add(spec("m"), spec("n"))
    c.tick()
    c.join("p2", capacity=10)
    c.add(spec("a"), spec("b"))  # new slots sort before m/0 and n/0 by id
    c.advance(TTL + 1, silent=["p1"])

    decided = c.tick()

    assert [g.slot for g in grants(decided)] == ["m/0", "n/0"]
    assert "grant budget of 2 reached: 2 slot(s) wait" in decided.reasons
    assert [g.slot for g in grants(c.tick())] == ["a/0", "b/0"]


def test_owner_released_slot_is_regranted_with_the_slot_epoch() -> None:
    c = Cluster()
    c.join("p1")
    c.join("p2")
    c.add(spec("a"))
    c.tick()
    held = c.slot("a/0")
    c.apply(Release("a/0", "p1", held.epoch, "restart"))
    decided = c.tick()
    # The slot had an owner: it keeps its epoch until granted, and p1 is free again.
    assert grants(decided) == [Grant("a/0", "a", "p1", expected_epoch=held.epoch)]
    assert c.slot("a/0").epoch > held.epoch


# --- revocation -------------------------------------------------------------------------


def test_disabling_an_adapter_revokes_its_slot_and_it_is_not_regranted_until_released() -> None:
    c = Cluster()
    c.join("p1")
    c.join("p2")
    c.add(spec("ap", mode=AP))
    c.tick()
    c.add(spec("ap", mode=AP, enabled=False))

    decided = c.tick()

    assert decided.commands == (Revoke("ap/0", reason="adapter disabled"),)
    revoking = c.slot("ap/0")
    assert (revoking.status, revoking.owner, revoking.standbys) == (
        SlotStatus.REVOKING,
        "p1",
        (),
    )
    assert c.tick().commands == ()

    c.add(spec("ap", mode=AP))  # enabled again while the owner still stops
    assert c.tick().commands == ()

    c.apply(Release("ap/0", "p1", revoking.epoch, "revoked"))
    assert "ap/0" not in c.state.slots
    decided = c.tick()
    assert [type(cmd) for cmd in decided.commands] == [Grant, AddStandby]
    assert c.slot("ap/0").epoch > revoking.epoch


def test_deleted_adapter_slots_are_revoked() -> None:
    c = Cluster()
    c.join("p1")
    c.add(spec("a"))
    c.tick()
    del c.adapters["a"]
    assert c.tick().commands == (Revoke("a/0", reason="adapter deleted"),)


def test_unowned_slot_of_a_disabled_adapter_is_revoked_away() -> None:
    c = Cluster()
    c.join("p1")
    c.add(spec("a"))
    c.tick()
    c.apply(Release("a/0", "p1", c.slot("a/0").epoch, "stop"))
    c.add(spec("a", enabled=False))
    assert c.tick().commands == (Revoke("a/0", reason="adapter disabled"),)
    assert not c.state.slots


def test_slots_beyond_instances_are_revoked() -> None:
    c = Cluster()
    c.join("p1")
    c.add(spec("s", mode=SCALE, instances=3))
    c.tick()
    c.add(spec("s", mode=SCALE, instances=1))

    decided = c.tick()

    reason = "slot beyond the adapter's instances"
    assert decided.commands == (Revoke("s/1", reason=reason), Revoke("s/2", reason=reason))
    assert "revoked 2 slot(s): slot beyond the adapter's instances" in decided.reasons


def test_mode_change_to_single_drops_standbys_and_extra_instances() -> None:
    c = Cluster()
    c.join("p1")
    c.join("p2")
    c.add(spec("x", mode=AP))
    c.tick()
    assert c.slot("x/0").standbys == ("p2",)
    c.add(spec("x", mode=SINGLE))
    assert c.tick().commands == (DropStandby("x/0", "p2"),)


def test_owner_of_a_revoking_slot_expires_and_the_vanished_slot_is_granted_afresh() -> None:
    c = Cluster()
    c.join("p1")
    c.join("p2")
    c.add(spec("a"))
    c.tick()
    c.add(spec("a", enabled=False))
    c.tick()
    c.add(spec("a"))  # enabled again while p1 still stops
    assert c.tick().commands == ()
    c.advance(TTL + 1, silent=["p1"])

    decided = c.tick()

    # RemovePod deletes the REVOKING slot: it is new again (epoch 0) in the same entry.
    assert decided.commands == (
        RemovePod("p1", "p1-inc", reason="expired"),
        Grant("a/0", "a", "p2", expected_epoch=0),
    )


def test_no_grant_while_revoking_in_a_hand_made_view() -> None:
    pods = {"p1": PodInfo("p1", "i", "addr", frozenset({"fix"}), 5)}
    slots = {"a/0": SlotState("a/0", "a", "p9", 3, (), SlotStatus.REVOKING)}
    view = View({"a": spec("a")}, pods, slots, {"p1": 0.0})
    assert plan(view, 1.0, Policy(ttl_seconds=TTL)).commands == ()


# --- budget and drain -------------------------------------------------------------------


def test_grant_budget_limits_each_tick_and_the_rest_follow() -> None:
    c = Cluster(Policy(ttl_seconds=TTL, max_grants_per_tick=2))
    c.join("p1", capacity=10)
    c.add(*(spec(name) for name in "abcde"))

    first = c.tick()
    assert [g.slot for g in grants(first)] == ["a/0", "b/0"]
    assert "grant budget of 2 reached: 3 slot(s) wait" in first.reasons
    assert [g.slot for g in grants(c.tick())] == ["c/0", "d/0"]
    assert [g.slot for g in grants(c.tick())] == ["e/0"]
    assert c.tick().commands == ()


def test_standbys_cut_short_within_a_slot_are_planned_again() -> None:
    """The pods budget runs out between a slot's two standbys: the adapter is pending, so
    the leader plans again at once and the slot gets its second standby."""
    c = Cluster(Policy(ttl_seconds=TTL, max_pods_per_tick=3, standbys_per_slot=2))
    c.join("p0", capacity=10)
    c.add(spec("a", mode=AP), spec("b", mode=AP))
    c.tick()  # both owned by p0; no other pod to stand by
    for pod_id in ("p1", "p2", "p3"):
        c.join(pod_id, capacity=10)

    first = c.tick()

    assert first.commands == (
        AddStandby("a/0", "p1"),
        AddStandby("a/0", "p2"),
        AddStandby("b/0", "p3"),
    )
    assert first.pending == frozenset({"b"})
    assert c.tick().commands == (AddStandby("b/0", "p1"),)


def test_standby_additions_are_bounded_by_the_budget_too() -> None:
    c = Cluster(Policy(ttl_seconds=TTL, max_grants_per_tick=1))
    c.join("p1", capacity=10)
    c.join("p2", capacity=10)
    c.add(spec("x", mode=AP), spec("y", mode=AP))
    assert c.tick().commands == (
        Grant("x/0", "x", "p1", expected_epoch=0),
        AddStandby("x/0", "p2"),
    )
    assert c.tick().commands == (
        Grant("y/0", "y", "p1", expected_epoch=0),
        AddStandby("y/0", "p2"),
    )


def test_draining_pod_gets_nothing_new_and_loses_its_standbys_but_keeps_its_sessions() -> None:
    c = Cluster()
    c.join("p1")
    c.join("p2")
    c.add(spec("x", mode=AP), spec("y", mode=AP))
    c.tick()
    assert (c.slot("x/0").owner, c.slot("x/0").standbys) == ("p1", ("p2",))
    assert (c.slot("y/0").owner, c.slot("y/0").standbys) == ("p2", ("p1",))
    c.apply(DrainPod("p1", "p1-inc"))
    c.join("p3")
    c.add(spec("z"))

    decided = c.tick()

    assert decided.commands == (
        DropStandby("y/0", "p1"),
        Grant("z/0", "z", "p3", expected_epoch=0),  # p3 is least loaded anyway
        AddStandby("y/0", "p3"),
    )
    assert c.slot("x/0").owner == "p1"  # a draining owner releases by itself
    c.add(spec("w"))
    assert grants(c.tick()) == [Grant("w/0", "w", "p2", expected_epoch=0)]


def test_draining_standby_is_not_promoted() -> None:
    c = Cluster()
    c.join("p1")
    c.join("p2")
    c.join("p3", capacity=0)
    c.add(spec("x", mode=AP))
    c.tick()
    held = c.slot("x/0")
    c.apply(DrainPod("p2", "p2-inc"))
    c.apply(Release("x/0", "p1", held.epoch, "restart"))

    decided = c.tick()

    assert decided.commands == (
        DropStandby("x/0", "p2"),
        Grant("x/0", "x", "p1", expected_epoch=held.epoch),
    )
    assert "1 active_passive slot(s) lack a standby: no able pod" in decided.reasons


# --- determinism and reasons ------------------------------------------------------------


def test_same_input_gives_the_same_plan_whatever_the_mapping_order() -> None:
    c = Cluster()
    for pod_id, zone in (("p1", "a"), ("p2", "b"), ("p3", None), ("p4", "a")):
        c.join(pod_id, zone=zone, capacity=3)
    c.add(spec("s", mode=SCALE, instances=3), spec("ap", mode=AP), spec("x"), spec("y"))
    view = c.view()
    reordered = View(
        dict(reversed(list(view.adapters.items()))),
        dict(reversed(list(view.pods.items()))),
        dict(reversed(list(view.slots.items()))),
        dict(reversed(list(view.renewals.items()))),
    )
    first = plan(view, c.now, c.policy)
    assert plan(view, c.now, c.policy) == first
    assert plan(reordered, c.now, c.policy) == first
    assert len(first.commands) == 7


def test_reasons_stay_bounded() -> None:
    c = Cluster(Policy(ttl_seconds=TTL, max_grants_per_tick=1000))
    for index in range(30):
        c.join(f"p{index:02d}", connectors=["kafka"])
    c.add(*(spec(f"a{index:02d}", connector=f"c{index}") for index in range(40)))
    c.advance(TTL + 1, silent=[f"p{index:02d}" for index in range(30)])

    decided = c.tick()

    assert len(decided.commands) == 30
    assert len(decided.reasons) <= MAX_REASONS
    assert "expired 25 more pods" in decided.reasons
    assert "35 more slots cannot be placed" in decided.reasons


@pytest.mark.parametrize("budget", [0, 1])
def test_empty_cluster_plans_nothing(budget: int) -> None:
    view = View({}, {}, {}, {})
    assert plan(view, 0.0, Policy(ttl_seconds=TTL, max_grants_per_tick=budget)) == Plan()


def test_pod_state_in_view_is_respected_for_hand_made_views() -> None:
    pods = {
        "d": PodInfo("d", "i", "addr", frozenset({"fix"}), 5, state=PodState.DRAINING),
        "e": PodInfo("e", "i", "addr", frozenset({"fix"}), 5),
    }
    view = View({"a": spec("a")}, pods, {}, {"d": 0.0, "e": 0.0})
    assert plan(view, 1.0, Policy(ttl_seconds=TTL)).commands == (
        Grant("a/0", "a", "e", expected_epoch=0),
    )
