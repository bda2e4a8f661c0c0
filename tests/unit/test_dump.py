"""The replicated state's full dump: it reads back whole, and keeps DUMP_FORMAT 1's layout
(a dump written before the encoder changed still loads)."""

from __future__ import annotations

import msgpack

from protocol.values import SlotStatus
from raftorch.core.dump import SLOT_ROW, dump_state, load_state
from raftorch.core.model import AddStandby, ApplyResult, Grant, RegisterPod, ReportStatus, SlotState
from raftorch.core.ownership import OwnershipState


def _state() -> OwnershipState:
    state = OwnershipState()
    pods = [RegisterPod(p, f"{p}-inc", "127.0.0.1:1", frozenset({"fix", "tcp"}), 5,
                        (("zone", p[-1]),)) for p in ("pa", "pb")]  # fmt: skip
    assert state.apply("pods", 1.0, pods).ok
    assert state.apply("grants", 2.0, [Grant("a/0", "a", "pa", 0), Grant("b/0", "b", "pb", 0)]).ok
    epoch = state.slots["a/0"].epoch
    assert state.apply("more", 3.0, [ReportStatus("a/0", "pa", epoch, SlotStatus.ACTIVE, "up"),
                                     AddStandby("a/0", "pb")]).ok  # fmt: skip
    return state


def test_a_dump_reads_back_as_the_same_state() -> None:
    state = _state()
    snapshot, applied = load_state(dump_state(state.snapshot(), state.applied))
    before = state.snapshot()
    assert dict(snapshot.slots) == dict(before.slots)
    assert dict(snapshot.pods) == dict(before.pods)
    assert snapshot.pod_slots == before.pod_slots
    assert snapshot.epoch_counter == before.epoch_counter

    def kept(results: dict[str, ApplyResult]) -> dict[str, tuple[object, ...]]:
        return {k: (r.rejected, r.granted, r.error) for k, r in results.items()}  # not `touched`

    assert kept(applied) == kept(state.applied)


def test_a_slot_row_is_the_fields_of_format_1_in_order() -> None:
    assert SlotState.__struct_fields__ == SLOT_ROW
    state = _state()
    rows = msgpack.unpackb(dump_state(state.snapshot(), state.applied))["slots"]
    slot = state.snapshot().slots["a/0"]
    assert [slot.slot, slot.adapter_id, slot.owner, slot.epoch, list(slot.standbys),
            slot.status.value, slot.detail, slot.changed_at, slot.handoff_to] in rows  # fmt: skip


def test_a_dump_written_by_the_earlier_encoder_still_loads() -> None:
    state = _state()
    data = msgpack.unpackb(dump_state(state.snapshot(), state.applied))
    before = state.snapshot()
    data["slots"] = [
        [s.slot, s.adapter_id, s.owner, s.epoch, list(s.standbys), s.status.value, s.detail,
         s.changed_at, s.handoff_to] for s in before.slots.values()
    ]  # fmt: skip
    snapshot, _ = load_state(msgpack.packb(data))
    assert dict(snapshot.slots) == dict(before.slots)
