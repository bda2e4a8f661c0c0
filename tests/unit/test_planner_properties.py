"""Planner + appliers under random cluster histories: safety invariants after every entry.

Rebalancing and operator drains run throughout (random move budgets): pods carry out
handoffs late or never (they die mid-handoff), targets die, leaders change. Every plan
stays within its budgets, moves at most one session per adapter and none of an adapter
mid-handoff; a slot is granted only once the pod that ran it released it or lost its
lease (never two live owners); after a settle the spread holds (issue #15).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from protocol.values import DeploymentMode, PodState, SlotStatus
from raftorch.core.model import (
    AdapterSpec,
    AddStandby,
    ApplyResult,
    Command,
    DrainPod,
    Grant,
    Handoff,
    Moves,
    Plan,
    Policy,
    RaiseEpochFloor,
    RegisterPod,
    Release,
    RemovePod,
    ReportStatus,
    SetPodDrain,
    SlotState,
    View,
    slot_adapter,
    slot_id,
    slot_index,
)
from raftorch.core.ownership import OwnershipState
from raftorch.core.planner import plan

TTL = 10.0
CONNECTORS = ("fix", "kafka", "mq")
POD_IDS = tuple(f"p{n}" for n in range(6))
ADAPTER_IDS = tuple(f"a{n}" for n in range(5))
RESERVE = (("big-a", "a"), ("big-b", "b"), ("big-n", None))  # joined to let things settle
SETTLE_TICKS = 200

pod_ids = st.sampled_from(POD_IDS)
connector_sets = st.frozensets(st.sampled_from(CONNECTORS), min_size=1)
capacities = st.integers(1, 5)
zones = st.sampled_from(["a", "b", None])
adapter_specs = st.builds(
    AdapterSpec,
    adapter_id=st.sampled_from(ADAPTER_IDS),
    connector=st.sampled_from(CONNECTORS),
    mode=st.sampled_from(list(DeploymentMode)),
    instances=st.integers(1, 4),
    enabled=st.booleans(),
)
reportable = st.sampled_from([SlotStatus.CLAIMING, SlotStatus.ACTIVE, SlotStatus.ERROR])
STOPPING = (SlotStatus.REVOKING, SlotStatus.HANDING_OFF)  # the owner was told to stop
MOVABLE = (SlotStatus.ACTIVE, SlotStatus.ERROR)  # what rebalancing may move
BUSY = (SlotStatus.HANDING_OFF, SlotStatus.CLAIMING)  # an adapter with such a slot: no move


def desired_count(spec: AdapterSpec | None) -> int:
    if spec is None or not spec.enabled:
        return 0
    return spec.instances if spec.mode is DeploymentMode.SCALE_OUT else 1


class PlannerAndState(RuleBasedStateMachine):
    """The leader's loop in miniature: every step changes the world, then plans and applies."""

    def __init__(self) -> None:
        super().__init__()
        self.state = OwnershipState()
        self.policy = Policy(ttl_seconds=TTL)
        self.adapters: dict[str, AdapterSpec] = {}
        self.renewals: dict[str, float] = {}
        self.alive: set[str] = set()  # pod processes that run and heartbeat
        self.now = 0.0
        self.requests = 0
        self.incarnations = 0
        self.max_issued = 0
        self.epochs: dict[str, int] = {}
        self.moves = Moves()
        self.holders: dict[str, tuple[str, str]] = {}  # slot -> (pod, incarnation) running it
        self.leaving: set[str] = set()  # pods shutting down (SIGTERM): never undrained
        self.handoffs = 0

    # --- the world ------------------------------------------------------------------

    @initialize(
        budget=st.integers(1, 6),
        pods_budget=st.integers(1, 4),
        per_pod=st.integers(1, 3),
        standbys=st.integers(0, 2),
        pods=st.lists(st.tuples(pod_ids, connector_sets, capacities, zones), max_size=5),
        adapters=st.lists(adapter_specs, max_size=5),
        rebalance=st.integers(0, 3),
        drain=st.integers(0, 3),
    )
    def populate(
        self,
        *,
        budget: int,
        pods_budget: int,
        per_pod: int,
        standbys: int,
        pods: list[tuple[str, frozenset[str], int, str | None]],
        adapters: list[AdapterSpec],
        rebalance: int,
        drain: int,
    ) -> None:
        """Start from a running cluster rather than an empty one, to reach more states.
        Every plan may move sessions by handoff within the drawn budgets (0: never)."""
        self.policy = Policy(TTL, max_grants_per_tick=budget, max_pods_per_tick=pods_budget,
                             max_grants_per_pod=per_pod, standbys_per_slot=standbys)  # fmt: skip
        self.moves = Moves(rebalance=rebalance, drain=drain)
        for pod in pods:
            self.register(*pod)
        for spec in adapters:
            self.adapters[spec.adapter_id] = spec
        self.tick()

    @rule(pod_id=pod_ids, connectors=connector_sets, capacity=capacities, zone=zones)
    def join(
        self, pod_id: str, connectors: frozenset[str], capacity: int, zone: str | None
    ) -> None:
        """A pod starts (or restarts under the same id: a new incarnation)."""
        self.register(pod_id, connectors, capacity, zone)
        self.tick()

    @rule(pod_id=pod_ids)
    def die(self, pod_id: str) -> None:
        """The pod stops heartbeating (crash, SIGSTOP, partition)."""
        self.alive.discard(pod_id)
        self.tick()

    @rule(pod_id=pod_ids)
    def revive(self, pod_id: str) -> None:
        """A paused pod resumes; it renews only if its registration is still there."""
        if pod_id in self.state.pods:
            self.alive.add(pod_id)
        self.tick()

    @rule(pod_id=pod_ids)
    def drain(self, pod_id: str) -> None:
        """The pod shuts down (SIGTERM): nothing new is placed on it."""
        pod = self.state.pods.get(pod_id)
        if pod is not None:
            self.apply_ok(DrainPod(pod_id, pod.incarnation))
            self.leaving.add(pod_id)
        self.tick()

    @rule(pod_id=pod_ids, draining=st.booleans())
    def operator_drain(self, pod_id: str, draining: bool) -> None:
        """An operator drains a running pod (its sessions move off by handoff) or undrains it."""
        if pod_id in self.state.pods and pod_id not in self.leaving:
            self.apply_ok(SetPodDrain(pod_id, draining))
        self.tick()

    @rule(seconds=st.sampled_from([0.5, 2.0, 4.0, TTL - 0.5, TTL + 0.5, 3 * TTL]))
    def advance(self, seconds: float) -> None:
        self.pass_time(seconds)
        self.tick()

    @rule(spec=adapter_specs)
    def configure_adapter(self, spec: AdapterSpec) -> None:
        """Create, enable, disable, change the mode or the instances of an adapter."""
        self.adapters[spec.adapter_id] = spec
        self.tick()

    @rule(adapter_id=st.sampled_from(ADAPTER_IDS))
    def delete_adapter(self, adapter_id: str) -> None:
        self.adapters.pop(adapter_id, None)
        self.tick()

    @precondition(lambda self: self.owned())
    @rule(data=st.data(), status=reportable, detail=st.sampled_from(["", "logon refused"]))
    def report(self, data: st.DataObject, status: SlotStatus, detail: str) -> None:
        current = data.draw(st.sampled_from(self.owned()))
        assert current.owner is not None
        self.apply_ok(ReportStatus(current.slot, current.owner, current.epoch, status, detail))
        self.tick()

    @precondition(lambda self: self.owned())
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        """An owner stops its session (restart, drain, or a revocation carried out)."""
        current = data.draw(st.sampled_from(self.owned()))
        self.release_slot(current)
        self.tick()

    @rule()
    def sessions_come_up(self) -> None:
        """Every live owner's starting session comes up (then it may be moved)."""
        self.come_up()
        self.tick()

    @rule()
    def owners_obey_revocations(self) -> None:
        """Every live owner told to stop (revoked, handed off) stops and releases."""
        self.release_revoked()
        self.tick()

    @precondition(lambda self: self.revoking())
    @rule(data=st.data())
    def one_owner_obeys(self, data: st.DataObject) -> None:
        """One owner told to stop does so, the others are still at it."""
        current = data.draw(st.sampled_from(self.revoking()))
        if current.owner in self.alive:
            self.release_slot(current)
        self.tick()

    @rule(bump=st.integers(0, 5))
    def new_leader(self, bump: int) -> None:
        """A new leader raises the epoch floor and counts every pod as renewed now."""
        self.apply_ok(RaiseEpochFloor(self.max_issued + bump))
        for pod_id in self.state.pods:
            self.renewals[pod_id] = self.now
        self.tick()

    @rule()
    def settle(self) -> None:
        """Liveness: with enough able pods, every wanted slot gets an owner, then calm."""
        for pod_id, zone in RESERVE:
            if pod_id not in self.alive:
                self.register(pod_id, frozenset(CONNECTORS), 100, zone)
        self.pass_time(TTL + 1)  # the dead expire; the living renew
        decided = self.tick()
        for _ in range(SETTLE_TICKS):
            self.release_revoked()
            self.come_up()
            self.pass_time(1.0)
            decided = self.tick()
            if not decided and not self.revoking():
                break
        assert not decided, decided
        self.check_settled()

    # --- the leader ---------------------------------------------------------------------

    def tick(self) -> Plan:
        snap = self.state.snapshot()
        view = View(dict(self.adapters), snap.pods, snap.slots, dict(self.renewals),
                    moves=self.moves)  # fmt: skip
        decided = plan(view, self.now, self.policy)
        assert plan(view, self.now, self.policy) == decided  # deterministic
        self.check_moves(view, decided)
        self.check_budgets(decided)
        for command in decided.commands:
            if isinstance(command, RemovePod):  # expired, and only if expired
                renewal = self.renewals.get(command.pod_id)
                assert renewal is None or self.now - renewal > TTL, (command, renewal)
        result = self.apply_ok(*decided.commands)
        for pod_id in self.state.pods:  # nobody outlives its lease
            assert self.now - self.renewals[pod_id] <= TTL, pod_id
        for slot, pod_id, epoch in result.granted:
            assert epoch > self.max_issued, (slot, epoch, self.max_issued)
            self.max_issued = epoch
            self.check_no_live_holder(slot, pod_id)
            self.holders[slot] = (pod_id, self.state.pods[pod_id].incarnation)
            pod = snap.pods[pod_id]
            assert pod.state is PodState.ACTIVE
            assert self.adapters[slot.rsplit("/", 1)[0]].connector in pod.connectors
        for pod_id in set(self.renewals) - set(self.state.pods):
            del self.renewals[pod_id]
        return decided

    def apply_ok(self, *commands: Command) -> ApplyResult:
        self.requests += 1
        result = self.state.apply(f"r{self.requests}", self.now, commands)
        assert result.rejected == (), (result.rejected, commands)
        assert result.error == "", result.error
        return result

    def check_budgets(self, decided: Plan) -> None:
        """At most the budget of grants and of standbys added, given to at most the
        budget of pods."""
        policy, commands = self.policy, decided.commands
        assert sum(isinstance(c, Grant) for c in commands) <= policy.max_grants_per_tick
        assert sum(isinstance(c, AddStandby) for c in commands) <= policy.max_grants_per_tick
        given = {c.pod_id for c in commands if isinstance(c, Grant | AddStandby)}
        assert len(given) <= policy.max_pods_per_tick, decided

    def check_moves(self, view: View, decided: Plan) -> None:
        """A plan's handoffs: within each budget, one per adapter, none of an adapter with a
        move in flight or a slot still starting, only from a settled state, each from the
        current owner of a running session to another able pod (drains: off a drained pod)."""
        handoffs = [c for c in decided.commands if isinstance(c, Handoff)]
        if not handoffs:
            return
        self.handoffs += len(handoffs)
        assert len(handoffs) == len(decided.commands), decided  # nothing else changing
        reasons = [h.reason for h in handoffs]
        assert reasons.count("rebalance") <= self.moves.rebalance, decided
        assert reasons.count("drain") <= self.moves.drain, decided
        assert set(reasons) <= {"rebalance", "drain"}, decided
        adapters = [slot_adapter(h.slot) for h in handoffs]
        assert len(set(adapters)) == len(adapters), decided
        for h in handoffs:
            current = view.slots[h.slot]
            assert (current.owner, current.epoch) == (h.pod_id, h.epoch), (h, current)
            assert current.status in MOVABLE, (h, current)
            for other in view.slots.values():
                if other.adapter_id != current.adapter_id:
                    continue
                assert other.status not in BUSY, f"moved {h.slot} while {other.slot} is busy"
                assert other.owner is not None or other.handoff_to is None, (h, other)
            target = view.pods[h.to_pod]
            assert h.to_pod != h.pod_id and target.state is PodState.ACTIVE, (h, target)
            assert self.adapters[current.adapter_id].connector in target.connectors, h
            if h.reason == "drain":
                assert view.pods[h.pod_id].state is PodState.DRAINING, h

    def check_no_live_holder(self, slot: str, pod_id: str) -> None:
        """Never two owners: the pod that ran `slot` before released it, or its
        incarnation is gone (expired: its lease had lapsed; or replaced by a restart)."""
        held = self.holders.get(slot)
        if held is None:
            return
        pod = self.state.pods.get(held[0])
        assert pod is None or pod.incarnation != held[1], (
            f"{slot} granted to {pod_id} while {held[0]} still runs it"
        )

    def release_slot(self, current: SlotState) -> None:
        """The owner stops the session and releases it."""
        assert current.owner is not None
        self.apply_ok(Release(current.slot, current.owner, current.epoch, "stopped"))
        if self.holders.get(current.slot, ("",))[0] == current.owner:
            del self.holders[current.slot]

    def register(
        self, pod_id: str, connectors: frozenset[str], capacity: int, zone: str | None
    ) -> None:
        self.leaving.discard(pod_id)
        self.incarnations += 1
        labels = (("zone", zone),) if zone is not None else ()
        command = RegisterPod(
            pod_id, f"inc-{self.incarnations}", f"{pod_id}:1", connectors, capacity, labels
        )
        self.apply_ok(command)
        self.alive.add(pod_id)
        self.renewals[pod_id] = self.now

    def pass_time(self, seconds: float) -> None:
        self.now += seconds
        self.alive &= set(self.state.pods)  # an expired process must register anew
        for pod_id in self.alive:
            self.renewals[pod_id] = self.now

    def come_up(self) -> None:
        """Live owners' sessions still starting come up (else they are never moved)."""
        for current in self.owned():
            if current.status is SlotStatus.CLAIMING and current.owner in self.alive:
                self.apply_ok(ReportStatus(current.slot, current.owner, current.epoch,
                                           SlotStatus.ACTIVE))  # fmt: skip

    def release_revoked(self) -> None:
        for current in self.revoking():
            if current.owner in self.alive:
                self.release_slot(current)

    def owned(self) -> list[SlotState]:
        return [s for _, s in sorted(self.state.slots.items()) if s.owner is not None]

    def revoking(self) -> list[SlotState]:
        """Owned slots whose owner was told to stop (revoked or handed off)."""
        return [s for s in self.owned() if s.status in STOPPING]

    def check_settled(self) -> None:
        for adapter_id, spec in sorted(self.adapters.items()):
            for index in range(desired_count(spec)):
                current = self.state.slots.get(slot_id(adapter_id, index))
                assert current is not None, (adapter_id, index)
                assert current.owner is not None, current
                assert current.status not in STOPPING, current
                if spec.mode is DeploymentMode.ACTIVE_PASSIVE:
                    assert len(current.standbys) == self.policy.standbys_per_slot, current
        if self.moves.drain:  # the reserve pods can take everything: drained pods are empty
            for current in self.owned():
                owner = self.state.pods[current.owner or ""]
                assert owner.state is not PodState.DRAINING, (current, owner)

    # --- safety, after every step ---------------------------------------------------------

    @invariant()
    def roles_are_consistent(self) -> None:
        for current in self.state.slots.values():
            assert len(set(current.standbys)) == len(current.standbys), current
            assert current.owner not in current.standbys, current
            if current.owner is not None:
                assert current.owner in self.state.pods, current
            assert set(current.standbys) <= set(self.state.pods), current
            assert (current.owner is None) == (current.status is SlotStatus.UNASSIGNED), current

    @invariant()
    def epochs_only_grow(self) -> None:
        for key, current in self.state.slots.items():
            assert current.epoch >= self.epochs.get(key, 0), (current, self.epochs[key])
            assert current.epoch <= self.max_issued
        self.epochs = {key: s.epoch for key, s in self.state.slots.items()}

    @invariant()
    def capacity_is_respected(self) -> None:
        for pod_id, pod in self.state.pods.items():
            roles = sum(
                (s.owner == pod_id) + (pod_id in s.standbys) for s in self.state.slots.values()
            )
            assert roles <= pod.capacity, (pod, roles)

    @invariant()
    def only_wanted_slots_are_held(self) -> None:
        for current in self.state.slots.values():
            if current.status is SlotStatus.REVOKING:
                continue
            spec = self.adapters.get(current.adapter_id)
            assert slot_index(current.slot) < desired_count(spec), (current, spec)
            assert spec is not None
            wanted = self.policy.standbys_per_slot
            if spec.mode is not DeploymentMode.ACTIVE_PASSIVE:
                wanted = 0
            assert len(current.standbys) <= wanted, current
            for pod_id in current.standbys:
                pod = self.state.pods[pod_id]
                assert pod.state is PodState.ACTIVE, (current, pod)
                assert spec.connector in pod.connectors, (current, pod)


TestPlannerAndState = PlannerAndState.TestCase
TestPlannerAndState.settings = settings(
    max_examples=500, stateful_step_count=40, deadline=None, derandomize=True
)
