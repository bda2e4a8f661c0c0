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
    election_timeout_min_seconds: float = 0.4
    """Lower bound of the randomised election timeout (pysyncobj ``raftMinTimeout``)."""
    election_timeout_max_seconds: float = 1.4
    """Upper bound of the randomised election timeout (pysyncobj ``raftMaxTimeout``)."""
    append_entries_period_seconds: float = 0.1
    """Period of the leader's append-entries heartbeat (pysyncobj ``appendEntriesPeriod``)."""
    leader_fallback_timeout_seconds: float | None = None
    """A leader that hears from no majority for this long steps down; None: 3 x election max."""
    max_commands_in_flight: int = 200
    """Raft commands awaiting commit at most; beyond it submissions get a retriable error."""

    @property
    def effective_leader_fallback_timeout_seconds(self) -> float:
        """`leader_fallback_timeout_seconds`, or 3 x `election_timeout_max_seconds` if unset."""
        if self.leader_fallback_timeout_seconds is None:
            return 3 * self.election_timeout_max_seconds
        return self.leader_fallback_timeout_seconds

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
    """A pod stops its sessions this long before its lease deadline (clock drift, pauses)."""
    renewal_batch_seconds: float = 0.05
    """The leader acknowledges renewals after one Raft barrier per window of this length."""
    reassign_per_tick: int = 500
    """At most this many sessions are reassigned per planner tick (bounded Raft traffic)."""
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
    log: LogConfig = field(default_factory=LogConfig)
    """Logging."""

    def __post_init__(self) -> None:
        check_settings(self)
        for key, value, relation, bound_key, bound, why in self.timing_rules():
            if not (value < bound if relation == "<" else at_most(value, bound)):
                verb = "is not below" if relation == "<" else "is above"
                raise ConfigError(f"{key}={num(value)} {verb} {bound_key}={num(bound)}; {why}")

    def timing_rules(self) -> tuple[tuple[str, float, str, str, float, str], ...]:
        """The rules between settings, as data: (key, value, "<" or "<=", bound key, bound, why)."""
        raft, lease, db = self.raft, self.lease, self.database
        low, high = raft.election_timeout_min_seconds, raft.election_timeout_max_seconds
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
            ("raft.append_entries_period_seconds", raft.append_entries_period_seconds, "<=",
             "raft.election_timeout_min_seconds/3", low / 3,
             "followers would start elections against a healthy leader"),
            ("raft.election_timeout_max_seconds", high, "<=", "lease.ttl_seconds/2", ttl / 2,
             "a new leader must be elected well within the lease TTL"),
            ("raft.election_timeout_max_seconds", high, "<=",
             "raft.leader_fallback_timeout_seconds", raft.effective_leader_fallback_timeout_seconds,
             "a leader would step down before a successor could be elected"),
            ("database.min_pool_size", db.min_pool_size, "<=", "database.max_pool_size",
             db.max_pool_size, "the pool cannot keep more connections than it may open"),
            ("database.retry_backoff_initial_seconds", db.retry_backoff_initial_seconds, "<=",
             "database.retry_backoff_max_seconds", db.retry_backoff_max_seconds,
             "the first retry delay cannot exceed the longest"),
        )
        # fmt: on
