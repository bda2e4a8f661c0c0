"""The timing budget of a leader change, and the Raft timers derived from the lease TTL.

Between a pod's last acknowledged heartbeat and the first renewal a new leader can
acknowledge lie, at worst: one heartbeat interval (the leader may die just before
answering the next one), two election timeouts (one split vote), an append-entries
period (the old leader's last one may have gone out that long before it died), the
new leader's claim commit, one renewal batch and one pod retry interval. That budget
plus the safety margin must fit inside the TTL, or one leader change can drop every
session. Raft timers that are not set are derived from the TTL so that it always does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CLAIM_ROUND_TRIP_SECONDS = 0.05
"""Beyond one append-entries period: the new leader noticing its role, one round trip."""
ELECTION_SHARE = 0.4
"""Derived election timeout max = this share of the time the budget leaves for elections."""
MAX_DERIVED_ELECTION_SECONDS = 1.4
"""Longer TTLs keep pysyncobj's own election timeout: a slower election buys nothing."""
ELECTION_RANGE = 3.0
"""Derived election timeout min = max / this: a wide random range makes split votes rare."""
MIN_APPEND_ENTRIES_SECONDS = 0.02
"""Not below the Raft tick (raftorch.raft.node.TICK_WAIT_SECONDS)."""
MAX_APPEND_ENTRIES_SECONDS = 0.1
"""pysyncobj's default; a longer period only delays commits."""
APPENDS_PER_ELECTION_MIN = 4.0
"""Derived append-entries period = election min / this (pysyncobj needs more than 3)."""


@dataclass(frozen=True, slots=True)
class RaftTimers:
    """The election and append-entries timers a replica runs with."""

    election_timeout_min_seconds: float
    election_timeout_max_seconds: float
    append_entries_period_seconds: float
    leader_fallback_timeout_seconds: float
    derived: tuple[str, ...]
    """Names of the timers that were derived from the TTL (not set)."""


@dataclass(frozen=True, slots=True)
class BudgetItem:
    what: str
    key: str | None  # the setting it comes from, if any
    value: float
    times: int = 1

    @property
    def seconds(self) -> float:
        return self.value * self.times

    def describe(self) -> str:
        source = f"{self.key}={_num(self.value)}" if self.key else _num(self.value)
        return f"{self.times} x {source}" if self.times > 1 else f"{self.what} {source}"


@dataclass(frozen=True, slots=True)
class TimingBudget:
    """The worst-case leader change as it eats into a pod's lease."""

    ttl_seconds: float
    items: tuple[BudgetItem, ...]

    @property
    def total_seconds(self) -> float:
        return sum(item.seconds for item in self.items)

    @property
    def fits(self) -> bool:
        total = self.total_seconds
        return total <= self.ttl_seconds or math.isclose(total, self.ttl_seconds, rel_tol=1e-9)

    def describe(self) -> str:
        parts = " + ".join(item.describe() for item in self.items)
        return f"{_num(self.total_seconds)}s ({parts})"


def derive_election_max(
    ttl: float, heartbeat: float, margin: float, batch: float, retry: float
) -> float:
    """The election timeout max that leaves the budget room on every TTL that can fit."""
    fixed = heartbeat + margin + batch + retry + CLAIM_ROUND_TRIP_SECONDS
    available = max(0.0, ttl - fixed)
    floor = ELECTION_RANGE * APPENDS_PER_ELECTION_MIN * MIN_APPEND_ENTRIES_SECONDS
    return max(floor, min(MAX_DERIVED_ELECTION_SECONDS, ELECTION_SHARE * available))


def derive_timers(
    *,
    ttl: float,
    heartbeat: float,
    margin: float,
    batch: float,
    retry: float,
    election_min: float | None,
    election_max: float | None,
    append_entries: float | None,
    leader_fallback: float | None,
) -> RaftTimers:
    """The effective timers: each unset one derived from the TTL and the ones that are set."""
    derived: list[str] = []
    if election_max is None:
        election_max = derive_election_max(ttl, heartbeat, margin, batch, retry)
        derived.append("election_timeout_max_seconds")
    if election_min is None:
        election_min = election_max / ELECTION_RANGE
        derived.append("election_timeout_min_seconds")
    if append_entries is None:
        append_entries = min(
            MAX_APPEND_ENTRIES_SECONDS,
            max(MIN_APPEND_ENTRIES_SECONDS, election_min / APPENDS_PER_ELECTION_MIN),
        )
        derived.append("append_entries_period_seconds")
    if leader_fallback is None:
        leader_fallback = 3 * election_max
        derived.append("leader_fallback_timeout_seconds")
    return RaftTimers(election_min, election_max, append_entries, leader_fallback, tuple(derived))


def budget(
    *,
    ttl: float,
    heartbeat: float,
    margin: float,
    batch: float,
    retry: float,
    timers: RaftTimers,
) -> TimingBudget:
    append = timers.append_entries_period_seconds
    items = (
        BudgetItem("heartbeat interval", "lease.heartbeat_interval_seconds", heartbeat),
        BudgetItem("election timeouts", "raft.election_timeout_max_seconds",
                   timers.election_timeout_max_seconds, times=2),
        BudgetItem("append-entries period", "raft.append_entries_period_seconds", append),
        BudgetItem("claim commit", None, append + CLAIM_ROUND_TRIP_SECONDS),
        BudgetItem("renewal batch", "lease.renewal_batch_seconds", batch),
        BudgetItem("pod retry", "lease.retry_interval_seconds", retry),
        BudgetItem("safety margin", "lease.safety_margin_seconds", margin),
    )  # fmt: skip
    return TimingBudget(ttl, items)


def _num(value: float) -> str:
    return repr(round(value, 3))
