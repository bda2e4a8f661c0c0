"""Pre-vote and leader stickiness: a replica that missed heartbeats cannot depose the leader.

Bug 7 of docs/reliability.md: under CPU starvation the two live replicas kept deposing
each other (a follower whose append-entries came late stood for election, and the
leader stepped down on its higher term). A frozen node (not stepped) is how a starved
one looks to Raft: it misses every append-entries, then handles its timer before the
messages waiting in its socket. Shipped timers (TTL 3 s).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from raftorch.raft.election import TRANSFER_FLAG
from tests.component.raftcluster import TIMERS, Cluster, Replica, holds_for, one_leader, wait_for

MISSED = 2.5 * TIMERS.election_timeout_max_seconds
"""Long enough for any election timer to run out, well inside a TTL."""
LATE = (TIMERS.election_timeout_max_seconds + TIMERS.leader_fallback_timeout_seconds) / 2
"""Append-entries this late: past any election timer, not yet so long that the leader
gives up its office for want of answers (`leader_fallback_timeout_seconds`)."""


def _term(replica: Replica) -> int:
    return replica.node.status().term


def _stable(cluster: Cluster, leader: Replica, term: int) -> bool:
    return (
        all(
            r.node.status().leader_id == leader.address and _term(r) == term for r in cluster.live()
        )
        and leader.node.status().is_leader
    )


async def _miss_heartbeats(cluster: Cluster, follower: Replica, leader: Replica, term: int) -> None:
    follower.stepping = False
    try:
        samples = await holds_for(
            lambda: leader.node.status().is_leader and _term(leader) == term,
            MISSED,
            "the leader leads on while a follower is frozen",
        )
        assert samples >= 10
    finally:
        follower.stepping = True


async def test_a_follower_that_missed_heartbeats_does_not_depose_the_leader(
    tmp_path: Path,
) -> None:
    cluster = Cluster(3, tmp_path)
    try:
        leader = await one_leader(cluster)
        term = _term(leader)
        follower = next(r for r in cluster.live() if r is not leader)
        await _miss_heartbeats(cluster, follower, leader, term)
        # Resumed, pysyncobj would handle its expired timer before the append-entries
        # waiting in its socket, stand at once, and the leader would step down for its
        # term. It reads them first now (and would ask for a pre-vote if none were there).
        await holds_for(lambda: _stable(cluster, leader, term), 2.0, "no election")
    finally:
        cluster.close()


async def _heard_again(follower: Replica, since: float) -> None:
    """Until the follower has heard the leader for a while (the leader its answers)."""
    await wait_for(lambda: follower.node.election.last_leader_contact > since + 0.1, 5.0,
                   "the follower hearing from the leader again")  # fmt: skip


async def test_two_live_replicas_do_not_depose_each_other(tmp_path: Path) -> None:
    """Bug 7's shape: the third replica down, the leader's append-entries late at the
    follower (held back one way only: the follower's own messages still arrive)."""
    cluster = Cluster(3, tmp_path)
    try:
        leader = await one_leader(cluster)
        down = next(r for r in cluster.live() if r is not leader)
        cluster.kill(down.index)
        term = _term(leader)
        follower = next(r for r in cluster.live() if r is not leader)
        stood = follower.node.election.elections
        for _ in range(3):
            with cluster.network.lock:
                cluster.network.cut_links.add((leader.address, follower.address))
            # Its timer runs out; without pre-vote it stands, and the leader steps down
            # on its vote request's term. The leader refuses the pre-vote instead.
            await holds_for(lambda: _term(leader) == term and leader.node.status().is_leader,
                            LATE, "the leader leads on")  # fmt: skip
            cluster.network.heal()
            await _heard_again(follower, since=time.monotonic())
            assert _stable(cluster, leader, term)
        assert follower.node.election.pre_votes >= 3
        assert follower.node.election.elections == stood  # no pre-vote passed
    finally:
        cluster.close()


async def test_a_cut_off_replica_keeps_its_term_and_rejoins_without_an_election(
    tmp_path: Path,
) -> None:
    cluster = Cluster(3, tmp_path)
    try:
        leader = await one_leader(cluster)
        term = _term(leader)
        cut = next(r for r in cluster.live() if r is not leader)
        cluster.network.cut([cut.address], [r.address for r in cluster.live() if r is not cut])
        # Without pre-vote it stands every election timeout and its term runs away.
        await holds_for(lambda: _term(cut) == term, MISSED, "the cut-off replica's term stays")
        assert cut.node.election.pre_votes >= 2
        cluster.network.heal()
        await wait_for(lambda: _stable(cluster, leader, term), 5.0, "the replica rejoins")
        await holds_for(lambda: _stable(cluster, leader, term), 1.0, "no election")
    finally:
        cluster.close()


async def test_a_dead_leader_is_still_replaced(tmp_path: Path) -> None:
    cluster = Cluster(3, tmp_path)
    try:
        old = await one_leader(cluster)
        term = _term(old)
        cluster.kill(old.index)
        new = await one_leader(cluster)
        assert new is not old and _term(new) > term
        assert new.node.election.elections >= 1  # it stood after a pre-vote
    finally:
        cluster.close()


def _vote_request(target: Replica, term: int, **extra: Any) -> dict[str, Any]:
    log_term, log_index = target.node.status().term, 10**9  # a log ahead of everyone's
    return {"type": "request_vote", "term": term, "last_log_index": log_index,
            "last_log_term": log_term, **extra}  # fmt: skip


def _deliver(cluster: Cluster, target: Replica, sender: Replica, message: dict[str, Any]) -> None:
    """Hand `message` to `target`'s transport as if `sender` had sent it (stepping paused)."""
    with cluster._lock:  # the stepping thread holds it while it ticks
        transport = target.node._SyncObj__transport  # type: ignore[attr-defined]
        node = next(n for n in target.node.otherNodes if n.address == sender.address)
        transport._onMessageReceived(node, message)


async def test_a_follower_ignores_vote_requests_while_it_hears_from_the_leader(
    tmp_path: Path,
) -> None:
    cluster = Cluster(3, tmp_path)
    try:
        leader = await one_leader(cluster)
        term = _term(leader)
        follower, candidate = (r for r in cluster.live() if r is not leader)
        _deliver(cluster, follower, candidate, _vote_request(follower, term + 5))
        assert _term(follower) == term  # neither adopted the term nor voted
        assert follower.node.election.votes_ignored == 1
        # A leadership transfer's vote request gets through.
        transfer = _vote_request(follower, term + 6, **{TRANSFER_FLAG: True})
        _deliver(cluster, follower, candidate, transfer)
        assert _term(follower) == term + 6
    finally:
        cluster.close()


async def test_a_leader_transfer_still_hands_leadership_on(tmp_path: Path) -> None:
    cluster = Cluster(3, tmp_path)
    try:
        old = await one_leader(cluster)
        before = {r.index: r.node.election.elections for r in cluster.live()}
        with cluster._lock:
            old.node.transferLeadership()
        await wait_for(lambda: any(r is not old for r in cluster.leaders()), 5.0, "a new leader")
        new = await one_leader(cluster)
        assert new is not old
        assert new.node.election.elections == before[new.index]  # it stood without a pre-vote
    finally:
        cluster.close()
