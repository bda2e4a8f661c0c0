"""A pod holding 10,000 sessions dies: a bounded number of Raft entries moves them all."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

from persistence.adapters import DeploymentMode
from raftorch.model import AdapterSpec, Grant, Policy, RegisterPod
from tests.component.raftcluster import Cluster, StaticAdapters, one_leader, wait_for

SESSIONS = 10_000
BUDGET = 1_000
TTL = 2.0


def _pod(pod_id: str) -> RegisterPod:
    return RegisterPod(pod_id, f"{pod_id}-inc", "127.0.0.1:1", frozenset({"fix"}), SESSIONS)


async def test_ten_thousand_sessions_fail_over_in_bounded_entries(tmp_path: Path) -> None:
    adapters = StaticAdapters(
        {
            f"a{i}": AdapterSpec(f"a{i}", "fix", DeploymentMode.SINGLE, 1, enabled=True)
            for i in range(SESSIONS)
        }
    )
    policy = Policy(ttl_seconds=TTL, max_grants_per_tick=BUDGET)
    cluster = Cluster(3, tmp_path, adapters=adapters, policy=policy)
    try:
        leader = await one_leader(cluster)
        leader.confirmer.start()
        # Every session on the doomed pod first (set up directly, in large entries).
        await leader.bridge.submit([_pod("doomed")])
        for start in range(0, SESSIONS, 2_500):
            grants = [
                Grant(f"a{i}/0", f"a{i}", "doomed", expected_epoch=0)
                for i in range(start, start + 2_500)
            ]
            assert (await leader.bridge.submit(grants, timeout_seconds=30.0)).ok
        await leader.bridge.submit([_pod("p2"), _pod("p3")])
        await leader.loop.run_once()  # adopt the term: every pod counts as renewed now

        entries_before = leader.node.snapshot().applied_entries
        started = time.monotonic()
        ticks = 0
        while True:
            for survivor in ("p2", "p3"):
                assert await leader.renew(survivor)
            await leader.loop.run_once()
            ticks += 1
            slots = leader.node.snapshot().slots
            if "doomed" not in leader.node.snapshot().pods and all(
                s.owner in ("p2", "p3") for s in slots.values()
            ):
                break
            assert time.monotonic() - started < TTL + 60.0, "mass failover did not finish"
        elapsed = time.monotonic() - started
        snapshot = leader.node.snapshot()
        entries = snapshot.applied_entries - entries_before
        barriers = leader.confirmer.barriers
        plan_entries = entries - barriers
        sys.stdout.write(
            f"\nmass failover: {SESSIONS} sessions reassigned in {plan_entries} plan entries "
            f"(+{barriers} renewal barriers) over {ticks} ticks, {elapsed:.2f}s from death "
            f"detection start (TTL {TTL}s)\n"
        )
        # One entry expires the pod, then at most BUDGET grants per entry.
        assert plan_entries <= 1 + math.ceil(SESSIONS / BUDGET) + 1
        assert len(snapshot.slots) == SESSIONS
        epochs = [s.epoch for s in snapshot.slots.values()]
        assert min(epochs) > SESSIONS  # every reassignment got a fresh, higher epoch
        assert len(set(epochs)) == SESSIONS

        def identical() -> bool:
            snaps = [r.node.snapshot() for r in cluster.live()]
            return all(s.slots == snaps[0].slots and s.pods == snaps[0].pods for s in snaps)

        await wait_for(identical, 20.0, "identical state on every replica")
    finally:
        await leader.confirmer.stop()
        cluster.close()
