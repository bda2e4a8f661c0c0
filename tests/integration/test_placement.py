"""Placement as operators see it, with real processes: spread, drain through the CLI,
rebalance, and the spread restored after kill -9 of the busiest pod (issue #15).

Three replicas and three pods offering the test connector (tests/plugins), the demo's
TTL and the shipped placement settings (rebalance on_join), but for a shorter on_join
window (see `WINDOW`). Each pod keeps a lease audit trail: a session it stopped says why
("handoff: ..." for a move, anything else a drop).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.integration.processes import (
    ADMIN_TOKEN,
    PodProcess,
    ProcessCluster,
    ReplicaProcess,
    call,
    start_pod,
    stop_pod,
    wait_until,
)
from tests.plugins import install

TTL = 3.0
WINDOW = 10.0
"""placement.rebalance_window_seconds, 60 s shipped: 10 s here so that the windows the
first joins and the one-shot rebalance opened have closed when the killed pod comes back,
and the spread can come back only through the window its join opens (else the test could
not fail if a restarted pod's join opened none)."""
DRAIN_SECONDS = 5.0
"""Issue #15's "within a few seconds": from the drain request until no session runs on the
pod (the CLI measures it), and from starting the CLI until every moved session is ACTIVE
elsewhere twice that (the CLI is a fresh Python process)."""


def cli(cluster: ProcessCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTORCH_")}
    env["RAFTORCH_CLI_API"] = ",".join(r.api_url for r in cluster.replicas)
    env["RAFTORCH_CLI_TOKEN"] = ADMIN_TOKEN
    return subprocess.run([sys.executable, "-m", "raftorch", *args], env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def adapters(cluster: ProcessCluster) -> list[dict[str, Any]]:
    for replica in cluster.replicas:
        reply = call("GET", replica.api_url + "/api/v1/adapters", timeout=2.0)
        if reply.status == 200:
            items: list[dict[str, Any]] = reply.body["items"]
            return items
    return []


def owners(items: list[dict[str, Any]]) -> dict[str, tuple[str | None, int]]:
    return {s["slot"]: (s["owner_pod"], s["epoch"] or 0) for a in items for s in a["slots"]}


def all_active(cluster: ProcessCluster, count: int) -> list[dict[str, Any]] | None:
    items = adapters(cluster)
    ok = len(items) == count and all(a["status"] == "ACTIVE" for a in items)
    return items if ok else None


def spread_problems(items: list[dict[str, Any]], pods: int) -> list[str]:
    """The spread DESIGN.md asks for, as in issue #15's must-show 1."""
    owned = Counter(s["owner_pod"] for a in items for s in a["slots"] if s["owner_pod"])
    total = sum(owned.values())
    problems = []
    if owned and max(owned.values()) > math.ceil(total / pods) + 1:
        problems.append(f"active slots per pod {dict(owned)}")
    for a in items:
        if a["mode"] == "scale_out":
            per_pod = Counter(s["owner_pod"] for s in a["slots"])
            if max(per_pod.values()) > math.ceil(a["instances"] / pods):
                problems.append(f"{a['name']}: instances per pod {dict(per_pod)}")
    return problems


def launch(cluster: ProcessCluster, tmp_path: Path, pod_id: str, start: int) -> PodProcess:
    """Start (or restart) a pod offering the test connector; trail `<pod>.<start>.audit`."""
    return start_pod(cluster, pod_id, tmp_path, environ=install(tmp_path / "site"),
                     audit_file=str(tmp_path / f"{pod_id}.{start}.audit"))  # fmt: skip


def stops(tmp_path: Path, pod_id: str) -> list[dict[str, Any]]:
    """Every session stop in the pod's audit trails (all its processes), in order."""
    found = []
    for trail in sorted(tmp_path.glob(f"{pod_id}.*.audit")):
        for line in trail.read_text().splitlines():
            if '"session_stop"' in line:
                found.append(json.loads(line))
    return found


class _Cluster(ProcessCluster):
    """Replicas with the shipped settings but the on_join window of `WINDOW` seconds."""

    def env(self, replica: ReplicaProcess) -> dict[str, str]:
        env = super().env(replica)
        env["RAFTORCH_PLACEMENT__REBALANCE_WINDOW_SECONDS"] = str(WINDOW)
        return env


@contextmanager
def system(tmp_path: Path, dsn: str) -> Iterator[tuple[ProcessCluster, list[PodProcess]]]:
    cluster = _Cluster(tmp_path / "cluster", dsn, ttl=TTL)
    cluster.start_all()
    pods: list[PodProcess] = []
    try:
        wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "replicas")
        pods += [launch(cluster, tmp_path, f"pod-{i}", 1) for i in range(3)]
        yield cluster, pods
    except BaseException:
        sys.stderr.write(cluster.logs())
        raise
    finally:
        for pod in pods:
            if pod.alive():
                stop_pod(pod)
        cluster.stop_all()


def pod_states(cluster: ProcessCluster) -> dict[str, dict[str, Any]]:
    reply = call("GET", cluster.replicas[0].api_url + "/api/v1/pods")
    return {p["id"]: p for p in reply.body["items"]} if reply.status == 200 else {}


def create(cluster: ProcessCluster, name: str, mode: str, instances: int = 1) -> None:
    body = {"name": name, "connector": "test-slow-start", "mode": mode, "instances": instances,
            "config": {"start_seconds": 0}}  # fmt: skip
    made = call("POST", cluster.replicas[0].api_url + "/api/v1/adapters", body)
    assert made.status == 201, made.body
    enabled = call(
        "POST", f"{cluster.replicas[0].api_url}/api/v1/adapters/{made.body['id']}/enable"
    )
    assert enabled.status == 202, enabled.body


@pytest.mark.timeout(300)
def test_sessions_spread_a_drained_pod_is_emptied_by_handoff_and_a_killed_pod_gets_its_share(
    tmp_path: Path, pg_dsn: str
) -> None:
    with system(tmp_path, pg_dsn) as (cluster, pods):
        wait_until(lambda: len(pod_states(cluster)) == 3, 30.0, "three pods registered")
        for i in range(5):
            create(cluster, f"single-{i}", "active_passive" if i % 2 else "single")
        create(cluster, "feed", "scale_out", instances=3)
        items = wait_until(lambda: all_active(cluster, 6), 60.0, "every adapter ACTIVE")
        assert spread_problems(items, 3) == []
        rebalanced_at = drain_through_the_cli(cluster, pods, tmp_path, items)
        kill_the_busiest_and_bring_it_back(cluster, pods, tmp_path, rebalanced_at)


def drain_through_the_cli(
    cluster: ProcessCluster, pods: list[PodProcess], tmp_path: Path, items: list[dict[str, Any]]
) -> float:
    """Must-show 5: `raftorch pods drain POD --wait` moves every session off by handoff
    within a few seconds, the pod still running; undrain and rebalance bring them back.
    Returns when the one-shot rebalance had been asked for (monotonic)."""
    busiest = Counter(s["owner_pod"] for a in items for s in a["slots"]).most_common(1)[0][0]
    before = owners(items)
    moved = [slot for slot, (owner, _) in before.items() if owner == busiest]
    started = time.monotonic()
    done = cli(cluster, "pods", "drain", busiest, "--wait", "--timeout", "60", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["drained"] is True

    def moved_and_active() -> list[dict[str, Any]] | None:
        now = all_active(cluster, 6)
        return now if now and all(owners(now)[s][0] != busiest for s in moved) else None

    after = wait_until(moved_and_active, 30.0, "every moved session ACTIVE elsewhere")
    took = time.monotonic() - started
    print(f"\ndrain of {busiest} ({len(moved)} sessions): pod empty {answer['seconds']}s after "
          f"the request, all ACTIVE elsewhere {took:.1f}s after starting the CLI")  # fmt: skip
    assert answer["seconds"] <= DRAIN_SECONDS and took <= 2 * DRAIN_SECONDS, (answer, took)
    pod = next(p for p in pods if p.pod_id == busiest)
    assert pod.alive(), "the drained pod must keep running"
    assert busiest not in {owner for owner, _ in owners(after).values()}
    assert moved and all(owners(after)[s][1] > before[s][1] for s in moved)  # new epochs
    stopped = stops(tmp_path, busiest)
    assert len(stopped) == len(moved)
    assert all(s["reason"].startswith("handoff") for s in stopped), stopped  # clean, not dropped
    assert pod_states(cluster)[busiest]["state"] == "DRAINING"
    drained_at = time.time()
    wait_until(lambda: _heartbeat_after(cluster, busiest, drained_at), 3 * TTL,
               "the drained pod to go on heartbeating")  # fmt: skip

    # Back into service: a one-shot rebalance restores the spread, by handoff again.
    assert cli(cluster, "pods", "undrain", busiest).returncode == 0
    assert cli(cluster, "rebalance").returncode == 0
    rebalanced_at = time.monotonic()  # the leader opened its window before this
    wait_until(lambda: _spread_with(cluster, busiest), 3 * TTL + 10.0,
               "the spread restored onto the undrained pod")  # fmt: skip
    return rebalanced_at


def kill_the_busiest_and_bring_it_back(
    cluster: ProcessCluster, pods: list[PodProcess], tmp_path: Path, rebalanced_at: float
) -> None:
    """Must-show 2: kill -9 of the busiest pod; its sessions fail over; once it is back and
    registered the spread holds again within 3 x TTL + 10 s, and no other pod's session
    was dropped (they stopped, if at all, by handoff). Each pod runs one of the feed's 3
    instances, so with two pods left the spread is off until one moves back."""
    items = wait_until(lambda: all_active(cluster, 6), 30.0, "every adapter ACTIVE")
    busiest = Counter(s["owner_pod"] for a in items for s in a["slots"]).most_common(1)[0][0]
    index = next(i for i, p in enumerate(pods) if p.pod_id == busiest)
    before = owners(items)
    stopped_before = {p.pod_id: len(stops(tmp_path, p.pod_id)) for p in pods}
    stop_pod(pods[index], signal.SIGKILL)

    def failed_over() -> list[dict[str, Any]] | None:
        now = all_active(cluster, 6)
        ok = now and busiest not in {o for o, _ in owners(now).values()}
        return now if ok else None

    after = wait_until(failed_over, 3 * TTL + 10.0, "the killed pod's sessions to fail over")
    assert spread_problems(after, 3), "with one pod down the feed's instances must crowd"
    # Every rebalance window opened so far has closed (pacing, not a wait for a state).
    time.sleep(max(0.0, rebalanced_at + WINDOW - time.monotonic()))
    pods[index] = launch(cluster, tmp_path, busiest, 2)
    wait_until(lambda: pod_states(cluster).get(busiest, {}).get("state") == "ACTIVE", 30.0,
               "the restarted pod registered")  # fmt: skip
    back = time.monotonic()
    spread = wait_until(lambda: _spread_with(cluster, busiest), 3 * TTL + 10.0,
                        "the spread restored after the pod came back")  # fmt: skip
    print(f"spread restored {time.monotonic() - back:.1f}s after {busiest} re-registered")
    # No session but the killed pod's was dropped: every other stop was a handoff, and a
    # slot of another pod is where it was or its owner stopped it by handoff.
    handed: set[tuple[str, int]] = set()
    for pod in pods:
        if pod.pod_id == busiest:
            continue
        new = stops(tmp_path, pod.pod_id)[stopped_before[pod.pod_id] :]
        assert all(s["reason"].startswith("handoff") for s in new), new
        handed |= {(s["slot"], s["epoch"]) for s in new}
    now = owners(spread)
    for slot, (owner, epoch) in before.items():
        if owner != busiest:
            assert now[slot] == (owner, epoch) or (slot, epoch) in handed, (slot, now[slot])


def _heartbeat_after(cluster: ProcessCluster, pod_id: str, wall: float) -> bool:
    """The leader (which alone knows) acknowledged a heartbeat of the pod after `wall`."""
    leader = cluster.leader()
    if leader is None:
        return False
    reply = call("GET", leader.api_url + "/api/v1/pods")
    beat = next((p["last_heartbeat"] for p in reply.body["items"] if p["id"] == pod_id), None)
    return isinstance(beat, str) and datetime.fromisoformat(beat).timestamp() > wall


def _spread_with(cluster: ProcessCluster, pod_id: str) -> list[dict[str, Any]] | None:
    """Every adapter ACTIVE, the spread of must-show 1 holds, and `pod_id` owns some."""
    current = all_active(cluster, 6)
    if current is None or spread_problems(current, 3):
        return None
    return current if pod_id in {owner for owner, _ in owners(current).values()} else None
