"""The short chaos campaign of the normal test run: a few mixes of real faults, checked.

Each mix runs about a minute (`RAFTORCH_CHAOS_SECONDS`, default 40 s of faults plus
start-up, recovery and the final check) against PostgreSQL, 3 replicas and 3 pods as
real processes at the demo's lease TTL of 3 s and the Raft timers derived from it.
Between them the mixes pause and kill the leader, kill and pause pods, churn the busiest
pod (SIGTERM or kill -9, back after a while: the shipped on_join rebalance then moves
sessions onto it by handoff), cut links, stop and hang the database (a leader kill inside
the hang), restart the cluster and start a connector that hangs for 10 s. The long
campaign is `python -m tests.chaos`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.chaos.campaign import run_campaign
from tests.chaos.nemesis import MIXES, SHORT_MIXES
from tests.chaos.observed import POD_FAULTS

pytestmark = pytest.mark.chaos
SECONDS = float(os.environ.get("RAFTORCH_CHAOS_SECONDS", "40"))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mix", SHORT_MIXES)
def test_short_campaign_finds_no_violation(mix: str, tmp_path: Path) -> None:
    outcome = run_campaign(mix, tmp_path / mix, duration=SECONDS, log=sys.stdout)
    report = outcome.report
    # Every kind of the mix happened; every process kept a trail; the workload ran.
    assert set(report.fault_counts) == set(MIXES[mix])
    assert {"r0", "r1", "r2", "pod-0", "pod-1", "pod-2", "nemesis", "observer"} <= outcome.sources
    assert report.grants > 0 and report.sessions_started > 0
    assert all(m["produced"] > 0 for m in report.messages.values())
    # The API was watched all along (about 13 answers a second), and where pods failed
    # their sessions were seen ACTIVE elsewhere through it.
    assert report.api_samples >= 5 * SECONDS, report.api_samples
    if set(MIXES[mix]) & POD_FAULTS:
        assert report.api_failovers, "no failover seen in the API"
    if "pod-churn" in MIXES[mix]:  # the churned pod got sessions back by handoff
        assert report.handoffs > 0, report.summary()
    if "leader-pause" in MIXES[mix]:  # the pauses are 2 x TTL or more
        assert min(report.fault_holds["leader-pause"]) >= 2 * outcome.ttl
    assert report.ok, "\n" + report.summary()
