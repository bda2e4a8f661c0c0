"""A pod keeps its lease whatever its connectors and the database do (real processes).

The shipped timings (TTL 3 s, the demo's; Raft timers derived from it) throughout. Each
test samples the pod's own view of its lease (`/healthz`) and its self-fencing counter
while the trouble lasts, and checks afterwards that no session was stopped or regranted.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.integration.processes import (
    PodProcess,
    ProcessCluster,
    adapter_state,
    call,
    running_cluster,
    start_pod,
    stop_pod,
    wait_until,
)
from tests.pgserver import PostgresServer
from tests.plugins import install

TTL = 3.0


def _healthz(pod: PodProcess) -> dict[str, Any]:
    reply = call("GET", f"http://127.0.0.1:{pod.metrics_port}/healthz", token=None, timeout=1.0)
    body: dict[str, Any] = reply.body
    return body


def _self_fencings(pod: PodProcess) -> float:
    text = call("GET", f"http://127.0.0.1:{pod.metrics_port}/metrics", token=None).body
    match = re.search(rb"^raftorch_pod_self_fencing_total (\S+)$", text, re.M)
    assert match is not None, "the pod exports no self-fencing counter"
    return float(match[1])


def _audit(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _adapter(cluster: ProcessCluster, name: str, config: dict[str, Any], **extra: Any) -> str:
    body = {"name": name, "connector": "test-slow-start", "mode": "single", "config": config,
            **extra}  # fmt: skip
    created = call("POST", cluster.replicas[0].api_url + "/api/v1/adapters", body)
    assert created.status == 201, created.body
    adapter_id: str = created.body["id"]
    enabled = call("POST", f"{cluster.replicas[0].api_url}/api/v1/adapters/{adapter_id}/enable")
    assert enabled.status == 202, enabled.body
    return adapter_id


def _active(cluster: ProcessCluster, adapter_id: str) -> dict[str, Any] | None:
    state = adapter_state(cluster, adapter_id)
    return state if state is not None and state["status"] == "ACTIVE" else None


class LeaseWatch:
    """Samples a pod's lease while something else happens; every sample must hold one."""

    def __init__(self, pod: PodProcess) -> None:
        self.pod = pod
        self.samples = 0
        self.lowest = float("inf")

    def sample(self) -> None:
        remaining = float(_healthz(self.pod)["lease_remaining_seconds"])
        self.samples += 1
        self.lowest = min(self.lowest, remaining)
        assert remaining > 0, f"{self.pod.pod_id} lost its lease (sample {self.samples})"


@contextmanager
def one_pod(
    tmp_path: Path, dsn: str, **settings: str
) -> Iterator[tuple[ProcessCluster, PodProcess]]:
    """Three replicas and one pod offering the test plugins, with an audit trail."""
    environ = install(tmp_path / "site")
    with running_cluster(tmp_path / "cluster", dsn, ttl=TTL) as cluster:
        wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "replicas")
        pod = start_pod(cluster, "pod-1", tmp_path, environ=environ,
                        audit_file=str(tmp_path / "pod-1.audit"), **settings)  # fmt: skip
        try:
            wait_until(lambda: _healthz(pod)["lease_remaining_seconds"] > 0, 30.0,
                       "pod-1 registered and holding a lease")  # fmt: skip
            yield cluster, pod
        except BaseException:
            print(pod.log_path.read_text()[-4000:])
            raise
        finally:
            stop_pod(pod)


def test_a_connector_start_that_hangs_for_10s_costs_the_pod_no_lease(
    tmp_path: Path, pg_dsn: str
) -> None:
    with one_pod(tmp_path, pg_dsn) as (cluster, pod):
        steady = _adapter(cluster, "steady", {"start_seconds": 0})
        before = wait_until(lambda: _active(cluster, steady), 30.0, "the steady session ACTIVE")
        slow = _adapter(cluster, "slow", {"start_seconds": 10})
        watch = LeaseWatch(pod)
        started = time.monotonic()

        def slow_active_while_the_lease_holds() -> dict[str, Any] | None:
            watch.sample()
            now = _active(cluster, steady)
            assert now is not None, "the steady session stopped while the other one started"
            assert (now["owner_pod"], now["epoch"]) == (before["owner_pod"], before["epoch"])
            return _active(cluster, slow)

        after = wait_until(slow_active_while_the_lease_holds, 40.0, "the slow session ACTIVE")
        took = time.monotonic() - started
        print(f"\nslow start: ACTIVE after {took:.1f}s, {watch.samples} lease samples, lowest "
              f"{watch.lowest:.2f}s left")  # fmt: skip
        assert took >= 9.0, f"the start did not hang ({took:.1f}s)"
        assert watch.samples >= 50
        assert after["owner_pod"] == "pod-1"
        assert _self_fencings(pod) == 0
        stops = [e for e in _audit(tmp_path / "pod-1.audit") if e["kind"] == "session_stop"]
        assert not stops, stops


@pytest.mark.timeout(240)
def test_a_pod_handed_500_slots_at_once_keeps_its_lease(tmp_path: Path, pg_dsn: str) -> None:
    with one_pod(tmp_path, pg_dsn, capacity="600") as (cluster, pod):
        # Each start takes a moment, as a real connect would; all 500 arrive in one grant.
        many = _adapter(cluster, "many", {"start_seconds": 0.2}, mode="scale_out", instances=500)
        watch = LeaseWatch(pod)
        started = time.monotonic()

        def all_active() -> dict[str, Any] | None:
            watch.sample()
            return _active(cluster, many)

        state = wait_until(all_active, 180.0, "500 sessions ACTIVE on one pod")
        took = time.monotonic() - started
        print(f"\n500 slots: ACTIVE after {took:.1f}s, {watch.samples} lease samples, lowest "
              f"{watch.lowest:.2f}s left")  # fmt: skip
        assert len(state["slots"]) == 500
        assert {s["owner_pod"] for s in state["slots"]} == {"pod-1"}
        assert watch.samples >= 5
        assert _self_fencings(pod) == 0
        trail = _audit(tmp_path / "pod-1.audit")
        assert not [e for e in trail if e["kind"] == "session_stop"]
        assert not [e for e in trail if e["kind"] == "lease" and e["deadline"] is None]
        epochs = [s["epoch"] for s in state["slots"]]
        assert len(set(epochs)) == 500  # one grant each: none was granted a second time


@pytest.mark.timeout(240)
def test_a_hung_database_and_a_leader_kill_drop_no_session(
    tmp_path: Path, pg_dedicated: PostgresServer
) -> None:
    pg_dedicated.create_database("raftorch")
    dsn = pg_dedicated.dsn("raftorch")
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
            for i in range(2)
        ]
        try:
            ids = [_adapter(cluster, f"a{i}", {"start_seconds": 0},
                            mode="active_passive" if i % 2 else "single")
                   for i in range(4)]  # fmt: skip
            before = {i: wait_until(lambda i=i: _active(cluster, i), 60.0, f"{i} ACTIVE")
                      for i in ids}  # fmt: skip
            leader = wait_until(cluster.leader, 10.0, "a leader")
            old_term = call("GET", leader.api_url + "/api/v1/cluster").body["term"]
            frozen = pg_dedicated.pause()
            hung_at = time.monotonic()
            try:
                assert frozen, "no PostgreSQL process to freeze"
                cluster.kill(leader, signal.SIGKILL)  # inside the window
                survivors = [r for r in cluster.replicas if r is not leader]
                new = wait_until(lambda: cluster.leader(survivors), 10.0, "a new leader")
                term = call("GET", new.api_url + "/api/v1/cluster").body["term"]
                assert term > old_term
                watches = [LeaseWatch(p) for p in pods]

                def hung_for_two_ttls() -> bool:
                    for watch in watches:
                        watch.sample()
                    return time.monotonic() - hung_at >= 2 * TTL

                wait_until(hung_for_two_ttls, 3 * TTL, "two TTLs of a hung database")
            finally:
                pg_dedicated.resume()
            # A full TTL more after the database is back: still the same owners.
            recovered_at = time.monotonic()
            wait_until(lambda: time.monotonic() - recovered_at >= TTL, 2 * TTL, "one TTL")
            for adapter_id, was in before.items():
                now = _active(cluster, adapter_id)
                assert now is not None, f"{adapter_id} is not ACTIVE after the hang"
                assert (now["owner_pod"], now["epoch"]) == (was["owner_pod"], was["epoch"])
            for pod in pods:
                assert _self_fencings(pod) == 0, pod.pod_id
                trail = _audit(tmp_path / f"{pod.pod_id}.audit")
                assert not [e for e in trail if e["kind"] == "session_stop"], pod.pod_id
            assert all(w.samples >= 10 for w in watches)
        finally:
            for pod in pods:
                stop_pod(pod)
