"""Smoke: three in-process replicas elect a leader and replicate a committed entry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from raftorch.core.model import Grant, RegisterPod
from tests.component.raftcluster import Cluster, one_leader, wait_for


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(3, tmp_path)
    yield c
    c.close()


async def test_commit_reaches_every_replica(cluster: Cluster) -> None:
    leader = await one_leader(cluster)
    result = await leader.bridge.submit(
        [
            RegisterPod("p1", "inc-1", "127.0.0.1:1", frozenset({"fix"}), 10),
            Grant("a/0", "a", "p1", expected_epoch=0),
        ]
    )
    assert result.ok and result.granted == (("a/0", "p1", 1),)
    await wait_for(
        lambda: all(r.node.snapshot().slots.get("a/0") for r in cluster.live()),
        5.0,
        "the grant on every replica",
    )
    assert {r.node.snapshot().slots["a/0"].epoch for r in cluster.live()} == {1}


async def test_raft_metrics_follow_the_node(cluster: Cluster) -> None:
    leader = await one_leader(cluster)
    await leader.bridge.submit([RegisterPod("p1", "inc-1", "127.0.0.1:1", frozenset(), 1)])
    await leader.loop.run_once()
    value = leader.registry.get_sample_value
    assert value("raftorch_raft_is_leader") == 1
    assert value("raftorch_raft_role", {"role": "leader"}) == 1
    assert value("raftorch_raft_term") == leader.node.status().term
    assert (value("raftorch_raft_commit_index") or 0) >= 2
    assert (value("raftorch_raft_commit_latency_seconds_count") or 0) >= 2
    assert value("raftorch_raft_commands_in_flight") == 0
    assert value("raftorch_raft_entries_submitted_total", {"purpose": "claim"}) == 1
    assert value("raftorch_build_info", {"version": "0.1.0"}) == 1
    follower = next(r for r in cluster.live() if r is not leader)
    await follower.loop.run_once()
    assert follower.registry.get_sample_value("raftorch_raft_is_leader") == 0
