"""A restarted node withholds its vote for one election timeout, then votes again."""

from __future__ import annotations

import time
from pathlib import Path

from tests.component.raftcluster import Cluster, holds_for, one_leader

HOLD = 3.0


async def test_restarted_node_does_not_vote_until_its_hold_ends(tmp_path: Path) -> None:
    cluster = Cluster(3, tmp_path)
    try:
        leader = await one_leader(cluster)
        voter = next(r for r in cluster.live() if r is not leader)
        cluster.kill(voter.index)
        # Restarted with its journal lost (the case the guard exists for) and a long hold.
        cluster.start(voter.index, wipe=True, vote_hold_seconds=HOLD)
        restarted_at = time.monotonic()
        # The leader dies: the remaining node needs the restarted node's vote.
        cluster.kill(leader.index)
        samples = await holds_for(
            lambda: not cluster.leaders(),
            HOLD - 0.5 - (time.monotonic() - restarted_at),
            "no leader while the restarted node withholds its vote",
        )
        assert samples >= 10
        await one_leader(cluster, timeout=HOLD + 10.0)
    finally:
        cluster.close()
