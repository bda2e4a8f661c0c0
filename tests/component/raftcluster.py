"""In-process Raft clusters for component tests: real pysyncobj nodes on loopback sockets.

Nodes are stepped by a test-owned thread (`autoTick` is off in LeaseNode), so a test
can freeze a node (stop stepping it) or cut links: `Network.cut()` drops messages
between two groups of nodes in both directions while the sockets stay up, which is
how a partition looks to Raft.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry

from devtools.postgres import free_ports
from raftorch.config import Config, LeaseConfig, RaftConfig, Secret
from raftorch.core.model import AdapterSpec, Policy
from raftorch.leader.leases import LeaseTracker, RenewalConfirmer
from raftorch.leader.loop import LeaderLoop, TickOutcome
from raftorch.raft.bridge import RaftBridge
from raftorch.raft.metrics import RaftMetrics
from raftorch.raft.node import LeaseNode, build_conf
from raftorch.raft.transport import GuardedTransport

T = TypeVar("T")

TTL = 3.0
"""The demo's TTL; the Raft timers are the ones the server derives from it."""
SHIPPED = Config(
    lease=LeaseConfig(ttl_seconds=TTL), raft=RaftConfig(secret=Secret("component-test-secret"))
)
RAFT, TIMERS = SHIPPED.raft, SHIPPED.raft_timers


@dataclass
class Network:
    """Which directed links currently drop every message."""

    cut_links: set[tuple[str, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def cut(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        a, b = list(side_a), list(side_b)
        with self.lock:
            for x in a:
                for y in b:
                    self.cut_links |= {(x, y), (y, x)}

    def heal(self) -> None:
        with self.lock:
            self.cut_links.clear()

    def blocked(self, src: str, dst: str) -> bool:
        with self.lock:
            return (src, dst) in self.cut_links


def transport_for(network: Network) -> type[GuardedTransport]:
    class PartitionableTransport(GuardedTransport):
        def _onMessageReceived(self, node: Any, message: Any) -> None:
            if network.blocked(str(node.id), str(self._syncObj.selfNode.id)):
                return
            super()._onMessageReceived(node, message)

        def send(self, node: Any, message: Any) -> bool:
            if network.blocked(str(self._syncObj.selfNode.id), str(node.id)):
                return True  # lost on the wire
            return super().send(node, message)

    return PartitionableTransport


class StaticAdapters:
    loaded = True  # a configuration cache that has loaded

    def __init__(self, specs: Mapping[str, AdapterSpec] | None = None) -> None:
        self.items: dict[str, AdapterSpec] = dict(specs or {})

    def specs(self) -> Mapping[str, AdapterSpec]:
        return dict(self.items)

    def take_changed(self) -> set[str] | None:
        return None  # tests change `items` directly: every plan is a full pass


class FixedFloor:
    def __init__(self, value: int = 0) -> None:
        self.value = value

    async def max_epoch(self) -> int:
        return self.value


class Replica:
    """One node with its bridge, confirmer and leader loop (as a replica process has)."""

    def __init__(
        self, cluster: Cluster, index: int, vote_hold_seconds: float | None = None
    ) -> None:
        self.cluster = cluster
        self.index = index
        self.address = cluster.addresses[index]
        self.data_dir = cluster.root / f"node-{index}"
        peers = [a for a in cluster.addresses if a != self.address]
        self.node = LeaseNode(
            self.address,
            peers,
            build_conf(RAFT, TIMERS, self.data_dir),
            vote_hold_seconds=vote_hold_seconds or TIMERS.election_timeout_max_seconds,
            transport_class=transport_for(cluster.network),
        )
        self.registry = CollectorRegistry()
        self.metrics = RaftMetrics(self.registry)
        self.bridge = RaftBridge(
            self.node, timeout_seconds=2.0, max_in_flight=50, metrics=self.metrics
        )
        self.confirmer = RenewalConfirmer(self.bridge, self.node.status, window_seconds=0.02)
        self.loop = LeaderLoop(
            self.node,
            self.bridge,
            cluster.adapters,
            cluster.floor,
            cluster.policy,
            tick_seconds=0.1,
            tracker=LeaseTracker(cluster.policy.ttl_seconds),
            metrics=self.metrics,
        )
        self.stepping = True

    async def renew(self, pod_id: str) -> bool:
        """A heartbeat from `pod_id` arriving now; True when acknowledged."""
        arrival = time.monotonic()
        confirmed = await self.confirmer.confirm()
        return self.loop.tracker.renew(pod_id, arrival, confirmed.term)


class Cluster:
    """N replicas stepped by one background thread."""

    def __init__(
        self,
        size: int,
        root: Path,
        *,
        policy: Policy | None = None,
        adapters: StaticAdapters | None = None,
        floor: FixedFloor | None = None,
    ) -> None:
        self.root = root
        self.addresses = [f"127.0.0.1:{p}" for p in free_ports(size)]
        self.network = Network()
        self.policy = policy or Policy(ttl_seconds=TTL, max_grants_per_tick=500)
        self.adapters = adapters or StaticAdapters()
        self.floor = floor or FixedFloor()
        self.replicas: list[Replica | None] = [Replica(self, i) for i in range(size)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._step_forever, daemon=True)
        self._thread.start()

    def _step_forever(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                running = [r for r in self.replicas if r is not None and r.stepping]
                for replica in running:
                    replica.node.doTick(0.0)
            time.sleep(0.001)  # pacing of the stepping thread, not synchronisation

    def live(self) -> list[Replica]:
        return [r for r in self.replicas if r is not None]

    def replica(self, index: int) -> Replica:
        found = self.replicas[index]
        assert found is not None, f"replica {index} is down"
        return found

    def leaders(self) -> list[Replica]:
        return [r for r in self.live() if r.stepping and r.node.status().is_leader]

    def kill(self, index: int) -> None:
        with self._lock:
            replica = self.replica(index)
            self.replicas[index] = None
        replica.node.destroy()

    def start(
        self, index: int, *, wipe: bool = False, vote_hold_seconds: float | None = None
    ) -> Replica:
        assert self.replicas[index] is None
        if wipe:
            shutil.rmtree(self.root / f"node-{index}", ignore_errors=True)
        replica = Replica(self, index, vote_hold_seconds)
        with self._lock:
            self.replicas[index] = replica
        return replica

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for index, replica in enumerate(self.replicas):
            if replica is not None:
                replica.node.destroy()
                self.replicas[index] = None


async def wait_for(
    condition: Callable[[], T | None], timeout: float, what: str, interval: float = 0.01
) -> T:
    """Poll `condition` until it returns something truthy, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def holds_for(
    condition: Callable[[], bool], seconds: float, what: str, *, at_least: float = 0.5
) -> int:
    """Sample `condition` for `seconds`; fail the first time it is false. Refuses to check
    less than `at_least` seconds (a window used up elsewhere would check nothing) and
    returns how many samples it took (at least one per 20 ms)."""
    assert seconds >= at_least, f"only {seconds:.3f}s left to check that {what}"
    deadline = time.monotonic() + seconds
    samples = 0
    while True:
        assert condition(), f"{what} stopped holding"
        samples += 1
        if time.monotonic() >= deadline:
            return samples
        await asyncio.sleep(0.02)


async def first_plan(replica: Replica, timeout: float = 5.0) -> TickOutcome:
    """Tick until a tick commits a plan: a new leader grants only once the epoch floor
    from the database is in the Raft state (its own task reads it)."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = await replica.loop.run_once()
        if outcome.result is not None:
            return outcome
        if time.monotonic() > deadline:
            raise AssertionError(f"no plan committed within {timeout}s: {outcome}")
        await asyncio.sleep(0.01)


async def one_leader(cluster: Cluster, timeout: float = 10.0) -> Replica:
    def settled() -> Replica | None:
        leaders = cluster.leaders()
        if len(leaders) != 1:
            return None
        leader = leaders[0]
        # Followers agree, and the leader has applied its term's first entry.
        agree = all(
            r.node.status().leader_id == leader.address
            for r in cluster.live()
            if r.stepping and not cluster.network.blocked(r.address, leader.address)
        )
        return leader if agree and leader.node.isReady() else None

    return await wait_for(settled, timeout, "one agreed leader")
