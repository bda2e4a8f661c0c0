"""The replicated ownership state: each applier, idempotency, atomicity and snapshots."""

from __future__ import annotations

import pickle
from dataclasses import replace
from typing import Any

import pytest

from protocol.values import PodState, SlotStatus
from raftorch.core import appliers
from raftorch.core import ownership as state_module
from raftorch.core.model import (
    AddStandby,
    ApplyResult,
    Command,
    DrainPod,
    DropStandby,
    Grant,
    PodInfo,
    RaiseEpochFloor,
    RegisterPod,
    Release,
    RemovePod,
    ReportStatus,
    Revoke,
    SlotState,
)
from raftorch.core.ownership import OwnershipState, Snapshot

FIX = frozenset({"fix"})


def register(pod_id: str, incarnation: str = "", **kwargs: Any) -> RegisterPod:
    return RegisterPod(pod_id, incarnation or f"{pod_id}-1", f"{pod_id}:1", FIX, 5, **kwargs)


class Harness:
    def __init__(self) -> None:
        self.state = OwnershipState()
        self._n = 0

    def apply(self, *commands: Command, at: float = 0.0) -> ApplyResult:
        self._n += 1
        return self.state.apply(f"req-{self._n}", at, commands)

    def ok(self, *commands: Command, at: float = 0.0) -> ApplyResult:
        result = self.apply(*commands, at=at)
        assert result.ok, result
        return result

    def rejected(self, command: Command) -> str:
        before = self.state.snapshot()
        result = self.apply(command)
        assert not result.error
        assert [index for index, _ in result.rejected] == [0]
        after = self.state.snapshot()
        assert (after.pods, after.slots, after.epoch_counter) == (
            before.pods,
            before.slots,
            before.epoch_counter,
        )
        return result.rejected[0][1]

    def grant(self, slot: str, pod_id: str) -> int:
        current = self.state.slots.get(slot)
        expected = current.epoch if current is not None else 0
        result = self.ok(Grant(slot, slot.split("/", maxsplit=1)[0], pod_id, expected))
        ((granted_slot, granted_pod, epoch),) = result.granted
        assert (granted_slot, granted_pod) == (slot, pod_id)
        return epoch

    def slot(self, slot: str) -> SlotState:
        return self.state.slots[slot]


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.ok(register("p1"), register("p2"), register("p3"))
    return harness


def same_content(a: Snapshot, b: Snapshot) -> bool:
    return (a.pods, a.slots, a.epoch_counter, a.epoch_floor, a.applied_entries) == (
        b.pods,
        b.slots,
        b.epoch_counter,
        b.epoch_floor,
        b.applied_entries,
    )


# --- entry semantics --------------------------------------------------------------------


def test_a_repeated_request_id_is_a_duplicate_and_changes_nothing(h: Harness) -> None:
    first = h.state.apply("once", 1.0, [Grant("a/0", "a", "p1", 0)])
    before = h.state.snapshot()

    again = h.state.apply("once", 2.0, [Grant("a/0", "a", "p1", 0)])

    assert first.granted == (("a/0", "p1", 1),)
    assert again.duplicate
    assert again.granted == first.granted
    assert same_content(h.state.snapshot(), before)


def test_a_rejected_command_does_not_stop_the_rest_of_the_entry(h: Harness) -> None:
    result = h.apply(Grant("a/0", "a", "ghost", 0), Grant("b/0", "b", "p1", 0))
    assert result.rejected == ((0, "pod ghost is not registered"),)
    assert result.granted == (("b/0", "p1", 1),)
    assert not result.ok


def test_an_unexpected_exception_leaves_the_state_unchanged(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(batch: object, command: object) -> None:
        raise RuntimeError("applier bug")

    h.grant("a/0", "p1")
    before = h.state.snapshot()
    monkeypatch.setitem(appliers.APPLIERS, Revoke, broken)

    result = h.state.apply(
        "boom", 5.0, [register("p9"), Grant("b/0", "b", "p2", 0), Revoke("a/0", "x")]
    )

    assert result.error == "RuntimeError: applier bug"
    assert result.granted == ()
    assert same_content(h.state.snapshot(), before)
    assert "p9" not in h.state.pods
    assert h.state.apply("boom", 6.0, []).duplicate  # remembered: a retry does not re-run it


def test_an_unknown_command_type_is_an_error_not_a_crash(h: Harness) -> None:
    before = h.state.snapshot()
    result = h.state.apply("odd", 0.0, [register("p9"), "not a command"])  # type: ignore[list-item]
    assert result.error.startswith("KeyError")
    assert same_content(h.state.snapshot(), before)


def test_applied_request_ids_are_bounded(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "APPLIED_REQUESTS_KEPT", 3)
    for index in range(5):
        h.state.apply(f"r{index}", 0.0, [])
    assert list(h.state.applied) == ["r2", "r3", "r4"]


# --- epochs -------------------------------------------------------------------------------


def test_epochs_strictly_increase_across_grants_and_slots(h: Harness) -> None:
    epochs = [h.grant("a/0", "p1"), h.grant("b/0", "p1")]
    h.ok(Release("a/0", "p1", epochs[0], "restart"))
    epochs.append(h.grant("a/0", "p2"))
    h.ok(RemovePod("p2", "p2-1", "expired"))
    epochs.append(h.grant("a/0", "p3"))
    assert epochs == sorted(set(epochs))
    assert h.state.epoch_counter == epochs[-1]


def test_raise_epoch_floor_lifts_every_later_epoch_and_never_lowers(h: Harness) -> None:
    h.ok(RaiseEpochFloor(100))
    h.ok(RaiseEpochFloor(7))
    assert h.state.epoch_floor == 100
    assert h.grant("a/0", "p1") == 101
    assert h.grant("b/0", "p1") == 102


def test_registration_never_moves_the_epoch_floor(h: Harness) -> None:
    # What a pod says it holds is not evidence of anything (issue #13, epoch poisoning):
    # only PostgreSQL's floor and the Raft counter decide epochs.
    floor, counter = h.state.epoch_floor, h.state.epoch_counter
    h.ok(register("p4"))
    assert h.state.epoch_floor == floor
    assert h.grant("a/0", "p4") == max(floor, counter) + 1


# --- pods ---------------------------------------------------------------------------------


def test_register_records_the_pod(h: Harness) -> None:
    h.ok(
        RegisterPod("z", "z-1", "10.0.0.1:80", FIX, 3, (("zone", "b"),)),
        at=12.5,
    )
    pod = h.state.pods["z"]
    assert pod == PodInfo(
        "z", "z-1", "10.0.0.1:80", FIX, 3, (("zone", "b"),), PodState.ACTIVE, 12.5
    )
    assert pod.zone == "b"


@pytest.mark.parametrize(
    "command",
    [
        RegisterPod("", "i", "a", FIX, 1),
        RegisterPod("p", "", "a", FIX, 1),
        RegisterPod("p", "i", "a", FIX, -1),
    ],
)
def test_invalid_registrations_are_rejected(h: Harness, command: RegisterPod) -> None:
    h.rejected(command)


def test_retried_registration_with_the_same_incarnation_keeps_the_slots(h: Harness) -> None:
    h.grant("a/0", "p1")
    h.ok(register("p1"))
    assert h.slot("a/0").owner == "p1"


def test_reregistration_with_a_new_incarnation_vacates_the_pods_slots(h: Harness) -> None:
    epoch = h.grant("a/0", "p1")
    h.grant("b/0", "p2")
    h.ok(AddStandby("b/0", "p1"))
    h.ok(DrainPod("p1", "p1-1"))

    h.ok(register("p1", "p1-2"))

    assert h.state.pods["p1"].incarnation == "p1-2"
    assert h.state.pods["p1"].state is PodState.ACTIVE
    assert h.slot("a/0") == SlotState("a/0", "a", None, epoch, (), SlotStatus.UNASSIGNED, "", 0.0)
    assert h.slot("b/0").standbys == ()


def test_drain_and_remove_need_the_current_incarnation(h: Harness) -> None:
    assert "incarnation" in h.rejected(DrainPod("p1", "old"))
    assert "incarnation" in h.rejected(RemovePod("p1", "old", "expired"))
    assert "not registered" in h.rejected(DrainPod("ghost", "x"))


def test_drain_is_idempotent_and_a_draining_pod_gets_nothing_new(h: Harness) -> None:
    h.ok(DrainPod("p1", "p1-1"), DrainPod("p1", "p1-1"))
    assert h.state.pods["p1"].state is PodState.DRAINING
    assert "DRAINING" in h.rejected(Grant("a/0", "a", "p1", 0))
    h.grant("a/0", "p2")
    assert "DRAINING" in h.rejected(AddStandby("a/0", "p1"))


def test_remove_pod_vacates_owned_slots_deletes_revoking_ones_and_drops_standbys(
    h: Harness,
) -> None:
    a_epoch = h.grant("a/0", "p1")
    h.grant("b/0", "p1")
    h.grant("c/0", "p2")
    h.ok(AddStandby("a/0", "p2"), AddStandby("c/0", "p1"), Revoke("b/0", "disabled"))

    h.ok(RemovePod("p1", "p1-1", "expired"))

    assert "p1" not in h.state.pods
    assert h.slot("a/0").owner is None
    assert h.slot("a/0").status is SlotStatus.UNASSIGNED
    assert h.slot("a/0").epoch == a_epoch  # the epoch stays: a promotion names it
    assert h.slot("a/0").standbys == ("p2",)
    assert "b/0" not in h.state.slots
    assert h.slot("c/0").standbys == ()


# --- grants, standbys, releases -------------------------------------------------------------


def test_grant_creates_a_claiming_slot(h: Harness) -> None:
    h.ok(Grant("a/0", "a", "p1", 0), at=3.0)
    assert h.slot("a/0") == SlotState("a/0", "a", "p1", 1, (), SlotStatus.CLAIMING, "", 3.0)


def test_stale_grant_is_rejected(h: Harness) -> None:
    epoch = h.grant("a/0", "p1")
    h.ok(Release("a/0", "p1", epoch, "restart"))
    assert "is at epoch" in h.rejected(Grant("a/0", "a", "p2", epoch - 1))
    assert "is at epoch" in h.rejected(Grant("b/0", "b", "p2", 5))


def test_grant_of_an_owned_slot_or_a_foreign_adapter_is_rejected(h: Harness) -> None:
    epoch = h.grant("a/0", "p1")
    assert "owned by p1" in h.rejected(Grant("a/0", "a", "p2", epoch))
    assert "does not belong" in h.rejected(Grant("a/0", "b", "p2", epoch))


def test_promotion_moves_a_standby_to_owner(h: Harness) -> None:
    epoch = h.grant("a/0", "p1")
    h.ok(AddStandby("a/0", "p2"), AddStandby("a/0", "p3"))
    h.ok(RemovePod("p1", "p1-1", "expired"))
    new_epoch = h.grant("a/0", "p2")
    assert new_epoch > epoch
    assert (h.slot("a/0").owner, h.slot("a/0").standbys) == ("p2", ("p3",))


def test_standby_rules(h: Harness) -> None:
    h.grant("a/0", "p1")
    h.ok(AddStandby("a/0", "p2"))
    assert "already serves" in h.rejected(AddStandby("a/0", "p1"))
    assert "already serves" in h.rejected(AddStandby("a/0", "p2"))
    assert "does not exist" in h.rejected(AddStandby("x/0", "p2"))
    assert "not a standby" in h.rejected(DropStandby("a/0", "p3"))
    h.ok(DropStandby("a/0", "p2"))
    assert h.slot("a/0").standbys == ()


def test_release_by_the_wrong_pod_or_epoch_is_rejected(h: Harness) -> None:
    epoch = h.grant("a/0", "p1")
    assert "not held by p2" in h.rejected(Release("a/0", "p2", epoch, "x"))
    assert "not held by p1" in h.rejected(Release("a/0", "p1", epoch - 1, "x"))
    assert "does not exist" in h.rejected(Release("b/0", "p1", epoch, "x"))
    h.ok(Release("a/0", "p1", epoch, "drain"))
    assert h.slot("a/0").status is SlotStatus.UNASSIGNED
    assert h.slot("a/0").owner is None
    assert "not held by p1" in h.rejected(Release("a/0", "p1", epoch, "again"))


def test_revoke_of_an_owned_slot_waits_for_the_release_which_deletes_it(h: Harness) -> None:
    epoch = h.grant("a/0", "p1")
    h.ok(AddStandby("a/0", "p2"))

    h.ok(Revoke("a/0", "adapter disabled"), Revoke("a/0", "again"))

    revoking = h.slot("a/0")
    assert (revoking.status, revoking.owner, revoking.standbys, revoking.detail) == (
        SlotStatus.REVOKING,
        "p1",
        (),
        "adapter disabled",
    )
    assert "revoked" in h.rejected(AddStandby("a/0", "p3"))
    assert "owned by p1" in h.rejected(Grant("a/0", "a", "p2", epoch))
    h.ok(Release("a/0", "p1", epoch, "revoked"))
    assert "a/0" not in h.state.slots


def test_revoke_of_an_unowned_slot_deletes_it(h: Harness) -> None:
    epoch = h.grant("a/0", "p1")
    h.ok(Release("a/0", "p1", epoch, "stop"))
    h.ok(Revoke("a/0", "adapter disabled"))
    assert not h.state.slots
    assert "does not exist" in h.rejected(Revoke("a/0", "again"))


# --- status reports -------------------------------------------------------------------------


def test_owner_status_reports_follow_the_slot_table(h: Harness) -> None:
    epoch = h.grant("a/0", "p1")
    seen = []
    for status, detail in [
        (SlotStatus.ACTIVE, ""),
        (SlotStatus.ERROR, "logon refused"),
        (SlotStatus.ERROR, "logon refused"),
        (SlotStatus.ACTIVE, ""),
        (SlotStatus.CLAIMING, "restarting"),
        (SlotStatus.ERROR, "x" * 5000),
    ]:
        h.ok(ReportStatus("a/0", "p1", epoch, status, detail), at=len(seen) + 10.0)
        current = h.slot("a/0")
        seen.append((current.status, len(current.detail), current.changed_at))
    assert seen == [
        (SlotStatus.ACTIVE, 0, 10.0),
        (SlotStatus.ERROR, 13, 11.0),
        (SlotStatus.ERROR, 13, 11.0),  # an unchanged report changes nothing
        (SlotStatus.ACTIVE, 0, 13.0),
        (SlotStatus.CLAIMING, 10, 14.0),
        (SlotStatus.ERROR, 1000, 15.0),  # details are capped
    ]


def test_status_reports_from_others_or_of_platform_states_are_rejected(h: Harness) -> None:
    epoch = h.grant("a/0", "p1")
    assert "not held" in h.rejected(ReportStatus("a/0", "p2", epoch, SlotStatus.ACTIVE))
    assert "not held" in h.rejected(ReportStatus("a/0", "p1", epoch + 1, SlotStatus.ACTIVE))
    assert "cannot report" in h.rejected(ReportStatus("a/0", "p1", epoch, SlotStatus.UNASSIGNED))
    assert "cannot report" in h.rejected(ReportStatus("a/0", "p1", epoch, SlotStatus.REVOKING))


def test_reports_on_a_revoking_slot_are_ignored(h: Harness) -> None:
    epoch = h.grant("a/0", "p1")
    h.ok(Revoke("a/0", "disabled"))
    h.ok(ReportStatus("a/0", "p1", epoch, SlotStatus.ACTIVE))
    assert h.slot("a/0").status is SlotStatus.REVOKING


def test_an_illegal_transition_is_rejected_not_raised(h: Harness) -> None:
    # Unreachable through commands; forced by hand to reach the table check.
    snap = h.state.snapshot()
    forced = PodInfo("p1", "p1-1", "a", FIX, 5, state=PodState.ABSENT)
    h.state._current = replace(snap, pods=snap.pods.set("p1", forced))
    reason = h.rejected(RemovePod("p1", "p1-1", "expired"))
    assert reason == "pod: illegal transition ABSENT -> ABSENT"


# --- snapshots ------------------------------------------------------------------------------


def test_snapshot_is_a_detached_copy(h: Harness) -> None:
    h.grant("a/0", "p1")
    snap = h.state.snapshot()
    h.ok(RemovePod("p1", "p1-1", "gone"))
    assert snap.slots["a/0"].owner == "p1"
    assert "p1" in snap.pods
    assert snap.applied_entries == h.state.snapshot().applied_entries - 1


def test_state_pickles_and_comes_back_with_a_working_lock(h: Harness) -> None:
    h.grant("a/0", "p1")
    h.ok(AddStandby("a/0", "p2"), RaiseEpochFloor(9), DrainPod("p3", "p3-1"))

    copy = pickle.loads(pickle.dumps(h.state))

    assert same_content(copy.snapshot(), h.state.snapshot())
    assert copy._lock is not h.state._lock
    assert copy._lock.acquire(blocking=False)
    copy._lock.release()
    assert copy.apply("req-1", 0.0, []).duplicate  # the idempotency record travels too
    result = copy.apply("after", 0.0, [Grant("b/0", "b", "p2", 0)])
    assert result.granted == (("b/0", "p2", 10),)


def test_entry_with_a_stale_leader_stamp_is_refused_whole() -> None:
    from raftorch.core.model import ClaimLeadership, LeaderStamp

    state = OwnershipState()
    assert state.apply("c1", 0.0, [ClaimLeadership("n1", 5)]).ok
    pod = RegisterPod("p1", "i1", "addr", frozenset({"fix"}), 5)
    assert state.apply("e1", 0.0, [LeaderStamp("n1", 5), pod]).ok
    assert state.apply("c2", 0.0, [ClaimLeadership("n2", 6)]).ok
    before = state.snapshot()
    # The deposed leader's plan, forwarded by pysyncobj and committed after the claim.
    late = state.apply("e2", 0.0, [LeaderStamp("n1", 5), RemovePod("p1", "i1", "expired")])
    assert late.error.startswith("stale leader") and not late.ok
    assert state.snapshot() == before
    assert not state.apply("c3", 0.0, [ClaimLeadership("n1", 5)]).ok  # older term


def test_floor_from_the_database_is_remembered_and_epochs_are_capped() -> None:
    from raftorch.core.model import MAX_EPOCH, RaiseEpochFloor

    state = OwnershipState()
    state.apply("f1", 0.0, [RaiseEpochFloor(7)])
    assert not state.snapshot().floor_confirmed
    state.apply("f2", 0.0, [RaiseEpochFloor(3, from_database=True)])
    snapshot = state.snapshot()
    assert snapshot.floor_confirmed and snapshot.epoch_floor == 7
    state.apply("f3", 0.0, [RaiseEpochFloor(10**30)])
    assert state.snapshot().epoch_floor == MAX_EPOCH
