"""Restarts: a follower rejoins; a cold restart keeps every later epoch above every earlier one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from persistence.db import Database
from persistence.lease_history import LeaseGrant, LeaseHistoryRepository
from protocol.values import DeploymentMode
from raftorch.core.model import AdapterSpec, Grant, Policy, RegisterPod, Release
from tests.component.raftcluster import (
    Cluster,
    FixedFloor,
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
