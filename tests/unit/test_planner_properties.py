"""Planner + appliers under random cluster histories: safety invariants after every entry."""

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
    Command,
    DrainPod,
    Plan,
    Policy,
    RaiseEpochFloor,
    RegisterPod,
    Release,
    RemovePod,
    ReportStatus,
    SlotState,
    View,
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

    # --- the world ------------------------------------------------------------------

    @initialize(
        budget=st.integers(1, 6),
        standbys=st.integers(0, 2),
        pods=st.lists(st.tuples(pod_ids, connector_sets, capacities, zones), max_size=5),
        adapters=st.lists(adapter_specs, max_size=5),
    )
    def populate(
        self,
        budget: int,
        standbys: int,
        pods: list[tuple[str, frozenset[str], int, str | None]],
        adapters: list[AdapterSpec],
    ) -> None:
        """Start from a running cluster rather than an empty one, to reach more states."""
        self.policy = Policy(TTL, max_grants_per_tick=budget, standbys_per_slot=standbys)
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
        pod = self.state.pods.get(pod_id)
        if pod is not None:
            self.apply_ok(DrainPod(pod_id, pod.incarnation))
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
        assert current.owner is not None
        self.apply_ok(Release(current.slot, current.owner, current.epoch, "stopped"))
        self.tick()

    @rule()
    def owners_obey_revocations(self) -> None:
        self.release_revoked()
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
            self.pass_time(1.0)
            decided = self.tick()
            if not decided and not self.revoking():
                break
        assert not decided, decided
        self.check_settled()

    # --- the leader ---------------------------------------------------------------------

    def tick(self) -> Plan:
        snap = self.state.snapshot()
        view = View(dict(self.adapters), snap.pods, snap.slots, dict(self.renewals))
        decided = plan(view, self.now, self.policy)
        assert plan(view, self.now, self.policy) == decided  # deterministic
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
            pod = snap.pods[pod_id]
            assert pod.state is PodState.ACTIVE
            assert self.adapters[slot.rsplit("/", 1)[0]].connector in pod.connectors
        for pod_id in set(self.renewals) - set(self.state.pods):
            del self.renewals[pod_id]
        return decided

    def apply_ok(self, *commands: Command) -> object:
        self.requests += 1
        result = self.state.apply(f"r{self.requests}", self.now, commands)
        assert result.rejected == (), (result.rejected, commands)
        assert result.error == "", result.error
        return result

    def register(
        self, pod_id: str, connectors: frozenset[str], capacity: int, zone: str | None
    ) -> None:
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

    def release_revoked(self) -> None:
        for current in self.revoking():
            if current.owner in self.alive:
                self.apply_ok(Release(current.slot, current.owner, current.epoch, "revoked"))

    def owned(self) -> list[SlotState]:
        return [s for _, s in sorted(self.state.slots.items()) if s.owner is not None]

    def revoking(self) -> list[SlotState]:
        return [s for s in self.owned() if s.status is SlotStatus.REVOKING]

    def check_settled(self) -> None:
        for adapter_id, spec in sorted(self.adapters.items()):
            for index in range(desired_count(spec)):
                current = self.state.slots.get(slot_id(adapter_id, index))
                assert current is not None, (adapter_id, index)
                assert current.owner is not None, current
                assert current.status is not SlotStatus.REVOKING, current
                if spec.mode is DeploymentMode.ACTIVE_PASSIVE:
                    assert len(current.standbys) == self.policy.standbys_per_slot, current

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
