"""The lease planner: a pure function from a frozen view of the cluster to the next plan."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from protocol.values import DeploymentMode, PodState, SlotStatus
from raftorch.core.model import (
    AdapterSpec,
    AddStandby,
    Command,
    DropStandby,
    Grant,
    Plan,
    PodInfo,
    Policy,
    RemovePod,
    Revoke,
    View,
    slot_adapter,
    slot_id,
    slot_index,
)

MAX_REASONS = 20  # Plan.reasons never has more lines than this
_MAX_DETAIL_LINES = 6  # per group (expired pods, unplaceable slots) before summarising


def plan(view: View, now: float, policy: Policy) -> Plan:
    """Decide the next commands, to be applied in order in one Raft entry.

    Steps: expire pods without a renewal for the TTL, revoke slots nobody wants any
    more, drop standbys that can no longer take over, grant unowned slots (failover
    first, promoting a standby where one can), then add standbys. A REVOKING slot is
    never granted; when its owner expires in this plan it vanishes (RemovePod deletes
    it) and is granted afresh in the same entry if still wanted. Every command is
    valid against the state `view` shows once the earlier commands of the plan are
    applied: the planner keeps a working copy that mirrors `OwnershipState.apply`.
    Without the configuration (`view.adapters` None) only expiry is planned; without the
    epoch floor (`view.may_grant` False) nothing is granted. Pure and deterministic: no
    I/O, no clock, iteration in sorted order.
    """
    work = _Work(view, policy)
    _expire(work, now)
    if view.adapters is None:  # configuration unknown: expire only, never revoke blindly
        work.reasons.append("configuration not loaded: only expiry is planned")
        return Plan(tuple(work.commands), _bounded(work.reasons))
    desired = _desired_slots(view.adapters)
    _revoke_unwanted(work, view.adapters, desired)
    work.count_members()
    _drop_standbys(work, desired)
    if not view.may_grant:
        work.reasons.append("grants wait for the epoch floor from PostgreSQL")
        return Plan(tuple(work.commands), _bounded(work.reasons))
    _grant_unowned(work, desired)
    _add_standbys(work, desired)
    return Plan(tuple(work.commands), _bounded(work.reasons))


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

    @property
    def members(self) -> list[str]:
        return ([self.owner] if self.owner is not None else []) + self.standbys


@dataclass(slots=True)
class _Work:
    """Everything one planning pass reads and writes."""

    view: View
    policy: Policy
    pods: dict[str, PodInfo] = field(default_factory=dict)  # registered and not expired
    slots: dict[str, _Slot] = field(default_factory=dict)
    load: Counter[str] = field(default_factory=Counter)  # pod -> slots it owns or backs
    zones: Counter[tuple[str, str]] = field(default_factory=Counter)  # (adapter, zone) -> members
    commands: list[Command] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    grants: int = 0
    standbys_added: int = 0

    def __post_init__(self) -> None:
        self.pods = dict(self.view.pods)
        self.slots = {
            s.slot: _Slot(s.slot, s.adapter_id, s.owner, s.epoch, list(s.standbys), s.status)
            for s in self.view.slots.values()
        }

    def forget_pod(self, pod_id: str) -> None:
        """Mirror of RemovePod: the pod's slots are vacated (deleted if being revoked)."""
        del self.pods[pod_id]
        for key in sorted(self.slots):
            current = self.slots[key]
            if current.owner == pod_id:
                if current.status is SlotStatus.REVOKING:
                    del self.slots[key]
                else:
                    current.owner, current.status = None, SlotStatus.UNASSIGNED
            elif pod_id in current.standbys:
                current.standbys.remove(pod_id)

    def count_members(self) -> None:
        """Load per pod and members per (adapter, zone), from the slots as they now are."""
        for current in self.slots.values():
            for member in current.members:
                self.join(current.adapter_id, member)

    def join(self, adapter_id: str, pod_id: str) -> None:
        self.load[pod_id] += 1
        zone = self.zone(pod_id)
        if zone is not None:
            self.zones[(adapter_id, zone)] += 1

    def leave(self, adapter_id: str, pod_id: str) -> None:
        self.load[pod_id] -= 1
        zone = self.zone(pod_id)
        if zone is not None:
            self.zones[(adapter_id, zone)] -= 1

    def zone(self, pod_id: str) -> str | None:
        pod = self.pods.get(pod_id)
        return pod.zone if pod is not None else None

    def can_run(self, pod_id: str, connector: str) -> bool:
        """Live, ACTIVE and offering the connector (capacity aside)."""
        pod = self.pods.get(pod_id)
        return pod is not None and pod.state is PodState.ACTIVE and connector in pod.connectors


# --- the steps --------------------------------------------------------------------------


def _expire(work: _Work, now: float) -> None:
    ttl = work.policy.ttl_seconds
    expired: list[str] = []
    for pod_id in sorted(work.view.pods):
        renewal = work.view.renewals.get(pod_id)
        if renewal is not None and now - renewal <= ttl:
            continue
        pod = work.view.pods[pod_id]
        work.commands.append(RemovePod(pod_id, pod.incarnation, reason="expired"))
        work.forget_pod(pod_id)
        since = "never renewed" if renewal is None else f"no renewal for {now - renewal:.1f}s"
        expired.append(f"expired pod {pod_id} ({since})")
    work.reasons.extend(_summarise(expired, "expired {} more pods"))


def _desired_slots(adapters: Mapping[str, AdapterSpec]) -> dict[str, AdapterSpec]:
    """Slot id -> spec for every slot the configuration wants running."""
    desired: dict[str, AdapterSpec] = {}
    for key in sorted(adapters):
        spec = adapters[key]
        if not spec.enabled:
            continue
        count = spec.instances if spec.mode is DeploymentMode.SCALE_OUT else 1
        for index in range(count):
            desired[slot_id(spec.adapter_id, index)] = spec
    return desired


def _revoke_unwanted(
    work: _Work, adapters: Mapping[str, AdapterSpec], desired: Mapping[str, AdapterSpec]
) -> None:
    why: Counter[str] = Counter()
    for key in sorted(work.slots):
        current = work.slots[key]
        if key in desired or current.status is SlotStatus.REVOKING:
            continue
        spec = adapters.get(current.adapter_id)
        if spec is None:
            reason = "adapter deleted"
        elif not spec.enabled:
            reason = "adapter disabled"
        else:
            reason = "slot beyond the adapter's instances"
        work.commands.append(Revoke(key, reason=reason))
        why[reason] += 1
        if current.owner is None:
            del work.slots[key]
        else:
            current.status, current.standbys = SlotStatus.REVOKING, []
    for reason, count in sorted(why.items()):
        work.reasons.append(f"revoked {count} slot(s): {reason}")


def _drop_standbys(work: _Work, desired: Mapping[str, AdapterSpec]) -> None:
    """Standbys that could not take over (or are too many, or of a mode without any)."""
    dropped = 0
    for key in sorted(work.slots):
        current, spec = work.slots[key], desired.get(key)
        if spec is None or current.status is SlotStatus.REVOKING:
            continue
        wanted = work.policy.standbys_per_slot if spec.mode is DeploymentMode.ACTIVE_PASSIVE else 0
        kept: list[str] = []
        for pod_id in list(current.standbys):
            if len(kept) < wanted and work.can_run(pod_id, spec.connector):
                kept.append(pod_id)
                continue
            work.commands.append(DropStandby(key, pod_id))
            current.standbys.remove(pod_id)
            work.leave(current.adapter_id, pod_id)
            dropped += 1
    if dropped:
        work.reasons.append(f"dropped {dropped} standby(s)")


def _grant_unowned(work: _Work, desired: Mapping[str, AdapterSpec]) -> None:
    """Grant every unowned wanted slot, failovers first, within the grant budget."""
    budget = work.policy.max_grants_per_tick
    promoted = placed = deferred = 0
    unplaced: list[str] = []
    for key in sorted(desired, key=lambda s: _grant_order(work, s)):
        current = work.slots.get(key)
        if current is not None and not _grantable(current):
            continue
        if work.grants >= budget:
            deferred += 1
            continue
        spec = desired[key]
        if current is not None and _promote(work, current, spec):
            promoted += 1
        elif (why := _place_owner(work, key, spec, current)) is None:
            placed += 1
        else:
            unplaced.append(f"slot {key}: {why}")
    if promoted or placed:
        work.reasons.append(f"granted {promoted + placed} slot(s) ({promoted} by failover)")
    if deferred:
        work.reasons.append(f"grant budget of {budget} reached: {deferred} slot(s) wait")
    work.reasons.extend(_summarise(unplaced, "{} more slots cannot be placed"))


def _grantable(current: _Slot) -> bool:
    """No owner, and not being revoked (a revoked slot must vanish before it is granted)."""
    return current.owner is None and current.status is SlotStatus.UNASSIGNED


def _grant_order(work: _Work, key: str) -> tuple[bool, str, int]:
    """Slots that had an owner (a failover) before new ones, then by adapter and index."""
    current = work.slots.get(key)
    had_owner = current is not None and current.epoch > 0
    return (not had_owner, slot_adapter(key), slot_index(key))


def _promote(work: _Work, current: _Slot, spec: AdapterSpec) -> bool:
    """Make the least loaded able standby the owner; it keeps its load (standby -> owner)."""
    able = [
        pod_id
        for pod_id in current.standbys
        if work.can_run(pod_id, spec.connector) and work.load[pod_id] <= work.pods[pod_id].capacity
    ]
    if not able:
        return False
    pod_id = min(able, key=lambda p: (work.load[p], p))
    work.commands.append(
        Grant(current.slot, spec.adapter_id, pod_id, current.epoch, reason="failover")
    )
    work.grants += 1
    current.owner, current.status = pod_id, SlotStatus.CLAIMING
    current.standbys.remove(pod_id)
    return True


def _place_owner(work: _Work, key: str, spec: AdapterSpec, current: _Slot | None) -> str | None:
    """Grant the slot to the best placement; the reason it cannot be placed otherwise."""
    exclude = set(current.members) if current is not None else set()
    pod_id = _choose(work, spec, exclude)
    if pod_id is None:
        return _why_unplaceable(work, spec)
    epoch = current.epoch if current is not None else 0
    work.commands.append(Grant(key, spec.adapter_id, pod_id, epoch, reason="grant"))
    work.grants += 1
    if current is None:
        current = _Slot(key, spec.adapter_id, None, epoch, [], SlotStatus.UNASSIGNED)
        work.slots[key] = current
    current.owner, current.status = pod_id, SlotStatus.CLAIMING
    work.join(spec.adapter_id, pod_id)
    return None


def _add_standbys(work: _Work, desired: Mapping[str, AdapterSpec]) -> None:
    """Warm standbys for owned active_passive slots, bounded by the grant budget."""
    budget, wanted = work.policy.max_grants_per_tick, work.policy.standbys_per_slot
    short = 0
    for key in sorted(desired, key=lambda s: (slot_adapter(s), slot_index(s))):
        spec, current = desired[key], work.slots.get(key)
        if spec.mode is not DeploymentMode.ACTIVE_PASSIVE or current is None:
            continue
        if current.owner is None or current.status is SlotStatus.REVOKING:
            continue
        while len(current.standbys) < wanted and work.standbys_added < budget:
            pod_id = _choose(work, spec, set(current.members))
            if pod_id is None:
                short += 1
                break
            work.commands.append(AddStandby(key, pod_id))
            work.standbys_added += 1
            current.standbys.append(pod_id)
            work.join(spec.adapter_id, pod_id)
    if work.standbys_added:
        work.reasons.append(f"added {work.standbys_added} standby(s)")
    if short:
        work.reasons.append(f"{short} active_passive slot(s) lack a standby: no able pod")


# --- placement ------------------------------------------------------------------------


def _choose(work: _Work, spec: AdapterSpec, exclude: set[str]) -> str | None:
    """The best pod for a new role in a slot of `spec`, or None.

    Able pods are live, ACTIVE, offer the connector, are below capacity and hold no
    role in the slot yet. Preferred: fewest members of the same adapter in the pod's
    zone (pods without a zone never conflict), then least loaded, then pod id.
    """
    best: tuple[int, int, str] | None = None
    for pod_id in sorted(work.pods):
        pod = work.pods[pod_id]
        if pod_id in exclude or not work.can_run(pod_id, spec.connector):
            continue
        if work.load[pod_id] >= pod.capacity:
            continue
        zone = pod.zone
        crowd = work.zones[(spec.adapter_id, zone)] if zone is not None else 0
        rank = (crowd, work.load[pod_id], pod_id)
        if best is None or rank < best:
            best = rank
    return best[2] if best is not None else None


def _why_unplaceable(work: _Work, spec: AdapterSpec) -> str:
    if not any(work.can_run(pod_id, spec.connector) for pod_id in work.pods):
        return f"no pod offers connector {spec.connector}"
    return f"no capacity for connector {spec.connector}"


# --- reasons --------------------------------------------------------------------------


def _summarise(lines: list[str], more: str) -> list[str]:
    """The first few lines of a group, then one line counting the rest."""
    if len(lines) <= _MAX_DETAIL_LINES:
        return lines
    rest = len(lines) - (_MAX_DETAIL_LINES - 1)
    return [*lines[: _MAX_DETAIL_LINES - 1], more.format(rest)]


def _bounded(reasons: list[str]) -> tuple[str, ...]:
    if len(reasons) <= MAX_REASONS:
        return tuple(reasons)
    rest = len(reasons) - (MAX_REASONS - 1)
    return (*reasons[: MAX_REASONS - 1], f"... and {rest} more")
