"""The stop orders a heartbeat answers with: what the pod reported, and what it owns that
is being moved or revoked (a delta heartbeat leaves unchanged sessions out)."""

from __future__ import annotations

import uuid

import pytest

from protocol.pod import SessionReport
from raftorch.api.pods import _stop_orders
from raftorch.core.model import Handoff, Revoke
from tests.unit.test_ownership import Harness, register


@pytest.fixture
def h() -> Harness:
    return Harness()


def test_stop_orders_name_owned_slots_being_moved_even_when_a_delta_leaves_them_out(
    h: Harness,
) -> None:
    h.ok(register("pod-a"), register("pod-b"))
    moved, kept, revoked = (f"{uuid.UUID(int=i)}/0" for i in (1, 2, 3))
    epochs = {slot: h.grant(slot, "pod-a") for slot in (moved, kept, revoked)}
    h.ok(Handoff(moved, "pod-a", epochs[moved], "pod-b", "drain"),
         Revoke(revoked, "disabled"))  # fmt: skip
    snapshot = h.state.snapshot()
    # A delta heartbeat that reports nothing (nothing changed on the pod) still gets both.
    orders = {(o.slot, o.epoch, o.reason) for o in _stop_orders(snapshot, "pod-a", [])}
    assert orders == {(moved, epochs[moved], "handoff"), (revoked, epochs[revoked], "revoked")}
    # Reported ones are not ordered twice; the other pod owns nothing being moved.
    report = [SessionReport(slot=moved, epoch=epochs[moved], status="ACTIVE")]
    assert len(_stop_orders(snapshot, "pod-a", report)) == 2
    assert _stop_orders(snapshot, "pod-b", []) == []
