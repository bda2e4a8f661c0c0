"""The election guard's rules, against a fake of the pysyncobj internals it reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from pysyncobj.monotonic import monotonic as raft_clock

from raftorch.raft.election import (
    HIDDEN_SECONDS,
    PRE_VOTE,
    PRE_VOTE_RESPONSE,
    TRANSFER_FLAG,
    ElectionGuard,
    RaftInternals,
)

WINDOW = 0.2


@dataclass(frozen=True)
class Peer:
    id: str


@dataclass
class FakeRaft:
    is_leader: bool = False
    term: int = 5
    election_deadline: float = 0.0
    transfer_in_progress: bool = False
    log: tuple[int, int] = (5, 100)
    peers: tuple[Peer, ...] = (Peer("b"), Peer("c"))
    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    timeout: float = 0.3

    def connected_to_anyone(self) -> bool:
        return True

    def other_nodes(self) -> list[Peer]:
        return list(self.peers)

    def last_log(self) -> tuple[int, int]:
        return self.log

    def read_waiting_messages(self) -> None:
        pass

    def new_timeout(self) -> float:
        return self.timeout

    def send(self, node: Peer, message: dict[str, Any]) -> None:
        self.sent.append((node.id, message))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _raft(fake: FakeRaft) -> RaftInternals:
    return fake  # type: ignore[return-value]  # the same surface, duck-typed


def _answer(guard: ElectionGuard, raft: FakeRaft, term: int, log: tuple[int, int]) -> bool:
    message = {"type": PRE_VOTE, "term": term, "last_log_term": log[0], "last_log_index": log[1]}
    raft.sent.clear()
    guard.queue_pre_vote(Peer("b"), message)
    raft.election_deadline = raft_clock() + 10  # not due: only the answer
    guard.before_tick(_raft(raft), retiring=False)
    [(to, answer)] = raft.sent
    assert (to, answer["type"], answer["term"]) == ("b", PRE_VOTE_RESPONSE, term)
    return bool(answer["granted"])


@pytest.mark.parametrize(
    ("term", "log", "granted"),
    [
        (6, (5, 100), True),  # newer term, same log
        (6, (5, 101), True),  # a longer log
        (6, (6, 1), True),  # a newer last term
        (5, (5, 100), False),  # not a newer term
        (6, (5, 99), False),  # a shorter log
        (6, (4, 500), False),  # an older last term
    ],
)
def test_a_pre_vote_is_granted_for_a_newer_term_and_an_up_to_date_log(
    term: int, log: tuple[int, int], granted: bool
) -> None:
    assert _answer(ElectionGuard(WINDOW, Clock()), FakeRaft(), term, log) is granted


def test_no_pre_vote_while_a_leader_was_heard_lately_nor_from_a_leader() -> None:
    clock = Clock()
    guard = ElectionGuard(WINDOW, clock)
    guard.heard_from_leader()
    clock.now += WINDOW * 0.9
    assert not _answer(guard, FakeRaft(), 6, (5, 100))
    clock.now += WINDOW * 0.2
    assert _answer(guard, FakeRaft(), 6, (5, 100))
    assert not _answer(guard, FakeRaft(is_leader=True), 6, (5, 100))


def test_vote_requests_are_ignored_while_a_leader_was_heard_lately_except_transfers() -> None:
    clock = Clock()
    guard = ElectionGuard(WINDOW, clock)
    vote = {"type": "request_vote", "term": 9}
    assert guard.allows_vote_request(_raft(FakeRaft()), vote)
    guard.heard_from_leader()
    assert not guard.allows_vote_request(_raft(FakeRaft()), vote)
    assert guard.allows_vote_request(_raft(FakeRaft()), {**vote, TRANSFER_FLAG: True})
    assert guard.allows_vote_request(_raft(FakeRaft(is_leader=True)), vote)  # a leader hears
    assert guard.votes_ignored == 1


def test_an_expired_timer_asks_for_pre_votes_and_stands_only_with_a_majority() -> None:
    guard = ElectionGuard(WINDOW, Clock())
    raft = FakeRaft(election_deadline=raft_clock() - 0.01)
    guard.before_tick(_raft(raft), retiring=False)
    # pysyncobj must not stand: it sees a deadline far away; the peers are asked.
    assert raft.election_deadline > raft_clock() + HIDDEN_SECONDS / 2
    assert [(to, m["type"], m["term"]) for to, m in raft.sent] == [
        ("b", PRE_VOTE, 6), ("c", PRE_VOTE, 6)]  # fmt: skip
    guard.on_pre_vote_response(_raft(raft), Peer("b"), {"term": 6, "granted": False})
    guard.before_tick(_raft(raft), retiring=False)
    assert raft.election_deadline > raft_clock() + HIDDEN_SECONDS / 2
    guard.on_pre_vote_response(_raft(raft), Peer("c"), {"term": 6, "granted": True})
    guard.before_tick(_raft(raft), retiring=False)
    assert raft.election_deadline == 0.0  # stand now
    assert (guard.pre_votes, guard.elections) == (1, 1)


def test_a_transfer_target_stands_at_once_and_marks_its_vote_requests() -> None:
    guard = ElectionGuard(WINDOW, Clock())
    raft = FakeRaft(election_deadline=0.0, transfer_in_progress=True)
    guard.before_tick(_raft(raft), retiring=False)
    assert raft.election_deadline == 0.0 and not raft.sent  # no pre-vote
    marked = guard.outgoing({"type": "request_vote", "term": 6})
    assert marked[TRANSFER_FLAG] is True
    assert TRANSFER_FLAG not in guard.outgoing({"type": "request_vote", "term": 7})


def test_a_leader_of_an_older_term_is_told_ours_once_per_window() -> None:
    # pysyncobj drops an append-entries of an older term without a word; with pre-vote the
    # replica ahead could never stand again while that leader is active, so it tells it.
    clock = Clock()
    guard = ElectionGuard(WINDOW, clock)
    raft = FakeRaft(term=4, log=(3, 40))
    guard.stale_leader(_raft(raft), Peer("b"), 3)
    assert raft.sent == [
        ("b", {"type": "request_vote", "term": 4, "last_log_term": 3, "last_log_index": 40})
    ]
    guard.stale_leader(_raft(raft), Peer("b"), 3)  # every append-entries: not every time
    assert len(raft.sent) == 1
    guard.stale_leader(_raft(raft), Peer("c"), 3)  # another leader: its own window
    assert [to for to, _ in raft.sent] == ["b", "c"]
    clock.now += WINDOW
    guard.stale_leader(_raft(raft), Peer("b"), 3)
    assert [to for to, _ in raft.sent] == ["b", "c", "b"]
    guard.stale_leader(_raft(raft), Peer("c"), -1)  # no term in the message: nothing
    assert len(raft.sent) == 3


@pytest.mark.parametrize("transfer", [False, True])
def test_a_retiring_replica_never_stands(transfer: bool) -> None:
    """A replica that handed leadership on to stop stays a follower however long its
    shutdown takes: past its deadline, even when asked to take over, it shows pysyncobj
    a deadline in the future (zero would make it a candidate with a higher term)."""
    guard = ElectionGuard(WINDOW, raft_clock)
    raft = FakeRaft(election_deadline=raft_clock() - 1.0, transfer_in_progress=transfer)
    for _ in range(3):
        guard.before_tick(_raft(raft), retiring=True)
        assert raft.election_deadline > raft_clock() + HIDDEN_SECONDS / 2
        assert raft.sent == []
    guard.before_tick(_raft(raft), retiring=False)  # not retiring: it would stand
    assert raft.election_deadline == 0.0 or raft.sent
