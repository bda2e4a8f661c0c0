"""The short chaos campaign of the normal test run: a few mixes of real faults, checked.

Each mix runs about a minute (`RAFTORCH_CHAOS_SECONDS`, default 40 s of faults plus
start-up, recovery and the final check) against PostgreSQL, 3 replicas and 3 pods as
real processes with a lease TTL of 3 s. The long campaign is `python -m tests.chaos`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.chaos.campaign import run_campaign
from tests.chaos.nemesis import MIXES, SHORT_MIXES

pytestmark = pytest.mark.chaos
SECONDS = float(os.environ.get("RAFTORCH_CHAOS_SECONDS", "40"))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mix", SHORT_MIXES)
def test_short_campaign_finds_no_violation(mix: str, tmp_path: Path) -> None:
    outcome = run_campaign(mix, tmp_path / mix, duration=SECONDS, log=sys.stdout)
    report = outcome.report
    # Every kind of the mix happened; every process kept a trail; the workload ran.
    assert set(report.fault_counts) == set(MIXES[mix])
    assert {"r0", "r1", "r2", "pod-0", "pod-1", "pod-2", "nemesis"} <= outcome.sources
    assert report.grants > 0 and report.sessions_started > 0
    assert all(m["produced"] > 0 for m in report.messages.values())
    assert report.ok, "\n" + report.summary()
