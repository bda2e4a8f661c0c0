"""Prometheus metrics of the Raft side of a replica (a registry is passed in: tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from protocol import __version__

_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class RaftMetrics:
    """The Raft side: role, term, commit index, leader changes, apply errors, latency."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.is_leader = Gauge(
            "raftorch_raft_is_leader", "1 when this replica is the Raft leader", registry=registry
        )
        self.role = Gauge(
            "raftorch_raft_role",
            "1 for the replica's current Raft role",
            ["role"],
            registry=registry,
        )
        self.term = Gauge("raftorch_raft_term", "Current Raft term", registry=registry)
        self.commit_index = Gauge(
            "raftorch_raft_commit_index", "Raft commit index", registry=registry
        )
        self.leader_changes = Counter(
            "raftorch_raft_leader_changes_total",
            "Times this replica saw the leader change",
            registry=registry,
        )
        self.apply_errors = Counter(
            "raftorch_raft_apply_errors_total",
            "Entries whose applier caught an unexpected error (changed nothing)",
            registry=registry,
        )
        self.tick_errors = Counter(
            "raftorch_leader_tick_errors_total",
            "Leader-loop ticks that failed (a leader hands over after repeated failures)",
            registry=registry,
        )
        self.rejected_commands = Counter(
            "raftorch_raft_rejected_commands_total",
            "Commands refused by the appliers because state had moved on",
            registry=registry,
        )
        self.commit_latency = Histogram(
            "raftorch_raft_commit_latency_seconds",
            "Time from submitting an entry to its applied result",
            buckets=_COMMIT_BUCKETS,
            registry=registry,
        )
        self.commands_in_flight = Gauge(
            "raftorch_raft_commands_in_flight",
            "Entries submitted and not yet answered",
            registry=registry,
        )
        self.entries_submitted = Counter(
            "raftorch_raft_entries_submitted_total",
            "Entries this replica submitted, by purpose",
            ["purpose"],
            registry=registry,
        )
        build = Gauge("raftorch_build_info", "Build information", ["version"], registry=registry)
        build.labels(version=__version__).set(1)

    def observe_role(self, role: str, term: int, commit_index: int) -> None:
        for name in ("leader", "follower", "candidate"):
            self.role.labels(role=name).set(1 if name == role else 0)
        self.is_leader.set(1 if role == "leader" else 0)
        self.term.set(term)
        self.commit_index.set(commit_index)
