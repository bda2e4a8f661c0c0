"""The asyncio bridge and the leader's lease keeping, with a fake Raft node."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from pysyncobj import FAIL_REASON

from raftorch.core.model import ApplyResult, Command, LeaderStamp, Revoke
from raftorch.leader.leases import LeaseTracker, RenewalConfirmer
from raftorch.raft.bridge import NotLeaderError, OutcomeUnknownError, RaftBridge
from raftorch.raft.node import DoneCallback, RaftStatus


class FakeNode:
    """Answers from another thread, like pysyncobj's tick thread; or never."""

    def __init__(self, reason: int = FAIL_REASON.SUCCESS, answer: bool = True) -> None:
        self.reason = reason
        self.answer = answer
        self.submitted: list[tuple[str, tuple[Command, ...]]] = []
        self.pending: list[DoneCallback] = []

    def submit(
        self, request_id: str, at: float, commands: tuple[Command, ...], on_done: DoneCallback
    ) -> None:
        self.submitted.append((request_id, commands))
        if not self.answer:
            self.pending.append(on_done)
            return
        rejected = tuple((i, "no") for i, c in enumerate(commands) if c == Revoke("bad", "x"))
        result: Any = (
            ApplyResult(request_id, rejected) if self.reason == FAIL_REASON.SUCCESS else None
        )
        threading.Thread(target=on_done, args=(result, self.reason)).start()


async def test_success_returns_the_applied_result() -> None:
    bridge = RaftBridge(FakeNode(), timeout_seconds=5.0, max_in_flight=4)
    result = await bridge.submit([], request_id="r1")
    assert result == ApplyResult("r1") and bridge.in_flight == 0


@pytest.mark.parametrize(
    ("reason", "error"),
    [
        (FAIL_REASON.NOT_LEADER, NotLeaderError),
        (FAIL_REASON.MISSING_LEADER, NotLeaderError),
        (FAIL_REASON.DISCARDED, NotLeaderError),
        (FAIL_REASON.LEADER_CHANGED, OutcomeUnknownError),
    ],
)
async def test_failures_map_to_retriable_errors(reason: int, error: type[Exception]) -> None:
    bridge = RaftBridge(FakeNode(reason), timeout_seconds=5.0, max_in_flight=4)
    with pytest.raises(error) as raised:
        await bridge.submit([])
    assert raised.value.retriable  # type: ignore[attr-defined]


async def test_timeout_means_outcome_unknown_and_a_late_answer_is_harmless() -> None:
    node = FakeNode(answer=False)
    bridge = RaftBridge(node, timeout_seconds=0.05, max_in_flight=4)
    with pytest.raises(OutcomeUnknownError, match="retry with the same request id"):
        await bridge.submit([], request_id="r9")
    node.pending[0](ApplyResult("r9"), FAIL_REASON.SUCCESS)  # arrives after the timeout
    assert bridge.in_flight == 0


async def _spin() -> None:
    """Let every ready callback and task run (all in this thread: deterministic)."""
    for _ in range(100):
        await asyncio.sleep(0)


async def test_commands_in_flight_are_capped() -> None:
    node = FakeNode(answer=False)
    bridge = RaftBridge(node, timeout_seconds=5.0, max_in_flight=2)
    tasks = [asyncio.create_task(bridge.submit([], request_id=f"r{i}")) for i in range(3)]
    await _spin()
    assert len(node.submitted) == 2 and bridge.in_flight == 2  # the third waits
    for done in list(node.pending):
        node.pending.remove(done)
        done(ApplyResult("x"), FAIL_REASON.SUCCESS)
    await _spin()
    assert len(node.submitted) == 3
    node.pending.pop()(ApplyResult("x"), FAIL_REASON.SUCCESS)
    await asyncio.gather(*tasks)


def test_tracker_new_leader_counts_every_pod_renewed_now() -> None:
    tracker = LeaseTracker(ttl_seconds=6.0)
    tracker.become_leader(term=4, now=50.0, pod_ids=["a", "b"])
    assert tracker.renewals() == {"a": 50.0, "b": 50.0}
    assert tracker.renew("a", 52.0, term=4)
    assert not tracker.renew("a", 53.0, term=3)  # confirmed under another term
    assert not tracker.renew("zzz", 53.0, term=4)  # not registered
    assert tracker.renew("a", 51.0, term=4)  # never moves backwards
    assert tracker.renewals()["a"] == 52.0
    tracker.admit(["a", "c"], now=60.0)
    assert tracker.renewals() == {"a": 52.0, "c": 60.0}
    tracker.step_down()
    assert tracker.renewals() == {} and tracker.term is None


def _status(leader: bool, term: int = 3) -> RaftStatus:
    return RaftStatus("n1", "n1" if leader else "n2", term, leader, 10, 10, True)


async def test_confirmer_shares_one_barrier_per_window_and_refuses_followers() -> None:
    node = FakeNode()
    bridge = RaftBridge(node, timeout_seconds=5.0, max_in_flight=4)
    leader = True
    confirmer = RenewalConfirmer(bridge, lambda: _status(leader), window_seconds=0.01)
    waiters = [asyncio.create_task(confirmer.confirm()) for _ in range(20)]
    await asyncio.sleep(0)
    await confirmer.run_once()
    assert [c.term for c in await asyncio.gather(*waiters)] == [3] * 20
    assert len(node.submitted) == 1 and node.submitted[0][1] == ()
    leader = False
    waiter = asyncio.create_task(confirmer.confirm())
    await asyncio.sleep(0)
    await confirmer.run_once()
    with pytest.raises(NotLeaderError):
        await waiter
    assert len(node.submitted) == 1  # a follower commits no barrier


async def test_confirmer_failure_is_not_a_confirmation() -> None:
    bridge = RaftBridge(FakeNode(FAIL_REASON.DISCARDED), timeout_seconds=5.0, max_in_flight=4)
    confirmer = RenewalConfirmer(bridge, lambda: _status(True), window_seconds=0.01)
    confirmer.start()
    try:
        with pytest.raises(NotLeaderError):
            await confirmer.confirm()
    finally:
        await confirmer.stop()


def test_tracker_refuses_doomed_and_lapsed_leases() -> None:
    tracker = LeaseTracker(ttl_seconds=6.0)
    tracker.become_leader(term=1, now=0.0, pod_ids=["a", "b", "c"])
    tracker.doom(["a"])  # the planner is expiring it: a late confirmation must not save it
    assert not tracker.renew("a", 5.9, term=1)
    assert not tracker.live("a", 1.0)
    assert not tracker.renew("b", 6.5, term=1)  # arrived after its lease had run out
    assert tracker.renew("c", 5.0, term=1) and tracker.live("c", 10.9)
    assert not tracker.live("c", 11.1)
    tracker.registered("a", 7.0, term=1)  # a new registration starts afresh
    assert tracker.renew("a", 8.0, term=1)


async def test_confirmer_refuses_when_leadership_changed_during_the_barrier() -> None:
    statuses = iter([_status(True, term=3), _status(False, term=4)])
    bridge = RaftBridge(FakeNode(), timeout_seconds=5.0, max_in_flight=4)
    confirmer = RenewalConfirmer(bridge, lambda: next(statuses), window_seconds=0.01)
    waiter = asyncio.create_task(confirmer.confirm())
    await asyncio.sleep(0)
    await confirmer.run_once()  # the barrier commits, but through another leader
    with pytest.raises(NotLeaderError, match="leadership changed"):
        await waiter


async def test_the_heartbeats_of_one_window_share_one_entry_with_their_commands() -> None:
    node = FakeNode()
    bridge = RaftBridge(node, timeout_seconds=5.0, max_in_flight=4)
    stamp = LeaderStamp("n1", 3)
    confirmer = RenewalConfirmer(bridge, lambda: _status(True), window_seconds=0.01,
                                 stamp=lambda commands: (stamp, *commands))  # fmt: skip
    first = [Revoke("a", "x"), Revoke("bad", "x")]
    second = [Revoke("bad", "x"), Revoke("b", "x"), Revoke("c", "x")]
    waiters = [asyncio.create_task(confirmer.confirm(c)) for c in (first, [], second)]
    await asyncio.sleep(0)
    await confirmer.run_once()
    one, none, two = await asyncio.gather(*waiters)
    assert len(node.submitted) == 1
    assert node.submitted[0][1] == (stamp, *first, *second)  # stamped once, all commands
    assert (one.term, one.rejected) == (3, ((1, "no"),))  # indexes are each caller's own
    assert none.rejected == ()
    assert two.rejected == ((0, "no"),)


def _stamping(node: FakeNode, *, window_seconds: float, max_commands: int) -> RenewalConfirmer:
    """A leader's confirmer whose barriers carry commands (stamped by term 3)."""
    bridge = RaftBridge(node, timeout_seconds=5.0, max_in_flight=4)
    return RenewalConfirmer(bridge, lambda: _status(True), window_seconds=window_seconds,
                            stamp=lambda commands: (LeaderStamp("n1", 3), *commands),
                            max_commands=max_commands)  # fmt: skip


async def test_a_full_window_goes_out_at_once_and_the_rest_waits_for_the_next() -> None:
    node = FakeNode()
    confirmer = _stamping(node, window_seconds=0.01, max_commands=3)
    batches = [[Revoke(f"{i}-{j}", "x") for j in range(2)] for i in range(3)]
    waiters = [asyncio.create_task(confirmer.confirm(b)) for b in batches]
    await asyncio.sleep(0)
    await confirmer.run_once()
    await asyncio.gather(*waiters)
    assert [len(entry) - 1 for _, entry in node.submitted] == [2, 2, 2]  # never above 3


async def test_a_heartbeat_after_a_quiet_spell_is_confirmed_without_waiting_a_window() -> None:
    node = FakeNode()
    # A window far longer than the test's deadlines: waiting for it would be seen.
    confirmer = _stamping(node, window_seconds=60.0, max_commands=2)
    confirmer.start()
    try:
        first = await asyncio.wait_for(confirmer.confirm(), timeout=5.0)
        assert first.term == 3 and len(node.submitted) == 1
        # The next barrier waits for the window, counted from the first one's start...
        second = asyncio.create_task(confirmer.confirm([Revoke("a", "x"), Revoke("b", "x")]))
        done, _ = await asyncio.wait({second}, timeout=0.3)
        assert not done and len(node.submitted) == 1
        # ...unless its group is full: then it goes out at once, with the one begun after.
        third = asyncio.create_task(confirmer.confirm([Revoke("c", "x")]))
        assert (await asyncio.wait_for(second, timeout=5.0)).term == 3
        assert (await asyncio.wait_for(third, timeout=5.0)).term == 3
        assert [len(entry) for _, entry in node.submitted] == [0, 3, 2]
    finally:
        await confirmer.stop()
