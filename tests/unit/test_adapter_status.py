"""The status and one-line detail an adapter shows, from its record and its slots."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from persistence.adapters import AdapterRecord
from protocol.values import AdapterStatus, AdminState, DeploymentMode, PodState, SlotStatus
from raftorch.core.adapter_status import able_pods, adapter_status
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


class _CountedPods(dict[str, PodInfo]):
    """Pods that count how often all of them are looked at."""

    walks = 0

    def values(self):  # type: ignore[override]
        self.walks += 1
        return super().values()


def test_a_page_of_waiting_adapters_looks_at_the_pods_once() -> None:
    """A page of adapters shares one count of the able pods: 1,000 adapters waiting on
    1,000 pods took 0.44 s of a replica's event loop when each adapter walked them."""
    pods = _CountedPods(PODS)
    records = [replace(RECORD, id=f"a{i}") for i in range(50)]
    able = able_pods(pods)
    found = {adapter_status(r, [], pods, able) for r in records}
    assert found == {(AdapterStatus.CLAIMING, "waiting for placement")}
    assert pods.walks == 1


def test_only_live_active_pods_offering_the_connector_count_as_able() -> None:
    draining = PodInfo("pod-d", "pod-d-1", "", frozenset({"fix"}), 10, state=PodState.DRAINING)
    kafka = PodInfo("pod-k", "pod-k-1", "", frozenset({"kafka"}), 10)
    pods = {"pod-a": PODS["pod-a"], "pod-d": draining, "pod-k": kafka}
    assert able_pods(pods) == {"fix": 1, "kafka": 1}
    pair = replace(RECORD, mode=DeploymentMode.ACTIVE_PASSIVE)
    assert adapter_status(pair, [], pods) == (
        AdapterStatus.CLAIMING,
        "waiting for placement (active_passive wants a standby on a second pod)",
    )
    assert adapter_status(pair, [], PODS)[1] == "waiting for placement"
    assert adapter_status(RECORD, [], {"pod-d": draining})[1] == "no live pod offers connector fix"
