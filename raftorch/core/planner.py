"""The lease planner: a pure function from a frozen view of the cluster to the next plan.

Cost proportional to change: a plan looks at the adapters the view marks dirty, at the
unassigned slots and at the slots of the pods it expires, reading the state through its
indexes (slots by pod and by adapter), and places through a heap of pods by load
(`raftorch.core.placement`). A view without `dirty` is a full pass over every adapter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from protocol.values import PodState, SlotStatus
from raftorch.core.cowmap import EMPTY
from raftorch.core.model import (
    AdapterSpec,
    Command,
    Grant,
    Plan,
    PodInfo,
    Policy,
    RemovePod,
    Revoke,
    SlotState,
    View,
    bounded_reasons,
    slot_adapter,
    slot_index,
    summarise,
    wanted_slots,
)
from raftorch.core.placement import Placer
from raftorch.core.rebalance import plan_moves
from raftorch.core.snapshot import rebuild_indexes
from raftorch.core.standbys import add_standbys, drop_standbys
from raftorch.core.unowned import Unowned


def plan(view: View, now: float, policy: Policy) -> Plan:
    """Decide the next commands, to be applied in order in one Raft entry.

    Steps: expire pods without a renewal for the TTL, revoke slots nobody wants any more,
    drop standbys that can no longer take over, grant unowned slots (failover first,
    promoting a standby where one can), then add standbys. A REVOKING slot is never
    granted; when its owner expires in this plan it vanishes (RemovePod deletes it) and
    is granted afresh in the same entry if still wanted. Every command is valid against
    the state `view` shows once the earlier ones are applied: the planner keeps a working
    copy that mirrors the appliers. Without the configuration (`view.adapters` None) only
    expiry is planned; without the epoch floor (`view.may_grant` False) nothing is
    granted. Pure and deterministic: no I/O, no clock, iteration in sorted order.
    """
    work = _Work(view, policy)
    _expire(work, now)
    if view.adapters is None:  # configuration unknown: expire only, never revoke blindly
        work.reasons.append("configuration not loaded: only expiry is planned")
        return work.plan()
    adapters = view.adapters
    candidates = sorted(work.candidates(adapters))
    _revoke_unwanted(work, adapters, candidates)
    desired = {a: adapters[a] for a in candidates if a in adapters and adapters[a].enabled}
    drop_standbys(work, desired)
    if not view.may_grant:
        work.reasons.append("grants wait for the epoch floor from PostgreSQL")
        return work.plan()
    _grant_unowned(work, desired)
    add_standbys(work, desired)
    if not work.commands:  # moves only from a settled state: nothing else changing now
        plan_moves(work, adapters, view.moves)
    return work.plan()


# --- the working copy -----------------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    """The planner's mutable copy of one slot, changed as the applier will change it."""

    slot: str
    adapter_id: str
    owner: str | None
    epoch: int
    standbys: list[str]
    status: SlotStatus
    handoff_to: str | None = None

    @property
    def members(self) -> list[str]:
        return ([self.owner] if self.owner is not None else []) + self.standbys


def _copy(state: SlotState) -> _Slot:
    return _Slot(state.slot, state.adapter_id, state.owner, state.epoch, list(state.standbys),
                 state.status, state.handoff_to)  # fmt: skip


@dataclass(slots=True)
class _Work:
    """Everything one planning pass reads and writes: copies of the slots it touches only."""

    view: View
    policy: Policy
    pods: dict[str, PodInfo] = field(default_factory=dict)  # registered and not expired
    commands: list[Command] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    pending: set[str] = field(default_factory=set)
    touched: set[str] = field(default_factory=set)  # adapters of slots expiry freed
    grants: int = 0
    standbys_added: int = 0
    given: set[str] = field(default_factory=set)  # pods this plan gives work to
    _slots: dict[str, _Slot | None] = field(default_factory=dict)  # copies; None: deleted
    _added: dict[str, set[str]] = field(default_factory=dict)  # adapter -> slots created
    _members: dict[str, Counter[str]] = field(default_factory=dict)  # adapter -> pod roles
    _zones: dict[str, Counter[str | None]] = field(default_factory=dict)
    _fewest: dict[str, int] = field(default_factory=dict)  # adapter -> bound of its roles/pod
    _wanted: dict[str, list[str]] = field(default_factory=dict)  # adapter -> wanted slots
    pod_slots: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    adapter_slots: Mapping[str, Mapping[str, bool]] = field(default_factory=dict)
    unassigned: Mapping[str, bool] = field(default_factory=dict)
    _placer: Placer | None = None  # made on first use: most ticks place nothing

    def __post_init__(self) -> None:
        view = self.view
        if view.pod_slots is None or view.adapter_slots is None or view.unassigned is None:
            built = rebuild_indexes(view.pods.values(), view.slots.values())
            self.pod_slots = built.pod_slots
            self.adapter_slots = built.adapter_slots
            self.unassigned = built.unassigned
        else:
            self.pod_slots, self.adapter_slots = view.pod_slots, view.adapter_slots
            self.unassigned = view.unassigned
        self.pods = dict(view.pods)

    @property
    def placer(self) -> Placer:
        """Pods by load, made on first use (most ticks at 1,000 pods place nothing)."""
        if self._placer is None:
            load = Counter({p: len(self.pod_slots.get(p, EMPTY)) for p in self.pods})
            self._placer = Placer(self.pods, load)
        return self._placer

    def plan(self) -> Plan:
        return Plan(tuple(self.commands), bounded_reasons(self.reasons), frozenset(self.pending))

    def spent(self, count: int) -> bool:
        return self.policy.spent(count, len(self.given))

    def allowed(self, pod_id: str) -> bool:
        """Whether this plan may still give the pod work (see `close_if_full`)."""
        return not self.placer.restricted or pod_id in self.given

    def full(self) -> bool:
        """Every pod this plan may give work to has its fair share (see `close_if_full`)."""
        return self._placer is not None and self._placer.exhausted()

    def close_if_full(self, remaining: Callable[[], int]) -> None:
        """At the pods budget, grants go on to the pods already given work: up to
        `max_grants_per_pod` each, and never past the even share they would hold with
        the `remaining()` slots placed. What costs the leader is each pod woken."""
        if len(self.given) < self.policy.max_pods_per_tick or self.placer.restricted:
            return
        load = self.placer.load
        active = [p for p, pod in self.pods.items() if pod.state is PodState.ACTIVE]
        even = (sum(load[p] for p in active) + remaining()) // max(1, len(active))  # down
        least = min(load[p] for p in self.given)  # each has had one grant by now
        self.placer.restrict(self.given, min(even, least + self.policy.max_grants_per_pod - 1))

    # reads ------------------------------------------------------------------------------

    def peek(self, key: str) -> _Slot | SlotState | None:
        if key in self._slots:
            return self._slots[key]
        return self.view.slots.get(key)

    def slot(self, key: str) -> _Slot | None:
        """The working copy of a slot, made on first use."""
        if key not in self._slots:
            state = self.view.slots.get(key)
            self._slots[key] = _copy(state) if state is not None else None
        return self._slots[key]

    def keys_of(self, adapter_id: str) -> list[str]:
        keys = set(self.adapter_slots.get(adapter_id, EMPTY)) | self._added.get(adapter_id, set())
        return sorted((k for k in keys if self.peek(k) is not None), key=slot_index)

    def wanted(self, spec: AdapterSpec) -> list[str]:
        """`wanted_slots(spec)`, made once per plan (specs do not change within one)."""
        found = self._wanted.get(spec.adapter_id)
        if found is None:
            found = self._wanted[spec.adapter_id] = wanted_slots(spec)
        return found

    def changed(self) -> Iterable[str]:
        """The slots this plan has copied (changed, or deleted)."""
        return self._slots.keys()

    def added(self, adapter_id: str) -> set[str]:
        return self._added.get(adapter_id, set())

    def open_slots(self, spec: AdapterSpec) -> list[str]:
        """The wanted slots of `spec` that may have no owner, in order: not created yet,
        unassigned in the view, or changed by this plan. The others are owned or being
        revoked in the view and untouched: a grant cannot go to them, and looking at each
        made every plan of a mass failover cost as much as the whole state."""
        existing, unassigned, copies = self.adapter_slots.get(spec.adapter_id, EMPTY), \
            self.unassigned, self._slots  # fmt: skip
        return [key for key in self.wanted(spec)
                if key not in existing or key in unassigned or key in copies]  # fmt: skip

    def candidates(self, adapters: Mapping[str, AdapterSpec]) -> set[str]:
        if self.view.dirty is None:
            return set(adapters) | set(self.adapter_slots)
        found = set(self.view.dirty) | self.touched
        found.update(slot_adapter(key) for key in self.unassigned)
        return found

    # membership counts for placement ------------------------------------------------------

    def members(self, adapter_id: str) -> Counter[str]:
        counts = self._members.get(adapter_id)
        if counts is None:
            counts = Counter()
            for key in self.keys_of(adapter_id):
                current = self.peek(key)
                if current is not None:
                    counts.update(_members_of(current))
            self._members[adapter_id] = counts
        return counts

    def zone_crowd(self, adapter_id: str) -> Counter[str | None]:
        counts = self._zones.get(adapter_id)
        if counts is None:
            counts = Counter()
            for pod_id, n in self.members(adapter_id).items():
                counts[self.placer.zone(pod_id)] += n
            self._zones[adapter_id] = counts
        return counts

    def joined(self, adapter_id: str, pod_id: str) -> None:
        """The load was counted by the placer; the adapter's counts follow (and the pod
        is one this plan gives work to)."""
        self.given.add(pod_id)
        self.members(adapter_id)[pod_id] += 1
        self.zone_crowd(adapter_id)[self.placer.zone(pod_id)] += 1

    def left(self, adapter_id: str, pod_id: str) -> None:
        self._fewest.pop(adapter_id, None)
        self.placer.load[pod_id] -= 1
        self.members(adapter_id)[pod_id] -= 1
        self.zone_crowd(adapter_id)[self.placer.zone(pod_id)] -= 1

    def choose(self, spec: AdapterSpec, exclude: Iterable[str]) -> str | None:
        members, crowd = self.members(spec.adapter_id), self.zone_crowd(spec.adapter_id)
        fewest = self._fewest.get(spec.adapter_id, 0)

        def zone_crowd(zone: str | None) -> int:
            return crowd[zone] if zone is not None else 0

        chosen = self.placer.choose(
            spec.connector, set(exclude), lambda p: members[p], zone_crowd,
            fewest=fewest, quiet=self.placer.quietest(zone_crowd),
        )  # fmt: skip
        if chosen is not None:
            if members[chosen] > fewest:  # the bound is low by now: every pod holds more
                self._fewest[spec.adapter_id] = self.placer.fewest(spec.connector, members)
            self.joined(spec.adapter_id, chosen)
        return chosen

    # changes ------------------------------------------------------------------------------

    def create(self, key: str, adapter_id: str) -> _Slot:
        created = _Slot(key, adapter_id, None, 0, [], SlotStatus.UNASSIGNED)
        self._slots[key] = created
        self._added.setdefault(adapter_id, set()).add(key)
        return created

    def delete(self, key: str) -> None:
        self._slots[key] = None

    def forget_pod(self, pod_id: str) -> None:
        """Mirror of RemovePod: the pod's slots are vacated (deleted if being revoked)."""
        placer = self.placer  # made before the pod leaves, as if it had been made first
        del self.pods[pod_id]
        placer.forget(pod_id)
        for key in sorted(self.pod_slots.get(pod_id, EMPTY)):
            current = self.slot(key)
            if current is None:
                continue
            self.touched.add(current.adapter_id)
            for counts in (self._members, self._zones, self._fewest):
                counts.pop(current.adapter_id, None)
            if current.owner == pod_id:
                if current.status is SlotStatus.REVOKING:
                    self.delete(key)
                else:
                    current.owner, current.status = None, SlotStatus.UNASSIGNED
            elif pod_id in current.standbys:
                current.standbys.remove(pod_id)


def _members_of(state: _Slot | SlotState) -> list[str]:
    return ([state.owner] if state.owner is not None else []) + list(state.standbys)


# --- the steps --------------------------------------------------------------------------


def _expire(work: _Work, now: float) -> None:
    ttl = work.policy.ttl_seconds
    pods, renewals = work.view.pods, work.view.renewals
    if renewals and now - min(renewals.values()) <= ttl and all(p in renewals for p in pods):
        return  # every pod renewed in time: the usual tick, without sorting every pod
    expired: list[str] = []
    for pod_id in sorted(pods):
        renewal = work.view.renewals.get(pod_id)
        if renewal is not None and now - renewal <= ttl:
            continue
        pod = work.view.pods[pod_id]
        work.commands.append(RemovePod(pod_id, pod.incarnation, reason="expired"))
        work.forget_pod(pod_id)
        since = "never renewed" if renewal is None else f"no renewal for {now - renewal:.1f}s"
        expired.append(f"expired pod {pod_id} ({since})")
    work.reasons.extend(summarise(expired, "expired {} more pods"))


def _revoke_unwanted(
    work: _Work, adapters: Mapping[str, AdapterSpec], candidates: list[str]
) -> None:
    why: Counter[str] = Counter()
    for adapter_id in candidates:
        spec = adapters.get(adapter_id)
        keys = set(work.adapter_slots.get(adapter_id, EMPTY)) | work.added(adapter_id)
        if not keys:  # most adapters while 100,000 slots are placed: no wanted list built
            continue
        wanted = set(work.wanted(spec)) if spec is not None else set()
        # Only the slots beyond what is wanted (a set difference, not a look at each slot).
        for key in sorted(keys - wanted, key=slot_index):
            peeked = work.peek(key)
            if peeked is None or peeked.status is SlotStatus.REVOKING:
                continue
            current = work.slot(key)
            assert current is not None
            if spec is None:
                reason = "adapter deleted"
            elif not spec.enabled:
                reason = "adapter disabled"
            else:
                reason = "slot beyond the adapter's instances"
            work.commands.append(Revoke(key, reason=reason))
            why[reason] += 1
            if current.owner is None:
                work.delete(key)
            else:
                for pod_id in current.standbys:
                    work.left(adapter_id, pod_id)
                current.status, current.standbys = SlotStatus.REVOKING, []
    for reason, count in sorted(why.items()):
        work.reasons.append(f"revoked {count} slot(s): {reason}")


def _grant_unowned(work: _Work, desired: Mapping[str, AdapterSpec]) -> None:
    """Grant every unowned wanted slot, failovers first, within the grant budget."""
    budget = work.policy.max_grants_per_tick
    done: Counter[str] = Counter()
    deferred, unplaced = 0, []
    todo = Unowned(work, desired)
    while (item := todo.take()) is not None:
        adapter_id, key = item
        if work.grants >= budget or work.full():  # for good: neither comes back in a plan
            rest, adapters = todo.rest()
            deferred += 1 + rest
            work.pending.update({adapter_id} | adapters)
            break
        spec, current = desired[adapter_id], work.slot(key)
        outcome = _grant(work, key, spec, current)
        if outcome in (PROMOTED, PLACED):
            done[outcome] += 1
        elif outcome == WAIT:  # for a pod this plan may not give work to any more
            deferred += 1
            work.pending.add(adapter_id)
        else:
            unplaced.append(f"slot {key}: {outcome}")
            if current is None or not current.members:
                todo.stick(spec.connector)
        work.close_if_full(lambda: todo.rest()[0])
    if done:
        granted, promoted = done.total(), done[PROMOTED]
        work.reasons.append(f"granted {granted} slot(s) ({promoted} by failover)")
    if deferred:
        bound = f"of {budget}" if work.grants >= budget else f"for {len(work.given)} pods"
        work.reasons.append(f"grant budget {bound} reached: {deferred} slot(s) wait")
    work.reasons.extend(summarise(unplaced, "{} more slots cannot be placed", todo.skipped))


PROMOTED, PLACED, WAIT = "promoted", "placed", "wait"
"""What `_grant` did; WAIT: the slot must go to a pod this plan may not give work to."""


def _grant(work: _Work, key: str, spec: AdapterSpec, current: _Slot | None) -> str:
    """Promote a standby, or place an owner: "promoted", "placed", WAIT, or why not."""
    if current is not None and (promoted := _promote(work, current, spec)) is not None:
        return promoted
    return _place_owner(work, key, spec, current) or PLACED


def _promote(work: _Work, current: _Slot, spec: AdapterSpec) -> str | None:
    """Make the least loaded able standby the owner; it keeps its load (standby -> owner).
    None: no standby can take over (the slot is granted cold)."""
    load = work.placer.load
    able = [
        pod_id
        for pod_id in current.standbys
        if work.placer.able(pod_id, spec.connector) and load[pod_id] <= work.pods[pod_id].capacity
    ]
    hint = current.handoff_to
    if hint is not None and hint not in able and work.placer.able(hint, spec.connector):
        return None  # a handoff named another pod: the slot is granted there, cold
    if not able:
        return None
    # A handoff named its target: the standby there takes over.
    pod_id = hint if hint in able else min(able, key=lambda p: (not work.allowed(p), load[p], p))
    if not work.allowed(pod_id):
        return WAIT
    work.commands.append(
        Grant(current.slot, spec.adapter_id, pod_id, current.epoch, reason="failover")
    )
    work.grants += 1
    work.given.add(pod_id)
    current.owner, current.status = pod_id, SlotStatus.CLAIMING
    current.standbys.remove(pod_id)
    return PROMOTED


def _place_owner(work: _Work, key: str, spec: AdapterSpec, current: _Slot | None) -> str | None:
    """Grant the slot to the best placement (the target of its handoff, if it can); the
    reason it cannot be placed otherwise (WAIT: not within this plan's pods)."""
    pod_id = _handoff_target(work, spec, current) or work.choose(
        spec, current.members if current is not None else ()
    )
    if pod_id == WAIT or (pod_id is None and work.placer.restricted):
        return WAIT
    if pod_id is None:
        return _why_unplaceable(work, spec)
    epoch = current.epoch if current is not None else 0
    work.commands.append(Grant(key, spec.adapter_id, pod_id, epoch, reason="grant"))
    work.grants += 1
    if current is None:
        current = work.create(key, spec.adapter_id)
    current.owner, current.status = pod_id, SlotStatus.CLAIMING
    return None


def _handoff_target(work: _Work, spec: AdapterSpec, current: _Slot | None) -> str | None:
    target = current.handoff_to if current is not None else None
    if target is None or target in current.members:  # type: ignore[union-attr]
        return None
    pod = work.pods.get(target)
    load = work.placer.load
    if pod is None or not work.placer.able(target, spec.connector) or load[target] >= pod.capacity:
        return None
    if not work.allowed(target):
        return WAIT
    work.placer.add(target)
    work.joined(spec.adapter_id, target)
    return target


def _why_unplaceable(work: _Work, spec: AdapterSpec) -> str:
    if not work.placer.offered(spec.connector):
        return f"no pod offers connector {spec.connector}"
    return f"no capacity for connector {spec.connector}"
