"""The settings schema of a replica: one frozen dataclass tree with its timing rules.

Loading (defaults < file < ``RAFTORCH_*`` environment) is `raftorch.config.loading`; rules
on single values are `raftorch.config.validation`. A `Config` that exists is consistent:
construction validates every setting and every rule between settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from protocol.errors import ConfigError
from protocol.secret import Secret
from raftorch.config.timing import RaftTimers, TimingBudget, budget, derive_timers
from raftorch.config.validation import LOG_LEVELS, at_most, check_settings, num


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeConfig:
    """Identity and local storage of this process."""

    id: str = "node-1"
    """Stable id of this replica, unique in the cluster (letters, digits, '.', '_', '-')."""
    data_dir: str = "./raftorch-data"
    """Directory for local state such as Raft snapshots; relative to the working directory."""
    audit_file: str | None = None
    """Append the lease audit trail (JSON lines: every grant this replica applies) here."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RaftConfig:
    """Raft replication between orchestrator replicas (pysyncobj)."""

    bind: str = "127.0.0.1:4321"
    """host:port this replica's Raft endpoint listens on and is known by to its peers."""
    peers: tuple[str, ...] = ()
    """host:port of the other replicas' Raft endpoints; empty for a single-replica cluster."""
    peer_routes: tuple[str, ...] = ()
    """``peer=host:port`` entries: dial that peer at another address (a proxy or sidecar);
    the peer keeps its name from ``peers``."""
    secret: Secret | None = None
    """Cluster secret encrypting Raft traffic (pysyncobj ``password``); the server needs it."""
    insecure_dev_mode: bool = False
    """Allow the server to run Raft unencrypted without a secret (local development only)."""
    election_timeout_min_seconds: float | None = None
    """Lower bound of the randomised election timeout (pysyncobj ``raftMinTimeout``); None:
    election max / 3."""
    election_timeout_max_seconds: float | None = None
    """Upper bound of the randomised election timeout (pysyncobj ``raftMaxTimeout``); None:
    derived from the lease TTL so that the timing budget fits (see docs/lease-protocol.md)."""
    append_entries_period_seconds: float | None = None
    """Period of the leader's append-entries heartbeat (pysyncobj ``appendEntriesPeriod``);
    None: election min / 4, between 0.02 and 0.1."""
    leader_fallback_timeout_seconds: float | None = None
    """A leader that hears from no majority for this long steps down; None: 3 x election max."""
    max_commands_in_flight: int = 200
    """Raft commands awaiting commit at most; beyond it submissions get a retriable error."""

    def routes(self) -> dict[str, tuple[str, int]]:
        """`peer_routes` as peer -> (host, port) to dial (checked at load)."""
        routes = {}
        for entry in self.peer_routes:
            peer, _, via = entry.partition("=")
            host, _, port = via.rpartition(":")
            routes[peer] = (host.strip("[]"), int(port))
        return routes

    def require_secret(self) -> Secret | None:
        """The Raft secret, or None when running without one on purpose.

        The server calls this at start; commands that do not run Raft never need a secret.
        Raises `ConfigError` when no secret is set and `insecure_dev_mode` is off.
        """
        if self.secret is None and not self.insecure_dev_mode:
            raise ConfigError(
                "raft.secret is not set: the Raft port carries pickled messages and must be "
                "encrypted; set RAFTORCH_RAFT__SECRET or pass --insecure-dev-mode for local "
                "development"
            )
        return self.secret


@dataclass(frozen=True, slots=True, kw_only=True)
class LeaseConfig:
    """Session leases held by adapter pods."""

    ttl_seconds: float = 6.0
    """A pod's leases expire this long after its last acknowledged heartbeat."""
    heartbeat_interval_seconds: float | None = None
    """How often pods heartbeat (told to them at registration); None: ttl_seconds / 3."""
    safety_margin_seconds: float = 0.5
    """A pod's own lease ends this long before the leader's view of it (told to pods): room
    for a self-fencing pod to stop its sessions (`fence_stop_seconds`), then clock drift."""
    fence_stop_seconds: float = 0.3
    """A self-fencing pod stops all its sessions concurrently within this (told to pods);
    must be below the safety margin, so they have stopped before the leader can regrant."""
    retry_interval_seconds: float = 0.1
    """An unacknowledged heartbeat is retried, across replicas, this often (told to pods)."""
    renewal_batch_seconds: float = 0.05
    """The leader acknowledges renewals after one Raft barrier per window of this length."""
    reassign_per_tick: int = 10000
    """At most this many sessions are granted per planner tick: one Raft entry's bound."""
    reassign_pods_per_tick: int = 500
    """A planner tick gives work to at most this many pods (each then costs the leader a
    few requests): the rest follows in the next tick, at once."""
    reassign_per_pod_per_tick: int = 2
    """Once a tick has given work to `reassign_pods_per_tick` pods, each of them gets up
    to this many grants in it (never past an even share of what is left to place)."""
    tick_interval_seconds: float = 0.25
    """Period of the leader's lease planner (expiry checks and reassignment)."""

    @property
    def effective_heartbeat_interval_seconds(self) -> float:
        """`heartbeat_interval_seconds`, or `ttl_seconds` / 3 if unset."""
        if self.heartbeat_interval_seconds is None:
            return self.ttl_seconds / 3
        return self.heartbeat_interval_seconds


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiConfig:
    """HTTP API (pods, admin, Portal, metrics) of this replica."""

    host: str = "127.0.0.1"
    """Address the HTTP server listens on."""
    port: int = 8080
    """Port the HTTP server listens on (1-65535)."""
    advertise_url: str | None = None
    """Base URL other replicas and pods use to reach this API; None: http://host:port."""
    max_body_bytes: int = 1048576
    """Largest request body accepted; larger ones get HTTP 413."""
    admin_token: Secret | None = None
    """Bootstrap bearer token with the admin role (further tokens live in PostgreSQL)."""
    pod_bootstrap_token: Secret | None = None
    """Token adapter pods present to register."""


_DEFAULT_DSN: Final = Secret("postgresql://postgres@127.0.0.1:5432/raftorch")


@dataclass(frozen=True, slots=True, kw_only=True)
class DatabaseConfig:
    """PostgreSQL holding all durable state."""

    dsn: Secret = _DEFAULT_DSN
    """PostgreSQL URL (postgresql://user:password@host:port/db); may hold a password."""
    min_pool_size: int = 1
    """Connections the pool keeps open."""
    max_pool_size: int = 10
    """Connections the pool opens at most."""
    connect_timeout_seconds: float = 5.0
    """Timeout of one connection attempt."""
    connect_attempts: int = 10
    """Connection attempts at start-up before giving up."""
    retry_backoff_initial_seconds: float = 0.1
    """First delay between retries of a failed connection; doubles up to the maximum."""
    retry_backoff_max_seconds: float = 2.0
    """Longest delay between retries."""
    command_timeout_seconds: float = 10.0
    """Timeout of one SQL statement."""
    resync_interval_seconds: float = 30.0
    """Period of the full re-read that backs up LISTEN/NOTIFY (notifications can be lost)."""


REBALANCE_POLICIES: Final = ("off", "on_join", "continuous")


@dataclass(frozen=True, slots=True, kw_only=True)
class PlacementConfig:
    """Where sessions run: the settle window and rebalancing by graceful handoff."""

    rebalance: str = "on_join"
    """``off``, ``on_join`` (restore the spread after a pod joins) or ``continuous``."""
    rebalance_moves_per_second: float = 2.0
    """Sessions moved by handoff per second at most when rebalancing (one per adapter at a
    time)."""
    drain_moves_per_second: float = 20.0
    """Sessions moved off a drained pod per second at most (one per adapter at a time)."""
    rebalance_window_seconds: float = 60.0
    """``on_join``: how long after a pod joins the spread is restored (moves stop earlier
    once it holds)."""
    settle_seconds: float = 0.5
    """New sessions are placed only once no pod has registered (and no leader has taken
    office) for this long, so pods starting together share the work."""

    def __post_init__(self) -> None:
        if self.rebalance not in REBALANCE_POLICIES:
            choices = ", ".join(REBALANCE_POLICIES)
            raise ConfigError(
                f"placement.rebalance: expected one of {choices}, got {self.rebalance!r}"
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    """Logging, configured by the CLI only."""

    level: str = "INFO"
    """Lowest level logged: DEBUG, INFO, WARNING or ERROR (any case; stored upper-case)."""
    format: str = "text"
    """``text`` for humans or ``json`` (one object per line) for log collectors."""

    def __post_init__(self) -> None:
        if self.level.upper() not in LOG_LEVELS:
            levels = ", ".join(LOG_LEVELS)
            raise ConfigError(f"log.level: expected one of {levels}, got {self.level!r}")
        if self.format.lower() not in ("text", "json"):
            raise ConfigError(f"log.format: expected text or json, got {self.format!r}")
        # Frozen: normalise through object.__setattr__, as the dataclasses docs suggest.
        object.__setattr__(self, "level", self.level.upper())
        object.__setattr__(self, "format", self.format.lower())


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    """All settings of a raftorch process; build it with `load_config()`.

    Construction validates every setting and every timing rule (`timing_rules`), so a
    `Config` that exists is consistent; the sections alone are not checked.
    """

    node: NodeConfig = field(default_factory=NodeConfig)
    """Identity and local storage."""
    raft: RaftConfig = field(default_factory=RaftConfig)
    """Raft replication between replicas."""
    lease: LeaseConfig = field(default_factory=LeaseConfig)
    """Session leases of adapter pods."""
    api: ApiConfig = field(default_factory=ApiConfig)
    """HTTP API."""
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    """PostgreSQL."""
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    """Placement and rebalancing."""
    log: LogConfig = field(default_factory=LogConfig)
    """Logging."""

    def __post_init__(self) -> None:
        check_settings(self)
        rules = self.timing_rules()
        plan = self.timing_budget
        for key, value, relation, bound_key, bound, why in rules:
            if key.startswith("placement.") and not plan.fits:
                break  # the budget's own message says more
            if not (value < bound if relation == "<" else at_most(value, bound)):
                verb = "is not below" if relation == "<" else "is above"
                raise ConfigError(f"{key}={num(value)} {verb} {bound_key}={num(bound)}; {why}")
        if not plan.fits:
            raise ConfigError(
                f"timing budget {plan.describe()} does not fit in lease.ttl_seconds="
                f"{num(self.lease.ttl_seconds)}: one leader change (with a split vote) could "
                f"outlast every lease; {self._budget_advice()}"
            )

    @property
    def raft_timers(self) -> RaftTimers:
        """The Raft timers in effect: the ones set, the others derived from the lease TTL."""
        raft, lease = self.raft, self.lease
        return derive_timers(
            ttl=lease.ttl_seconds,
            heartbeat=lease.effective_heartbeat_interval_seconds,
            margin=lease.safety_margin_seconds,
            batch=lease.renewal_batch_seconds,
            retry=lease.retry_interval_seconds,
            election_min=raft.election_timeout_min_seconds,
            election_max=raft.election_timeout_max_seconds,
            append_entries=raft.append_entries_period_seconds,
            leader_fallback=raft.leader_fallback_timeout_seconds,
        )

    @property
    def timing_budget(self) -> TimingBudget:
        """The worst-case leader change against the TTL (see `raftorch.config.timing`)."""
        lease = self.lease
        return budget(
            ttl=lease.ttl_seconds,
            heartbeat=lease.effective_heartbeat_interval_seconds,
            margin=lease.safety_margin_seconds,
            batch=lease.renewal_batch_seconds,
            retry=lease.retry_interval_seconds,
            timers=self.raft_timers,
        )

    def _budget_advice(self) -> str:
        if "election_timeout_max_seconds" not in self.raft_timers.derived:
            return (
                "lower raft.election_timeout_max_seconds, or leave the Raft timers unset to "
                "derive them from the TTL"
            )
        return "raise lease.ttl_seconds, or lower lease.heartbeat_interval_seconds"

    def timing_rules(self) -> tuple[tuple[str, float, str, str, float, str], ...]:
        """The rules between settings, as data: (key, value, "<" or "<=", bound key, bound, why)."""
        timers, lease, db = self.raft_timers, self.lease, self.database
        low, high = timers.election_timeout_min_seconds, timers.election_timeout_max_seconds
        ttl, beat = lease.ttl_seconds, lease.effective_heartbeat_interval_seconds
        ttl_minus_beat = f"(lease.ttl_seconds={num(ttl)} - heartbeat interval {num(beat)})"
        # fmt: off
        return (
            ("lease.heartbeat_interval_seconds", beat, "<=", "lease.ttl_seconds/3", ttl / 3,
             "heartbeats must be at most a third of the TTL"),
            ("lease.safety_margin_seconds", lease.safety_margin_seconds, "<", ttl_minus_beat,
             ttl - beat, "a pod would fence itself between heartbeats"),
            ("lease.renewal_batch_seconds", lease.renewal_batch_seconds, "<",
             "lease.heartbeat_interval_seconds", beat,
             "renewals would be acknowledged after the next heartbeat is due"),
            ("raft.election_timeout_min_seconds", low, "<", "raft.election_timeout_max_seconds",
             high, "the election timeout needs a random range"),
            ("raft.append_entries_period_seconds", timers.append_entries_period_seconds, "<",
             "raft.election_timeout_min_seconds/3", low / 3,
             "followers would start elections against a healthy leader"),
            ("raft.election_timeout_max_seconds", high, "<=",
             "raft.leader_fallback_timeout_seconds", timers.leader_fallback_timeout_seconds,
             "a leader would step down before a successor could be elected"),
            ("lease.fence_stop_seconds", lease.fence_stop_seconds, "<",
             "lease.safety_margin_seconds", lease.safety_margin_seconds,
             "a self-fencing pod could still be stopping sessions the leader regrants"),
            ("lease.retry_interval_seconds", lease.retry_interval_seconds, "<",
             "lease.heartbeat_interval_seconds", beat,
             "a failed heartbeat would be retried only after the next one is due"),
            ("database.min_pool_size", db.min_pool_size, "<=", "database.max_pool_size",
             db.max_pool_size, "the pool cannot keep more connections than it may open"),
            ("database.retry_backoff_initial_seconds", db.retry_backoff_initial_seconds, "<=",
             "database.retry_backoff_max_seconds", db.retry_backoff_max_seconds,
             "the first retry delay cannot exceed the longest"),
            ("placement.settle_seconds", self.placement.settle_seconds, "<=",
             "lease.ttl_seconds/3", ttl / 3, "placing new sessions must not wait long"),
        )
        # fmt: on


def budget_table(ttls: tuple[float, ...] = (2.0, 3.0, 6.0, 30.0)) -> str:
    """The budget with the shipped defaults as a Markdown table (docs/lease-protocol.md)."""
    rows = [
        "| TTL | heartbeat | election min / max | append-entries | budget | + safety margin "
        "| fits |",
        "|---|---|---|---|---|---|---|",
    ]
    for ttl in ttls:
        config = Config(lease=LeaseConfig(ttl_seconds=ttl))
        timers, plan = config.raft_timers, config.timing_budget
        margin = config.lease.safety_margin_seconds
        rows.append(
            f"| {ttl:g} s | {_short(config.lease.effective_heartbeat_interval_seconds)} s "
            f"| {_short(timers.election_timeout_min_seconds)} / "
            f"{_short(timers.election_timeout_max_seconds)} s "
            f"| {_short(timers.append_entries_period_seconds)} s "
            f"| {_short(plan.total_seconds - margin)} s | {_short(plan.total_seconds)} s "
            f"| {'yes' if plan.fits else 'no'} |"
        )
    return "\n".join(rows)


def _short(value: float) -> str:
    return repr(round(value, 3))
