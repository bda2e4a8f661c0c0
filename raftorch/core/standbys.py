"""Warm standbys of active_passive slots: dropping those that cannot take over, adding
the missing ones within the plan's budgets. Part of the planner (`raftorch.core.planner`),
on its working copy; pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from protocol.values import DeploymentMode, SlotStatus
from raftorch.core.cowmap import EMPTY
from raftorch.core.model import AdapterSpec, AddStandby, DropStandby

if TYPE_CHECKING:
    from raftorch.core.planner import _Work


def drop_standbys(work: _Work, desired: Mapping[str, AdapterSpec]) -> None:
    """Standbys that could not take over (or are too many, or of a mode without any)."""
    dropped = 0
    for adapter_id, spec in desired.items():
        wanted = work.policy.standbys_per_slot if spec.mode is DeploymentMode.ACTIVE_PASSIVE else 0
        existing = work.adapter_slots.get(adapter_id, EMPTY)  # none is created before this
        if not existing:
            continue
        for key in work.wanted(spec):
            if key not in existing:
                continue
            peeked = work.peek(key)
            if peeked is None or peeked.status is SlotStatus.REVOKING or not peeked.standbys:
                continue
            current = work.slot(key)
            assert current is not None
            kept: list[str] = []
            for pod_id in list(current.standbys):
                if len(kept) < wanted and work.placer.able(pod_id, spec.connector):
                    kept.append(pod_id)
                    continue
                work.commands.append(DropStandby(key, pod_id))
                current.standbys.remove(pod_id)
                work.left(adapter_id, pod_id)
                dropped += 1
    if dropped:
        work.reasons.append(f"dropped {dropped} standby(s)")


def add_standbys(work: _Work, desired: Mapping[str, AdapterSpec]) -> None:
    """Warm standbys for owned active_passive slots, bounded by the grant budget."""
    wanted, short = work.policy.standbys_per_slot, 0
    for adapter_id, spec in desired.items():
        if spec.mode is not DeploymentMode.ACTIVE_PASSIVE:
            continue
        for key in work.wanted(spec):
            peeked = work.peek(key)
            if (
                peeked is None
                or peeked.owner is None
                or len(peeked.standbys) >= wanted
                or peeked.status is SlotStatus.REVOKING
            ):
                continue
            if work.spent(work.standbys_added):
                work.pending.add(adapter_id)
                break
            current = work.slot(key)
            assert current is not None
            while len(current.standbys) < wanted:
                if work.spent(work.standbys_added):  # cut short in the slot: plan again
                    work.pending.add(adapter_id)
                    break
                pod_id = work.choose(spec, current.members)
                if pod_id is None:
                    short += 1
                    break
                work.commands.append(AddStandby(key, pod_id))
                work.standbys_added += 1
                current.standbys.append(pod_id)
    if work.standbys_added:
        work.reasons.append(f"added {work.standbys_added} standby(s)")
    if short:
        work.reasons.append(f"{short} active_passive slot(s) lack a standby: no able pod")
