"""Restarts: a follower rejoins; a cold restart keeps every later epoch above every earlier one."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from persistence.db import Database
from persistence.lease_history import LeaseGrant, LeaseHistoryRepository
from protocol.values import DeploymentMode
from raftorch.core.model import AdapterSpec, Grant, Policy, RegisterPod, Release
from raftorch.raft.dumps import ThreadedDumpWriter
from tests.component.raftcluster import (
    Cluster,
    FixedFloor,
    Replica,
    StaticAdapters,
    first_plan,
    one_leader,
    wait_for,
)


def _pod(pod_id: str) -> RegisterPod:
    return RegisterPod(pod_id, f"{pod_id}-inc", "127.0.0.1:1", frozenset({"fix"}), 100)


async def _grant_churn(cluster: Cluster, slots: int) -> int:
    """Grant, release and grant again; returns the highest epoch issued."""
    leader = await one_leader(cluster)
    await leader.bridge.submit([_pod("p1"), _pod("p2")])
    first = await leader.bridge.submit(
        [Grant(f"a{i}/0", f"a{i}", "p1", expected_epoch=0) for i in range(slots)]
    )
    assert first.ok
    releases = [Release(slot, pod, epoch, "drain") for slot, pod, epoch in first.granted]
    assert (await leader.bridge.submit(releases)).ok
    second = await leader.bridge.submit(
        [Grant(slot, slot.split("/")[0], "p2", expected_epoch=e) for slot, _, e in first.granted]
    )
    assert second.ok
    return max(epoch for _, _, epoch in second.granted)


async def _all_equal(cluster: Cluster, timeout: float = 10.0) -> None:
    def same() -> bool:
        snaps = [r.node.snapshot() for r in cluster.live()]
        return all(
            (s.pods, s.slots, s.epoch_counter) == (snaps[0].pods, snaps[0].slots,
                                                   snaps[0].epoch_counter)
            for s in snaps
        )  # fmt: skip

    await wait_for(same, timeout, "identical state on every replica")


@pytest.mark.parametrize("wipe", [False, True], ids=["journal-kept", "journal-wiped"])
async def test_follower_restart_rejoins_with_the_state(tmp_path: Path, wipe: bool) -> None:
    cluster = Cluster(3, tmp_path)
    try:
        leader = await one_leader(cluster)
        follower = next(r for r in cluster.live() if r is not leader)
        await _grant_churn(cluster, 5)
        await _all_equal(cluster)
        assert (follower.data_dir / "raft.journal").exists()
        cluster.kill(follower.index)
        await leader.bridge.submit([Grant("late/0", "late", "p1", expected_epoch=0)])
        restarted = cluster.start(follower.index, wipe=wipe)
        await wait_for(
            lambda: "late/0" in restarted.node.snapshot().slots, 10.0, "the restarted follower"
        )
        await _all_equal(cluster)
    finally:
        cluster.close()


def _holds_late(replica: Replica) -> Callable[[], bool]:
    return lambda: "late/0" in replica.node.snapshot().slots


def _log_start(replica: Replica) -> int:
    """Index of the first entry the replica's Raft log (and journal) still holds."""
    return int(replica.node._SyncObj__raftLog[0][1])


async def _compact(replica: Replica) -> None:
    """Log compaction on `replica` now, up to its last applied entry: its dump written on
    the dump thread, its journal cut to the entries after it. pysyncobj gives each
    replica a turn of 30 s in every 300 (logCompactionSplit); the test lifts the turns
    instead of waiting up to five minutes for one."""
    writer = replica.node._SyncObj__serializer
    assert isinstance(writer, ThreadedDumpWriter)
    written, start = writer.written, _log_start(replica)
    replica.node.conf.logCompactionSplit = False  # type: ignore[attr-defined]
    replica.node.forceLogCompaction()
    await wait_for(lambda: writer.written > written, 10.0, "the dump written")
    await wait_for(lambda: _log_start(replica) > start, 10.0, "the journal cut after it")


async def test_replicas_restart_from_their_dumps(tmp_path: Path) -> None:
    """A follower restarts from its own dump plus the journal after it; a wiped one gets
    the leader's dump, because the leader's log no longer starts at the first entry."""
    cluster = Cluster(3, tmp_path)
    try:
        leader = await one_leader(cluster)
        first, second = (r for r in cluster.live() if r is not leader)
        await _grant_churn(cluster, 20)
        await _all_equal(cluster)
        await _compact(first)
        await _compact(leader)
        assert (first.data_dir / "raft.dump").stat().st_size > 0
        await leader.bridge.submit([Grant("late/0", "late", "p1", expected_epoch=0)])
        await _all_equal(cluster)
        for replica, wipe in ((first, False), (second, True)):
            cluster.kill(replica.index)
            restarted = cluster.start(replica.index, wipe=wipe)
            await wait_for(_holds_late(restarted), 10.0, "the restart")
            await _all_equal(cluster)
            assert _log_start(restarted) > 1  # its state came from a dump, not entry 1 on
    finally:
        cluster.close()


async def test_cold_restart_with_journals_keeps_epochs_rising(tmp_path: Path) -> None:
    cluster = Cluster(3, tmp_path)
    try:
        highest = await _grant_churn(cluster, 5)
        await _all_equal(cluster)
        before = cluster.replica(0).node.snapshot()
        for index in range(3):
            cluster.kill(index)
        for index in range(3):
            cluster.start(index)
        leader = await one_leader(cluster)
        await wait_for(
            lambda: leader.node.snapshot().slots == before.slots, 10.0, "the restored state"
        )
        result = await leader.bridge.submit([Grant("new/0", "new", "p1", expected_epoch=0)])
        [(_, _, epoch)] = result.granted
        assert epoch > highest
    finally:
        cluster.close()


async def test_cold_restart_with_journals_wiped_takes_the_floor_from_postgres(
    tmp_path: Path, pg_dsn: str
) -> None:
    adapters = StaticAdapters()
    async with Database(pg_dsn) as db:
        history = LeaseHistoryRepository(db)
        cluster = Cluster(3, tmp_path, adapters=adapters, floor=FixedFloor())
        try:
            highest = await _grant_churn(cluster, 5)
            await _all_equal(cluster)
            granted = cluster.replica(0).node.snapshot().slots.values()
            await history.record_grants(
                [LeaseGrant(s.slot, s.owner or "", s.epoch) for s in granted]
            )
            for index in range(3):
                cluster.kill(index)
        finally:
            cluster.close()

        # Total loss of the Raft state; PostgreSQL (lease history) survives.
        reborn = Cluster(
            3,
            tmp_path / "reborn",
            adapters=adapters,
            policy=Policy(ttl_seconds=3.0),
            floor=history,  # type: ignore[arg-type]
        )
        try:
            leader = await one_leader(reborn)
            assert leader.node.snapshot().epoch_counter == 0
            await leader.bridge.submit([_pod("p3")])
            adapters.items["fresh"] = AdapterSpec("fresh", "fix", DeploymentMode.SINGLE, 1, True)
            started = time.monotonic()
            outcome = await first_plan(leader)
            assert leader.node.snapshot().epoch_floor == highest
            assert outcome.result is not None
            [(_, _, epoch)] = outcome.result.granted
            assert epoch > highest, f"epoch {epoch} reused after a restore (max was {highest})"
            assert time.monotonic() - started < 5.0
        finally:
            reborn.close()
