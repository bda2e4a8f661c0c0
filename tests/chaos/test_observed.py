"""Self-tests of what the checker reads from the API observer and the nemesis's orders:
failover to ACTIVE as the API showed it, session moves seen from outside, stops of an
adapter the nemesis disabled, drops per fault and fault holds. Synthetic histories."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chaos.observed import api_failovers, api_moves
from tests.chaos.orders import disabled_windows, ordered
from tests.chaos.test_checker import TTL, Campaign, failover, flagged, only


def seen(c: Campaign, t: float, slot: str, view: tuple[str, str, int], *, prev: float) -> Campaign:
    """The observer's record of an API answer at `t` showing `slot` changed to `view`
    (status, owner, epoch)."""
    status, owner, epoch = view
    return c.add(t, "api_slot", "observer", slot=slot, adapter=slot.split("/", maxsplit=1)[0],
                 status=status, owner=owner, epoch=epoch, sent=t - 0.01, seen=t,
                 prev=prev)  # fmt: skip


def observed_failover() -> Campaign:
    """The checker's clean failover (pod-1 killed at 3.5, pod-2 runs slot a from 6.25), as
    the API showed it: ACTIVE on pod-1, CLAIMING on pod-2 at 6.15, ACTIVE there at 6.40."""
    c = failover()
    seen(c, 0.7, "a", ("ACTIVE", "pod-1", 1), prev=0.62)
    seen(c, 6.15, "a", ("CLAIMING", "pod-2", 2), prev=6.07)
    seen(c, 6.40, "a", ("ACTIVE", "pod-2", 2), prev=6.32)
    return c.add(11.5, "api_summary", "observer", samples=150, failures=0, max_gap=0.09)


def test_failover_is_measured_to_active_under_a_newer_epoch_in_the_api() -> None:
    report = observed_failover().check()

    assert report.ok, report.summary()
    [fo] = report.api_failovers
    assert (fo.fault_id, fo.pod, fo.slot, fo.to) == ("f1", "pod-1", "a", "pod-2")
    assert fo.seconds == pytest.approx(6.40 - 3.5)  # not the CLAIMING at 6.15
    assert report.api_resolution == pytest.approx(0.08)
    summary = report.to_json()
    assert summary["api_failover_beyond_ttl_seconds"]["max"] == pytest.approx(6.40 - 3.5 - TTL)
    assert (summary["api_failovers_to_another_pod"], summary["api_samples"]) == (1, 150)
    assert summary["api_max_gap_seconds"] == pytest.approx(0.09)
    assert "failover to ACTIVE in the API: 1 samples" in report.summary()


def test_a_slot_never_active_again_is_reported_missing_not_measured() -> None:
    c = failover()
    seen(c, 0.7, "a", ("ACTIVE", "pod-1", 1), prev=0.62)
    seen(c, 6.15, "a", ("CLAIMING", "pod-2", 2), prev=6.07)

    result = api_failovers(c.build().events)
    assert (result.failovers, result.missing) == ([], ["f1 a"])


def test_a_stale_answer_showing_the_old_owner_is_no_failover() -> None:
    # A lagging replica answers with the old owner ACTIVE after the fault: not a new grant.
    c = failover()
    seen(c, 0.7, "a", ("ACTIVE", "pod-1", 1), prev=0.62)
    seen(c, 4.0, "a", ("CLAIMING", "pod-1", 1), prev=3.9)
    seen(c, 4.2, "a", ("ACTIVE", "pod-1", 1), prev=4.1)
    seen(c, 6.4, "a", ("ACTIVE", "pod-2", 2), prev=6.3)

    [fo] = api_failovers(c.build().events).failovers
    assert fo.seconds == pytest.approx(6.4 - 3.5)


def leader_kill_seen(new_owner: str, new_epoch: int) -> Campaign:
    """A leader kill (may drop nothing) from 3.0, recovered at 8.0; slot a ACTIVE on pod-1
    at epoch 1 before it, and the API shows `new_owner`@`new_epoch` at 5.0."""
    c = Campaign().renew("pod-1", 11, 0.0, 12.0)
    c.grant(0.5, "a", "pod-1", 1).session(0.6, "pod-1", "a", 1, pid=11)
    seen(c, 0.7, "a", ("ACTIVE", "pod-1", 1), prev=0.6)
    c.fault(3.0, "f1", "leader-kill", ["r0"], may_drop=[])
    seen(c, 5.0, "a", ("ACTIVE", new_owner, new_epoch), prev=4.9)
    return c.heal(4.0, "f1").healed_all(4.0).recovered(8.0).add(12.0, "note", "harness")


def test_a_move_seen_in_the_api_during_a_leader_change_is_a_drop() -> None:
    # The pods' trails say nothing happened (pod-2 never started it), the API says it moved.
    v = only(leader_kill_seen("pod-2", 2).check(), 4, "the API showed a session move",
             "f1 leader-kill a pod-1@1 -> pod-2@2")  # fmt: skip
    assert v.message.endswith("at +5.000s")


def test_a_move_by_graceful_handoff_during_a_fault_is_no_drop() -> None:
    # The leader rebalanced: pod-1 stopped the session for a handoff, pod-2 got it.
    c = leader_kill_seen("pod-2", 2).renew("pod-2", 12, 0.0, 12.0)
    c.stop(4.5, "pod-1", "a", 1, pid=11, reason="handoff: the session moves to another pod",
           began=4.45)  # fmt: skip
    c.grant(4.55, "a", "pod-2", 2).session(4.6, "pod-2", "a", 2, pid=12)

    assert c.check().ok, c.check().summary()
    # A stop for any other reason still leaves the move a drop.
    c = leader_kill_seen("pod-2", 2)
    c.stop(4.5, "pod-1", "a", 1, pid=11, reason="lease expired: fenced itself", began=4.45)
    c.session(4.6, "pod-2", "a", 2, pid=12)
    assert len(api_moves(sorted(c.build().events, key=lambda ev: float(ev["t"])))) == 1


def test_an_unchanged_owner_during_a_leader_change_passes() -> None:
    report = leader_kill_seen("pod-1", 1).check()

    assert report.ok, report.summary()
    assert api_moves(leader_kill_seen("pod-1", 1).build().events) == []


def test_a_stale_answer_during_a_leader_change_is_no_move() -> None:
    c = leader_kill_seen("pod-1", 1)
    seen(c, 5.5, "a", ("ACTIVE", "pod-0", 0), prev=5.4)  # a lagging replica, an older epoch

    assert api_moves(c.build().events) == []


def test_a_slot_disabled_and_enabled_again_is_no_move() -> None:
    c = leader_kill_seen("pod-1", 1)
    seen(c, 5.5, "a", ("GONE", "", 0), prev=5.4)
    seen(c, 6.0, "a", ("ACTIVE", "pod-2", 3), prev=5.9)

    assert api_moves(c.build().events) == []


def disabled_adapter(disable_at: float | None, stop_at: float, enable_again: float | None) -> Any:
    """pod-1 runs slot slow/0; the nemesis disables adapter "slow" at `disable_at` (no fault
    that may drop it is open); pod-1 stops the session at `stop_at`."""
    c = Campaign().renew("pod-1", 11, 0.0, 12.0)
    c.add(0.2, "enable", "nemesis", adapter="slow", name="slow")
    c.grant(0.5, "slow/0", "pod-1", 1).session(0.6, "pod-1", "slow/0", 1, pid=11)
    c.fault(1.0, "f1", "slow-start", ["slow"], may_drop=[])
    if disable_at is not None:
        c.add(disable_at, "disable", "nemesis", adapter="slow", name="slow")
    if enable_again is not None:
        c.add(enable_again, "enable", "nemesis", adapter="slow", name="slow")
    c.stop(stop_at, "pod-1", "slow/0", 1, pid=11, reason="fenced by the orchestrator: revoked")
    c.add(stop_at + 0.5, "heal", "nemesis", id="f1", held=stop_at - 0.5)
    return c.healed_all(stop_at + 0.5).recovered(stop_at + 1.0).add(12.0, "note", "harness")


def test_the_stop_of_an_adapter_the_nemesis_disabled_is_ordered_not_a_drop() -> None:
    report = disabled_adapter(5.0, 5.2, None).check()

    assert report.ok, report.summary()
    assert (report.stops_ordered, report.drops, report.drops_by_fault) == (1, 0, {})


def test_a_stop_before_the_disable_is_a_drop() -> None:
    report = disabled_adapter(5.0, 4.9, None).check()

    only(report, 4, "unexcused drop", "pod-1 pid 11 stopped slot slow/0")
    assert (report.stops_ordered, report.drops, report.drops_by_fault) == (0, 1, {"unexcused": 1})


def test_a_stop_after_the_adapter_was_enabled_again_is_a_drop() -> None:
    report = disabled_adapter(5.0, 6.0, enable_again=5.5).check()

    flagged(report, 4, "unexcused drop", "slow/0")
    assert report.stops_ordered == 0


def test_a_disable_excuses_only_its_own_adapter() -> None:
    windows = disabled_windows(disabled_adapter(5.0, 5.2, None).build().events[::-1])
    assert ordered(windows, "slow/0", 5.1)
    assert not ordered(windows, "slower/0", 5.1)
    assert not ordered(windows, "slow/0", 4.9)


def test_drops_are_counted_per_fault_that_excused_them() -> None:
    c = failover()
    c.stop(4.0, "pod-1", "a", 1, pid=11, reason="lease expired: fenced itself")
    report = c.check()

    assert report.ok, report.summary()
    assert report.drops_by_fault == {"pod-kill": 1}
    assert report.to_json()["drops_unexcused"] == 0


def test_fault_holds_come_from_the_heals() -> None:
    c = Campaign().renew("pod-1", 11, 0.0, 20.0)
    for i, (t, held) in enumerate([(1.0, 6.1), (9.0, 6.6)], 1):
        c.fault(t, f"f{i}", "leader-pause", ["r0"], may_drop=[])
        c.add(t + held, "heal", "nemesis", id=f"f{i}", held=held)
        c.healed_all(t + held).recovered(t + held + 0.1)
    report = c.add(20.0, "note", "harness").check()

    assert report.ok, report.summary()
    assert report.fault_holds == {"leader-pause": [6.1, 6.6]}
    assert "leader-pause 2 (held 6.1-6.6s)" in report.summary()
