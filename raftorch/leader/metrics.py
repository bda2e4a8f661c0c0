"""Prometheus metrics of leases, failovers and heartbeats; a registry is passed in (tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

_FAILOVER_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0)
_HEARTBEAT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class ServiceMetrics:
    """The orchestrator service: leases, failovers, heartbeats (gauges come from a collector)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lease_expirations = Counter(
            "raftorch_lease_expirations_total",
            "Pods expired by the leader for missing renewals",
            registry=registry,
        )
        self.failovers = Counter(
            "raftorch_failovers_total",
            "Sessions that came up on a new owner after losing the old one",
            registry=registry,
        )
        self.failover_duration = Histogram(
            "raftorch_failover_duration_seconds",
            "From the old owner's last renewal (or release) to the new owner reporting ACTIVE",
            buckets=_FAILOVER_BUCKETS,
            registry=registry,
        )
        self.handoffs = Counter(
            "raftorch_handoffs_total",
            "Sessions moved by graceful handoff, by reason (rebalance, drain)",
            ["reason"],
            registry=registry,
        )
        self.hedges = Counter(
            "raftorch_pod_hedges_total",
            "Hedged heartbeats a follower held while the leader answered: dropped (the pod's "
            "first attempt was answered meanwhile) or relayed (the pod still waited)",
            ["outcome"],
            registry=registry,
        )
        self.fenced_reports = Counter(
            "raftorch_fenced_reports_total",
            "Sessions pods reported running that they do not hold (each got a stop order)",
            registry=registry,
        )
        for reason in ("rebalance", "drain"):  # a series from the start: 0, not "no data"
            self.handoffs.labels(reason=reason)
        self.heartbeat_latency = Histogram(
            "raftorch_heartbeat_handling_seconds",
            "Time the leader takes to confirm and answer one heartbeat",
            buckets=_HEARTBEAT_BUCKETS,
            registry=registry,
        )
        self.heartbeats = Counter(
            "raftorch_heartbeats_total",
            "Heartbeats handled by this replica, by outcome",
            ["outcome"],
            registry=registry,
        )
