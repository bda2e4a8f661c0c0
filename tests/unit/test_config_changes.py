"""Whose long-polls a configuration change wakes: the pods serving the changed adapter."""

from __future__ import annotations

from persistence.changefeed import RESYNC, Change
from protocol.values import SlotStatus
from raftorch.api.assignments import ConfigChanges
from raftorch.core.model import AddStandby, Command, Grant, RegisterPod, ReportStatus
from raftorch.core.ownership import OwnershipState


def _state() -> OwnershipState:
    state = OwnershipState()
    joins = [RegisterPod(p, f"{p}-inc", "127.0.0.1:1", frozenset({"fix"}), 5)
             for p in ("owner", "standby", "bystander")]  # fmt: skip
    assert state.apply("pods", 1.0, joins).ok
    commands = [Grant("a/0", "a", "owner", 0), Grant("b/0", "b", "bystander", 0)]
    assert state.apply("grants", 1.0, commands).ok
    epoch = state.slots["a/0"].epoch
    reports: list[Command] = [ReportStatus("a/0", "owner", epoch, SlotStatus.ACTIVE),
               AddStandby("a/0", "standby")]  # fmt: skip
    assert state.apply("active", 1.0, reports).ok
    return state


def test_a_changed_adapter_wakes_its_owner_and_standby_only() -> None:
    changes, snapshot = ConfigChanges(), _state().snapshot()
    changes.note(Change("adapters", "update", "a"))
    changes.note(Change("artifacts", "update", "b"))  # not an adapter: nobody's version
    assert changes.take(snapshot) == {"owner", "standby"}
    assert changes.take(snapshot) == set()  # taken: nothing is left for the next wake


def test_a_new_adapter_without_slots_wakes_nobody() -> None:
    changes = ConfigChanges()
    changes.note(Change("adapters", "insert", "new"))
    assert changes.take(_state().snapshot()) == set()


def test_a_resync_wakes_everybody() -> None:
    changes = ConfigChanges()
    changes.note(Change("adapters", "update", "a"))
    changes.note(RESYNC)
    assert changes.take(_state().snapshot()) is None
    assert changes.take(_state().snapshot()) == set()
