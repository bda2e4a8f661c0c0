"""Adapter pods as real processes: failover, zombies, orchestrator outage, graceful handoff."""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg

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

MESSAGES = 10_000
SCHEMA = """
CREATE TABLE q (id bigint PRIMARY KEY, payload text);
CREATE TABLE sink (seq bigserial PRIMARY KEY, msg_id bigint NOT NULL, payload text, slot text,
                   epoch bigint, pod_id text, delivered_at timestamptz DEFAULT now());
"""


def sql(dsn: str, query: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(dsn)
        try:
            if args:
                return list(await conn.fetch(query, *args))
            await conn.execute(query)
            return []
        finally:
            await conn.close()

    return asyncio.run(run())


def delivered(dsn: str) -> int:
    return int(sql(dsn, "SELECT count(*) AS n FROM sink WHERE $1::int = 1", 1)[0]["n"])


def check_exactly_once_in_order(dsn: str, expected: int) -> None:
    rows = sql(dsn, "SELECT msg_id FROM sink WHERE $1::int = 1 ORDER BY seq", 1)
    ids = [r["msg_id"] for r in rows]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate deliveries"
    assert ids == sorted(ids), "messages delivered out of order"
    assert ids == list(range(1, expected + 1)), f"{expected - len(ids)} messages missing"


class Producer(threading.Thread):
    """Inserts MESSAGES rows in small batches while the test does its damage."""

    def __init__(self, dsn: str, total: int = MESSAGES, batch: int = 100) -> None:
        super().__init__(daemon=True)
        self.dsn, self.total, self.batch = dsn, total, batch
        self.produced = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:
            self.error = exc

    async def _produce(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while self.produced < self.total:
                first = self.produced + 1
                ids = list(range(first, min(self.total, first + self.batch - 1) + 1))
                await conn.executemany(
                    "INSERT INTO q (id, payload) VALUES ($1, $2)", [(i, f"m{i}") for i in ids]
                )
                self.produced = ids[-1]
                await asyncio.sleep(0.005)  # a steady stream, not one burst
        finally:
            await conn.close()


@contextmanager
def system(
    tmp_path: Path, dsn: str, ttl: float, pods: int = 2
) -> Iterator[tuple[ProcessCluster, list[PodProcess]]]:
    sql(dsn, SCHEMA)
    with running_cluster(tmp_path, dsn, ttl=ttl) as cluster:
        wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "replicas")
        started = [start_pod(cluster, f"pod-{i}", tmp_path) for i in range(pods)]
        try:
            yield cluster, started
        except BaseException:
            for pod in started:
                if pod.log_path.exists():
                    sys.stderr.write(f"--- {pod.pod_id}\n{pod.log_path.read_text()[-3000:]}\n")
            raise
        finally:
            for pod in started:
                if pod.alive():
                    stop_pod(pod, signal.SIGKILL)


def consumer_adapter(cluster: ProcessCluster) -> str:
    api = cluster.replicas[0].api_url
    created = call("POST", api + "/api/v1/adapters", {
        "name": "orders", "connector": "pg-queue-consumer", "mode": "active_passive",
        "config": {"queue_table": "q", "sink_table": "sink", "batch_size": 200},
    })  # fmt: skip
    assert created.status == 201, created.body
    adapter_id: str = created.body["id"]
    assert call("POST", f"{api}/api/v1/adapters/{adapter_id}/enable").status == 202
    return adapter_id


def active_with_standby(cluster: ProcessCluster, adapter_id: str) -> dict[str, Any] | None:
    state = adapter_state(cluster, adapter_id)
    if state and state["status"] == "ACTIVE" and state["standby_pods"]:
        return state
    return None


def test_kill_9_of_the_active_pod_mid_stream_loses_and_duplicates_nothing(
    tmp_path: Path, pg_dsn: str
) -> None:
    with system(tmp_path, pg_dsn, ttl=3.0) as (cluster, pods):
        adapter_id = consumer_adapter(cluster)
        first = wait_until(lambda: active_with_standby(cluster, adapter_id), 60.0, "ACTIVE")
        producer = Producer(pg_dsn)
        producer.start()
        wait_until(lambda: delivered(pg_dsn) >= 3_000, 60.0, "3,000 deliveries")
        victim = next(p for p in pods if p.pod_id == first["owner_pod"])
        stop_pod(victim, signal.SIGKILL)
        killed_at = time.monotonic()

        second = wait_until(
            lambda: _owner_changed(cluster, adapter_id, victim.pod_id),
            30.0,
            "the standby to take over",
        )
        took = time.monotonic() - killed_at
        sys.stdout.write(
            f"\nkill -9 failover: ACTIVE again after {took:.2f}s (TTL {cluster.ttl}s)\n"
        )
        assert second["epoch"] > first["epoch"]
        producer.join(timeout=120)
        assert producer.error is None and producer.produced == MESSAGES
        wait_until(lambda: delivered(pg_dsn) >= MESSAGES, 120.0, "every message delivered")
        check_exactly_once_in_order(pg_dsn, MESSAGES)


def _owner_changed(cluster: ProcessCluster, adapter_id: str, old: str) -> dict[str, Any] | None:
    state = adapter_state(cluster, adapter_id)
    return state if state and state["status"] == "ACTIVE" and state["owner_pod"] != old else None


def test_a_paused_zombie_is_fenced_and_none_of_its_writes_lands(
    tmp_path: Path, pg_dsn: str
) -> None:
    with system(tmp_path, pg_dsn, ttl=3.0) as (cluster, pods):
        adapter_id = consumer_adapter(cluster)
        first = wait_until(lambda: active_with_standby(cluster, adapter_id), 60.0, "ACTIVE")
        producer = Producer(pg_dsn)
        producer.start()
        wait_until(lambda: delivered(pg_dsn) >= 2_000, 60.0, "2,000 deliveries")
        zombie = next(p for p in pods if p.pod_id == first["owner_pod"])
        assert zombie.process is not None
        zombie.process.send_signal(signal.SIGSTOP)
        try:
            second = wait_until(
                lambda: _owner_changed(cluster, adapter_id, zombie.pod_id), 30.0, "takeover"
            )
            wait_until(lambda: delivered(pg_dsn) >= 6_000, 60.0, "the new owner delivering")
        finally:
            zombie.process.send_signal(signal.SIGCONT)

        def zombie_stopped() -> bool:
            metrics = call("GET", f"http://127.0.0.1:{zombie.metrics_port}/metrics", token=None)
            text = metrics.body.decode() if isinstance(metrics.body, bytes) else ""
            return "raftorch_pod_self_fencing_total 1.0" in text and (
                'raftorch_pod_sessions{role="ACTIVE"' not in text
            )

        wait_until(zombie_stopped, 20.0, "the resumed zombie to stop its session")
        producer.join(timeout=120)
        wait_until(lambda: delivered(pg_dsn) >= MESSAGES, 120.0, "every message delivered")
        check_exactly_once_in_order(pg_dsn, MESSAGES)
        # No row of the old epoch after the first row of the new one.
        late = sql(
            pg_dsn,
            "SELECT count(*) AS n FROM sink WHERE epoch = $1 AND seq > "
            "(SELECT min(seq) FROM sink WHERE epoch = $2)",
            first["epoch"],
            second["epoch"],
        )
        assert late[0]["n"] == 0

        def fenced_event() -> bool:
            items = call(
                "GET", f"{cluster.replicas[0].api_url}/api/v1/adapters/{adapter_id}/events"
            ).body["items"]
            return any("fenced" in e["description"] and zombie.pod_id in e["description"]
                       for e in items)  # fmt: skip

        wait_until(fenced_event, 20.0, "an event saying the zombie was fenced")


def _lease_remaining(pod: PodProcess) -> float:
    reply = call("GET", f"http://127.0.0.1:{pod.metrics_port}/healthz", token=None, timeout=1.0)
    return float(reply.body["lease_remaining_seconds"])


def test_orchestrator_outage_of_half_the_ttl_stops_no_session(tmp_path: Path, pg_dsn: str) -> None:
    # A longer TTL than the demo's: the outage (TTL/2) plus a cold start of all three
    # replicas (process start, vote hold, an election: a few seconds) must fit in one lease.
    ttl = 10.0
    with system(tmp_path, pg_dsn, ttl=ttl) as (cluster, pods):
        adapter_id = consumer_adapter(cluster)
        before = wait_until(lambda: active_with_standby(cluster, adapter_id), 60.0, "ACTIVE")
        sql(pg_dsn, "INSERT INTO q SELECT g, 'm' || g FROM generate_series(1, 500) g")
        wait_until(lambda: delivered(pg_dsn) >= 500, 30.0, "first deliveries")
        owner = next(p for p in pods if p.pod_id == before["owner_pod"])
        # Kill right after an acknowledged heartbeat, so the outage starts with a full lease.
        wait_until(lambda: _lease_remaining(owner) > ttl - 1.0, 10.0, "a fresh acknowledgement")
        for replica in cluster.replicas:
            cluster.kill(replica)
        outage_started = time.monotonic()
        # While every replica is down the pods keep their sessions (no renewals needed yet).
        sql(pg_dsn, "INSERT INTO q SELECT g, 'm' || g FROM generate_series(501, 1000) g")
        wait_until(lambda: delivered(pg_dsn) >= 1000, 30.0, "delivery during the outage")
        remaining = ttl / 2 - (time.monotonic() - outage_started)
        if remaining > 0:
            time.sleep(remaining)  # the fault itself lasts TTL/2
        cluster.start_all()
        wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "replicas back")
        after = wait_until(lambda: active_with_standby(cluster, adapter_id), 30.0, "ACTIVE")
        assert (after["owner_pod"], after["epoch"]) == (before["owner_pod"], before["epoch"])
        for pod in pods:
            text = call("GET", f"http://127.0.0.1:{pod.metrics_port}/metrics", token=None).body
            assert b"raftorch_pod_self_fencing_total 0.0" in text, pod.pod_id
        check_exactly_once_in_order(pg_dsn, 1000)


def test_sigterm_hands_the_session_over_well_under_the_ttl(tmp_path: Path, pg_dsn: str) -> None:
    ttl = 6.0
    with system(tmp_path, pg_dsn, ttl=ttl) as (cluster, pods):
        adapter_id = consumer_adapter(cluster)
        first = wait_until(lambda: active_with_standby(cluster, adapter_id), 60.0, "ACTIVE")
        leaving = next(p for p in pods if p.pod_id == first["owner_pod"])
        assert leaving.process is not None
        leaving.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        wait_until(lambda: _owner_changed(cluster, adapter_id, leaving.pod_id), ttl, "handover")
        took = time.monotonic() - started
        sys.stdout.write(f"\nSIGTERM handover: ACTIVE on the other pod after {took:.2f}s "
                         f"(TTL {ttl}s)\n")  # fmt: skip
        assert leaving.process.wait(timeout=20) == 0
        assert took < ttl / 2, f"handover took {took:.2f}s: it waited for the lease to expire"
