"""GET /api/v1/cluster/health on real replicas: links up, then a killed peer unreachable."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from tests.integration.processes import ReplicaProcess, call, running_cluster, wait_until


def _health(replica: ReplicaProcess) -> dict[str, Any] | None:
    reply = call("GET", replica.api_url + "/api/v1/cluster/health", timeout=2.0)
    return reply.body if reply.status == 200 else None


def _links(replica: ReplicaProcess) -> dict[str, bool | None]:
    health = _health(replica)
    return {p["id"]: p["connected"] for p in health["peers"]} if health else {}


def test_health_names_peers_and_sees_a_killed_one_go(tmp_path: Path, pg_dsn: str) -> None:
    with running_cluster(tmp_path, pg_dsn) as cluster:
        wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "replicas")
        r0, r1, r2 = cluster.replicas
        wait_until(lambda: _links(r0) == {"r1": True, "r2": True}, 20.0, "r0 linked to both")
        health = _health(r0)
        assert health is not None
        assert (health["replica"], health["ready"], health["has_quorum"]) == ("r0", True, True)

        cluster.kill(r2, signal.SIGKILL)
        wait_until(lambda: _links(r0) == {"r1": True, "r2": False}, 20.0, "r0 to lose r2")
        wait_until(lambda: _links(r1).get("r2") is False, 20.0, "r1 to lose r2")
        # Two of three still make a quorum (once a new leader is elected, if r2 led).
        wait_until(lambda: (_health(r1) or {}).get("has_quorum"), 20.0, "r1 to see a quorum")
