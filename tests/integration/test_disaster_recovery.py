"""Disaster-recovery drill: lose every replica and all Raft data, restore PostgreSQL from a
dump into a new server, start a new cluster and the pods: everything enabled comes back
ACTIVE with no reconfiguration, and every new epoch is above every old one."""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from devtools.postgres import PostgresServer
from tests.integration.processes import (
    ProcessCluster,
    adapter_state,
    call,
    running_cluster,
    start_pod,
    stop_pod,
    wait_until,
)
from tests.integration.test_adapter_pods import SCHEMA, sql


def _adapters(cluster: ProcessCluster) -> list[dict[str, object]]:
    reply = call("GET", cluster.replicas[0].api_url + "/api/v1/adapters")
    return reply.body["items"] if reply.status == 200 else []  # type: ignore[no-any-return]


def _all_active(cluster: ProcessCluster, count: int) -> list[dict[str, object]] | None:
    items = _adapters(cluster)
    ok = len(items) == count and all(a["status"] == "ACTIVE" for a in items)
    return items if ok else None


def _create(cluster: ProcessCluster, name: str, queue: str, sink: str) -> None:
    api = cluster.replicas[0].api_url
    body = {"name": name, "connector": "pg-queue-consumer", "mode": "active_passive",
            "config": {"queue_table": queue, "sink_table": sink}}  # fmt: skip
    created = call("POST", api + "/api/v1/adapters", body)
    assert created.status == 201, created.body
    assert call("POST", f"{api}/api/v1/adapters/{created.body['id']}/enable").status == 202


@pytest.mark.timeout(300)
def test_restore_into_a_new_server_brings_every_enabled_adapter_back(
    tmp_path: Path, pg_dedicated: PostgresServer
) -> None:
    pg_dedicated.create_database("before")
    old_dsn = pg_dedicated.dsn("before")
    sql(old_dsn, SCHEMA + "CREATE TABLE q2 (id bigint PRIMARY KEY, payload text);")
    with running_cluster(tmp_path / "old", old_dsn) as cluster:
        wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "old cluster")
        pods = [start_pod(cluster, f"pod-{i}", tmp_path) for i in range(2)]
        try:
            _create(cluster, "venue-a", "q", "sink")
            _create(cluster, "venue-b", "q2", "sink2")
            before = wait_until(lambda: _all_active(cluster, 2), 60.0, "ACTIVE before")
            old_max = max(int(str(a["epoch"])) for a in before)
        finally:
            for pod in pods:
                stop_pod(pod, signal.SIGKILL)
    dump = tmp_path / "raftorch.dump"
    subprocess.run(["pg_dump", "-Fc", "-f", str(dump), old_dsn], check=True, timeout=60)
    shutil.rmtree(tmp_path / "old")  # every replica's Raft data is gone

    with PostgresServer() as fresh:
        fresh.create_database("restored")
        new_dsn = fresh.dsn("restored")
        subprocess.run(["pg_restore", "--no-owner", "-d", new_dsn, str(dump)], check=True,
                       timeout=60)  # fmt: skip
        with running_cluster(tmp_path / "new", new_dsn) as cluster:
            wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "new")
            pods = [start_pod(cluster, f"pod-{i}", tmp_path / "new") for i in range(2)]
            try:
                after = wait_until(lambda: _all_active(cluster, 2), 90.0, "ACTIVE after restore")
                new_epochs = [int(str(a["epoch"])) for a in after]
                assert min(new_epochs) > old_max, (new_epochs, old_max)
                for adapter in after:
                    state = adapter_state(cluster, str(adapter["id"]))
                    assert state is not None and state["standby_pods"], state
            finally:
                for pod in pods:
                    stop_pod(pod, signal.SIGKILL)
