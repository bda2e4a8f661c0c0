"""Whose long-polls a configuration change wakes: the pods serving the changed adapter;
and a pod's version, which moves with its assignments and their configuration."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from persistence.adapters import AdapterRecord
from persistence.changefeed import RESYNC, Change
from protocol.values import AdminState, DeploymentMode, SlotStatus
from raftorch.api.assignments import ConfigChanges, Versions, version
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


class Records:
    """The configuration cache's part that versions read: records and a change counter."""

    def __init__(self, *ids: str) -> None:
        now = datetime.now(UTC)
        self.by_id = {i: AdapterRecord(i, i, "fix", DeploymentMode.SINGLE, 1, {}, (),
                                       AdminState.ENABLED, 1, now, now) for i in ids}  # fmt: skip
        self.version = 0

    def get(self, adapter_id: str) -> AdapterRecord | None:
        return self.by_id.get(adapter_id)

    def bump(self, adapter_id: str) -> None:
        record = self.by_id[adapter_id]
        self.by_id[adapter_id] = dataclasses.replace(record, revision=record.revision + 1)
        self.version += 1


def test_a_remembered_version_moves_with_roles_state_and_configuration() -> None:
    state, records = _state(), Records("a", "b")
    versions = Versions(records)
    for pod_id in ("owner", "standby", "bystander", "unknown"):
        assert versions.of(state.snapshot(), pod_id) == version(state.snapshot(), pod_id, records)
    before = versions.of(state.snapshot(), "owner")
    assert versions.of(state.snapshot(), "owner") == before  # nothing changed

    records.bump("b")  # not the owner's adapter: its version stays
    assert versions.of(state.snapshot(), "owner") == before
    records.bump("a")
    after_config = versions.of(state.snapshot(), "owner")
    assert after_config != before
    assert after_config == version(state.snapshot(), "owner", records)

    assert state.apply("more", 2.0, [Grant("b/1", "b", "owner", 0)]).ok  # a new role
    after_grant = versions.of(state.snapshot(), "owner")
    assert after_grant not in (before, after_config)
    assert after_grant == version(state.snapshot(), "owner", records)


def test_a_resync_wakes_the_pods_of_the_adapters_it_found_changed() -> None:
    found: frozenset[str] | None = frozenset({"b"})
    changes = ConfigChanges(lambda: found)
    changes.note(RESYNC)
    assert changes.take(_state().snapshot()) == {"bystander"}
    found = frozenset()  # the periodic reload found nothing new: nobody is woken
    changes.note(RESYNC)
    assert changes.take(_state().snapshot()) == set()
