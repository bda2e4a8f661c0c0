"""Operational status as users see it: derived from configuration plus the Raft state.

Pure functions: the admin API and the Portal call them with a configuration
record, a state snapshot and (on the leader) the renewal times.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from persistence.adapters import AdapterRecord, AdminState, DeploymentMode
from raftorch.model import PodInfo, SlotState, slot_adapter, slot_index
from raftorch.state import Snapshot
from raftorch.statemachines import AdapterStatus, PodState, SlotStatus


def desired_slots(record: AdapterRecord) -> int:
    return record.instances if record.mode is DeploymentMode.SCALE_OUT else 1


def slots_by_adapter(slots: Mapping[str, SlotState]) -> dict[str, list[SlotState]]:
    grouped: dict[str, list[SlotState]] = {}
    for slot in slots.values():
        grouped.setdefault(slot_adapter(slot.slot), []).append(slot)
    for members in grouped.values():
        members.sort(key=lambda s: slot_index(s.slot))
    return grouped


def _why_waiting(record: AdapterRecord, slots: list[SlotState], pods: Mapping[str, PodInfo]) -> str:
    able = [
        p for p in pods.values() if p.state is PodState.ACTIVE and record.connector in p.connectors
    ]
    if not able:
        return f"no live pod offers connector {record.connector}"
    if any(s.owner is not None and s.status is SlotStatus.CLAIMING for s in slots):
        owners = sorted({s.owner for s in slots if s.owner and s.status is SlotStatus.CLAIMING})
        return f"starting on {', '.join(owners)}"
    if record.mode is DeploymentMode.ACTIVE_PASSIVE and len(able) < 2:
        return "waiting for placement (active_passive wants a standby on a second pod)"
    return "waiting for placement"


def adapter_status(
    record: AdapterRecord, slots: list[SlotState], pods: Mapping[str, PodInfo]
) -> tuple[AdapterStatus, str]:
    """The adapter's status and a one-line detail (why CLAIMING, what the ERROR is)."""
    if record.admin_state is AdminState.DISABLED:
        if any(s.owner is not None for s in slots):
            return AdapterStatus.ACTIVE, "stopping: waiting for the owner to close the session"
        return AdapterStatus.INACTIVE, ""
    errors = [s for s in slots if s.status is SlotStatus.ERROR]
    if errors:
        return AdapterStatus.ERROR, f"{errors[0].slot}: {errors[0].detail or 'connector error'}"
    running = [s for s in slots if s.owner is not None and s.status is SlotStatus.ACTIVE]
    if len(running) >= desired_slots(record):
        return AdapterStatus.ACTIVE, ""
    return AdapterStatus.CLAIMING, _why_waiting(record, slots, pods)


def adapter_json(
    record: AdapterRecord,
    snapshot: Snapshot,
    last_check_in: Mapping[str, float],
    grouped: Mapping[str, list[SlotState]] | None = None,
) -> dict[str, Any]:
    """The public adapter object (contract fields first, then details)."""
    slots = (grouped if grouped is not None else slots_by_adapter(snapshot.slots)).get(
        record.id, []
    )
    status, detail = adapter_status(record, slots, snapshot.pods)
    first = slots[0] if slots else None
    owner = first.owner if first else None
    return {
        "id": record.id,
        "name": record.name,
        "connector": record.connector,
        "mode": record.mode.value,
        "instances": record.instances,
        "admin_state": record.admin_state.value,
        "status": status.value,
        "status_detail": detail,
        "owner_pod": owner,
        "epoch": first.epoch if first and owner else None,
        "standby_pods": list(first.standbys) if first else [],
        "last_check_in": last_check_in.get(owner) if owner else None,
        "config": record.config,
        "artifacts": list(record.artifacts),
        "revision": record.revision,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "slots": [
            {
                "slot": s.slot,
                "owner_pod": s.owner,
                "epoch": s.epoch if s.owner else None,
                "standby_pods": list(s.standbys),
                "status": s.status.value,
                "detail": s.detail,
            }
            for s in slots
        ],
    }


def pod_json(
    pod: PodInfo, slots: Mapping[str, SlotState], last_heartbeat: float | None
) -> dict[str, Any]:
    sessions = [
        {
            "slot": s.slot,
            "role": "ACTIVE" if s.owner == pod.pod_id else "STANDBY",
            "epoch": s.epoch if s.owner == pod.pod_id else None,
            "status": s.status.value if s.owner == pod.pod_id else "STANDBY",
        }
        for s in sorted(slots.values(), key=lambda s: s.slot)
        if s.owner == pod.pod_id or pod.pod_id in s.standbys
    ]
    return {
        "id": pod.pod_id,
        "state": pod.state.value,
        "sessions": sessions,
        "last_heartbeat": last_heartbeat,
        "address": pod.address,
        "connectors": sorted(pod.connectors),
        "capacity": pod.capacity,
        "labels": dict(pod.labels),
    }
