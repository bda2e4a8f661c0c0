"""The replicated state's immutable snapshot, and the working copy one entry changes.

Persistent maps (`raftorch.core.cowmap`, copy-on-write buckets of plain dicts, which
the garbage collector does not track): a snapshot is a handful of references, never a
copy; an entry works on mutation views of the maps and costs O(its changes); an entry
that changes nothing copies nothing. Every slot change
goes through `Batch.put`, which keeps the indexes: slots by pod and by adapter, the
unassigned slots, a version per pod (bumped whenever what its assignments show changes)
and the count of slots per status, so no reader has to scan.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from msgspec import structs

from protocol.values import SlotStatus
from raftorch.core.cowmap import EMPTY, CowMap, CowMutation
from raftorch.core.model import PodInfo, ReplicaInfo, SlotState, slot_adapter
from raftorch.core.transitions import SLOT_TRANSITIONS

Roles = CowMap[str, str]  # slot -> "ACTIVE" or "STANDBY"

STOPPING = frozenset({SlotStatus.REVOKING, SlotStatus.HANDING_OFF})
"""Statuses in which the owner must stop the session: its assignments leave the slot out.
Of a slot's status, only whether it is one of these shows in a pod's assignments, so only
that bumps the pod's version (CLAIMING -> ACTIVE does not: it would wake the pod's
long-poll to send it the same list again, twice per grant when thousands move)."""


class Rejected(Exception):
    """A command that does not fit the current state; the entry goes on without it."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent, immutable view of the replicated state for readers on any thread."""

    pods: CowMap[str, PodInfo] = EMPTY
    slots: CowMap[str, SlotState] = EMPTY
    epoch_counter: int = 0
    epoch_floor: int = 0
    applied_entries: int = 0
    replicas: CowMap[str, ReplicaInfo] = EMPTY
    leader_marker: tuple[str, int] = ("", 0)
    floor_confirmed: bool = False
    pod_slots: CowMap[str, Roles] = EMPTY
    """pod -> the slots it owns (ACTIVE) or stands by for (STANDBY)."""
    adapter_slots: CowMap[str, CowMap[str, bool]] = EMPTY
    """adapter -> its slots in the state."""
    unassigned: CowMap[str, bool] = EMPTY
    """Slots without an owner that may be granted (UNASSIGNED)."""
    pod_versions: CowMap[str, int] = EMPTY
    """pod -> the number of the last entry that changed its assignments (only grows)."""
    status_counts: CowMap[SlotStatus, int] = EMPTY
    changes: int = 0
    """Entries that changed something a reader can see (barriers do not count)."""
    pods_revision: int = 0
    """Entries that registered, drained or removed a pod."""

    def slots_of_pod(self, pod_id: str) -> Roles:
        return self.pod_slots.get(pod_id, EMPTY)

    def slots_of_adapter(self, adapter_id: str) -> list[SlotState]:
        return [self.slots[s] for s in self.adapter_slots.get(adapter_id, EMPTY)]


@dataclass(slots=True)
class Batch:
    """Mutation views of the maps for one entry; `finish` freezes them into a Snapshot."""

    base: Snapshot
    at: float
    pods: Any = None
    slots: Any = None
    pod_slots: Any = None
    adapter_slots: Any = None
    unassigned: Any = None
    pod_versions: Any = None
    replicas: Any = None
    roles: dict[str, CowMutation[str, str]] = field(default_factory=dict)
    """pod -> its slots as this entry changes them (folded into pod_slots by finish)."""
    members: dict[str, CowMutation[str, bool]] = field(default_factory=dict)
    """adapter -> its slots as this entry changes them (folded into adapter_slots)."""
    counts: dict[SlotStatus, int] = field(default_factory=dict)
    marker: tuple[str, int] = ("", 0)
    floor_confirmed: bool = False
    counter: int = 0
    floor: int = 0
    granted: list[tuple[str, str, int]] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)  # pods whose assignments changed
    changed: bool = False
    pods_changed: bool = False

    def __post_init__(self) -> None:
        b = self.base
        self.pods, self.slots = b.pods.mutate(), b.slots.mutate()
        self.pod_slots, self.adapter_slots = b.pod_slots.mutate(), b.adapter_slots.mutate()
        self.unassigned, self.pod_versions = b.unassigned.mutate(), b.pod_versions.mutate()
        self.replicas = b.replicas.mutate()
        self.counts = dict(b.status_counts.items())
        self.marker, self.floor_confirmed = b.leader_marker, b.floor_confirmed
        self.counter, self.floor = b.epoch_counter, b.epoch_floor

    def finish(self, applied_entries: int) -> Snapshot:
        if not self.changed:  # a barrier, a no-op: the maps stay the very same objects
            return replace(self.base, applied_entries=applied_entries)
        _fold(self.roles, self.pod_slots)
        _fold(self.members, self.adapter_slots)
        for pod_id in self.touched:  # the entry's own number: it only ever grows
            if pod_id in self.pods:
                self.pod_versions[pod_id] = applied_entries
        return Snapshot(
            pods=self.pods.finish(), slots=self.slots.finish(),
            epoch_counter=self.counter, epoch_floor=self.floor,
            applied_entries=applied_entries, replicas=self.replicas.finish(),
            leader_marker=self.marker, floor_confirmed=self.floor_confirmed,
            pod_slots=self.pod_slots.finish(), adapter_slots=self.adapter_slots.finish(),
            unassigned=self.unassigned.finish(), pod_versions=self.pod_versions.finish(),
            status_counts=CowMap({k: v for k, v in self.counts.items() if v}),
            changes=self.base.changes + (1 if self.changed else 0),
            pods_revision=self.base.pods_revision + (1 if self.pods_changed else 0),
        )  # fmt: skip

    # --- reads -------------------------------------------------------------------

    def pod(self, pod_id: str, incarnation: str | None = None) -> PodInfo:
        pod: PodInfo | None = self.pods.get(pod_id)
        if pod is None:
            raise Rejected(f"pod {pod_id} is not registered")
        if incarnation is not None and pod.incarnation != incarnation:
            raise Rejected(f"pod {pod_id} incarnation {incarnation} is not current")
        return pod

    def slot(self, slot: str) -> SlotState:
        found: SlotState | None = self.slots.get(slot)
        if found is None:
            raise Rejected(f"slot {slot} does not exist")
        return found

    # --- writes: every slot change goes through `put`, which keeps the indexes ---------

    def put(self, old: SlotState | None, new: SlotState | None) -> None:
        key = (old or new).slot  # type: ignore[union-attr]
        self.changed = True
        before = _members(old)
        after = _members(new)
        for pod_id, role in before.items():
            if after.get(pod_id) != role:
                self._unlink(pod_id, key)
        for pod_id, role in after.items():
            if before.get(pod_id) != role:
                self._link(pod_id, key, role)
        if before != after or old is None or new is None or (
            old.owner, old.epoch, old.status in STOPPING) != (
            new.owner, new.epoch, new.status in STOPPING):  # fmt: skip
            self.touched.update(before, after)
        adapter = slot_adapter(key)
        if old is not None:
            self.counts[old.status] = self.counts.get(old.status, 0) - 1
        if new is None:
            del self.slots[key]
            self._index_adapter(adapter, key, present=False)
            self.unassigned.pop(key, None)
            return
        self.slots[key] = new
        self.counts[new.status] = self.counts.get(new.status, 0) + 1
        if old is None:
            self._index_adapter(adapter, key, present=True)
        if new.owner is None and new.status is SlotStatus.UNASSIGNED:
            self.unassigned[key] = True
        else:
            self.unassigned.pop(key, None)

    def roles_of(self, pod_id: str) -> CowMutation[str, str]:
        """The pod's slots (slot -> role) as this entry has changed them so far."""
        roles = self.roles.get(pod_id)
        if roles is None:
            roles = self.roles[pod_id] = self.pod_slots.get(pod_id, EMPTY).mutate()
        return roles

    def _link(self, pod_id: str, slot: str, role: str) -> None:
        self.roles_of(pod_id)[slot] = role

    def _unlink(self, pod_id: str, slot: str) -> None:
        self.roles_of(pod_id).pop(slot, None)

    def _index_adapter(self, adapter: str, slot: str, *, present: bool) -> None:
        members = self.members.get(adapter)
        if members is None:
            members = self.members[adapter] = self.adapter_slots.get(adapter, EMPTY).mutate()
        if present:
            members[slot] = True
        else:
            members.pop(slot, None)

    def set_status(self, current: SlotState, status: SlotStatus, **changes: Any) -> SlotState:
        if current.status is not status:
            SLOT_TRANSITIONS.check(current.status, status)
        updated = structs.replace(current, status=status, changed_at=self.at, **changes)
        self.put(current, updated)
        return updated

    def vacate(self, current: SlotState) -> None:
        """The owner is gone: free the slot, or delete it if it was being revoked."""
        if current.status is SlotStatus.REVOKING:
            self.put(current, None)
        else:
            self.set_status(current, SlotStatus.UNASSIGNED, owner=None, detail="")

    def forget_pod(self, pod_id: str) -> None:
        """Every slot the pod owns is vacated, every standby role of it dropped."""
        for slot, role in list(self.roles_of(pod_id).items()):
            current: SlotState = self.slots[slot]
            if role == "ACTIVE":
                self.vacate(current)
            else:
                standbys = tuple(p for p in current.standbys if p != pod_id)
                self.put(current, structs.replace(current, standbys=standbys))


def _fold(changed: dict[str, CowMutation[str, Any]], index: Any) -> None:
    """Put an entry's changed inner maps into their index; an emptied one leaves it."""
    for key, mutation in changed.items():
        if not mutation.changed:
            continue
        inner = mutation.finish()
        if inner:
            index[key] = inner
        else:
            index.pop(key, None)
    changed.clear()


def _members(state: SlotState | None) -> dict[str, str]:
    """pod -> role in the slot (a REVOKING slot's owner keeps its role until it stops)."""
    if state is None:
        return {}
    members = dict.fromkeys(state.standbys, "STANDBY")
    if state.owner is not None:
        members[state.owner] = "ACTIVE"
    return members


def rebuild_indexes(
    pods: Iterable[PodInfo], slots: Iterable[SlotState], **scalars: Any
) -> Snapshot:
    """A snapshot with every index built from `pods` and `slots` (used by the dump)."""
    base = Snapshot(pods=CowMap({p.pod_id: p for p in pods}), **scalars)
    batch = Batch(base, 0.0)
    for state in slots:
        batch.put(None, state)
    rebuilt = batch.finish(base.applied_entries)
    versions = CowMap(dict.fromkeys(rebuilt.pods, base.applied_entries))
    return replace(rebuilt, pod_versions=versions, changes=base.changes)
