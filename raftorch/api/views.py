"""The JSON shapes of adapters and pods in the admin API (and the Portal that reads it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from persistence.adapters import AdapterRecord
from raftorch.core.adapter_status import adapter_status
from raftorch.core.model import PodInfo, SlotState, slot_index
from raftorch.core.ownership import Snapshot


def adapter_json(
    record: AdapterRecord,
    snapshot: Snapshot,
    last_check_in: Mapping[str, float],
    able: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The public adapter object (contract fields first, then details); O(its slots)
    given `able` (`able_pods(snapshot.pods)`, shared by a page of adapters)."""
    slots = sorted(snapshot.slots_of_adapter(record.id), key=lambda s: slot_index(s.slot))
    status, detail = adapter_status(record, slots, snapshot.pods, able)
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


def pod_json(pod: PodInfo, snapshot: Snapshot, last_heartbeat: float | None) -> dict[str, Any]:
    """The public pod object; O(the pod's slots)."""
    sessions = []
    for key, role in sorted(snapshot.slots_of_pod(pod.pod_id).items()):
        s: SlotState = snapshot.slots[key]
        owned = role == "ACTIVE"
        sessions.append({"slot": key, "role": role, "epoch": s.epoch if owned else None,
                         "status": s.status.value if owned else "STANDBY"})  # fmt: skip
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
