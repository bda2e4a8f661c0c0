"""A real Prometheus scrapes a running cluster: the dashboard and the rules work on what the
processes really expose, a pod's kill -9 shows in the failover metrics and its alert, and
a drain shows in the handoff counter and fires no alert.

Three `raftorch serve` replicas and two `raftorch-adapter run` pods (real processes, real
PostgreSQL, the demo's 3 s lease TTL and the shipped Raft timers), Debian's prometheus
scraping each of them every second with the chart's rule file loaded.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.integration.processes import (
    PodProcess,
    ProcessCluster,
    adapter_state,
    call,
    start_pod,
    stop_pod,
    wait_until,
)
from tests.integration.test_adapter_pods import SCHEMA, sql
from tests.kubernetes.chart import RULES_FILE
from tests.monitoring.prometheus import Prometheus, exposed_names, running_prometheus
from tests.monitoring.queries import (
    dashboard_queries,
    metric_names,
    recorded,
    rule_expressions,
    variable_metrics,
)

TTL = 3.0  # the demo's lease TTL, so a pod's loss shows within seconds


@contextmanager
def system(root: Path, dsn: str) -> Iterator[tuple[ProcessCluster, list[PodProcess]]]:
    sql(dsn, SCHEMA)
    cluster = ProcessCluster(root, dsn, size=3, ttl=TTL)  # the shipped Raft timers
    cluster.start_all()
    pods: list[PodProcess] = []
    try:
        wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "replicas")
        pods = [start_pod(cluster, f"pod-{i}", root) for i in range(2)]
        yield cluster, pods
    except BaseException:
        sys.stderr.write(cluster.logs())
        for pod in pods:
            if pod.log_path.exists():
                sys.stderr.write(f"--- {pod.pod_id}\n{pod.log_path.read_text()[-3000:]}\n")
        raise
    finally:
        for pod in pods:
            if pod.alive():
                stop_pod(pod, signal.SIGKILL)
        cluster.stop_all()


def _enable_consumer(cluster: ProcessCluster) -> str:
    api = cluster.replicas[0].api_url
    created = call(
        "POST",
        api + "/api/v1/adapters",
        {
            "name": "orders",
            "connector": "pg-queue-consumer",
            "mode": "active_passive",
            "config": {"queue_table": "q", "sink_table": "sink", "batch_size": 200},
        },
    )
    assert created.status == 201, created.body
    adapter_id: str = created.body["id"]
    assert call("POST", f"{api}/api/v1/adapters/{adapter_id}/enable").status == 202
    return adapter_id


def _active(
    cluster: ProcessCluster, adapter_id: str, not_on: str | None = None
) -> dict[str, Any] | None:
    state = adapter_state(cluster, adapter_id)
    if state and state["status"] == "ACTIVE" and state["owner_pod"] != not_on:
        return state if not_on or state["standby_pods"] else None
    return None


def _check_every_query(prometheus: Prometheus, allowed: set[str]) -> None:
    """Each dashboard query and rule expression evaluates and reads only `allowed` names."""
    for title, expr in dashboard_queries():
        unknown = metric_names(expr) - allowed
        assert not unknown, f"dashboard panel {title} reads {unknown}, which nothing exposes"
        result = wait_until(lambda e=expr: prometheus.query(e), 30.0, f"data for panel {title}")
        assert all(len(sample["value"]) == 2 for sample in result)
    for name, expr in rule_expressions():
        unknown = metric_names(expr) - allowed
        assert not unknown, f"rule {name} reads {unknown}, which nothing exposes"
        prometheus.query(expr)  # an alert that is quiet has no samples; it must still evaluate
    for metric in variable_metrics():
        assert metric in allowed and prometheus.api("series", **{"match[]": metric})


def _drain_owner_and_see_the_handoff(
    cluster: ProcessCluster,
    prometheus: Prometheus,
    pods: list[PodProcess],
    adapter_id: str,
    root: Path,
) -> None:
    """A new pod gets the standby; draining the owner hands the session over to it, which
    the leader counts in raftorch_handoffs_total{reason="drain"} (no series before)."""
    pods.append(start_pod(cluster, f"pod-{len(pods)}", root))  # pod-2: the system stops it
    state = wait_until(lambda: _active(cluster, adapter_id), 60.0, "a standby on the new pod")
    owner = state["owner_pod"]
    drained = call("POST", f"{cluster.replicas[0].api_url}/api/v1/pods/{owner}/drain")
    assert drained.status == 202, drained.body
    moved = wait_until(lambda: _active(cluster, adapter_id, not_on=owner), 30.0, "the handoff")
    assert moved["epoch"] > state["epoch"]
    wait_until(
        lambda: prometheus.value('sum(raftorch_handoffs_total{reason="drain"})') == 1,
        30.0,
        "the handoff counted",
    )
    assert prometheus.value("sum(raftorch_lease_expirations_total)") == 1  # no expiry


def test_a_real_prometheus_scrapes_the_cluster_and_sees_a_pod_failover(
    tmp_path: Path, pg_dsn: str
) -> None:
    with system(tmp_path, pg_dsn) as (cluster, pods):
        replicas = [r.api_url.removeprefix("http://") for r in cluster.replicas]
        pod_targets = [f"127.0.0.1:{p.metrics_port}" for p in pods]
        jobs = {"raftorch-orchestrator": replicas, "raftorch-adapter": pod_targets}
        with running_prometheus(tmp_path / "prometheus", jobs, [RULES_FILE]) as prometheus:
            wait_until(lambda: prometheus.targets_up() == 5, 30.0, "every target scraped")
            adapter_id = _enable_consumer(cluster)
            first = wait_until(lambda: _active(cluster, adapter_id), 60.0, "ACTIVE with standby")
            # Every replica's failover counter has samples at 0 before anything fails.
            wait_until(
                lambda: prometheus.value("count(raftorch_failovers_total == 0)") == 3,
                30.0,
                "failover counters at zero",
            )
            wait_until(lambda: prometheus.value("raftorch:raft_leaders:sum") == 1, 30.0, "a leader")
            assert "RaftorchPodLeaseExpired" not in prometheus.firing()
            assert prometheus.value("sum(raftorch_lease_expirations_total)") == 0

            victim = next(p for p in pods if p.pod_id == first["owner_pod"])
            stop_pod(victim, signal.SIGKILL)
            second = wait_until(
                lambda: _active(cluster, adapter_id, not_on=victim.pod_id),
                30.0,
                "the standby to take over",
            )
            assert second["epoch"] > first["epoch"]

            wait_until(
                lambda: prometheus.value("sum(raftorch_failovers_total)") == 1,
                30.0,
                "the failover counted",
            )
            assert prometheus.value("sum(raftorch_lease_expirations_total)") == 1
            took = wait_until(
                lambda: prometheus.value("sum(raftorch_failover_duration_seconds_sum)"),
                30.0,
                "the failover timed",
            )
            assert prometheus.value("sum(raftorch_failover_duration_seconds_count)") == 1
            assert TTL / 2 < took < 10 * TTL, took  # it waited for the lease, and not forever
            wait_until(
                lambda: "RaftorchPodLeaseExpired" in prometheus.firing(),
                30.0,
                "the RaftorchPodLeaseExpired alert firing",
            )
            wait_until(
                lambda: (prometheus.value("raftorch:failovers:increase5m") or 0) > 0,
                30.0,
                "the dashboard's failover series",
            )
            # The other alerts stay quiet: one pod lost is no leader loss, no database loss...
            assert prometheus.firing() <= {"RaftorchPodLeaseExpired"}, prometheus.firing()
            _drain_owner_and_see_the_handoff(cluster, prometheus, pods, adapter_id, tmp_path)
            assert prometheus.firing() <= {"RaftorchPodLeaseExpired"}, prometheus.firing()

            live = [f"{r.api_url}/metrics" for r in cluster.replicas]
            live += [f"http://127.0.0.1:{p.metrics_port}/metrics" for p in pods if p.alive()]
            _check_every_query(prometheus, exposed_names(live) | recorded())
            sys.stdout.write(
                f"\nkill -9 of {victim.pod_id}: failover took {took:.2f}s "
                f"(TTL {TTL}s), seen by Prometheus and alerted\n"
            )
