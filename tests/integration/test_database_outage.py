"""PostgreSQL down for 20 s: leases keep being renewed, admin writes answer 503, all recovers."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from tests.integration.processes import ProcessCluster, call, running_cluster, wait_until
from tests.integration.test_orchestrator_cluster import register
from tests.pgserver import PostgresServer

OUTAGE_SECONDS = 20.0
HEARTBEAT_EVERY = 1.0  # the pod's heartbeat interval (TTL 3 s / 3)


def test_database_outage_keeps_leases_and_recovers(
    tmp_path: Path, pg_dedicated: PostgresServer
) -> None:
    name = f"o_{uuid.uuid4().hex}"
    pg_dedicated.create_database(name)
    with running_cluster(tmp_path, pg_dedicated.dsn(name)) as cluster:
        wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "ready")
        leader = wait_until(cluster.leader, 10.0, "a leader")
        api = leader.api_url
        adapter = call("POST", api + "/api/v1/adapters",
                       {"name": "q1", "connector": "tcp-client", "mode": "single",
                        "config": {}}).body  # fmt: skip
        assert call("POST", f"{api}/api/v1/adapters/{adapter['id']}/enable").status == 202
        credential = register(leader, "pod-1")
        slot = f"{adapter['id']}/0"

        def assigned() -> int | None:
            reply = _beat(cluster, credential, [])
            owned = [a for a in reply["assignments"] if a["slot"] == slot]
            return owned[0]["epoch"] if owned else None

        epoch = wait_until(assigned, 10.0, "the slot assigned to the pod")

        pg_dedicated.stop()
        outage_end = time.monotonic() + OUTAGE_SECONDS
        second = {"name": "q2", "connector": "tcp-client", "mode": "single", "config": {}}
        write = call("POST", api + "/api/v1/adapters", second)
        assert write.status == 503, write.body
        assert write.body["error"]["code"] == "unavailable"
        assert "database" in write.body["error"]["message"]
        report = [{"slot": slot, "epoch": epoch, "status": "ACTIVE"}]
        while time.monotonic() < outage_end:
            reply = _beat(cluster, credential, report)
            assert reply["stop"] == [], reply
            assert [a["slot"] for a in reply["assignments"]] == [slot]
            time.sleep(HEARTBEAT_EVERY)
        pg_dedicated.start()

        def written() -> bool:
            return call("POST", api + "/api/v1/adapters",
                        {"name": "q2", "connector": "tcp-client", "mode": "single",
                         "config": {}}).status == 201  # fmt: skip

        wait_until(written, 30.0, "admin writes to succeed again")

        def buffered_event_stored() -> bool:
            items = call("GET", f"{api}/api/v1/adapters/{adapter['id']}/events").body["items"]
            return any("session running on pod pod-1" in e["description"] for e in items)

        wait_until(buffered_event_stored, 30.0, "the event from the outage in the event log")
        status = call("GET", f"{api}/api/v1/adapters/{adapter['id']}").body
        assert status["status"] == "ACTIVE" and status["owner_pod"] == "pod-1"
        assert status["epoch"] == epoch  # the lease never lapsed: no reassignment


def _beat(cluster: ProcessCluster, credential: str, sessions: list[dict[str, object]]) -> dict:  # type: ignore[type-arg]
    def answered() -> dict | None:  # type: ignore[type-arg]
        for replica in cluster.replicas:
            reply = call("POST", replica.api_url + "/pod/v1/heartbeat",
                         {"pod_id": "pod-1", "sessions": sessions}, token=credential,
                         timeout=2.0)  # fmt: skip
            if reply.status == 200:
                return reply.body  # type: ignore[no-any-return]
        return None

    return wait_until(answered, 7.0, "a heartbeat answer")
