"""Hostile pods cannot hurt anyone else's sessions (issue 13, findings 1 and 2).

Reproduced the way they were found: from outside, with only the pod bootstrap token or
one pod's credential, against three replicas and two real adapter pods at the shipped
timings (TTL 3 s, the demo's). Throughout, the real pods' sessions keep their owner and
epoch, and no pod fences itself.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import msgpack
import pytest

from devtools.postgres import run_coroutine
from tests.integration.processes import (
    POD_TOKEN,
    PodProcess,
    ProcessCluster,
    Reply,
    call,
    running_cluster,
    start_pod,
    stop_pod,
    wait_until,
)
from tests.plugins import install

TTL = 3.0
MSGPACK = "application/msgpack"
ADAPTERS = 4


@dataclass
class World:
    cluster: ProcessCluster
    pods: list[PodProcess]
    dsn: str
    adapters: list[str] = field(default_factory=list)

    def url(self) -> str:
        leader = wait_until(self.cluster.leader, 10.0, "a leader")
        return leader.api_url

    def owners(self) -> dict[str, tuple[str | None, int | None, str]]:
        """Every adapter's (owner, epoch, status), read from the leader."""
        reply = call("GET", self.url() + "/api/v1/adapters?configs=false", timeout=3.0)
        assert reply.status == 200, reply.body
        return {a["id"]: (a["owner_pod"], a["epoch"], a["status"]) for a in reply.body["items"]
                if a["id"] in self.adapters}  # fmt: skip

    def slots(self) -> list[str]:
        reply = call("GET", self.url() + "/api/v1/adapters?configs=false", timeout=3.0)
        return [s["slot"] for a in reply.body["items"] for s in a["slots"]]


def _self_fencings(pod: PodProcess) -> float:
    text = call("GET", f"http://127.0.0.1:{pod.metrics_port}/metrics", token=None).body
    match = re.search(rb"^raftorch_pod_self_fencing_total (\S+)$", text, re.M)
    assert match is not None, "the pod exports no self-fencing counter"
    return float(match[1])


class Steady:
    """The real pods' sessions as they were: every check must find them unchanged."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.before = world.owners()
        self.fencings = [_self_fencings(p) for p in world.pods]
        self.samples = 0
        assert len(self.before) == ADAPTERS
        assert all(status == "ACTIVE" for _, _, status in self.before.values()), self.before

    def check(self) -> None:
        now = self.world.owners()
        self.samples += 1
        moved = {
            k: (self.before[k], now.get(k)) for k in self.before if now.get(k) != self.before[k]
        }
        assert not moved, f"sessions moved (sample {self.samples}): {moved}"

    def final(self, at_least: int) -> None:
        self.check()
        assert self.samples >= at_least, f"only {self.samples} samples"
        assert [_self_fencings(p) for p in self.world.pods] == self.fencings


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, pg_server: Any, pg_template: str
) -> Iterator[World]:
    name = "hostile_pods"
    pg_server.create_database(name, template=pg_template)
    root: Path = tmp_path_factory.mktemp("hostile")
    environ = install(root / "site")
    dsn = pg_server.dsn(name)
    with running_cluster(root / "cluster", dsn, ttl=TTL) as cluster:
        wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "replicas")
        pods = [start_pod(cluster, f"pod-{i}", root, environ=environ) for i in range(2)]
        world = World(cluster, pods, dsn)
        try:
            for i in range(ADAPTERS):
                world.adapters.append(_adapter(world, f"steady-{i}"))
            wait_until(lambda: all(s == "ACTIVE" for _, _, s in world.owners().values()),
                       60.0, "every steady session ACTIVE")  # fmt: skip
            yield world
        finally:
            for pod in pods:
                stop_pod(pod)
    pg_server.drop_database(name)


def _adapter(world: World, name: str) -> str:
    body = {"name": name, "connector": "test-slow-start", "mode": "single",
            "config": {"start_seconds": 0}}  # fmt: skip
    created = call("POST", world.url() + "/api/v1/adapters", body)
    assert created.status == 201, created.body
    adapter_id: str = created.body["id"]
    enabled = call("POST", f"{world.url()}/api/v1/adapters/{adapter_id}/enable")
    assert enabled.status == 202, enabled.body
    return adapter_id


def _post(url: str, body: Any, token: str, timeout: float = 10.0) -> Reply:
    reply = call("POST", url, raw=msgpack.packb(body), content_type=MSGPACK, token=token,
                 timeout=timeout)  # fmt: skip
    if isinstance(reply.body, bytes) and reply.headers.get("Content-Type", "").startswith(MSGPACK):
        reply.body = msgpack.unpackb(reply.body)
    return reply


def _register(world: World, body: dict[str, Any]) -> Reply:
    return _post(world.url() + "/pod/v1/register", body, POD_TOKEN)


def _events(dsn: str, pod_id: str) -> tuple[int, int]:
    """(cluster-wide events, adapter events) that name `pod_id` in their details."""

    async def count() -> tuple[int, int]:
        conn = await asyncpg.connect(dsn)
        try:
            row = await conn.fetchrow(
                """SELECT count(*) FILTER (WHERE adapter_id IS NULL) AS cluster,
                          count(*) FILTER (WHERE adapter_id IS NOT NULL) AS adapter
                   FROM events WHERE details->>'pod' = $1""",
                pod_id,
            )
            assert row is not None
            return int(row["cluster"]), int(row["adapter"])
        finally:
            await conn.close()

    return run_coroutine(count)


def _recorded_epoch(dsn: str) -> int:
    """The highest epoch in PostgreSQL: what a new leader raises its epoch floor to."""

    async def read() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            value = await conn.fetchval(
                """SELECT GREATEST((SELECT COALESCE(max(epoch), 0) FROM lease_history),
                                   (SELECT COALESCE(max(epoch), 0) FROM session_fences))"""
            )
            return int(value)
        finally:
            await conn.close()

    return run_coroutine(read)


def _metric(url: str, name: str) -> float:
    text = call("GET", url + "/metrics", token=None).body.decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_epochs_a_pod_claims_never_move_the_floor(world: World) -> None:
    """Finding 1: a registration claiming epoch 2^62 wedged every later grant."""
    steady = Steady(world)
    highest = max(epoch or 0 for _, epoch, _ in steady.before.values())
    # Exactly as found: a made-up slot at the wire's largest epoch. Now refused outright.
    found = {"pod_id": "x", "capacity": 0, "sessions": [{"slot": "x/0", "epoch": 2**62}]}
    reply = _register(world, found)
    assert reply.status == 400, reply.body
    assert "session slot" in reply.body["error"]["message"]
    steady.check()
    # Real slots with huge epochs: a valid registration; what it says it ran is ignored.
    real = world.slots()[:2]
    claims = [{"slot": real[0], "epoch": 2**62}, {"slot": real[1], "epoch": 1001}]
    reply = _register(world, {"pod_id": "x", "capacity": 0, "sessions": claims})
    assert reply.status == 201, reply.body
    credential = reply.body["credential"]
    for _ in range(10):  # and a heartbeat saying it runs them: told to stop, nothing else
        beat = _post(world.url() + "/pod/v1/heartbeat",
                     {"pod_id": "x", "sessions": [{**c, "status": "ACTIVE"} for c in claims]},
                     credential)  # fmt: skip
        assert beat.status == 200, beat.body
        assert sorted(o["reason"] for o in beat.body["stop"]) == ["not assigned"] * 2
        steady.check()
    # Nothing a pod said reached what outlives the Raft state (the floor a new leader
    # reads), nor the headroom operators are alerted on.
    assert _recorded_epoch(world.dsn) < 1001, "a claimed epoch reached PostgreSQL"
    assert _metric(world.url(), "raftorch_epoch_headroom") > 2**62 - 1000
    # The next grant follows the real counter, not anything a pod said.
    fresh = _adapter(world, "after-the-claims")
    world.adapters.append(fresh)
    try:
        granted = wait_until(lambda: (o := world.owners()[fresh])[2] == "ACTIVE" and o, 30.0,
                             "the new adapter ACTIVE")  # fmt: skip
        assert granted[1] is not None and highest < granted[1] < highest + 50, (highest, granted)
    finally:
        world.adapters.remove(fresh)
        call("POST", f"{world.url()}/api/v1/adapters/{fresh}/disable")
    steady.final(at_least=12)


def test_one_pods_floods_cost_nobody_a_lease(world: World) -> None:
    """Finding 2: 978 KB heartbeats of 45,000 made-up sessions made every pod fence itself,
    and each queued 10,000 events."""
    steady = Steady(world)
    reply = _register(world, {"pod_id": "flood", "capacity": 100})
    assert reply.status == 201, reply.body
    credential = reply.body["credential"]
    url = world.url()
    fenced_before = _metric(url, "raftorch_fenced_reports_total")
    # As found: three at once, 45,000 entries in about 1 MB (under api.max_body_bytes, so
    # it is read and parsed; what is refused is its count).
    flood = {"pod_id": "flood",
             "sessions": [{"slot": f"x/{i}", "epoch": i} for i in range(45_000)]}  # fmt: skip
    assert 900_000 < len(msgpack.packb(flood)) < 1_048_576
    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda _: _post(url + "/pod/v1/heartbeat", flood, credential),
                                range(3)))  # fmt: skip
    for r in replies:
        assert r.status == 400, r.body
        assert "may report at most 216" in r.body["error"]["message"]
    steady.check()
    # As much as a pod of its capacity may send, well-formed, none of it real, from three
    # threads for a while: each is answered with stop orders; the event log hears of it
    # once per window.
    most = {"pod_id": "flood", "sessions": [{"slot": f"{uuid.uuid4()}/0", "epoch": i + 1,
                                             "status": "ACTIVE"} for i in range(216)]}  # fmt: skip

    def beat(_: int) -> int:
        answer = _post(url + "/pod/v1/heartbeat", most, credential)
        assert answer.status == 200, answer.body
        return len(answer.body["stop"])

    for _round in range(10):
        with ThreadPoolExecutor(3) as pool:
            assert list(pool.map(beat, range(6))) == [216] * 6
        steady.check()
    fenced = _metric(url, "raftorch_fenced_reports_total") - fenced_before
    assert fenced >= 60 * 216, fenced

    def logged() -> tuple[int, int] | None:
        counts = _events(world.dsn, "flood")
        return counts if counts[0] >= 1 else None

    cluster_events, adapter_events = wait_until(logged, 10.0, "the flood in the event log")
    assert adapter_events == 0  # made-up slots never reach an adapter's log
    assert cluster_events <= 3, cluster_events  # one per 10 s window, not one per report
    # As found, too: reports naming the real sessions (of the other pods) went to their
    # adapters' logs, one event each. Now at most 20 per pod and 10 s window.
    claims = [{"slot": slot, "epoch": 10**6 + i, "status": "ACTIVE"}
              for i, slot in enumerate(world.slots()[:8])]  # fmt: skip
    real = {"pod_id": "flood", "sessions": claims}
    started = time.monotonic()
    for _round in range(15):
        with ThreadPoolExecutor(3) as pool:
            stops = list(pool.map(lambda _: _post(url + "/pod/v1/heartbeat", real, credential),
                                  range(3)))  # fmt: skip
        assert all(len(r.body["stop"]) == len(real["sessions"]) for r in stops), stops[0].body
        steady.check()
    windows = (time.monotonic() - started) // 10 + 2  # the windows the rounds touched, at most
    reported = wait_until(lambda: (n := _events(world.dsn, "flood")[1]) > 0 and n, 10.0,
                          "the reports on real sessions in their adapters' logs")  # fmt: skip
    print(f"\n{45 * len(claims)} reports on real sessions: {reported} adapter events")
    assert reported <= 20 * windows < 45 * len(claims), (reported, windows)
    assert _metric(url, 'raftorch_buffer_dropped_total{buffer="event_log"}') == 0
    steady.final(at_least=11)
