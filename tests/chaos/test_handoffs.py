"""Self-tests of the checker across graceful handoffs (issue #15): a session moved by
handoff or handed over by a SIGTERM drain is no drop, in the pods' trails or in the API,
but a message lost, repeated or reordered across the move is flagged, and so is a new
owner that started before the old one stopped. Synthetic histories."""

from __future__ import annotations

import pytest

from tests.chaos.checker import Report
from tests.chaos.test_checker import Campaign, flagged, only
from tests.chaos.test_observed import seen

HANDOFF = "handoff: the session moves to another pod"


def moved(
    *,
    new_ids: tuple[int, ...] = (4, 5, 6),
    reason: str = HANDOFF,
    granted_at: float = 3.6,
    fault: str = "pod-drain",
) -> Campaign:
    """pod-1 runs slot a at epoch 1 and delivers ids 1-3 of queue q; at 3.0 a fault that
    may drop nothing (an operator drains pod-1); pod-1 stops the session (begun 3.45, done
    3.5) for `reason`; the leader grants it to pod-2 at epoch 2 at `granted_at`, pod-2
    starts it 0.1 s later and delivers `new_ids`; the API shows the move at 4.0."""
    c = Campaign().renew("pod-1", 11, 0.0, 12.0).renew("pod-2", 21, 0.0, 12.0)
    c.grant(0.5, "a", "pod-1", 1).session(0.6, "pod-1", "a", 1, pid=11)
    seen(c, 0.7, "a", ("ACTIVE", "pod-1", 1), prev=0.6)
    c.fault(3.0, "f1", fault, ["pod-1"], may_drop=[])
    c.stop(3.5, "pod-1", "a", 1, pid=11, reason=reason, began=3.45)
    c.grant(granted_at, "a", "pod-2", 2).session(granted_at + 0.1, "pod-2", "a", 2, pid=21)
    seen(c, 4.0, "a", ("ACTIVE", "pod-2", 2), prev=3.9)
    c.heal(6.0, "f1").healed_all(6.0).recovered(8.0).add(12.0, "note", "harness")
    c.produce("q", 1, 2, 3, 4, 5, 6)
    return c.deliver("q", "a", 1, "pod-1", 1, 2, 3).deliver("q", "a", 2, "pod-2", *new_ids)


@pytest.mark.parametrize(
    ("reason", "fault", "handoffs", "drain_stops"),
    [(HANDOFF, "pod-drain", 1, 0), ("drain: pod shutting down", "pod-churn", 0, 1)],
)
def test_a_clean_handover_is_no_drop_and_is_counted(
    reason: str, fault: str, handoffs: int, drain_stops: int
) -> None:
    report = moved(reason=reason, fault=fault).check()

    assert report.ok, report.summary()
    assert (report.drops, report.handoffs, report.drain_stops) == (0, handoffs, drain_stops)
    assert report.messages == {"q": {"produced": 6, "delivered": 6}}
    assert report.to_json()["handoffs"] == handoffs
    assert f"handoffs {handoffs}, drain stops {drain_stops}" in report.summary()


def test_a_message_delivered_again_after_a_handoff_is_flagged() -> None:
    # The new owner started from a stale offset: id 3 twice, once per epoch.
    only(moved(new_ids=(3, 4, 5, 6)).check(), 6, "queue q", "more than once", "[3]")


def test_a_message_lost_across_a_handoff_is_flagged() -> None:
    # The old owner's last batch never reached the sink, the new owner skipped past it.
    only(moved(new_ids=(5, 6)).check(), 6, "queue q", "1 of 6 produced lost", "[4]")


def test_messages_reordered_across_a_handoff_are_flagged() -> None:
    only(moved(new_ids=(5, 4, 6)).check(), 6, "out of order", "id 4")


def test_a_new_owner_started_before_the_old_one_stopped_is_a_double_owner() -> None:
    # Granted and started at 3.2/3.3, while pod-1 still ran the session until 3.5.
    report = moved(granted_at=3.2).check()

    flagged(report, 1, "slot a", "pod-1 pid 11", "pod-2")


def test_a_move_after_a_stop_that_was_not_a_handover_is_a_drop() -> None:
    report: Report = moved(reason="lease expired: fenced itself").check()

    flagged(report, 4, "unexcused drop", "pod-1 pid 11")
    flagged(report, 4, "the API showed a session move", "pod-1@1 -> pod-2@2")
    assert (report.drops, report.handoffs) == (1, 0)


def churned(*, exit_recorded: bool) -> Campaign:
    """pod-1 runs slot a and is killed by `pod-churn` at 3.5 (no stop recorded); its lease
    lapses at 5.9, pod-2 is granted the slot at 6.1; the nemesis records the exit at 3.6."""
    c = Campaign().renew("pod-1", 11, 0.0, 3.1).renew("pod-2", 21, 0.0, 12.0)
    c.grant(0.5, "a", "pod-1", 1).session(0.6, "pod-1", "a", 1, pid=11)
    c.fault(3.5, "f1", "pod-churn", ["pod-1"], may_drop=["pod-1"], pids={"pod-1": 11})
    if exit_recorded:
        c.add(3.6, "pod_exit", "nemesis", pod="pod-1", pid=11)
    c.grant(6.1, "a", "pod-2", 2).session(6.2, "pod-2", "a", 2, pid=21)
    return c.heal(7.0, "f1").healed_all(7.0).recovered(9.0).add(12.0, "note", "harness")


def test_a_pod_the_churn_killed_holds_nothing_after_its_exit() -> None:
    report = churned(exit_recorded=True).check()

    assert report.ok, report.summary()
    # Without the record its session would seem to run on past its lease.
    only(churned(exit_recorded=False).check(), 1, "double owner", "pod-1 pid 11")
