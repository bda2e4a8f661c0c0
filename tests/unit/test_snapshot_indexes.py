"""The state's indexes always equal what a full scan would give, and the dump round-trips.

Random command sequences against the real appliers; after every entry the kept indexes
(slots by pod and by adapter, unassigned slots, counts per status) are compared with
ones rebuilt from the slots alone, and each pod's version must have grown whenever what
its assignments show changed (slots, roles, owners, epochs, whether it must stop), and
never for status reports alone.
"""

from __future__ import annotations

import pickle

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.values import SlotStatus
from raftorch.core.model import (
    AddStandby,
    Command,
    DrainPod,
    DropStandby,
    Grant,
    RegisterPod,
    Release,
    RemovePod,
    ReportStatus,
    Revoke,
)
from raftorch.core.ownership import OwnershipState
from raftorch.core.snapshot import STOPPING, Snapshot, rebuild_indexes

PODS = ("p1", "p2", "p3")
SLOTS = ("a/0", "a/1", "b/0")


def _command(draw: st.DrawFn, state: OwnershipState) -> Command:
    snap = state.snapshot()
    pod, slot = draw(st.sampled_from(PODS)), draw(st.sampled_from(SLOTS))
    current = snap.slots.get(slot)
    epoch = current.epoch if current is not None else 0
    incarnation = snap.pods[pod].incarnation if pod in snap.pods else f"{pod}-x"
    kind = draw(st.integers(0, 9))
    return [
        RegisterPod(pod, f"{pod}-{draw(st.integers(1, 3))}", "", frozenset({"fix"}), 10),
        Grant(slot, slot.split("/")[0], pod, epoch),
        AddStandby(slot, pod),
        DropStandby(slot, pod),
        Release(slot, pod, epoch, "released"),
        Revoke(slot, "disabled"),
        ReportStatus(
            slot, pod, epoch, draw(st.sampled_from([SlotStatus.ACTIVE, SlotStatus.ERROR]))
        ),
        RemovePod(pod, incarnation, "expired"),
        DrainPod(pod, incarnation),
        RegisterPod(pod, incarnation, "", frozenset({"fix"}), 10),
    ][kind]


def _same_indexes(snap: Snapshot) -> None:
    fresh = rebuild_indexes(snap.pods.values(), snap.slots.values())
    assert dict(snap.pod_slots) == dict(fresh.pod_slots)
    assert dict(snap.adapter_slots) == dict(fresh.adapter_slots)
    assert dict(snap.unassigned) == dict(fresh.unassigned)
    assert dict(snap.status_counts) == dict(fresh.status_counts)
    assert set(snap.pod_versions) == set(snap.pods)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_indexes_match_a_full_scan_after_every_entry(data: st.DataObject) -> None:
    state = OwnershipState()
    for step in range(data.draw(st.integers(1, 40))):
        commands = [_command(data.draw, state) for _ in range(data.draw(st.integers(1, 4)))]
        before = state.snapshot()
        result = state.apply(f"e{step}", float(step), commands)
        after = state.snapshot()
        _same_indexes(after)
        for pod_id in result.touched & set(after.pods) & set(before.pods):
            assert after.pod_versions[pod_id] > before.pod_versions[pod_id]
        for pod_id in set(before.pods) & set(after.pods):
            if _shown(after, pod_id) != _shown(before, pod_id):
                assert after.pod_versions[pod_id] > before.pod_versions[pod_id], pod_id
            elif all(isinstance(c, ReportStatus) for c in commands):
                assert after.pod_versions[pod_id] == before.pod_versions[pod_id], pod_id


def _shown(snap: Snapshot, pod_id: str) -> dict[str, tuple[str, str | None, int, bool]]:
    """What a pod's assignments are built from: per slot its role, owner, epoch and
    whether the owner must stop it (not the rest of the status)."""
    return {slot: (role, snap.slots[slot].owner, snap.slots[slot].epoch,
                   snap.slots[slot].status in STOPPING)
            for slot, role in snap.slots_of_pod(pod_id).items()}  # fmt: skip


def test_a_session_reported_running_does_not_change_its_pods_version() -> None:
    state = OwnershipState()
    state.apply("e1", 1.0, [RegisterPod("p1", "p1-1", "", frozenset({"fix"}), 10)])
    state.apply("e2", 2.0, [Grant("a/0", "a", "p1", 0)])
    granted = state.snapshot()
    epoch = granted.slots["a/0"].epoch
    state.apply("e3", 3.0, [ReportStatus("a/0", "p1", epoch, SlotStatus.ACTIVE)])
    running = state.snapshot()
    assert running.slots["a/0"].status is SlotStatus.ACTIVE
    assert running.pod_versions["p1"] == granted.pod_versions["p1"]  # the same list to show
    state.apply("e4", 4.0, [Revoke("a/0", "disabled")])
    revoking = state.snapshot()
    assert revoking.slots["a/0"].status is SlotStatus.REVOKING
    assert revoking.pod_versions["p1"] > running.pod_versions["p1"]  # now it must stop


@settings(max_examples=50, deadline=None)
@given(st.data())
def test_the_dump_round_trips(data: st.DataObject) -> None:
    state = OwnershipState()
    for step in range(data.draw(st.integers(0, 30))):
        state.apply(f"e{step}", float(step), [_command(data.draw, state)])
    copy: OwnershipState = pickle.loads(pickle.dumps(state))
    a, b = state.snapshot(), copy.snapshot()
    assert (dict(a.pods), dict(a.slots), dict(a.replicas)) == (dict(b.pods), dict(b.slots),
                                                               dict(b.replicas))  # fmt: skip
    assert (a.epoch_counter, a.epoch_floor, a.applied_entries, a.leader_marker) == (
        b.epoch_counter, b.epoch_floor, b.applied_entries, b.leader_marker)  # fmt: skip
    _same_indexes(b)
    assert set(copy.applied) == set(state.applied)


def test_a_barrier_changes_nothing_and_copies_nothing() -> None:
    state = OwnershipState()
    state.apply("r", 0.0, [RegisterPod("p1", "i", "", frozenset({"fix"}), 10)])
    state.apply("g", 0.0, [Grant("a/0", "a", "p1", 0)])
    before = state.snapshot()
    state.apply("barrier", 1.0, [])
    after = state.snapshot()
    assert after.applied_entries == before.applied_entries + 1
    assert after.changes == before.changes
    assert after.slots is before.slots and after.pod_slots is before.pod_slots
