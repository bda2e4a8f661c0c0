"""Placement as operators see it, with real processes: spread, drain through the CLI, rebalance.

Three replicas and three pods offering the test connector (tests/plugins), the demo's
TTL and the shipped placement settings (rebalance on_join).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.processes import (
    ADMIN_TOKEN,
    PodProcess,
    ProcessCluster,
    call,
    running_cluster,
    start_pod,
    stop_pod,
    wait_until,
)
from tests.plugins import install

TTL = 3.0


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


def owners(items: list[dict[str, Any]]) -> dict[str, tuple[str | None, int | None]]:
    return {s["slot"]: (s["owner_pod"], s["epoch"]) for a in items for s in a["slots"]}


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


@contextmanager
def system(tmp_path: Path, dsn: str) -> Iterator[tuple[ProcessCluster, list[PodProcess]]]:
    environ = install(tmp_path / "site")
    with running_cluster(tmp_path / "cluster", dsn, ttl=TTL) as cluster:
        wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "replicas")
        pods = [
            start_pod(
                cluster,
                f"pod-{i}",
                tmp_path,
                environ=environ,
                audit_file=str(tmp_path / f"pod-{i}.audit"),
            )
            for i in range(3)
        ]
        try:
            yield cluster, pods
        finally:
            for pod in pods:
                if pod.alive():
                    stop_pod(pod)


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
def test_sessions_spread_and_a_drained_pod_is_emptied_by_handoff_while_it_runs(
    tmp_path: Path, pg_dsn: str
) -> None:
    with system(tmp_path, pg_dsn) as (cluster, pods):
        wait_until(lambda: len(call("GET", cluster.replicas[0].api_url + "/api/v1/pods")
                               .body["items"]) == 3, 30.0, "three pods registered")  # fmt: skip
        for i in range(5):
            create(cluster, f"single-{i}", "active_passive" if i % 2 else "single")
        create(cluster, "feed", "scale_out", instances=3)
        items = wait_until(lambda: all_active(cluster, 6), 60.0, "every adapter ACTIVE")
        assert spread_problems(items, 3) == []

        busiest = Counter(s["owner_pod"] for a in items for s in a["slots"]).most_common(1)[0][0]
        before = owners(items)
        started = time.monotonic()
        done = cli(cluster, "pods", "drain", busiest, "--wait", "--timeout", "60", "--json")
        took = time.monotonic() - started
        print(f"\ndrain of {busiest}: {done.stdout.strip()} in {took:.1f}s")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["drained"] is True
        pod = next(p for p in pods if p.pod_id == busiest)
        assert pod.alive(), "the drained pod must keep running"
        after = wait_until(lambda: all_active(cluster, 6), 30.0, "every adapter ACTIVE again")
        assert busiest not in {owner for owner, _ in owners(after).values()}
        moved = [slot for slot, (owner, _) in before.items() if owner == busiest]
        assert moved and all(owners(after)[s][1] > before[s][1] for s in moved)  # new epochs
        stops = [json.loads(line) for line in (tmp_path / f"{busiest}.audit").read_text()
                 .splitlines() if '"session_stop"' in line]  # fmt: skip
        assert len(stops) == len(moved)
        assert all(s["reason"].startswith("handoff") for s in stops), stops  # clean, not dropped
        state = {p["id"]: p["state"] for p in call(
            "GET", cluster.replicas[0].api_url + "/api/v1/pods").body["items"]}  # fmt: skip
        assert state[busiest] == "DRAINING"

        # Back into service: a one-shot rebalance restores the spread, by handoff again.
        assert cli(cluster, "pods", "undrain", busiest).returncode == 0
        assert cli(cluster, "rebalance").returncode == 0

        def spread_again() -> bool:
            current = all_active(cluster, 6)
            return current is not None and not spread_problems(current, 3) and busiest in {
                owner for owner, _ in owners(current).values()}  # fmt: skip

        wait_until(spread_again, 3 * TTL + 10.0, "the spread restored onto the undrained pod")
