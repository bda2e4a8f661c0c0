"""Pre-vote and leader stickiness: a replica that merely missed heartbeats cannot depose a leader.

pysyncobj stands for election the moment its election timer runs out: it raises its
term and asks for votes, and a leader that sees the higher term steps down. Under CPU
starvation a follower whose append-entries come a fifth of a second late does exactly
that, again and again (bug 7 in docs/reliability.md: four elections in three seconds
with a healthy majority). Two guards from the Raft thesis, applied on the tick thread
around pysyncobj's own logic:

- **Pre-vote** (§9.6). When the election timer runs out, the replica first asks the
  others whether they *would* vote for it (`pre_vote`, term + 1, its last log entry)
  without raising its term. Only when a majority says yes does pysyncobj stand. A
  replica answers yes when the term is newer than its own, the candidate's log is at
  least as up to date as its own, and it has not heard from a current leader within
  the minimum election timeout (a leader always answers no). A replica cut off from
  the majority never raises its term, so it does not disrupt the cluster when it
  comes back.
- **Leader stickiness** (§4.2.3). A follower that heard from a current leader within
  the minimum election timeout ignores vote requests: it neither adopts the term nor
  votes. A leader does not ignore them, so a replica whose term did run ahead (a
  replica of an older version, which stands without pre-vote) is still heard: the
  leader steps down and the cluster moves on to the higher term.

A leadership transfer must bypass both: the target stands at once (pysyncobj's
`timeout_now` sets its election deadline to zero and skips this pre-vote) and its vote
requests carry `TRANSFER_FLAG`, which stickiness lets through.

Compatibility: a replica without this module ignores `pre_vote` messages, so a newer
replica needs a majority of newer replicas (itself included) to stand. In a rolling
upgrade of three, a newer replica alone with an older one whose log is shorter cannot
be elected until the third replica is back.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

from pysyncobj import _RAFT_STATE
from pysyncobj.monotonic import monotonic as raft_clock

log = logging.getLogger(__name__)

Clock = Callable[[], float]
PRE_VOTE = "pre_vote"
PRE_VOTE_RESPONSE = "pre_vote_response"
HIDDEN_SECONDS = 1e9
"""Added to the election deadline pysyncobj sees while it is not to stand (see before_tick)."""
TRANSFER_FLAG = "raftorch_transfer"
"""Set on the vote requests of a leadership transfer's target (stickiness lets them in)."""


class RaftInternals:
    """The pysyncobj 0.3.17 internals an election needs, in one place (its attributes are
    name-mangled private ones; pinned by the dependency's version)."""

    def __init__(self, raft: Any) -> None:
        self._raft = raft

    @property
    def is_leader(self) -> bool:
        return bool(self._raft._SyncObj__raftState == _RAFT_STATE.LEADER)

    @property
    def term(self) -> int:
        return int(self._raft._SyncObj__raftCurrentTerm)

    @property
    def election_deadline(self) -> float:
        return float(self._raft._SyncObj__raftElectionDeadline)

    @election_deadline.setter
    def election_deadline(self, value: float) -> None:
        self._raft._SyncObj__raftElectionDeadline = value

    @property
    def transfer_in_progress(self) -> bool:
        return bool(self._raft._SyncObj__transferInProgress)

    def connected_to_anyone(self) -> bool:
        return bool(self._raft._SyncObj__connectedToAnyone())

    def other_nodes(self) -> list[Any]:
        return list(self._raft._SyncObj__otherNodes)

    def last_log(self) -> tuple[int, int]:
        """(term, index) of the last log entry."""
        return int(self._raft._SyncObj__getCurrentLogTerm()), int(
            self._raft._SyncObj__getCurrentLogIndex()
        )

    def read_waiting_messages(self) -> None:
        """Handle what already waits in the sockets, without waiting for more."""
        self._raft._poller.poll(0)

    def new_timeout(self) -> float:
        return float(self._raft._SyncObj__generateRaftTimeout())

    def send(self, node: Any, message: dict[str, Any]) -> None:
        self._raft._SyncObj__transport.send(node, message)

    def next_index(self, node: Any) -> int | None:
        """The leader's next log index to send `node` (None when it keeps none)."""
        value = self._raft._SyncObj__raftNextIndex.get(node)
        return None if value is None else int(value)

    def set_next_index(self, node: Any, value: int) -> None:
        self._raft._SyncObj__raftNextIndex[node] = value


class ElectionGuard:
    """Pre-vote and stickiness state of one replica. Tick thread only."""

    def __init__(self, min_timeout_seconds: float, clock: Clock = time.monotonic) -> None:
        self._window = min_timeout_seconds
        self._clock = clock
        self._leader_contact = -math.inf
        self._round_term: int | None = None
        self._grants: set[str] = set()
        self._passed = False
        self._transfer_term: int | None = None
        self._deadline = 0.0  # the real election deadline, on pysyncobj's clock
        self._asked: list[tuple[Any, dict[str, Any]]] = []
        self._stale_told: dict[str, float] = {}
        self.pre_votes = 0
        """Pre-vote rounds started (each one an election timer that ran out)."""
        self.elections = 0
        """Pre-vote rounds a majority agreed to: real elections stood for."""
        self.votes_ignored = 0
        """Vote requests ignored because a current leader was heard from recently."""

    @property
    def last_leader_contact(self) -> float:
        """When an append-entries of the current term last arrived (-inf: never)."""
        return self._leader_contact

    # -- receiving side -------------------------------------------------------------

    def heard_from_leader(self) -> None:
        """An append-entries of the current term (or newer) arrived."""
        self._leader_contact = self._clock()
        self._round_term = None
        self._passed = False

    def _leader_recent(self) -> bool:
        return self._clock() - self._leader_contact < self._window

    def allows_vote_request(self, raft: RaftInternals, message: dict[str, Any]) -> bool:
        """False for a vote request a follower must ignore (it heard from a leader lately)."""
        if message.get(TRANSFER_FLAG) or raft.is_leader or not self._leader_recent():
            return True
        self.votes_ignored += 1
        log.debug("vote request ignored term=%s: a current leader was heard from lately",
                  message.get("term"))  # fmt: skip
        return False

    def stale_leader(self, raft: RaftInternals, node: Any, its_term: int) -> None:
        """An append-entries of an older term arrived: tell its sender our term.

        pysyncobj drops such a message without an answer, and a leader learns of a
        higher term only from a vote request. Without pre-vote the replica with the
        higher term would stand again and again until its request got through; with
        pre-vote nobody lets it stand while that leader is active, and the two would
        stay deaf to each other for good (seen: a replica whose one vote request was
        lost while its link to the new leader came up, a candidate for 90 s). A vote
        request of our own term, at most once per window per leader, ends it: the
        leader steps down and the next election includes us."""
        if its_term < 0:
            return
        now = self._clock()
        key = str(node.id)
        if now - self._stale_told.get(key, -math.inf) < self._window:
            return
        self._stale_told[key] = now
        log_term, log_index = raft.last_log()
        raft.send(node, {"type": "request_vote", "term": raft.term,
                         "last_log_term": log_term, "last_log_index": log_index})  # fmt: skip
        log.info("a leader of term %d is behind our term %d: told it", its_term, raft.term)

    def queue_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        """Answered at the start of the next tick, once every message that arrived with
        it was handled (a leader's append-entries read later in the same poll counts)."""
        self._asked.append((node, message))

    def _answer_pre_vote(self, raft: RaftInternals, node: Any, message: dict[str, Any]) -> None:
        term = message.get("term")
        log_term, log_index = message.get("last_log_term"), message.get("last_log_index")
        granted = (
            isinstance(term, int) and isinstance(log_term, int) and isinstance(log_index, int)
            and term > raft.term and (log_term, log_index) >= raft.last_log()
            and not raft.is_leader and not self._leader_recent()
        )  # fmt: skip
        raft.send(node, {"type": PRE_VOTE_RESPONSE, "term": term, "granted": granted})

    def on_pre_vote_response(self, raft: RaftInternals, node: Any, message: dict[str, Any]) -> None:
        if self._round_term is None or self._passed or raft.is_leader:
            return
        if message.get("term") != self._round_term or message.get("granted") is not True:
            return
        self._grants.add(str(node.id))
        if self._majority(raft):
            self._pass()

    # -- candidate side -------------------------------------------------------------

    def before_tick(self, raft: RaftInternals, *, retiring: bool) -> None:
        """Run before pysyncobj's tick: answer pre-votes, and decide whether pysyncobj
        stands for election in this tick. pysyncobj stands when its election deadline
        has passed; this keeps the real deadline itself and shows pysyncobj one far in
        the future, or zero when it is to stand (checking the real one and leaving it to
        pysyncobj would race: it reads the clock again a moment later)."""
        asked, self._asked = self._asked, []
        for node, message in asked:
            self._answer_pre_vote(raft, node, message)
        if raft.is_leader:
            self._round_term, self._passed = None, False
            return  # pysyncobj ignores the deadline of a leader
        deadline = self._sync_deadline(raft)
        if deadline < raft_clock() and not self._passed and not retiring:
            # pysyncobj looks at its timer before reading its sockets: a replica starved
            # of CPU would stand although the leader's append-entries are waiting there.
            raft.read_waiting_messages()
            deadline = self._sync_deadline(raft)
        stand = False
        # A retiring replica stands for nothing, not even as a candidate whose requests the
        # transport drops (that still raised its term and turned it "candidate").
        if not retiring and deadline < raft_clock() and raft.connected_to_anyone():
            if raft.transfer_in_progress:
                self._transfer_term = raft.term + 1  # asked by the leader: stand at once
                stand = True
            elif self._passed:
                stand = True
            else:
                stand = self._start_round(raft)
        if stand:
            self._round_term, self._passed = None, False
            raft.election_deadline = 0.0
        else:
            raft.election_deadline = self._deadline + HIDDEN_SECONDS

    def _sync_deadline(self, raft: RaftInternals) -> float:
        """The real election deadline: pysyncobj's, when it set one since the last tick."""
        shown = raft.election_deadline
        if shown < HIDDEN_SECONDS / 2:
            self._deadline = shown
        return self._deadline

    def _start_round(self, raft: RaftInternals) -> bool:
        """Ask for pre-votes; True when no one else needs asking (a cluster of one)."""
        self.pre_votes += 1
        self._round_term = raft.term + 1
        self._grants = set()
        # The next round after a fresh timeout if this one fails; a majority's answer
        # ends the wait at once. (pysyncobj's clock: CLOCK_MONOTONIC_RAW.)
        self._deadline = raft_clock() + raft.new_timeout()
        if self._majority(raft):
            self._pass()
            return True
        log_term, log_index = raft.last_log()
        message = {"type": PRE_VOTE, "term": self._round_term,
                   "last_log_term": log_term, "last_log_index": log_index}  # fmt: skip
        for node in raft.other_nodes():
            raft.send(node, message)
        return False

    def _majority(self, raft: RaftInternals) -> bool:
        return len(self._grants) + 1 > (len(raft.other_nodes()) + 1) / 2

    def _pass(self) -> None:
        self._passed = True
        self._deadline = 0.0  # stand at the next tick
        self.elections += 1
        log.info("pre-vote passed term=%s grants=%d: standing for election",
                 self._round_term, len(self._grants))  # fmt: skip

    def outgoing(self, message: Any) -> Any:
        """Mark the vote requests of a transfer's target so that stickiness lets them in."""
        if (
            self._transfer_term is not None
            and isinstance(message, dict)
            and message.get("type") == "request_vote"
            and message.get("term") == self._transfer_term
        ):
            return {**message, TRANSFER_FLAG: True}
        return message
