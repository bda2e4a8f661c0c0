"""Prometheus metrics of an adapter pod (a registry is passed in so tests are isolated)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from protocol import __version__

if TYPE_CHECKING:
    from adapter.agent import Agent

_RTT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0)


class PodMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.heartbeat_rtt = Histogram(
            "raftorch_pod_heartbeat_round_trip_seconds",
            "From sending a heartbeat to its acknowledgement",
            buckets=_RTT_BUCKETS,
            registry=registry,
        )
        self.heartbeat_failures = Counter(
            "raftorch_pod_heartbeat_failures_total",
            "Heartbeats no replica acknowledged",
            registry=registry,
        )
        self.heartbeat_refusals = Counter(
            "raftorch_pod_heartbeat_refusals_total",
            "Heartbeats the orchestrator refused with a 4xx other than 403/410 (the pod "
            "re-registers)",
            registry=registry,
        )
        self.task_failures = Counter(
            "raftorch_pod_task_failures_total",
            "Pod runtime loops that died (the pod fences itself and exits)",
            ["task"],
            registry=registry,
        )
        self.self_fencing = Counter(
            "raftorch_pod_self_fencing_total",
            "Times the pod stopped its sessions because its lease ran out",
            registry=registry,
        )
        Gauge("raftorch_build_info", "Build information", ["version"], registry=registry).labels(
            version=_version()
        ).set(1)

    def watch(self, agent: Agent) -> None:
        self.registry.register(_AgentCollector(lambda: agent))


def _version() -> str:
    return __version__


class _AgentCollector(Collector):
    def __init__(self, agent: Callable[[], Agent]) -> None:
        self._agent = agent

    def collect(self) -> Iterator[GaugeMetricFamily]:
        agent = self._agent()
        sessions = GaugeMetricFamily(
            "raftorch_pod_sessions",
            "Sessions on this pod by status and role",
            labels=["status", "role"],
        )
        counts: dict[tuple[str, str], int] = {}
        for session in agent.sessions.sessions.values():
            key = (session.status.value if session.role == "ACTIVE" else "STANDBY", session.role)
            counts[key] = counts.get(key, 0) + 1
        for (status, role), count in sorted(counts.items()):
            sessions.add_metric([status, role], count)
        yield sessions
        yield GaugeMetricFamily(
            "raftorch_pod_lease_remaining_seconds",
            "Time until this pod must fence itself without a new acknowledgement",
            value=agent.lease_remaining(),
        )
