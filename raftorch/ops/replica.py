"""One orchestrator replica: HTTP server, Raft node and database pool in one process.

`Orchestrator.start()` brings everything up (the Raft node and HTTP first, the
configuration cache follows PostgreSQL in the background); `stop()` shuts down
cleanly: a leader hands leadership on, in-flight requests finish, buffered events
are flushed when the database allows. Background tasks are kept; if one dies the
failure surfaces through `failed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from persistence.audit import AuditTrail
from persistence.db import Database, PoolSettings
from persistence.events import NewEvent
from persistence.lease_history import LeaseHistoryRepository
from persistence.plugins import PluginRepository
from persistence.writebehind import WriteBehind
from protocol.errors import RaftorchError
from protocol.pod import RegisterRequest
from protocol.values import SlotStatus
from raftorch.api.app import build_app
from raftorch.api.assignments import ConfigChanges
from raftorch.api.context import Context, LeaderActions, Repositories
from raftorch.api.forwarding import Forwarder, HedgeHold
from raftorch.api.pods import PodApi
from raftorch.config import Config
from raftorch.config.cache import ConfigCache
from raftorch.core.model import MAX_EPOCH, AnnounceReplica, ApplyResult, Command, Policy
from raftorch.leader.leases import LeaseTracker, RenewalConfirmer, StallMeter
from raftorch.leader.loop import LeaderLoop
from raftorch.leader.metrics import ServiceMetrics
from raftorch.leader.reporting import HistoryItem, Reporter, write_history
from raftorch.raft.bridge import RaftBridge
from raftorch.raft.metrics import RaftMetrics
from raftorch.raft.node import LeaseNode, RaftStatus, build_conf

log = logging.getLogger(__name__)
SHUTDOWN_SECONDS = 2.0
"""How long a stopping replica lets requests in flight finish (long-polls answer at once)."""
_ROLES = {0: "follower", 1: "candidate", 2: "leader"}  # pysyncobj's _RAFT_STATE


def pool_settings(config: Config) -> PoolSettings:
    db = config.database
    return PoolSettings(
        min_size=db.min_pool_size,
        max_size=db.max_pool_size,
        connect_timeout_seconds=db.connect_timeout_seconds,
        connect_attempts=db.connect_attempts,
        retry_backoff_initial_seconds=db.retry_backoff_initial_seconds,
        retry_backoff_max_seconds=db.retry_backoff_max_seconds,
        command_timeout_seconds=db.command_timeout_seconds,
    )


async def _record_plugins(repo: PluginRepository, batch: Sequence[tuple[str, str]]) -> None:
    """Connector types pods advertised (the entry point is known to the pods only)."""
    for connector, version in dict.fromkeys(batch):
        await repo.record(connector, version, "advertised by a pod")


class StateCollector(Collector):
    """Gauges read at scrape time: pods by state, sessions by status, adapters, database."""

    def __init__(self, service: Orchestrator) -> None:
        self._service = service

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        snapshot = self._service.node.snapshot()
        pods = GaugeMetricFamily("raftorch_pods", "Registered pods by state", labels=["state"])
        for state in ("ACTIVE", "DRAINING"):
            count = sum(1 for p in snapshot.pods.values() if p.state.value == state)
            pods.add_metric([state], count)
        yield pods
        sessions = GaugeMetricFamily(
            "raftorch_sessions", "Session slots by status", labels=["status"]
        )
        for status in SlotStatus:
            sessions.add_metric([status.value], snapshot.status_counts.get(status, 0))
        yield sessions
        yield GaugeMetricFamily(
            "raftorch_pod_long_polls", "Assignment long-polls waiting on this replica",
            value=self._service.pods.signals.waiting(),
        )  # fmt: skip
        yield GaugeMetricFamily(
            "raftorch_epoch_headroom",
            "Epochs left before the largest one (grants stop there); should stay astronomical",
            value=MAX_EPOCH - max(snapshot.epoch_counter, snapshot.epoch_floor),
        )
        dropped = CounterMetricFamily(
            "raftorch_buffer_dropped",
            "Rows a write-behind buffer dropped (full while PostgreSQL was away, or refused)",
            labels=["buffer"],
        )
        for buffer in (self._service.events, self._service.history, self._service.plugins):
            dropped.add_metric([buffer.name.replace(" ", "_")], buffer.dropped)
        yield dropped
        cache = self._service.cache
        enabled = sum(1 for s in cache.specs().values() if s.enabled) if cache.loaded else 0
        yield GaugeMetricFamily(
            "raftorch_adapters_enabled", "Enabled adapters (for autoscaling pods)", value=enabled
        )
        yield GaugeMetricFamily(
            "raftorch_database_up", "1 when PostgreSQL answered the last check",
            value=1 if self._service.db_up else 0,
        )  # fmt: skip
        node = self._service.node
        raft = node.status()
        yield GaugeMetricFamily(
            "raftorch_raft_apply_lag_entries",
            "Committed entries this replica has not applied yet (commit index - last applied)",
            value=max(0, raft.commit_index - raft.last_applied),
        )
        yield GaugeMetricFamily(
            "raftorch_raft_applier_blocked",
            "1 when this replica met a committed entry it cannot read and stopped applying",
            value=1 if node.blocked is not None else 0,
        )
        yield CounterMetricFamily(
            "raftorch_raft_tick_errors", "Raft ticks that raised (the tick thread goes on)",
            value=node.tick_errors,
        )  # fmt: skip


def readiness(
    status: RaftStatus, blocked: str | None, established: bool, cache_loaded: bool
) -> tuple[bool, str]:
    """What /readyz answers: ready, or the one reason why not."""
    if blocked is not None:
        return False, f"Raft applier blocked (upgrade this replica): {blocked}"
    if status.leader_id is None:
        return False, "no Raft leader known"
    if status.is_leader and not established:
        return False, "leader is taking office (claiming its term)"
    if not cache_loaded:
        return False, "configuration not loaded (database unavailable)"
    return True, "ready"


class Orchestrator:
    """Wires the replica together. Construct, then `await start()`, later `await stop()`."""

    def __init__(self, config: Config, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.failed = asyncio.Event()
        self.db_up = False
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: web.AppRunner | None = None
        self._wall_offset = time.time() - time.monotonic()

    @property
    def api_url(self) -> str:
        api = self.config.api
        return api.advertise_url or f"http://{api.host}:{api.port}"

    def _build(self) -> None:
        """Wire the replica's parts, bottom up: storage, Raft, the leader's loop, the API."""
        self._event_loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        self._build_storage()
        self._build_raft()
        self._build_leader()
        self._build_api()
        self.registry.register(StateCollector(self))

    def _build_storage(self) -> None:
        config = self.config
        self.db = Database(config.database.dsn.reveal(), pool_settings(config))
        audit_file = config.node.audit_file
        self.audit = AuditTrail(Path(audit_file) if audit_file else None, config.node.id)
        self.repos = Repositories.on(self.db)
        self.raft_metrics = RaftMetrics(self.registry)
        self.metrics = ServiceMetrics(self.registry)
        self.cache = ConfigCache(
            self.db,
            config.database.dsn.reveal(),
            pool_settings(config),
            resync_interval_seconds=config.database.resync_interval_seconds,
        )
        self._config_changes = ConfigChanges(lambda: self.cache.resynced)
        self.cache.listeners.append(self._config_changes.note)
        self.events: WriteBehind[NewEvent] = WriteBehind("event log", self.repos.events.append)
        self._history_repo = LeaseHistoryRepository(self.db)
        history = self._history_repo
        self.history: WriteBehind[HistoryItem] = WriteBehind(
            "lease history", lambda batch: write_history(history, batch)
        )
        plugins = self.repos.plugins
        self.plugins: WriteBehind[tuple[str, str]] = WriteBehind(
            "plugins", lambda batch: _record_plugins(plugins, batch)
        )

    def _build_raft(self) -> None:
        config = self.config
        timers = config.raft_timers
        self.node = LeaseNode(
            config.raft.bind,
            config.raft.peers,
            build_conf(
                config.raft,
                timers,
                Path(config.node.data_dir) / "raft",
                on_state_changed=self._on_raft_state_changed,
            ),
            vote_hold_seconds=timers.election_timeout_max_seconds,
            peer_routes=config.raft.routes(),
            audit=self.audit,
        )
        self.bridge = RaftBridge(
            self.node,
            timeout_seconds=max(2.0, config.lease.ttl_seconds / 2),
            max_in_flight=config.raft.max_commands_in_flight,
            metrics=self.raft_metrics,
        )

    def _build_leader(self) -> None:
        config = self.config
        self.reporter = Reporter(self.events, self.history, self.metrics, node_id=config.node.id)
        self.tracker = LeaseTracker(config.lease.ttl_seconds)
        policy = Policy(ttl_seconds=config.lease.ttl_seconds,
                        max_grants_per_tick=config.lease.reassign_per_tick,
                        max_pods_per_tick=config.lease.reassign_pods_per_tick,
                        max_grants_per_pod=config.lease.reassign_per_pod_per_tick)  # fmt: skip
        self.loop = LeaderLoop(self.node, self.bridge, self.cache, self._history_repo, policy,
                               tick_seconds=config.lease.tick_interval_seconds,
                               tracker=self.tracker, metrics=self.raft_metrics,
                               reporter=self.reporter, audit=self.audit,
                               placement=config.placement,
                               stalls=StallMeter(self.tracker, time.monotonic))  # fmt: skip
        self.confirmer = RenewalConfirmer(
            self.bridge, self.node.status, window_seconds=config.lease.renewal_batch_seconds,
            stamp=self.loop.stamped,
        )  # fmt: skip

    def _build_api(self) -> None:
        config = self.config
        # A pod gives up an attempt after about a heartbeat interval and retries elsewhere;
        # a follower relaying it waits no longer for a leader that does not answer.
        # A pod call that finds no leader waits here for as long as an election may take
        # (two election timeouts: one split vote) and then goes to the new one.
        timers = config.raft_timers
        self.forwarder = Forwarder(
            timeout_seconds=config.lease.effective_heartbeat_interval_seconds,
            leader_now=self.node.leader_id,
            awaiting_seconds=2 * timers.election_timeout_max_seconds
            + timers.append_entries_period_seconds,
        )
        lease = config.lease
        spare = (
            lease.ttl_seconds
            - lease.safety_margin_seconds
            - lease.effective_heartbeat_interval_seconds
        )
        self.hedges = HedgeHold(  # a third of what a lease has to spare after an interval
            leader_now=self.node.leader_id,
            leader_contact=lambda: self.node.election.last_leader_contact,
            fresh_seconds=config.raft_timers.election_timeout_min_seconds,
            hold_seconds=max(0.0, spare / 3),
            counted=lambda outcome: self.metrics.hedges.labels(outcome=outcome).inc(),
        )
        self.pods = PodApi(config=config, node=self.node, bridge=self.bridge,
                           confirmer=self.confirmer, tracker=self.tracker, cache=self.cache,
                           forwarder=self.forwarder, hedges=self.hedges,
                           reporter=self.reporter,
                           metrics=self.metrics, wake_leader=self.loop.wake.set,
                           stamped=self.loop.stamped,
                           on_registered=self._remember_plugins)  # fmt: skip
        leader = LeaderActions(forward=self._forward_admin, commit=self._commit,
                               request_rebalance=self.loop.request_rebalance)  # fmt: skip
        self.context = Context(config, self.db, self.repos, self.cache, self.events, self.node,
                               self.registry, last_check_in=self.last_check_in,
                               wake_leader=self.loop.wake.set, leader=leader)  # fmt: skip

    def _on_raft_state_changed(self, _old: int, _new: int) -> None:
        """On the Raft thread: a role change wakes the leader loop at once (a hint only)."""
        log.info(
            "raft role %s -> %s node=%s",
            _ROLES.get(_old, _old), _ROLES.get(_new, _new), self.config.node.id,
        )  # fmt: skip
        loop = self._event_loop
        if loop is not None:
            loop.call_soon_threadsafe(self.loop.wake.set)

    async def _forward_admin(self, request: web.Request, body: bytes) -> web.StreamResponse | None:
        """Relay an admin call that changes the Raft state to the leader (None: we lead)."""
        status = self.node.status()
        if status.is_leader:
            return None
        return await self.forwarder.forward(request, body, self.node.snapshot(), status)

    async def _commit(self, commands: Sequence[Command]) -> ApplyResult:
        return await self.bridge.submit(self.loop.stamped(commands))

    def _remember_plugins(self, request: RegisterRequest) -> None:
        for offer in request.connectors:
            self.plugins.add((offer.type, offer.version or "unknown"))

    def last_check_in(self) -> Mapping[str, float]:
        """Wall-clock time of each pod's last confirmed renewal (leader only)."""
        offset = self._wall_offset  # fixed at start, so a time renders the same every call
        return {pod: at + offset for pod, at in self.tracker.received().items()}

    async def start(self) -> None:
        self._build()
        await self.db.start(lazy=True)
        loop = asyncio.get_running_loop()

        def applied(touched: frozenset[str]) -> None:  # on the Raft thread: to the event loop
            loop.call_soon_threadsafe(self.pods.signals.fire, touched)

        self.node.set_apply_listener(applied)
        self.node.start()
        await self.forwarder.start()
        self.confirmer.start()
        app = build_app(self.context, self.pods, ready=self.ready, links=self.node.peer_links)
        self._runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_SECONDS, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.api.host, self.config.api.port)
        await site.start()
        for name, coro in (("config-cache", self.cache.run()), ("leader-loop", self.loop.run()),
                           ("event-log", self.events.run()), ("lease-history", self.history.run()),
                           ("plugins", self.plugins.run()),
                           ("announce", self._announce()), ("db-check", self._check_db()),
                           ("config-wake", self._wake_on_config())):  # fmt: skip
            self._spawn(name, coro)
        log.info("replica started node=%s raft=%s api=%s", self.config.node.id,
                 self.config.raft.bind, self.api_url)  # fmt: skip

    def ready(self) -> tuple[bool, str]:
        return readiness(self.node.status(), self.node.blocked, self.loop.established,
                         self.cache.loaded)  # fmt: skip

    def _spawn(self, name: str, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._task_done)
        self._tasks.append(task)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        log.error("background task ended name=%s error=%r", task.get_name(), error)
        self.failed.set()

    async def _announce(self) -> None:
        """Make sure the replicated directory knows this replica's API address."""
        me = AnnounceReplica(self.config.node.id, self.config.raft.bind, self.api_url)
        while True:
            known = self.node.snapshot().replicas.get(self.config.raft.bind)
            if known is None or (known.node_id, known.api_url) != (me.node_id, me.api_url):
                with contextlib.suppress(RaftorchError):
                    await self.bridge.submit([me])
            await asyncio.sleep(1.0)

    async def _check_db(self) -> None:
        while True:
            self.db_up = await self.db.ping()
            await asyncio.sleep(2.0)

    async def _wake_on_config(self) -> None:
        """A configuration change wakes the leader loop at once, and the long-polls of the
        pods it concerns (`ConfigChanges`)."""
        while True:
            await self.cache.changed.wait()
            self.cache.changed.clear()
            self.loop.wake.set()
            pods = self._config_changes.take(self.node.snapshot())
            if pods is None:
                self.pods.signals.fire_all()
            else:
                self.pods.signals.fire(pods)

    async def stop(self) -> None:
        """Hand leadership on, finish requests, stop tasks, flush what the database takes."""
        if not hasattr(self, "node"):
            return  # start() failed before anything was built
        await self._hand_over_leadership()
        # Raft stops before HTTP does: a replica never leads without answering (a leader
        # that failed to hand over and kept leading with its API closed cost every pod
        # its lease); the others elect a leader within an election timeout.
        await asyncio.to_thread(self.node.stop)
        if self._runner is not None:
            await self._runner.cleanup()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.confirmer.stop()
        for buffer in (self.events, self.history, self.plugins):
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await buffer.flush_once()
        await self.forwarder.close()
        await self.db.close()
        self.audit.close()
        log.info("replica stopped node=%s", self.config.node.id)

    async def _hand_over_leadership(self) -> None:
        if not self.node.status().is_leader:
            return
        for attempt in range(40):  # up to 2 s for a follower to take over
            if attempt % 10 == 0:  # again, in case no follower was caught up yet
                self.node.request_leadership_transfer()
            if not self.node.status().is_leader:
                return
            await asyncio.sleep(0.05)
