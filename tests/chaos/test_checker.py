"""Self-tests of the chaos checker: synthetic histories, each breaking one invariant."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.checker import (
    Failover,
    History,
    HistoryError,
    Report,
    Violation,
    check,
    lease_intervals,
    read_events,
)

TTL = 3.0
BOUND = 5.0
MARGIN = 0.1  # pod-side safety margin: deadline = heartbeat send time + TTL - MARGIN
REPLICAS = ("r0", "r1", "r2")


class Campaign:
    """Builds a History event by event; every method returns the builder so calls chain."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.produced: dict[str, list[int]] = {}
        self.deliveries: dict[str, list[dict[str, Any]]] = {}
        self._entries = 0
        self._seq = 0

    def add(self, t: float, kind: str, source: str, **fields: Any) -> Campaign:
        self.events.append({"t": t, "wall": 1.7e9 + t, "kind": kind, "source": source, **fields})
        return self

    def grant(
        self,
        t: float,
        slot: str,
        pod: str,
        epoch: int,
        *,
        entry: str | None = None,
        replicas: tuple[str, ...] = REPLICAS,
    ) -> Campaign:
        """One committed entry, applied by each replica a little after the previous one."""
        if entry is None:
            self._entries += 1
            entry = f"auto-{self._entries}"
        for i, replica in enumerate(replicas):
            self.add(t + 0.01 * i, "grant", replica, slot=slot, pod=pod, epoch=epoch, entry=entry)
        return self

    def lease(self, t: float, pod: str, deadline: float | None, pid: int) -> Campaign:
        return self.add(t, "lease", pod, pid=pid, deadline=deadline)

    def renew(self, pod: str, pid: int, start: float, until: float) -> Campaign:
        """Acknowledged heartbeats every TTL/3 from `start` while before `until`."""
        t = start
        while t < until:
            self.lease(t, pod, t + TTL - MARGIN, pid)
            t += TTL / 3
        return self

    def session(self, t: float, pod: str, slot: str, epoch: int, pid: int) -> Campaign:
        """A start whose connector is running 50 ms later."""
        self.add(t, "session_start", pod, pid=pid, slot=slot, epoch=epoch)
        return self.add(t + 0.05, "session_running", pod, pid=pid, slot=slot, epoch=epoch)

    def stop(
        self, t: float, pod: str, slot: str, epoch: int, *, pid: int, reason: str, **fields: Any
    ) -> Campaign:
        return self.add(
            t, "session_stop", pod, pid=pid, slot=slot, epoch=epoch, reason=reason, **fields
        )

    def fault(
        self,
        t: float,
        fault_id: str,
        fault: str,
        targets: list[str],
        may_drop: list[str],
        **fields: Any,
    ) -> Campaign:
        return self.add(
            t,
            "fault",
            "nemesis",
            id=fault_id,
            fault=fault,
            targets=targets,
            may_drop=may_drop,
            **fields,
        )

    def heal(self, t: float, fault_id: str) -> Campaign:
        return self.add(t, "heal", "nemesis", id=fault_id)

    def healed_all(self, t: float) -> Campaign:
        return self.add(t, "healed_all", "nemesis")

    def recovered(
        self, t: float, ok: bool = True, missing: tuple[str, ...] = (), **facts: Any
    ) -> Campaign:
        return self.add(t, "recovered", "harness", ok=ok, missing=list(missing), **facts)

    def produce(self, queue: str, *msg_ids: int) -> Campaign:
        self.produced.setdefault(queue, []).extend(msg_ids)
        return self

    def deliver(self, queue: str, slot: str, epoch: int, pod: str, *msg_ids: int) -> Campaign:
        """Sink rows committed in this order (seq counts up across all calls)."""
        rows = self.deliveries.setdefault(queue, [])
        for msg_id in msg_ids:
            self._seq += 1
            rows.append(
                {"seq": self._seq, "msg_id": msg_id, "slot": slot, "epoch": epoch, "pod_id": pod}
            )
        return self

    def build(self) -> History:
        # Sources write their own files, so the checker must not rely on global order.
        return History(
            events=list(reversed(self.events)),
            ttl=TTL,
            recovery_bound=BOUND,
            produced=self.produced,
            deliveries=self.deliveries,
        )

    def check(self) -> Report:
        return check(self.build())


def flagged(report: Report, invariant: int, *needles: str) -> Violation:
    """A violation of `invariant` mentioning every needle; no other invariant is breached."""
    assert {v.invariant for v in report.violations} == {invariant}, report.summary()
    for v in report.violations:
        if all(needle in v.message for needle in needles):
            return v
    raise AssertionError(f"no violation mentions {needles}:\n{report.summary()}")


def only(report: Report, invariant: int, *needles: str) -> Violation:
    """The single violation of `report`, which breaches `invariant` and mentions every needle."""
    assert len(report.violations) == 1, report.summary()
    return flagged(report, invariant, *needles)


def failover() -> Campaign:
    """pod-1 holds slot a, is killed at 3.5, its lease lapses at 5.9, pod-2 takes over."""
    c = Campaign()
    c.renew("pod-1", 11, 0.0, 3.1)  # last heartbeat at 3.0: deadline 5.9
    c.renew("pod-2", 21, 0.0, 12.0)
    c.grant(0.5, "a", "pod-1", 1).session(0.6, "pod-1", "a", 1, pid=11)
    c.add(3.4, "write_rejected", "pod-1", pid=11, slot="a", epoch=1, detail="stale")
    c.fault(3.5, "f1", "pod-kill", ["pod-1"], may_drop=["pod-1"], pids={"pod-1": 11})
    c.grant(6.1, "a", "pod-2", 2).session(6.2, "pod-2", "a", 2, pid=21)
    c.heal(7.0, "f1").renew("pod-1", 12, 7.5, 12.0)  # restarted: same pod, new pid
    c.healed_all(8.0).recovered(9.0)
    c.stop(11.0, "pod-2", "a", 2, pid=21, reason="drain: SIGTERM")
    c.produce("q", 1, 2, 3, 4, 5, 6)
    return c.deliver("q", "a", 1, "pod-1", 1, 2, 3).deliver("q", "a", 2, "pod-2", 4, 5, 6)


def test_clean_failover_passes_and_reports_latency() -> None:
    report = failover().check()

    assert report.ok, report.summary()
    assert report.failover_seconds == [pytest.approx(6.25 - 3.5)]
    summary = report.to_json()
    assert summary["failover_seconds"]["count"] == 1
    assert summary["failover_beyond_ttl_seconds"]["max"] == pytest.approx(6.25 - 3.5 - TTL)
    assert summary["fault_counts"] == {"pod-kill": 1}
    assert (summary["grants"], summary["sessions_started"]) == (2, 2)
    assert (summary["writes_rejected"], summary["drops"], summary["crashes"]) == (1, 0, 0)
    assert summary["messages"] == {"q": {"produced": 6, "delivered": 6}}
    json.dumps(summary)
    assert report.summary().endswith("OK: no violations")


def test_failover_latency_counts_only_another_incarnation() -> None:
    c = failover()
    c.add(4.0, "session_running", "pod-1", pid=11, slot="a", epoch=1)  # as if resumed

    assert c.check().failover_seconds == [pytest.approx(6.25 - 3.5)]


def test_two_incarnations_holding_one_slot_are_flagged() -> None:
    c = Campaign().renew("pod-1", 11, 0.0, 10.0).renew("pod-1", 12, 4.0, 10.0)
    c.grant(0.5, "a", "pod-1", 1).session(0.6, "pod-1", "a", 1, pid=11)
    c.session(4.5, "pod-1", "a", 1, pid=12)

    only(c.check(), 1, "slot a", "overlap", "pid 11", "pid 12")


def test_old_owner_deadline_outliving_the_new_grant_is_flagged() -> None:
    c = Campaign().renew("pod-1", 11, 0.0, 3.1).renew("pod-2", 21, 0.0, 10.0)
    c.grant(0.5, "a", "pod-1", 1).session(0.6, "pod-1", "a", 1, pid=11)
    # pod-1's deadline is 5.9: granting at 5.0 is too early, even though pod-2 starts later.
    c.grant(5.0, "a", "pod-2", 2).session(6.0, "pod-2", "a", 2, pid=21)

    v = flagged(c.check(), 1, "outlived", "by 0.900s", "pod-1 pid 11 epoch 1", "epoch 2", "pod-2")
    assert "overlap" not in v.message


def outlived(stop: float | None, *, regranted: bool = True) -> Campaign:
    """pod-1's lease lapses at 5.9 (last heartbeat at 3.0); it stops the session at `stop`."""
    c = Campaign().renew("pod-1", 11, 0.0, 3.1).renew("pod-2", 21, 0.0, 12.0)
    c.grant(0.5, "a", "pod-1", 1).session(0.6, "pod-1", "a", 1, pid=11)
    c.fault(3.2, "f1", "pod-isolate", ["pod-1"], may_drop=["pod-1"], pids={"pod-1": 11})
    if regranted:
        c.grant(6.5, "a", "pod-2", 2).session(6.6, "pod-2", "a", 2, pid=21)
    if stop is not None:
        c.stop(stop, "pod-1", "a", 1, pid=11, reason="lease expired: fenced itself")
    return c.heal(9.0, "f1").healed_all(9.0).recovered(9.5).add(12.0, "note", "harness")


def test_a_session_outliving_its_lease_is_a_double_owner() -> None:
    # The pod's watchdog did not fence: its session still runs when pod-2 owns the slot.
    v = only(outlived(8.0).check(), 1, "slot a: double owner", "pod-1 pid 11 epoch 1",
             "past its lease", "lapsed at +5.900s", "epoch 2 was granted to pod-2")  # fmt: skip
    assert "1.600s" in v.message  # 8.0 - (5.9 + 0.5 tolerance)


def test_a_session_never_stopped_after_its_lease_is_flagged_without_a_regrant() -> None:
    only(outlived(None, regranted=False).check(), 1, "pod-1 pid 11 epoch 1",
         "past its lease", "still running at the end")  # fmt: skip


def test_a_session_stopped_within_the_fencing_tolerance_passes() -> None:
    report = outlived(5.9 + 0.4).check()

    assert report.ok, report.summary()


def paused_owner(stop_after_resume: float) -> Campaign:
    """pod-1 is frozen from 3.2 to 8.0, its lease lapsing meanwhile; pod-2 takes over."""
    c = Campaign().renew("pod-1", 11, 0.0, 3.1).renew("pod-2", 21, 0.0, 14.0)
    c.grant(0.5, "a", "pod-1", 1).session(0.6, "pod-1", "a", 1, pid=11)
    c.fault(3.2, "f1", "pod-pause", ["pod-1"], may_drop=["pod-1"], pids={"pod-1": 11})
    c.grant(6.5, "a", "pod-2", 2).session(6.6, "pod-2", "a", 2, pid=21)
    c.heal(8.0, "f1")
    stop = 8.0 + stop_after_resume
    c.stop(stop, "pod-1", "a", 1, pid=11, reason="lease expired: fenced itself")
    return c.healed_all(stop + 0.5).recovered(stop + 1.0).add(14.0, "note", "harness")


def test_a_frozen_owner_that_stops_as_soon_as_it_resumes_passes() -> None:
    report = paused_owner(0.2).check()

    assert report.ok, report.summary()


def test_a_frozen_owner_that_keeps_running_after_it_resumes_is_a_double_owner() -> None:
    v = only(paused_owner(2.0).check(), 1, "double owner", "pod-1 pid 11 epoch 1")
    assert "1.500s past its lease" in v.message  # 2.0 after the resume, 0.5 tolerated


def test_a_killed_owner_holds_nothing_after_its_death() -> None:
    c = failover()  # pod-1 is killed at 3.5 and never writes a stop

    assert c.check().ok


def test_stale_write_accepted_by_the_store_is_flagged() -> None:
    c = Campaign().grant(1.0, "a", "pod-1", 1).grant(5.0, "a", "pod-2", 2).produce("q", 1, 2, 3)
    c.deliver("q", "a", 1, "pod-1", 1).deliver("q", "a", 2, "pod-2", 2)
    c.deliver("q", "a", 1, "pod-1", 3)

    only(c.check(), 2, "stale", "seq 3 epoch 1 by pod-1 after seq 2 epoch 2 by pod-2")


def test_write_by_a_pod_that_was_not_granted_the_epoch_is_flagged() -> None:
    c = Campaign().grant(1.0, "a", "pod-1", 1).produce("q", 1, 2)
    c.deliver("q", "a", 1, "pod-2", 1)
    c.deliver("q", "b", 7, "pod-3", 2)  # no grant recorded for b/7: nothing to compare with

    only(c.check(), 2, "slot a", "epoch 1 written by pod-2", "granted to pod-1")


@pytest.mark.parametrize("second_epoch", [1, 2], ids=["lower", "equal"])
def test_epoch_not_increasing_across_grants_is_flagged(second_epoch: int) -> None:
    c = Campaign().grant(1.0, "a", "pod-1", 2).grant(2.0, "a", "pod-2", second_epoch)

    only(c.check(), 3, f"epoch {second_epoch} granted to pod-2", "after epoch 2 to pod-1")


def test_replayed_grant_counts_once_at_its_earliest_copy() -> None:
    c = Campaign().grant(1.0, "a", "pod-1", 1, entry="e1").grant(10.0, "a", "pod-2", 2)
    c.grant(20.0, "a", "pod-1", 1, entry="e1", replicas=("r0",))  # r0 restarted, replays

    report = c.check()

    assert report.ok, report.summary()
    assert report.grants == 2


def test_replicas_disagreeing_on_one_entry_are_flagged() -> None:
    c = Campaign().grant(1.0, "a", "pod-1", 3, entry="e9", replicas=("r0", "r1"))
    c.grant(1.0, "a", "pod-2", 3, entry="e9", replicas=("r2",))

    only(c.check(), 3, "diverged", "entry e9", "pod-1 epoch 3 on r0,r1", "pod-2 epoch 3 on r2")


def dropped_at(t: float, reason: str = "lease expired: fenced itself", **fields: Any) -> Campaign:
    c = Campaign().renew("pod-1", 11, 0.0, 20.0)
    c.grant(0.5, "a", "pod-1", 1).session(0.6, "pod-1", "a", 1, pid=11)
    c.stop(t, "pod-1", "a", 1, pid=11, reason=reason, **fields)
    return c.add(30.0, "note", "harness")


def test_drop_without_a_fault_is_flagged() -> None:
    report = dropped_at(5.0).check()

    only(report, 4, "unexcused", "pod-1 pid 11", "slot a epoch 1", "lease expired")
    assert (report.drops, report.drops_excused) == (1, 0)


@pytest.mark.parametrize(
    "reason", ["drain", "drain: SIGTERM", "handoff: the session moves to another pod",
               "revoked: the adapter was disabled or deleted"]
)  # fmt: skip
def test_graceful_stop_is_not_a_drop(reason: str) -> None:
    report = dropped_at(5.0, reason).check()

    assert report.ok, report.summary()
    assert report.drops == 0


@pytest.mark.parametrize(
    "reason", ["released by the orchestrator", "shutdown: SIGTERM",
               "fenced by the orchestrator: stale epoch", "lease expired: fenced itself"]
)  # fmt: skip
def test_only_a_drain_a_handoff_or_a_revocation_is_graceful(reason: str) -> None:
    report = dropped_at(5.0, reason).check()

    only(report, 4, "unexcused", reason)
    assert report.drops == 1


@pytest.mark.parametrize("may_drop", [["pod-1"], ["*"]])
def test_drop_inside_a_fault_window_that_may_drop_it_is_excused(may_drop: list[str]) -> None:
    c = dropped_at(5.0).fault(4.0, "f1", "leader-kill", ["r0"], may_drop).heal(4.5, "f1")

    report = c.check()

    assert report.ok, report.summary()
    assert (report.drops, report.drops_excused) == (1, 1)


def test_drop_by_a_pod_the_fault_may_not_drop_is_flagged() -> None:
    c = dropped_at(5.0).fault(4.0, "f1", "pod-pause", ["pod-2"], may_drop=["pod-2"])

    only(c.check(), 4, "unexcused", "pod-pause f1 may drop ['pod-2']")


def test_drop_after_the_window_closes_is_flagged() -> None:
    # window: [1.0, heal 2.0 + ttl 3.0 + bound 5.0] = [1.0, 10.0]
    inside = dropped_at(9.9).fault(1.0, "f1", "replica-kill", ["r1"], ["*"]).heal(2.0, "f1")
    after = dropped_at(10.1).fault(1.0, "f1", "replica-kill", ["r1"], ["*"]).heal(2.0, "f1")

    assert inside.check().ok
    only(after.check(), 4, "unexcused", "+10.100s")


@pytest.mark.parametrize("healed_by", ["heal", "healed_all"])
def test_first_recovery_after_the_heal_closes_the_window(healed_by: str) -> None:
    def campaign(drop: float) -> Campaign:
        c = dropped_at(drop).fault(1.0, "f1", "pod-pause", ["pod-1"], ["pod-1"])
        c.recovered(1.5)  # before the heal: a recovery from something else
        c.heal(2.0, "f1") if healed_by == "heal" else c.healed_all(2.0)
        return c.recovered(3.5)

    assert campaign(3.4).check().ok
    only(campaign(3.6).check(), 4, "unexcused", "+3.600s", "faults open: none")


def test_next_fault_closes_the_window_of_the_previous_one() -> None:
    c = dropped_at(5.0).fault(1.0, "f1", "pod-kill", ["pod-1"], ["pod-1"]).heal(2.0, "f1")
    c.fault(4.0, "f2", "leader-kill", ["r0"], ["pod-2"]).heal(4.5, "f2")

    v = only(c.check(), 4, "unexcused", "faults open: leader-kill f2 may drop ['pod-2']")
    assert "f1" not in v.message


def test_a_fault_still_in_force_is_not_closed_by_the_next_fault() -> None:
    c = dropped_at(5.0).fault(1.0, "f1", "pod-pause", ["pod-1"], ["pod-1"])
    c.fault(3.0, "f2", "leader-kill", ["r0"], []).heal(3.5, "f2").heal(6.0, "f1")

    assert c.check().ok


def test_drop_dates_from_when_the_stop_began() -> None:
    # window: [1.0, heal 2.0 + ttl 3.0 + bound 5.0] = [1.0, 10.0]; the stop took 0.6s.
    def campaign(began: float) -> Campaign:
        c = dropped_at(10.5, began=began)
        return c.fault(1.0, "f1", "replica-kill", ["r1"], ["*"]).heal(2.0, "f1")

    assert campaign(9.9).check().ok
    only(campaign(10.1).check(), 4, "unexcused", "+10.100s")
    # The lease interval still ends at the record: the later time is the conservative one.
    assert held(campaign(9.9)) == [("pod-1", 11, 10.5, "stop")]


@pytest.mark.parametrize(
    ("may_drop", "pids", "excused"),
    [
        (["pod-1"], {"pod-1": 11}, True),
        (["pod-1"], {"pod-2": 21}, True),  # names another pod's process only
        (["pod-1"], {"pod-1": 10}, False),  # pid 11 is pod-1 restarted after the kill
        (["*"], {"pod-1": 10}, True),
    ],
)
def test_fault_naming_pids_excuses_only_the_process_it_hit(
    may_drop: list[str], pids: dict[str, int], excused: bool
) -> None:
    c = dropped_at(5.0).fault(4.0, "f1", "pod-kill", ["pod-1"], may_drop, pids=pids)

    report = c.check()

    if excused:
        assert report.ok, report.summary()
    else:
        only(report, 4, "unexcused", "pod-1 pid 11", "(pids {'pod-1': 10})")


def test_healed_all_closes_faults_without_their_own_heal() -> None:
    c = dropped_at(10.1).fault(1.0, "f1", "cluster-restart", ["r0", "r1", "r2"], ["*"])
    c.healed_all(2.0).recovered(3.0)

    only(c.check(), 4, "unexcused", "faults open: none")
    assert dropped_at(10.1).fault(1.0, "f1", "cluster-restart", ["r0"], ["*"]).check().ok


@pytest.mark.parametrize(
    ("source", "code", "shown"), [("harness", 1, "1"), ("nemesis", None, "unknown")]
)
def test_process_exiting_on_its_own_is_flagged(source: str, code: int | None, shown: str) -> None:
    report = failover().add(5.0, "crashed", source, process="r1", returncode=code).check()

    only(report, 5, f"process r1 exited on its own (returncode {shown})", "+5.000s")
    assert report.crashes == report.to_json()["crashes"] == 1


def test_recovery_in_time_passes() -> None:
    assert Campaign().healed_all(10.0).recovered(10.0 + TTL + BOUND).check().ok


def test_late_recovery_is_flagged() -> None:
    report = Campaign().healed_all(10.0).recovered(20.0).check()

    only(report, 5, "recovered after 10.000s", "8.000s")


def test_recovery_dates_from_when_the_state_began_to_hold() -> None:
    # Recorded late (after a stable stretch), but ACTIVE since 12.0: in time.
    assert Campaign().healed_all(10.0).recovered(25.0, active_since=12.0).check().ok
    late = Campaign().healed_all(10.0).recovered(25.0, active_since=19.0).check()
    only(late, 5, "recovered after 9.000s", "8.000s")


def test_failed_recovery_is_flagged() -> None:
    report = Campaign().healed_all(10.0).recovered(12.0, ok=False, missing=("adapter-x/0",)).check()

    only(report, 5, "gave up", "adapter-x/0")


def test_missing_recovery_is_flagged() -> None:
    report = Campaign().healed_all(10.0).add(15.0, "note", "harness").check()

    only(report, 5, "no recovered event", "5.000s")


def delivered(*msg_ids: int) -> Report:
    return Campaign().produce("q", 1, 2, 3, 4, 5).deliver("q", "a", 1, "pod-1", *msg_ids).check()


def test_lost_message_is_flagged() -> None:
    only(delivered(1, 2, 4, 5), 6, "queue q", "1 of 5 produced lost", "[3]")


def test_duplicate_message_is_flagged() -> None:
    only(delivered(1, 2, 3, 3, 4, 5), 6, "queue q", "more than once (1 extra rows)", "[3]")


def test_out_of_order_message_is_flagged() -> None:
    only(delivered(1, 3, 2, 4, 5), 6, "out of order", "id 2 at seq 3 after id 3 at seq 2")


def test_message_never_produced_is_flagged() -> None:
    only(delivered(1, 2, 3, 4, 5, 9), 6, "never produced", "[9]")


def test_queue_never_produced_to_is_flagged() -> None:
    c = Campaign().deliver("other", "a", 1, "pod-1", 1)

    only(c.check(), 6, "queue other", "nothing produced")


def held(c: Campaign) -> list[tuple[str, int, float, str]]:
    return [(iv.pod, iv.pid, iv.end, iv.ended) for iv in lease_intervals(c.build())]


def holding_from_1() -> Campaign:
    c = Campaign().lease(0.0, "pod-1", 2.9, pid=11).session(1.0, "pod-1", "a", 1, pid=11)
    return c.add(20.0, "note", "harness")


def test_lease_renewed_in_time_keeps_the_interval_open() -> None:
    c = holding_from_1().lease(2.0, "pod-1", 4.9, pid=11).lease(4.0, "pod-1", 6.9, pid=11)

    assert held(c) == [("pod-1", 11, 6.9, "lapse")]
    # A second pod starting at 5.0 overlaps the renewed lease.
    c.renew("pod-2", 21, 0.0, 10.0).session(5.0, "pod-2", "a", 1, pid=21)
    flagged(c.check(), 1, "overlap for 1.900s")


def test_renewal_after_the_deadline_does_not_revive_the_lease() -> None:
    c = holding_from_1().lease(3.5, "pod-1", 6.4, pid=11)

    assert held(c) == [("pod-1", 11, 2.9, "lapse")]


def test_null_deadline_ends_the_lease_at_once() -> None:
    c = holding_from_1().lease(2.0, "pod-1", 4.9, pid=11).lease(3.0, "pod-1", None, pid=11)

    assert held(c) == [("pod-1", 11, 3.0, "lapse")]


def test_session_stop_ends_the_interval() -> None:
    c = (
        holding_from_1()
        .renew("pod-1", 11, 2.0, 20.0)
        .stop(7.0, "pod-1", "a", 1, pid=11, reason="drain")
    )

    assert held(c) == [("pod-1", 11, 7.0, "stop")]


def stale_owner_tries() -> Campaign:
    c = Campaign().renew("pod-1", 11, 0.0, 10.0).renew("pod-2", 21, 0.0, 10.0)
    c.grant(0.4, "a", "pod-2", 2).session(0.5, "pod-2", "a", 2, pid=21)
    return c.add(1.0, "session_start", "pod-1", pid=11, slot="a", epoch=1)


@pytest.mark.parametrize("claim", [{}, {"claimed": False}], ids=["unsaid", "not claimed"])
def test_refused_start_holds_nothing(claim: dict[str, bool]) -> None:
    c = stale_owner_tries()
    without_refusal = c.check()
    c.add(1.05, "session_refused", "pod-1", pid=11, slot="a", epoch=1, reason="fence", **claim)

    report = c.check()

    assert report.ok, report.summary()
    assert (report.sessions_started, report.sessions_refused) == (1, 1)
    assert [iv.pod for iv in lease_intervals(c.build())] == ["pod-2"]
    flagged(without_refusal, 1, "overlap", "pod-1 pid 11 epoch 1")


def test_refusal_after_claiming_ends_the_interval_like_a_stop() -> None:
    c = stale_owner_tries().add(
        1.25, "session_refused", "pod-1", pid=11, slot="a", epoch=1, reason="db", claimed=True
    )

    report = c.check()

    assert (report.sessions_started, report.sessions_refused) == (2, 0)
    assert held(c)[1] == ("pod-1", 11, 1.25, "refused after claim")
    flagged(report, 1, "overlap for 0.250s", "pod-1 pid 11 epoch 1", "until refused after claim")


def test_start_retried_after_a_refusal_holds() -> None:
    c = Campaign().renew("pod-1", 11, 0.0, 10.0).grant(0.4, "a", "pod-1", 1)
    c.add(1.0, "session_start", "pod-1", pid=11, slot="a", epoch=1)
    c.add(1.05, "session_refused", "pod-1", pid=11, slot="a", epoch=1, reason="db unavailable")
    c.session(2.0, "pod-1", "a", 1, pid=11)

    assert [(iv.start, iv.ended) for iv in lease_intervals(c.build())] == [(2.0, "end of history")]


def test_refusal_belongs_to_the_latest_start() -> None:
    c = Campaign().renew("pod-1", 11, 0.0, 10.0).grant(0.4, "a", "pod-1", 1)
    c.session(1.0, "pod-1", "a", 1, pid=11)
    c.add(2.0, "session_start", "pod-1", pid=11, slot="a", epoch=1)  # a second claim
    c.add(2.05, "session_refused", "pod-1", pid=11, slot="a", epoch=1, reason="already running")

    assert [iv.start for iv in lease_intervals(c.build())] == [1.0]


@pytest.mark.parametrize("lease", [None, 0.9], ids=["never", "lapsed"])
def test_start_without_a_lease_is_flagged(lease: float | None) -> None:
    c = Campaign().session(1.0, "pod-1", "a", 1, pid=11)
    if lease is not None:
        c.lease(0.0, "pod-1", lease, pid=11)

    report = c.check()

    only(report, 1, "pod-1 pid 11 started slot a epoch 1 at", "without a valid lease")
    assert report.sessions_without_lease == 1
    assert held(c) == [("pod-1", 11, 1.0, "no lease")]


def test_read_events_merges_files_and_skips_a_truncated_last_line(tmp_path: Path) -> None:
    a, b = tmp_path / "r0.jsonl", tmp_path / "pod-1.jsonl"
    a.write_bytes(
        b'{"t": 1.0, "wall": 1, "kind": "leader", "source": "r0", "term": 2}\n'
        b'{"t": 3.0, "wall": 3, "kind": "leader", "source": "r0", "term": 3}\n'
    )
    b.write_bytes(
        b'{"t": 2.0, "wall": 2, "kind": "registered", "source": "pod-1", "pid": 7}\n'
        b'{"t": 4.0, "wall": 4, "kind": "lease", "source": "pod-1", "pid": 7, "dead'
    )

    events = read_events([a, b])

    assert [(e["t"], e["source"]) for e in events] == [(1.0, "r0"), (2.0, "pod-1"), (3.0, "r0")]


def test_read_events_rejects_a_malformed_middle_line(tmp_path: Path) -> None:
    path = tmp_path / "pod-1.jsonl"
    path.write_bytes(
        b'{"t": 1.0, "wall": 1, "kind": "registered", "source": "pod-1", "pid": 7}\n'
        b'{"t": 2.0, "wall": 2, "kind": "lea\n'
        b'{"t": 3.0, "wall": 3, "kind": "registered", "source": "pod-1", "pid": 7}\n'
    )

    with pytest.raises(HistoryError, match=r"pod-1\.jsonl:2"):
        read_events([path])


def test_read_events_rejects_a_line_that_is_not_an_event(tmp_path: Path) -> None:
    path = tmp_path / "r0.jsonl"
    path.write_text('{"t": 1.0, "kind": "leader"}\n[1, 2]\n')

    with pytest.raises(HistoryError, match=r"r0\.jsonl:1: event without a valid 'source'"):
        read_events([path])


def test_history_load_round_trip(tmp_path: Path) -> None:
    c = failover()
    path = tmp_path / "history.json"
    path.write_text(
        json.dumps(
            {
                "ttl": TTL,
                "recovery_bound": BOUND,
                "produced": c.produced,
                "deliveries": c.deliveries,
                "events": c.events,
            }
        )
    )

    history = History.load(path)

    assert (history.ttl, history.recovery_bound) == (TTL, BOUND)
    assert check(history).ok


def test_history_load_names_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "history.json"
    path.write_text('{"ttl": 3}')

    with pytest.raises(HistoryError, match=r"history\.json: not a history"):
        History.load(path)


def test_malformed_event_is_an_error_not_a_pass() -> None:
    c = Campaign().add(1.0, "grant", "r0", slot="a", pod="pod-1", entry="e1")  # no epoch

    with pytest.raises(HistoryError, match="'epoch'"):
        c.check()


@pytest.mark.parametrize(
    ("kind", "fields", "key"),
    [
        (
            "fault",
            {"id": "f1", "fault": "pod-kill", "targets": [], "may_drop": [], "pids": [1]},
            "pids",
        ),
        (
            "fault",
            {"id": "f1", "fault": "pod-kill", "targets": [], "may_drop": [], "pids": {"p": "1"}},
            "p",
        ),
        ("session_refused", {"pid": 1, "slot": "a", "epoch": 1, "claimed": "yes"}, "claimed"),
        ("session_stop", {"pid": 1, "slot": "a", "epoch": 1, "reason": "x", "began": "0"}, "began"),
        ("crashed", {"returncode": 1}, "process"),
        ("crashed", {"process": "r0", "returncode": "1"}, "returncode"),
    ],
)
def test_malformed_optional_fields_are_errors(kind: str, fields: dict[str, Any], key: str) -> None:
    with pytest.raises(HistoryError, match=f"'{key}'"):
        Campaign().add(1.0, kind, "pod-1", **fields).check()


def samples(*seconds: float) -> Report:
    return Report(failovers=[Failover("f", "pod-kill", "pod-1", "a", s) for s in seconds], ttl=TTL)


def test_percentiles_are_nearest_rank() -> None:
    ten = samples(*(float(s) for s in range(10, 0, -1))).to_json()
    three = samples(0.5, 2.0, 1.0).to_json()

    assert ten["failover_seconds"] == {"count": 10, "p50": 5.0, "p99": 10.0, "max": 10.0}
    assert ten["failover_beyond_ttl_seconds"] == {"p50": 2.0, "p99": 7.0, "max": 7.0}
    assert three["failover_seconds"] == {"count": 3, "p50": 1.0, "p99": 2.0, "max": 2.0}


def test_no_samples_give_null_percentiles() -> None:
    summary = samples().to_json()

    assert summary["failover_seconds"] == {"count": 0, "p50": None, "p99": None, "max": None}
    assert summary["failover_beyond_ttl_seconds"] == {"p50": None, "p99": None, "max": None}


def test_summary_lists_each_violation_and_the_verdict() -> None:
    c = Campaign().healed_all(10.0).recovered(20.0).grant(1, "a", "p", 2).grant(2, "a", "q", 1)

    lines = c.check().summary().splitlines()

    assert lines[-1] == "FAILED: 2 violations"
    assert [line.split(":")[0] for line in lines[-3:-1]] == ["invariant 3", "invariant 5"]
