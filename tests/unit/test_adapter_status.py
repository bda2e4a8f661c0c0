"""The status and one-line detail an adapter shows, from its record and its slots."""

from __future__ import annotations

from datetime import UTC, datetime

from persistence.adapters import AdapterRecord
from protocol.values import AdapterStatus, AdminState, DeploymentMode, SlotStatus
from raftorch.core.adapter_status import adapter_status
from raftorch.core.model import PodInfo, SlotState

NOW = datetime(2026, 12, 1, tzinfo=UTC)
RECORD = AdapterRecord("a", "orders", "fix", DeploymentMode.SINGLE, 1, {}, (),
                       AdminState.ENABLED, 1, NOW, NOW)  # fmt: skip
PODS = {p: PodInfo(p, f"{p}-1", "", frozenset({"fix"}), 10) for p in ("pod-a", "pod-b")}


def test_a_session_being_handed_over_says_from_where_to_where() -> None:
    moving = SlotState("a/0", "a", owner="pod-a", epoch=4, status=SlotStatus.HANDING_OFF,
                       handoff_to="pod-b")  # fmt: skip
    assert adapter_status(RECORD, [moving], PODS) == (
        AdapterStatus.CLAIMING,
        "handing over from pod-a to pod-b",
    )


def test_running_starting_and_waiting() -> None:
    running = SlotState("a/0", "a", owner="pod-a", epoch=4, status=SlotStatus.ACTIVE)
    assert adapter_status(RECORD, [running], PODS) == (AdapterStatus.ACTIVE, "")
    starting = SlotState("a/0", "a", owner="pod-b", epoch=5, status=SlotStatus.CLAIMING)
    assert adapter_status(RECORD, [starting], PODS) == (AdapterStatus.CLAIMING, "starting on pod-b")
    assert adapter_status(RECORD, [], {}) == (
        AdapterStatus.CLAIMING,
        "no live pod offers connector fix",
    )
