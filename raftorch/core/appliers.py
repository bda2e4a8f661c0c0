"""One applier per replicated command: deterministic, never raising past `Rejected`.

Each applier changes the working copy of one entry (`raftorch.core.snapshot.Batch`) or
raises `Rejected` (the command does not fit the state: the entry goes on without it)
or `StaleLeader` (the whole entry is refused).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from msgspec import structs

from protocol.values import PodState, SlotStatus
from raftorch.core.model import (
    MAX_EPOCH,
    AddStandby,
    AnnounceReplica,
    ClaimLeadership,
    DrainPod,
    DropStandby,
    Grant,
    Handoff,
    LeaderStamp,
    PodInfo,
    RaiseEpochFloor,
    RegisterPod,
    Release,
    RemovePod,
    ReplicaInfo,
    ReportStatus,
    Revoke,
    SetPodDrain,
    SlotState,
    slot_adapter,
)
from raftorch.core.snapshot import Batch, Rejected
from raftorch.core.transitions import POD_TRANSITIONS, SLOT_TRANSITIONS

_REPORTABLE = (SlotStatus.CLAIMING, SlotStatus.ACTIVE, SlotStatus.ERROR)


class StaleLeader(Exception):
    """The entry carries the stamp of a leader that is no longer the latest: refuse it whole."""


def _register(b: Batch, c: RegisterPod) -> None:
    if not c.pod_id or not c.incarnation:
        raise Rejected("pod id and incarnation must not be empty")
    if c.capacity < 0:
        raise Rejected(f"pod {c.pod_id} capacity must not be negative")
    existing: PodInfo | None = b.pods.get(c.pod_id)
    if existing is not None and existing.incarnation == c.incarnation:
        return  # a retried registration
    if existing is not None:
        # A new process under the same id: the old one runs nothing any more.
        POD_TRANSITIONS.check(existing.state, PodState.ACTIVE)
        b.forget_pod(c.pod_id)
    b.changed = b.pods_changed = True
    b.touched.add(c.pod_id)
    b.pods[c.pod_id] = PodInfo(
        c.pod_id, c.incarnation, c.address, c.connectors, c.capacity, c.labels,
        PodState.ACTIVE, b.at,
    )  # fmt: skip


def _drain(b: Batch, c: DrainPod) -> None:
    pod = b.pod(c.pod_id, c.incarnation)
    if pod.state is PodState.DRAINING:
        return
    POD_TRANSITIONS.check(pod.state, PodState.DRAINING)
    b.changed = b.pods_changed = True
    b.pods[c.pod_id] = replace(pod, state=PodState.DRAINING)


def _remove(b: Batch, c: RemovePod) -> None:
    pod = b.pod(c.pod_id, c.incarnation)
    POD_TRANSITIONS.check(pod.state, PodState.ABSENT)
    b.forget_pod(c.pod_id)
    del b.pods[c.pod_id]
    b.pod_versions.pop(c.pod_id, None)
    b.changed = b.pods_changed = True


def _grant(b: Batch, c: Grant) -> None:
    if slot_adapter(c.slot) != c.adapter_id:
        raise Rejected(f"slot {c.slot} does not belong to adapter {c.adapter_id}")
    existing: SlotState | None = b.slots.get(c.slot)
    current = existing or SlotState(c.slot, c.adapter_id)
    if current.epoch != c.expected_epoch:
        raise Rejected(f"slot {c.slot} is at epoch {current.epoch}, not {c.expected_epoch}")
    if current.owner is not None:
        raise Rejected(f"slot {c.slot} is owned by {current.owner}")
    pod = b.pod(c.pod_id)
    if pod.state is not PodState.ACTIVE:
        raise Rejected(f"pod {c.pod_id} is {pod.state.value}")
    SLOT_TRANSITIONS.check(current.status, SlotStatus.CLAIMING)  # before using an epoch
    epoch = max(b.counter, b.floor) + 1
    if epoch > MAX_EPOCH:
        raise Rejected(f"epoch {epoch} would exceed the largest epoch {MAX_EPOCH}")
    b.counter = epoch
    standbys = tuple(p for p in current.standbys if p != c.pod_id)
    if existing is None:
        b.put(None, current)
    b.set_status(current, SlotStatus.CLAIMING, owner=c.pod_id, epoch=epoch, standbys=standbys,
                 handoff_to=None)  # fmt: skip
    b.granted.append((c.slot, c.pod_id, epoch))


def _add_standby(b: Batch, c: AddStandby) -> None:
    current = b.slot(c.slot)
    pod = b.pod(c.pod_id)
    if current.status is SlotStatus.REVOKING:
        raise Rejected(f"slot {c.slot} is being revoked")
    if pod.state is not PodState.ACTIVE:
        raise Rejected(f"pod {c.pod_id} is {pod.state.value}")
    if c.pod_id == current.owner or c.pod_id in current.standbys:
        raise Rejected(f"pod {c.pod_id} already serves slot {c.slot}")
    b.put(current, structs.replace(current, standbys=(*current.standbys, c.pod_id)))


def _drop_standby(b: Batch, c: DropStandby) -> None:
    current = b.slot(c.slot)
    if c.pod_id not in current.standbys:
        raise Rejected(f"pod {c.pod_id} is not a standby of slot {c.slot}")
    standbys = tuple(p for p in current.standbys if p != c.pod_id)
    b.put(current, structs.replace(current, standbys=standbys))


def _release(b: Batch, c: Release) -> None:
    current = b.slot(c.slot)
    if current.owner != c.pod_id or current.epoch != c.epoch:
        raise Rejected(f"slot {c.slot} epoch {c.epoch} is not held by {c.pod_id}")
    b.vacate(current)


def _revoke(b: Batch, c: Revoke) -> None:
    current = b.slot(c.slot)
    if current.status is SlotStatus.REVOKING:
        return
    if current.owner is None:
        b.put(current, None)
        return
    b.set_status(current, SlotStatus.REVOKING, standbys=(), detail=c.reason, handoff_to=None)


_MOVABLE = (SlotStatus.CLAIMING, SlotStatus.ACTIVE, SlotStatus.ERROR)


def _handoff(b: Batch, c: Handoff) -> None:
    current = b.slot(c.slot)
    if current.owner != c.pod_id or current.epoch != c.epoch:
        raise Rejected(f"slot {c.slot} epoch {c.epoch} is not held by {c.pod_id}")
    if current.status not in _MOVABLE:
        raise Rejected(f"slot {c.slot} is {current.status.value}: it cannot be handed off")
    target = b.pod(c.to_pod)
    if target.state is not PodState.ACTIVE or c.to_pod == c.pod_id:
        raise Rejected(f"pod {c.to_pod} cannot take slot {c.slot} over")
    b.set_status(current, SlotStatus.HANDING_OFF, handoff_to=c.to_pod, detail=c.reason)


def _set_drain(b: Batch, c: SetPodDrain) -> None:
    pod = b.pod(c.pod_id)
    state = PodState.DRAINING if c.draining else PodState.ACTIVE
    if pod.state is state:
        return
    POD_TRANSITIONS.check(pod.state, state)
    b.changed = b.pods_changed = True
    b.touched.add(c.pod_id)
    b.pods[c.pod_id] = replace(pod, state=state)


def _report(b: Batch, c: ReportStatus) -> None:
    current = b.slot(c.slot)
    if current.owner != c.pod_id or current.epoch != c.epoch:
        raise Rejected(f"slot {c.slot} epoch {c.epoch} is not held by {c.pod_id}")
    if c.status not in _REPORTABLE:
        raise Rejected(f"a pod cannot report status {c.status.value}")
    if current.status in (SlotStatus.REVOKING, SlotStatus.HANDING_OFF):
        return  # the owner will stop; its reports no longer matter
    if current.status is c.status and current.detail == c.detail:
        return
    b.set_status(current, c.status, detail=c.detail[:1000])


def _raise_floor(b: Batch, c: RaiseEpochFloor) -> None:
    b.floor = max(b.floor, min(c.floor, MAX_EPOCH))
    b.floor_confirmed = b.floor_confirmed or c.from_database
    b.changed = True


def _claim(b: Batch, c: ClaimLeadership) -> None:
    if c.term < b.marker[1]:
        raise Rejected(f"claim of term {c.term} is older than term {b.marker[1]}")
    b.marker = (c.leader, c.term)
    b.changed = True


def _stamp(b: Batch, c: LeaderStamp) -> None:
    if (c.leader, c.term) != b.marker:
        raise StaleLeader(
            f"entry of {c.leader} in term {c.term}; the latest claim is "
            f"{b.marker[0] or 'none'} in term {b.marker[1]}"
        )


def _announce(b: Batch, c: AnnounceReplica) -> None:
    if not c.node_id or not c.raft_address:
        raise Rejected("replica node id and Raft address must not be empty")
    info = ReplicaInfo(c.node_id, c.raft_address, c.api_url)
    if b.replicas.get(c.raft_address) != info:
        b.replicas[c.raft_address] = info
        b.changed = True


APPLIERS: dict[type, Callable[[Batch, Any], None]] = {
    RegisterPod: _register,
    DrainPod: _drain,
    RemovePod: _remove,
    Grant: _grant,
    AddStandby: _add_standby,
    DropStandby: _drop_standby,
    Release: _release,
    Revoke: _revoke,
    Handoff: _handoff,
    SetPodDrain: _set_drain,
    ReportStatus: _report,
    RaiseEpochFloor: _raise_floor,
    AnnounceReplica: _announce,
    ClaimLeadership: _claim,
    LeaderStamp: _stamp,
}
