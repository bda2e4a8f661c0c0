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
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from persistence.audit import AuditTrail
from persistence.localserver import PostgresServer, free_ports
from tests.chaos.proxy import FaultProxy, ProxyServer
from tests.integration.processes import ADMIN_TOKEN, POD_TOKEN, SECRET, call, wait_until

log = logging.getLogger(__name__)

QUEUE_SCHEMA = """
CREATE TABLE IF NOT EXISTS {queue} (id bigint PRIMARY KEY, payload text);
"""
PRODUCER_BATCH = 10
PRODUCER_PAUSE_SECONDS = 0.05  # pacing of the producers (about 200 messages/s per queue)


@dataclass
class Replica:
    index: int
    raft_port: int
    api_port: int
    root: Path
    process: subprocess.Popen[bytes] | None = None
    raft_proxies: dict[int, FaultProxy] = field(default_factory=dict)  # to peer j

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

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Producer(threading.Thread):
    """Inserts ids 1, 2, 3 ... into one queue table, in order, until stopped.

    An insert whose outcome is unknown (the database went away) is retried with
    ON CONFLICT DO NOTHING before the next batch, so ids become visible in order and
    `produced` is exactly the ids known to be in the table.
    """

    def __init__(self, dsn: str, queue: str) -> None:
        super().__init__(daemon=True, name=f"producer-{queue}")
        self.dsn, self.queue = dsn, queue
        self.produced = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:  # surfaced by the campaign
            self.error = exc

    async def _produce(self) -> None:
        conn: asyncpg.Connection | None = None
        sql = f"INSERT INTO {self.queue} (id, payload) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        while not self.stopping.is_set():
            first = self.produced + 1
            batch = [(i, f"m{i}") for i in range(first, first + PRODUCER_BATCH)]
            try:
                if conn is None:
                    conn = await asyncpg.connect(self.dsn, timeout=2)
                await conn.executemany(sql, batch, timeout=5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                if conn is not None:
                    conn.terminate()
                    conn = None
                await asyncio.sleep(0.2)  # pacing of retries while the database is away
                continue
            self.produced = batch[-1][0]
            await asyncio.sleep(PRODUCER_PAUSE_SECONDS)
        if conn is not None:
            await conn.close()


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
        self._tcp_server = self.proxies.run(_start_tcp_sink())
        self.tcp_port = self._tcp_server.sockets[0].getsockname()[1]
        for replica in self.replicas:
            self.start_replica(replica)
        wait_until(lambda: all(self.ready(r) for r in self.replicas), 60.0, "ready replicas")
        wait_until(self.leader, 20.0, "a leader")
        for pod in self.pods:
            self.start_pod(pod)

    def close(self) -> None:
        for producer in self.producers:
            producer.stopping.set()
        for pod in self.pods:
            self._end(pod.process, pod.paused)
        for replica in self.replicas:
            self._end(replica.process, False)
        if self._tcp_server is not None:
            server = self._tcp_server
            self.proxies.call(server.close)
        self.proxies.stop()
        for producer in self.producers:
            producer.join(timeout=10)
        self.nemesis_trail.close()
        if self._own_pg:
            self.pg.cleanup()

    @staticmethod
    def _end(process: subprocess.Popen[bytes] | None, paused: bool) -> None:
        if process is None or process.poll() is not None:
            return
        if paused:
            process.send_signal(signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    # --- replicas -----------------------------------------------------------------------

    def replica_env(self, replica: Replica) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTORCH_")}
        peers = [r for r in self.replicas if r is not replica]
        routes = [f"{p.raft_address}={replica.raft_proxies[p.index].address}" for p in peers]
        env.update(
            {
                "RAFTORCH_NODE__ID": replica.node_id,
                "RAFTORCH_NODE__DATA_DIR": str(replica.root),
                "RAFTORCH_NODE__AUDIT_FILE": str(self.audit_dir / f"{replica.node_id}.audit"),
                "RAFTORCH_RAFT__BIND": replica.raft_address,
                "RAFTORCH_RAFT__PEERS": ",".join(p.raft_address for p in peers),
                "RAFTORCH_RAFT__PEER_ROUTES": ",".join(routes),
                "RAFTORCH_RAFT__SECRET": SECRET,
                "RAFTORCH_RAFT__ELECTION_TIMEOUT_MIN_SECONDS": "0.2",
                "RAFTORCH_RAFT__ELECTION_TIMEOUT_MAX_SECONDS": "0.6",
                "RAFTORCH_RAFT__APPEND_ENTRIES_PERIOD_SECONDS": "0.05",
                "RAFTORCH_LEASE__TTL_SECONDS": str(self.ttl),
                "RAFTORCH_API__HOST": "127.0.0.1",
                "RAFTORCH_API__PORT": str(replica.api_port),
                "RAFTORCH_API__ADMIN_TOKEN": ADMIN_TOKEN,
                "RAFTORCH_API__POD_BOOTSTRAP_TOKEN": POD_TOKEN,
                "RAFTORCH_DATABASE__DSN": self.dsn,
                "RAFTORCH_DATABASE__CONNECT_ATTEMPTS": "3",
                "RAFTORCH_DATABASE__CONNECT_TIMEOUT_SECONDS": "1",
                "RAFTORCH_DATABASE__COMMAND_TIMEOUT_SECONDS": "2",
                "RAFTORCH_LOG__LEVEL": "INFO",
            }
        )
        return env

    def start_replica(self, replica: Replica) -> None:
        with (self.root / f"{replica.node_id}.log").open("ab") as out:
            replica.process = subprocess.Popen(
                [sys.executable, "-m", "raftorch.cli", "serve"],
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
            if reply.status != 200 or reply.body.get("leader") is None:
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
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTORCH_")}
        env.update(
            {
                "RAFTORCH_ADAPTER_POD_ID": pod.pod_id,
                "RAFTORCH_ADAPTER_ORCHESTRATORS": ",".join(
                    f"http://{p.address}" for p in pod.proxies
                ),
                "RAFTORCH_ADAPTER_FOLLOW_LEADER": "false",
                "RAFTORCH_ADAPTER_BOOTSTRAP_TOKEN": POD_TOKEN,
                "RAFTORCH_ADAPTER_DATABASE_DSN": self.dsn,
                "RAFTORCH_ADAPTER_METRICS_PORT": str(pod.metrics_port),
                "RAFTORCH_ADAPTER_CAPACITY": "50",
                "RAFTORCH_ADAPTER_AUDIT_FILE": str(self.audit_dir / f"{pod.pod_id}.audit"),
            }
        )
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
        for queue in self.queues:
            producer = Producer(self.dsn, queue)
            producer.start()
            self.producers.append(producer)

    def not_active(self) -> list[str]:
        """Slots of enabled adapters that are not ACTIVE (all of them if nobody answers)."""
        try:
            reply = self.api("GET", "/api/v1/adapters?limit=1000")
        except AssertionError:
            return ["<no replica answered>"]
        if reply.status != 200:
            return [f"<adapters: {reply.status}>"]
        missing = []
        for adapter in reply.body["items"]:
            if adapter["admin_state"] != "ENABLED":
                continue
            for slot in adapter["slots"]:
                if slot["status"] != "ACTIVE":
                    missing.append(f"{adapter['name']}:{slot['slot'][-2:]}={slot['status']}")
        return missing

    def stop_producers(self) -> dict[str, list[int]]:
        for producer in self.producers:
            producer.stopping.set()
        for producer in self.producers:
            producer.join(timeout=30)
            if producer.error is not None:
                raise AssertionError(f"producer {producer.queue} failed: {producer.error!r}")
        return {p.queue: list(range(1, p.produced + 1)) for p in self.producers}

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


async def _start_tcp_sink() -> asyncio.Server:
    """A TCP peer for the tcp-client sessions: accepts and reads until the client leaves."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass
        except OSError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)


@contextmanager
def running_system(root: Path, **options: Any) -> Iterator[System]:
    system = System(root, **options)
    with system:
        try:
            yield system
        except BaseException:
            sys.stderr.write(system.logs())
            raise
