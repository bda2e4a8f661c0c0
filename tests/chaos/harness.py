"""The system under test: PostgreSQL, N replicas and M pods as real processes, every
Raft and pod link routed through a loopback fault proxy, and a workload feeding them.

Nothing here reaches inside raftorch: faults are signals to real processes, cut proxies
and a stopped PostgreSQL. What the processes believed is read back from their lease
audit trails (`node.audit_file`, `--audit-file`), and what reached the database from
the sink tables.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from devtools.postgres import PostgresServer, free_ports
from persistence.audit import AuditTrail
from tests.chaos.proxy import FaultProxy, ProxyServer
from tests.chaos.workload import (
    FLOOD,
    FLOOD_INSTANCES,
    FLOOD_START_SECONDS,
    POD_CAPACITY,
    QUEUE_SCHEMA,
    SLOW,
    SLOW_START_SECONDS,
    Producer,
    start_tcp_sink,
)
from tests.integration.processes import call, pod_env, replica_env, wait_until
from tests.plugins import install

log = logging.getLogger(__name__)

RAFT_TIMERS = ("RAFTORCH_RAFT__ELECTION", "RAFTORCH_RAFT__APPEND", "RAFTORCH_RAFT__LEADER")
"""The campaign runs the shipped Raft timers (derived from the TTL): it sets none of these."""


@dataclass
class Replica:
    index: int
    raft_port: int
    api_port: int
    root: Path
    process: subprocess.Popen[bytes] | None = None
    raft_proxies: dict[int, FaultProxy] = field(default_factory=dict)  # to peer j
    paused: bool = False
    starts: int = 0

    @property
    def node_id(self) -> str:
        return f"r{self.index}"

    @property
    def raft_address(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Pod:
    pod_id: str
    metrics_port: int
    proxies: list[FaultProxy] = field(default_factory=list)  # to each replica
    process: subprocess.Popen[bytes] | None = None
    paused: bool = False
    starts: int = 0

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class System:
    """Everything a campaign runs against. Use as a context manager."""

    def __init__(
        self,
        root: Path,
        *,
        replicas: int = 3,
        pods: int = 3,
        ttl: float = 3.0,
        pg: PostgresServer | None = None,
    ) -> None:
        self.root = root
        self.ttl = ttl
        self.audit_dir = root / "audit"
        self.audit_dir.mkdir(parents=True, exist_ok=True)
        self.nemesis_trail = AuditTrail(self.audit_dir / "nemesis.audit", "nemesis")
        self._own_pg = pg is None
        self.pg = pg or PostgresServer(base_dir=root / "pg")
        self.proxies = ProxyServer()
        ports = free_ports(replicas * 2 + pods)
        self.replicas = [
            Replica(i, ports[2 * i], ports[2 * i + 1], root / f"r{i}") for i in range(replicas)
        ]
        self.pods = [Pod(f"pod-{k}", ports[replicas * 2 + k]) for k in range(pods)]
        self.dsn = ""
        self.tcp_port = 0
        self._tcp_server: asyncio.Server | None = None
        self.queues: list[str] = []
        self.producers: list[Producer] = []
        self.adapters: dict[str, str] = {}  # name -> id
        self.killed: set[int] = set()  # pids the nemesis killed
        self.crashes_seen: set[int] = set()
        self.plugins_env = install(root / "site")  # pods offer the test connectors
        self.slow_start_seconds = SLOW_START_SECONDS
        self.flood_instances = FLOOD_INSTANCES

    # --- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> System:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if self._own_pg:
            self.pg.start()
        self.pg.create_database("chaos")
        self.dsn = self.pg.dsn("chaos")
        self.proxies.start()
        for replica in self.replicas:
            for peer in self.replicas:
                if peer is not replica:
                    replica.raft_proxies[peer.index] = self.proxies.add(
                        "127.0.0.1", peer.raft_port, f"raft {replica.node_id}->{peer.node_id}"
                    )
        for pod in self.pods:
            pod.proxies = [
                self.proxies.add("127.0.0.1", r.api_port, f"{pod.pod_id}->{r.node_id}")
                for r in self.replicas
            ]
        self._tcp_server = self.proxies.run(start_tcp_sink())
        self.tcp_port = self._tcp_server.sockets[0].getsockname()[1]
        for replica in self.replicas:
            self.start_replica(replica)
        wait_until(lambda: all(self.ready(r) for r in self.replicas), 60.0, "ready replicas")
        wait_until(self.leader, 20.0, "a leader")
        for pod in self.pods:
            self.start_pod(pod)
        # Sessions are placed when enabled (no rebalancing later): every pod must be in.
        wait_until(self._all_pods_registered, 60.0, "every pod registered")

    def _all_pods_registered(self) -> bool:
        reply = self.api("GET", "/api/v1/pods")
        ids = {p["id"] for p in reply.body["items"] if p["state"] == "ACTIVE"}
        return reply.status == 200 and ids >= {p.pod_id for p in self.pods}

    def close(self) -> None:
        """Stop everything; each step runs even when an earlier one failed."""
        for producer in self.producers:
            producer.stopping.set()
        try:
            for process in [p.process for p in self.pods] + [r.process for r in self.replicas]:
                self._end(process)
            if self._tcp_server is not None:
                server = self._tcp_server
                self.proxies.call(server.close)
        finally:
            try:
                self.proxies.stop()
            finally:
                for producer in self.producers:
                    producer.join(timeout=10)
                self.nemesis_trail.close()
                if self._own_pg:
                    self.pg.cleanup()

    @staticmethod
    def _end(process: subprocess.Popen[bytes] | None) -> None:
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)  # in case it is paused; harmless otherwise
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        """SIGKILL on purpose (so the exit is not taken for a crash)."""
        self.killed.add(process.pid)
        process.kill()
        process.wait(timeout=10)

    def stop_gracefully(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM and wait (a clean stop, not a crash)."""
        self.killed.add(process.pid)
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)

    def pods_renewed_since(self, wall: float) -> bool:
        """The leader has acknowledged a heartbeat of every pod after unix time `wall`."""
        leader = self.leader()
        if leader is None:
            return False
        reply = call("GET", leader.api_url + "/api/v1/pods", timeout=2.0)
        if reply.status != 200 or not isinstance(reply.body, dict):
            return False
        renewed = {
            pod["id"]
            for pod in reply.body["items"]
            if pod.get("last_heartbeat")
            and datetime.fromisoformat(pod["last_heartbeat"]).timestamp() > wall
        }
        return renewed >= {p.pod_id for p in self.pods if p.alive()}

    def crashes(self) -> list[tuple[str, int | None]]:
        """Processes that exited without the nemesis killing them (each reported once)."""
        found = []
        named = [(p.pod_id, p.process) for p in self.pods]
        named += [(r.node_id, r.process) for r in self.replicas]
        for name, process in named:
            if process is None or process.poll() is None or process.pid in self.killed:
                continue
            if process.pid not in self.crashes_seen:
                self.crashes_seen.add(process.pid)
                found.append((f"{name} pid {process.pid}", process.returncode))
        return found

    def check_routing(self) -> None:
        """Every Raft pair and every pod really talks through its proxies (else partitions
        would cut nothing)."""
        for replica in self.replicas:
            for peer in self.replicas:
                if peer.index <= replica.index:
                    continue
                there = replica.raft_proxies[peer.index].bytes_to_upstream
                back = peer.raft_proxies[replica.index].bytes_to_upstream
                assert there + back > 0, (
                    f"no Raft traffic through the proxies {replica.node_id}-{peer.node_id}"
                )
        for pod in self.pods:
            assert any(p.bytes_to_upstream > 0 for p in pod.proxies), (
                f"{pod.pod_id} bypasses its proxies"
            )

    # --- replicas -----------------------------------------------------------------------

    def replica_env(self, replica: Replica) -> dict[str, str]:
        peers = [r for r in self.replicas if r is not replica]
        routes = [f"{p.raft_address}={replica.raft_proxies[p.index].address}" for p in peers]
        # One audit file per process: a line torn by SIGKILL stays at its file's end.
        audit = self.audit_dir / f"{replica.node_id}.{replica.starts}.audit"
        env = replica_env(
            replica.node_id, replica.root, raft_bind=replica.raft_address,
            peers=[p.raft_address for p in peers], api_port=replica.api_port, dsn=self.dsn,
            ttl=self.ttl,
            RAFTORCH_NODE__AUDIT_FILE=str(audit), RAFTORCH_RAFT__PEER_ROUTES=",".join(routes),
        )  # fmt: skip
        timers = sorted(k for k in env if k.startswith(RAFT_TIMERS))
        assert not timers, f"the campaign must run the shipped Raft timers, not {timers}"
        return env

    def start_replica(self, replica: Replica) -> None:
        replica.starts += 1
        replica.paused = False
        with (self.root / f"{replica.node_id}.log").open("ab") as out:
            replica.process = subprocess.Popen(
                [sys.executable, "-m", "raftorch", "serve"],
                env=self.replica_env(replica),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def ready(self, replica: Replica) -> bool:
        if not replica.alive():
            return False
        return call("GET", replica.api_url + "/readyz", token=None, timeout=1.0).status == 200

    def leader(self, among: list[Replica] | None = None) -> Replica | None:
        """The replica every live replica (of `among`) names as leader (None if they differ)."""
        seen: set[str] = set()
        for replica in among or self.replicas:
            if not replica.alive():
                continue
            try:
                reply = call("GET", replica.api_url + "/api/v1/cluster", timeout=1.0)
            except OSError:
                return None
            if reply.status != 200 or not isinstance(reply.body, dict):
                return None
            if reply.body.get("leader") is None:
                return None
            seen.add(reply.body["leader"])
        if len(seen) != 1:
            return None
        [leader_id] = seen
        return next((r for r in self.replicas if r.node_id == leader_id and r.alive()), None)

    def raft_links(self, replica: Replica) -> list[FaultProxy]:
        """Every proxy carrying Raft traffic to or from `replica`."""
        links = list(replica.raft_proxies.values())
        links += [r.raft_proxies[replica.index] for r in self.replicas if r is not replica]
        return links

    # --- pods ---------------------------------------------------------------------------

    def start_pod(self, pod: Pod) -> None:
        pod.starts += 1
        env = pod_env(
            pod.pod_id, [f"http://{p.address}" for p in pod.proxies], self.dsn,
            pod.metrics_port, follow_leader="false",
            audit_file=str(self.audit_dir / f"{pod.pod_id}.{pod.starts}.audit"),
            capacity=str(POD_CAPACITY),
        )  # fmt: skip
        env.update(self.plugins_env)
        with (self.root / f"{pod.pod_id}.log").open("ab") as out:
            pod.process = subprocess.Popen(
                [sys.executable, "-m", "adapter.cli", "run"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        pod.paused = False

    # --- workload -----------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """An admin call on the first replica that answers it (replicas forward)."""
        last = None
        for replica in self.replicas:
            if not replica.alive():
                continue
            try:
                last = call(method, replica.api_url + path, body, timeout=3.0)
            except OSError:
                continue
            if last.status < 500:
                return last
        raise AssertionError(f"no replica answered {method} {path}: {last and last.body}")

    def create_workload(self, queues: int = 4, tcp_single: int = 1, tcp_instances: int = 3) -> None:
        """pg-queue consumers (half single, half active_passive) fed by producers, a
        single tcp-client and a scale_out tcp-client; all enabled."""
        specs: list[dict[str, Any]] = []
        for k in range(queues):
            queue = f"q{k}"
            self.pg.execute(QUEUE_SCHEMA.format(queue=queue), "chaos")
            self.queues.append(queue)
            specs.append({
                "name": f"consumer-{k}", "connector": "pg-queue-consumer",
                "mode": "single" if k % 2 == 0 else "active_passive",
                "config": {"queue_table": queue, "sink_table": f"sink_{queue}",
                           "batch_size": 50},
            })  # fmt: skip
        tcp = {"host": "127.0.0.1", "port": self.tcp_port, "reconnect_max_seconds": 0.5}
        for k in range(tcp_single):
            specs.append({"name": f"link-{k}", "connector": "tcp-client", "mode": "single",
                          "config": tcp})  # fmt: skip
        if tcp_instances:
            specs.append({"name": "links", "connector": "tcp-client", "mode": "scale_out",
                          "instances": tcp_instances, "config": tcp})  # fmt: skip
        for spec in specs:
            created = self.api("POST", "/api/v1/adapters", spec)
            assert created.status == 201, created.body
            self.adapters[spec["name"]] = created.body["id"]
            enabled = self.api("POST", f"/api/v1/adapters/{created.body['id']}/enable")
            assert enabled.status == 202, enabled.body
        slow: dict[str, Any] = {"name": SLOW, "connector": "test-slow-start", "mode": "single",
                "config": {"start_seconds": self.slow_start_seconds}}  # fmt: skip
        flood: dict[str, Any] = {"name": FLOOD, "connector": "test-slow-start", "mode": "scale_out",
                 "instances": self.flood_instances,
                 "config": {"start_seconds": FLOOD_START_SECONDS}}  # fmt: skip
        for spec in (slow, flood):  # left DISABLED: faults switch them on and off
            created = self.api("POST", "/api/v1/adapters", spec)
            assert created.status == 201, created.body
            self.adapters[spec["name"]] = created.body["id"]
        for queue in self.queues:
            producer = Producer(self.dsn, queue)
            producer.start()
            self.producers.append(producer)

    def set_enabled(self, name: str, on: bool) -> None:
        """Enable or disable an adapter through the API; recorded in the nemesis trail
        first, so the checker knows the stops a disable causes were ordered."""
        adapter_id = self.adapters[name]
        action = "enable" if on else "disable"
        self.nemesis_trail.record(action, adapter=adapter_id, name=name)
        reply = self.api("POST", f"/api/v1/adapters/{adapter_id}/{action}")
        assert reply.status == 202, reply.body

    def adapter_active(self, name: str) -> bool:
        """The API shows the adapter ACTIVE with every instance placed and ACTIVE."""
        reply = self.api("GET", f"/api/v1/adapters/{self.adapters[name]}")
        if reply.status != 200:
            return False
        slots = reply.body["slots"]
        return (reply.body["status"] == "ACTIVE" and len(slots) == reply.body["instances"]
                and all(s["status"] == "ACTIVE" for s in slots))  # fmt: skip

    def replicas_to_ask(self) -> dict[str, str]:
        """Replicas an outside observer would ask (node id -> API URL): running and not
        frozen (a load balancer with readiness checks routes around the others)."""
        return {r.node_id: r.api_url for r in self.replicas if r.alive() and not r.paused}

    def slots(self) -> dict[str, tuple[str, str, int]] | str:
        """Enabled adapters' slots as name:index -> (status, owner, epoch), or why not known."""
        try:
            reply = self.api("GET", "/api/v1/adapters?limit=1000")
        except AssertionError:
            return "no replica answered"
        if reply.status != 200:
            return f"adapters: HTTP {reply.status}"
        slots: dict[str, tuple[str, str, int]] = {}
        for adapter in reply.body["items"]:
            if adapter["admin_state"] != "ENABLED":
                continue
            # A slot exists only once granted: the adapter's own status and its slot count
            # also say whether every instance is placed.
            if adapter["status"] != "ACTIVE" or len(adapter["slots"]) != adapter["instances"]:
                placed = f"{len(adapter['slots'])}/{adapter['instances']} placed"
                slots[f"{adapter['name']}:*"] = (f"{adapter['status']} {placed}", "", 0)
            for slot in adapter["slots"]:
                name = f"{adapter['name']}:{slot['slot'].rsplit('/', 1)[-1]}"
                slots[name] = (slot["status"], slot["owner_pod"] or "", slot["epoch"] or 0)
        return slots

    def not_active(self) -> list[str]:
        """Slots of enabled adapters that are not ACTIVE (or why that is not known)."""
        slots = self.slots()
        if isinstance(slots, str):
            return [f"<{slots}>"]
        return [f"{name}={status}" for name, (status, _, _) in slots.items() if status != "ACTIVE"]

    def stop_producers(self) -> dict[str, list[int]]:
        """Stop producing; the ids in each queue (1..max: a batch whose outcome the
        producer never learned may have committed, so the table is asked)."""
        for producer in self.producers:
            producer.stopping.set()
        for producer in self.producers:
            producer.join(timeout=30)
            if producer.error is not None:
                raise AssertionError(f"producer {producer.queue} failed: {producer.error!r}")

        async def last_ids() -> dict[str, int]:
            conn = await asyncpg.connect(self.dsn)
            try:
                return {
                    q: int(await conn.fetchval(f"SELECT coalesce(max(id), 0) FROM {q}"))
                    for q in self.queues
                }
            finally:
                await conn.close()

        last = asyncio.run(last_ids())
        for producer in self.producers:
            assert last[producer.queue] >= producer.produced, "queue lost confirmed ids"
        return {q: list(range(1, n + 1)) for q, n in last.items()}

    def deliveries(self) -> dict[str, list[dict[str, Any]]]:
        async def fetch() -> dict[str, list[dict[str, Any]]]:
            conn = await asyncpg.connect(self.dsn)
            try:
                rows = {}
                for queue in self.queues:
                    found = await conn.fetch(
                        f"SELECT seq, msg_id, slot, epoch, pod_id FROM sink_{queue} ORDER BY seq"
                    )
                    rows[queue] = [dict(r) for r in found]
                return rows
            finally:
                await conn.close()

        return asyncio.run(fetch())

    def delivered_up_to(self, produced: dict[str, list[int]]) -> bool:
        rows = self.deliveries()
        return all(
            (max((r["msg_id"] for r in rows[q]), default=0) >= (ids[-1] if ids else 0))
            for q, ids in produced.items()
        )

    def logs(self, tail: int = 3000) -> str:
        parts = []
        for path in sorted(self.root.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)


@contextmanager
def running_system(root: Path, **options: Any) -> Iterator[System]:
    system = System(root, **options)
    with system:
        try:
            yield system
        except BaseException:
            sys.stderr.write(system.logs())
            raise
