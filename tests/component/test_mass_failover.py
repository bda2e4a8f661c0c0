"""A pod holding 10,000 sessions dies: a bounded number of Raft entries moves them all."""

from __future__ import annotations

import math
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from protocol.errors import UnavailableError
from protocol.values import DeploymentMode
from raftorch.core.model import AdapterSpec, Command, Grant, Policy, RegisterPod
from tests.component.raftcluster import Cluster, Replica, StaticAdapters, one_leader, wait_for

SESSIONS = 10_000
BUDGET = 1_000
TTL = 2.0


def _pod(pod_id: str) -> RegisterPod:
    return RegisterPod(pod_id, f"{pod_id}-inc", "127.0.0.1:1", frozenset({"fix"}), SESSIONS)


async def _submit(cluster: Cluster, leader: Replica, commands: Sequence[Command]) -> Replica:
    """Commit one entry; if leadership moves meanwhile (a busy machine), retry on the new
    leader with the same request id, which the appliers treat as a no-op if it did commit."""
    request_id = uuid.uuid4().hex
    while True:
        try:
            result = await leader.bridge.submit(commands, request_id=request_id,
                                                timeout_seconds=30.0)  # fmt: skip
            assert result.ok, result
            return leader
        except UnavailableError:
            leader = await one_leader(cluster)


async def test_ten_thousand_sessions_fail_over_in_bounded_entries(tmp_path: Path) -> None:
    adapters = StaticAdapters(
        {
            f"a{i}": AdapterSpec(f"a{i}", "fix", DeploymentMode.SINGLE, 1, enabled=True)
            for i in range(SESSIONS)
        }
    )
    policy = Policy(ttl_seconds=TTL, max_grants_per_tick=BUDGET)
    cluster = Cluster(3, tmp_path, adapters=adapters, policy=policy)
    for replica in cluster.live():
        replica.confirmer.start()
    try:
        leader = await one_leader(cluster)
        # Every session on the doomed pod first (set up directly, in large entries).
        leader = await _submit(cluster, leader, [_pod("doomed")])
        # In entries of BUDGET grants: three in-process replicas share one stepping thread,
        # and a huge entry applied three times in a row would starve their election timers.
        for start in range(0, SESSIONS, BUDGET):
            grants = [
                Grant(f"a{i}/0", f"a{i}", "doomed", expected_epoch=0)
                for i in range(start, start + BUDGET)
            ]
            leader = await _submit(cluster, leader, grants)
        leader = await _submit(cluster, leader, [_pod("p2"), _pod("p3")])

        entries_before = leader.node.snapshot().applied_entries
        started = time.monotonic()
        ticks = leader_changes = 0
        while True:
            try:
                await leader.loop.run_once()  # adopts the term first: all pods renewed now
                for survivor in ("p2", "p3"):
                    await leader.renew(survivor)
            except UnavailableError:
                leader = await one_leader(cluster)
                leader_changes += 1
                continue
            ticks += 1
            snapshot = leader.node.snapshot()
            if "doomed" not in snapshot.pods and all(
                s.owner in ("p2", "p3") for s in snapshot.slots.values()
            ):
                break
            assert time.monotonic() - started < TTL + 90.0, "mass failover did not finish"
        elapsed = time.monotonic() - started
        snapshot = leader.node.snapshot()
        entries = snapshot.applied_entries - entries_before
        barriers = sum(r.confirmer.barriers for r in cluster.live())
        plan_entries = entries - barriers
        sys.stdout.write(
            f"\nmass failover: {SESSIONS} sessions reassigned in {plan_entries} Raft entries "
            f"(claims and plans; +{barriers} renewal barriers) over {ticks} ticks, "
            f"{elapsed:.2f}s including the {TTL}s TTL, {leader_changes} leader changes\n"
        )
        # Full entries of BUDGET grants carry the work; each leader adds at most a claim,
        # an epoch-floor entry and one partly filled entry (a busy machine may move the
        # leadership meanwhile). Many small entries would break this bound.
        assert plan_entries <= math.ceil(SESSIONS / BUDGET) + 3 * (1 + leader_changes)
        assert len(snapshot.slots) == SESSIONS
        epochs = [s.epoch for s in snapshot.slots.values()]
        assert min(epochs) > SESSIONS  # every reassignment got a fresh, higher epoch
        assert len(set(epochs)) == SESSIONS

        def identical() -> bool:
            snaps = [r.node.snapshot() for r in cluster.live()]
            return all(s.slots == snaps[0].slots and s.pods == snaps[0].pods for s in snaps)

        await wait_for(identical, 20.0, "identical state on every replica")
    finally:
        for replica in cluster.live():
            await replica.confirmer.stop()
        cluster.close()
