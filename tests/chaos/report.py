"""What the checker finds: violations, lease intervals, failovers and the report."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Violation:
    """One breach of invariant `invariant` (1-6), described well enough to debug."""

    invariant: int
    message: str

    def __str__(self) -> str:
        return f"invariant {self.invariant}: {self.message}"


@dataclass(frozen=True)
class Interval:
    """A pod incarnation holding a valid lease on `slot` at `epoch` over [start, end).

    `ended` says what closed it: "stop", "refused after claim", "lapse", "end of history"
    or "no lease" (the start found no valid lease: an empty interval, and a breach).
    """

    slot: str
    pod: str
    pid: int
    epoch: int
    start: float
    end: float
    ended: str


@dataclass(frozen=True)
class Failover:
    """Seconds from a pod fault until another incarnation had the target's slot running."""

    fault_id: str
    fault: str
    pod: str
    slot: str
    seconds: float
    to: str = ""  # the pod that had it next, where known (the API's view)


@dataclass
class Report:
    """The outcome of `check`: violations plus the numbers worth watching."""

    violations: list[Violation] = field(default_factory=list)
    fault_counts: dict[str, int] = field(default_factory=dict)
    failovers: list[Failover] = field(default_factory=list)
    ttl: float = 0.0
    writes_rejected: int = 0
    grants: int = 0
    sessions_started: int = 0
    sessions_refused: int = 0
    sessions_without_lease: int = 0
    drops: int = 0
    drops_excused: int = 0
    crashes: int = 0
    messages: dict[str, dict[str, int]] = field(default_factory=dict)
    stops_ordered: int = 0  # stops of adapters the nemesis disabled (not drops)
    handoffs: int = 0  # sessions stopped for a move by graceful handoff (not drops)
    drain_stops: int = 0  # sessions stopped by a pod draining on SIGTERM (not drops)
    drops_by_fault: dict[str, int] = field(default_factory=dict)  # excusing kind or "unexcused"
    fault_holds: dict[str, list[float]] = field(default_factory=dict)  # seconds each was held
    api_failovers: list[Failover] = field(default_factory=list)  # as the public API showed it
    api_failovers_missing: list[str] = field(default_factory=list)
    api_resolution: float = 0.0  # the largest sampling gap behind an API failover
    api_samples: int = 0
    api_max_gap: float | None = None

    @property
    def ok(self) -> bool:
        """True when no invariant was breached."""
        return not self.violations

    @property
    def failover_seconds(self) -> list[float]:
        """Failover latencies in the order the faults happened."""
        return [f.seconds for f in self.failovers]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary; percentiles are nearest-rank, None without samples."""
        secs = self.failover_seconds
        api = [f.seconds for f in self.api_failovers]
        return {
            "violations": [
                {"invariant": v.invariant, "message": v.message} for v in self.violations
            ],
            "fault_counts": dict(self.fault_counts),
            "failover_seconds": {"count": len(secs), **stats(secs)},
            "failover_beyond_ttl_seconds": stats([s - self.ttl for s in secs]),
            "api_failover_seconds": {"count": len(api), **stats(api)},
            "api_failover_beyond_ttl_seconds": stats([s - self.ttl for s in api]),
            "api_failovers_to_another_pod": sum(f.to != f.pod for f in self.api_failovers),
            "api_failovers_missing": list(self.api_failovers_missing),
            "api_resolution_seconds": round(self.api_resolution, 3),
            "api_samples": self.api_samples,
            "api_max_gap_seconds": self.api_max_gap,
            "fault_holds_seconds": {
                k: {"count": len(v), "min": min(v), "max": max(v)}
                for k, v in sorted(self.fault_holds.items())
                if v
            },
            "writes_rejected": self.writes_rejected,
            "grants": self.grants,
            "sessions_started": self.sessions_started,
            "sessions_refused": self.sessions_refused,
            "sessions_without_lease": self.sessions_without_lease,
            "drops": self.drops,
            "drops_excused": self.drops_excused,
            "drops_unexcused": self.drops - self.drops_excused,
            "drops_by_fault": dict(self.drops_by_fault),
            "stops_ordered": self.stops_ordered,
            "handoffs": self.handoffs,
            "drain_stops": self.drain_stops,
            "crashes": self.crashes,
            "messages": {q: dict(m) for q, m in self.messages.items()},
        }

    def summary(self) -> str:
        """A few lines for a human: counts, latencies, one line per violation, verdict."""
        summary = self.to_json()
        fo, beyond = summary["failover_seconds"], summary["failover_beyond_ttl_seconds"]
        api = summary["api_failover_seconds"]
        api_beyond = summary["api_failover_beyond_ttl_seconds"]
        faults = (
            ", ".join(
                f"{k} {n}{_held(self.fault_holds.get(k))}"
                for k, n in sorted(self.fault_counts.items())
            )
            or "none"
        )
        queues = "; ".join(
            f"{q} {m['produced']} produced / {m['delivered']} delivered"
            for q, m in sorted(self.messages.items())
        )
        lines = [
            f"faults: {faults}",
            f"grants {self.grants}, sessions started {self.sessions_started} "
            f"(refused {self.sessions_refused}, without a lease {self.sessions_without_lease}), "
            f"drops {self.drops} ({self.drops_excused} excused, "
            f"{self.drops - self.drops_excused} not), stops ordered {self.stops_ordered}, "
            f"handoffs {self.handoffs}, drain stops {self.drain_stops}, "
            f"writes rejected by the fence {self.writes_rejected}, "
            f"processes exited on their own {self.crashes}",
            f"failover: {fo['count']} samples, p50 {_sec(fo['p50'])}, p99 {_sec(fo['p99'])}, "
            f"max {_sec(fo['max'])}; beyond ttl p50 {_sec(beyond['p50'])}, "
            f"p99 {_sec(beyond['p99'])}, max {_sec(beyond['max'])} (pod-side)",
            f"failover to ACTIVE in the API: {api['count']} samples, p50 {_sec(api['p50'])}, "
            f"p99 {_sec(api['p99'])}, max {_sec(api['max'])}; beyond ttl p50 "
            f"{_sec(api_beyond['p50'])}, p99 {_sec(api_beyond['p99'])}, max "
            f"{_sec(api_beyond['max'])}; {len(self.api_failovers_missing)} never ACTIVE again; "
            f"{self.api_samples} API answers, largest gap {_sec(self.api_max_gap)}",
            f"messages: {queues or 'none'}",
            *(str(v) for v in self.violations),
            f"FAILED: {len(self.violations)} violations"
            if self.violations
            else "OK: no violations",
        ]
        return "\n".join(lines)


def _held(holds: list[float] | None) -> str:
    return f" (held {min(holds):.1f}-{max(holds):.1f}s)" if holds else ""


def _sec(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def nearest_rank(values: list[float], pct: int) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct * len(ordered) / 100)) - 1]


def stats(values: list[float]) -> dict[str, float | None]:
    return {
        "p50": nearest_rank(values, 50),
        "p99": nearest_rank(values, 99),
        "max": max(values) if values else None,
    }
