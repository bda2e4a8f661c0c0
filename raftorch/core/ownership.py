"""The replicated ownership state and its appliers: deterministic, atomic, never raising.

`OwnershipState.apply` is what every Raft replica runs for a committed entry. It
must give the same result on every replica, so it reads no clock, no randomness and
no I/O: time comes in as an argument. An entry applies whole or not at all — the
commands run against copies that replace the live maps only at the end — and an
unexpected exception is caught and reported in the result, because an exception
escaping a pysyncobj applier wedges the node for good.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from protocol.values import PodState, SlotStatus
from raftorch.core.model import (
    MAX_EPOCH,
    AddStandby,
    AnnounceReplica,
    ApplyResult,
    ClaimLeadership,
    Command,
    DrainPod,
    DropStandby,
    Grant,
    LeaderStamp,
    PodInfo,
    RaiseEpochFloor,
    RegisterPod,
    Release,
    RemovePod,
    ReplicaInfo,
    ReportStatus,
    Revoke,
    SlotState,
    slot_adapter,
)
from raftorch.core.transitions import POD_TRANSITIONS, SLOT_TRANSITIONS, IllegalTransitionError

APPLIED_REQUESTS_KEPT = 10_000
_REPORTABLE = (SlotStatus.CLAIMING, SlotStatus.ACTIVE, SlotStatus.ERROR)


class Rejected(Exception):
    """A command that does not fit the current state; the entry goes on without it."""


class StaleLeader(Exception):
    """The entry carries the stamp of a leader that is no longer the latest: refuse it whole."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent, immutable copy of the replicated state for readers on other threads."""

    pods: dict[str, PodInfo]
    slots: dict[str, SlotState]
    epoch_counter: int
    epoch_floor: int
    applied_entries: int
    replicas: dict[str, ReplicaInfo]
    leader_marker: tuple[str, int] = ("", 0)
    floor_confirmed: bool = False


class _Batch:
    """The working copy one entry's commands change."""

    def __init__(self, state: OwnershipState, at: float) -> None:
        self.pods = dict(state.pods)
        self.slots = dict(state.slots)
        self.replicas = dict(state.replicas)
        self.marker = state.leader_marker
        self.floor_confirmed = state.floor_confirmed
        self.counter = state.epoch_counter
        self.floor = state.epoch_floor
        self.at = at
        self.granted: list[tuple[str, str, int]] = []

    def pod(self, pod_id: str, incarnation: str | None = None) -> PodInfo:
        pod = self.pods.get(pod_id)
        if pod is None:
            raise Rejected(f"pod {pod_id} is not registered")
        if incarnation is not None and pod.incarnation != incarnation:
            raise Rejected(f"pod {pod_id} incarnation {incarnation} is not current")
        return pod

    def slot(self, slot: str) -> SlotState:
        found = self.slots.get(slot)
        if found is None:
            raise Rejected(f"slot {slot} does not exist")
        return found

    def set_status(self, current: SlotState, status: SlotStatus, **changes: Any) -> SlotState:
        if current.status is not status:
            SLOT_TRANSITIONS.check(current.status, status)
        updated = replace(current, status=status, changed_at=self.at, **changes)
        self.slots[current.slot] = updated
        return updated

    def vacate(self, current: SlotState) -> None:
        """The owner is gone: free the slot, or delete it if it was being revoked."""
        if current.status is SlotStatus.REVOKING:
            del self.slots[current.slot]
        else:
            self.set_status(current, SlotStatus.UNASSIGNED, owner=None, detail="")

    def forget_pod(self, pod_id: str) -> None:
        for current in list(self.slots.values()):
            if current.owner == pod_id:
                self.vacate(current)
            elif pod_id in current.standbys:
                standbys = tuple(p for p in current.standbys if p != pod_id)
                self.slots[current.slot] = replace(current, standbys=standbys)


class OwnershipState:
    """Pods, slots and the epoch counter, as replicated by Raft.

    Thread contract: `apply` runs on the Raft thread only; `snapshot` may run on any
    thread. The lock only guards swapping in a finished entry.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.pods: dict[str, PodInfo] = {}
        self.slots: dict[str, SlotState] = {}
        self.epoch_counter = 0
        self.epoch_floor = 0
        self.applied: dict[str, ApplyResult] = {}
        self.applied_entries = 0
        self.replicas: dict[str, ReplicaInfo] = {}  # by Raft address
        self.leader_marker: tuple[str, int] = ("", 0)  # the latest ClaimLeadership
        self.floor_confirmed = False  # an epoch floor from PostgreSQL was applied

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        for name, default in (("replicas", {}), ("leader_marker", ("", 0)),
                              ("floor_confirmed", False)):  # fmt: skip
            self.__dict__.setdefault(name, default)  # dumps written by older versions
        self._lock = threading.Lock()

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                dict(self.pods),
                dict(self.slots),
                self.epoch_counter,
                self.epoch_floor,
                self.applied_entries,
                dict(self.replicas),
                self.leader_marker,
                self.floor_confirmed,
            )

    def apply(self, request_id: str, at: float, commands: Sequence[Command]) -> ApplyResult:
        """Apply one committed entry; never raises, idempotent on `request_id`."""
        previous = self.applied.get(request_id)
        if previous is not None:
            return replace(previous, duplicate=True)
        try:
            batch = _Batch(self, at)
            rejected: list[tuple[int, str]] = []
            for index, command in enumerate(commands):
                try:
                    _APPLIERS[type(command)](batch, command)
                except (Rejected, IllegalTransitionError) as exc:
                    rejected.append((index, str(exc)))
            result = ApplyResult(request_id, tuple(rejected), tuple(batch.granted))
        except StaleLeader as exc:
            result = ApplyResult(request_id, error=f"stale leader: {exc}")
            self._remember(request_id, result)
            return result
        except Exception as exc:  # an applier bug must not wedge the node
            result = ApplyResult(request_id, error=f"{type(exc).__name__}: {exc}")
            self._remember(request_id, result)
            return result
        with self._lock:
            self.pods, self.slots, self.replicas = batch.pods, batch.slots, batch.replicas
            self.epoch_counter, self.epoch_floor = batch.counter, batch.floor
            self.leader_marker, self.floor_confirmed = batch.marker, batch.floor_confirmed
            self.applied_entries += 1
        self._remember(request_id, result)
        return result

    def _remember(self, request_id: str, result: ApplyResult) -> None:
        self.applied[request_id] = result
        while len(self.applied) > APPLIED_REQUESTS_KEPT:
            del self.applied[next(iter(self.applied))]


# --- one applier per command type -----------------------------------------------------


def _register(b: _Batch, c: RegisterPod) -> None:
    if not c.pod_id or not c.incarnation:
        raise Rejected("pod id and incarnation must not be empty")
    if c.capacity < 0:
        raise Rejected(f"pod {c.pod_id} capacity must not be negative")
    b.floor = max(b.floor, min(c.max_epoch_seen, MAX_EPOCH))
    existing = b.pods.get(c.pod_id)
    if existing is not None and existing.incarnation == c.incarnation:
        return  # a retried registration
    if existing is not None:
        # A new process under the same id: the old one runs nothing any more.
        POD_TRANSITIONS.check(existing.state, PodState.ACTIVE)
        b.forget_pod(c.pod_id)
    b.pods[c.pod_id] = PodInfo(
        c.pod_id, c.incarnation, c.address, c.connectors, c.capacity, c.labels,
        PodState.ACTIVE, b.at,
    )  # fmt: skip


def _drain(b: _Batch, c: DrainPod) -> None:
    pod = b.pod(c.pod_id, c.incarnation)
    if pod.state is PodState.DRAINING:
        return
    POD_TRANSITIONS.check(pod.state, PodState.DRAINING)
    b.pods[c.pod_id] = replace(pod, state=PodState.DRAINING)


def _remove(b: _Batch, c: RemovePod) -> None:
    pod = b.pod(c.pod_id, c.incarnation)
    POD_TRANSITIONS.check(pod.state, PodState.ABSENT)
    del b.pods[c.pod_id]
    b.forget_pod(c.pod_id)


def _grant(b: _Batch, c: Grant) -> None:
    if slot_adapter(c.slot) != c.adapter_id:
        raise Rejected(f"slot {c.slot} does not belong to adapter {c.adapter_id}")
    current = b.slots.get(c.slot) or SlotState(c.slot, c.adapter_id)
    if current.epoch != c.expected_epoch:
        raise Rejected(f"slot {c.slot} is at epoch {current.epoch}, not {c.expected_epoch}")
    if current.owner is not None:
        raise Rejected(f"slot {c.slot} is owned by {current.owner}")
    pod = b.pod(c.pod_id)
    if pod.state is not PodState.ACTIVE:
        raise Rejected(f"pod {c.pod_id} is {pod.state.value}")
    SLOT_TRANSITIONS.check(current.status, SlotStatus.CLAIMING)  # before using an epoch
    epoch = max(b.counter, b.floor) + 1
    b.counter = epoch
    standbys = tuple(p for p in current.standbys if p != c.pod_id)
    b.slots[c.slot] = current
    b.set_status(current, SlotStatus.CLAIMING, owner=c.pod_id, epoch=epoch, standbys=standbys)
    b.granted.append((c.slot, c.pod_id, epoch))


def _add_standby(b: _Batch, c: AddStandby) -> None:
    current = b.slot(c.slot)
    pod = b.pod(c.pod_id)
    if current.status is SlotStatus.REVOKING:
        raise Rejected(f"slot {c.slot} is being revoked")
    if pod.state is not PodState.ACTIVE:
        raise Rejected(f"pod {c.pod_id} is {pod.state.value}")
    if c.pod_id == current.owner or c.pod_id in current.standbys:
        raise Rejected(f"pod {c.pod_id} already serves slot {c.slot}")
    b.slots[c.slot] = replace(current, standbys=(*current.standbys, c.pod_id))


def _drop_standby(b: _Batch, c: DropStandby) -> None:
    current = b.slot(c.slot)
    if c.pod_id not in current.standbys:
        raise Rejected(f"pod {c.pod_id} is not a standby of slot {c.slot}")
    standbys = tuple(p for p in current.standbys if p != c.pod_id)
    b.slots[c.slot] = replace(current, standbys=standbys)


def _release(b: _Batch, c: Release) -> None:
    current = b.slot(c.slot)
    if current.owner != c.pod_id or current.epoch != c.epoch:
        raise Rejected(f"slot {c.slot} epoch {c.epoch} is not held by {c.pod_id}")
    b.vacate(current)


def _revoke(b: _Batch, c: Revoke) -> None:
    current = b.slot(c.slot)
    if current.status is SlotStatus.REVOKING:
        return
    if current.owner is None:
        del b.slots[c.slot]
        return
    b.set_status(current, SlotStatus.REVOKING, standbys=(), detail=c.reason)


def _report(b: _Batch, c: ReportStatus) -> None:
    current = b.slot(c.slot)
    if current.owner != c.pod_id or current.epoch != c.epoch:
        raise Rejected(f"slot {c.slot} epoch {c.epoch} is not held by {c.pod_id}")
    if c.status not in _REPORTABLE:
        raise Rejected(f"a pod cannot report status {c.status.value}")
    if current.status is SlotStatus.REVOKING:
        return  # the owner will stop; its reports no longer matter
    if current.status is c.status and current.detail == c.detail:
        return
    b.set_status(current, c.status, detail=c.detail[:1000])


def _raise_floor(b: _Batch, c: RaiseEpochFloor) -> None:
    b.floor = max(b.floor, min(c.floor, MAX_EPOCH))
    b.floor_confirmed = b.floor_confirmed or c.from_database


def _claim(b: _Batch, c: ClaimLeadership) -> None:
    if c.term < b.marker[1]:
        raise Rejected(f"claim of term {c.term} is older than term {b.marker[1]}")
    b.marker = (c.leader, c.term)


def _stamp(b: _Batch, c: LeaderStamp) -> None:
    if (c.leader, c.term) != b.marker:
        raise StaleLeader(
            f"entry of {c.leader} in term {c.term}; the latest claim is "
            f"{b.marker[0] or 'none'} in term {b.marker[1]}"
        )


def _announce(b: _Batch, c: AnnounceReplica) -> None:
    if not c.node_id or not c.raft_address:
        raise Rejected("replica node id and Raft address must not be empty")
    b.replicas[c.raft_address] = ReplicaInfo(c.node_id, c.raft_address, c.api_url)


_APPLIERS: dict[type, Callable[[_Batch, Any], None]] = {
    RegisterPod: _register,
    DrainPod: _drain,
    RemovePod: _remove,
    Grant: _grant,
    AddStandby: _add_standby,
    DropStandby: _drop_standby,
    Release: _release,
    Revoke: _revoke,
    ReportStatus: _report,
    RaiseEpochFloor: _raise_floor,
    AnnounceReplica: _announce,
    ClaimLeadership: _claim,
    LeaderStamp: _stamp,
}
