"""The leader loop: on the Raft leader, plan from a snapshot and commit the plan.

Each tick (`run_once`) on the leader: adopt a new term (every pod counts as renewed
now; the epoch floor is raised above anything PostgreSQL has seen before the first
grant), take a snapshot, ask the pure planner, and commit the plan as one entry.
Followers only keep their lease tracker empty. Nothing here acts on an uncommitted
decision: expiry and reassignment exist only as committed commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from persistence.audit import DISABLED, AuditTrail
from protocol.errors import RaftorchError, UnavailableError
from raftorch.core.model import (
    AdapterSpec,
    ApplyResult,
    ClaimLeadership,
    Command,
    LeaderStamp,
    Plan,
    Policy,
    RaiseEpochFloor,
    RemovePod,
    View,
)
from raftorch.core.ownership import Snapshot
from raftorch.core.planner import plan
from raftorch.leader.leases import LeaseTracker
from raftorch.leader.reporting import Reporter
from raftorch.raft.bridge import NotLeaderError, RaftBridge
from raftorch.raft.metrics import RaftMetrics
from raftorch.raft.node import RaftStatus

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class EpochFloorSource(Protocol):
    """The highest epoch recorded outside Raft (PostgreSQL's lease history and fences)."""

    async def max_epoch(self) -> int: ...


class AdapterSource(Protocol):
    """What should run: the enabled adapters from the configuration cache."""

    def specs(self) -> Mapping[str, AdapterSpec]: ...


class StateSource(Protocol):
    def snapshot(self) -> Snapshot: ...

    def status(self) -> RaftStatus: ...


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """What one tick did (for tests and logs)."""

    leader: bool
    floor_raised_to: int | None = None
    plan: Plan = field(default_factory=Plan)
    result: ApplyResult | None = None


class LeaderLoop:
    """Steppable from tests with `run_once()`; `run()` ticks at a fixed cadence."""

    def __init__(
        self,
        node: StateSource,
        bridge: RaftBridge,
        adapters: AdapterSource,
        floor_source: EpochFloorSource,
        policy: Policy,
        *,
        tick_seconds: float,
        tracker: LeaseTracker | None = None,
        metrics: RaftMetrics | None = None,
        reporter: Reporter | None = None,
        audit: AuditTrail = DISABLED,
        clock: Clock = time.monotonic,
    ) -> None:
        self._node = node
        self._bridge = bridge
        self._adapters = adapters
        self._floor_source = floor_source
        self._policy = policy
        self._tick = tick_seconds
        self.tracker = tracker or LeaseTracker(policy.ttl_seconds)
        self._metrics = metrics
        self._reporter = reporter
        self._audit = audit
        self._clock = clock
        self._stamp: LeaderStamp | None = None
        self._last_leader: str | None = None
        self.wake = asyncio.Event()

    async def run_once(self) -> TickOutcome:
        status = self._node.status()
        self._observe(status)
        if not status.is_leader:
            self.tracker.step_down()
            self._stamp = None
            return TickOutcome(leader=False)
        floor = None
        if self._stamp is None or self._stamp.term != status.term:
            floor = await self._take_office(status)
        snapshot = self._node.snapshot()
        now = self._clock()
        self.tracker.admit(snapshot.pods, now)
        renewals = self.tracker.renewals()
        view = View(self._adapters.specs(), snapshot.pods, snapshot.slots, renewals)
        decided = plan(view, now, self._policy)
        # Same synchronous step as reading the renewals: a heartbeat confirmed from
        # now on cannot save a pod this plan expires.
        self.tracker.doom(c.pod_id for c in decided.commands if isinstance(c, RemovePod))
        if not decided:
            return TickOutcome(leader=True, floor_raised_to=floor, plan=decided)
        entry = self.stamped(decided.commands)
        result = await self._bridge.submit(entry)
        self._count(result, "plan")
        if self._reporter is not None:
            self._reporter.committed(snapshot, entry, result, renewals)
        for reason in decided.reasons:
            log.info("plan term=%d %s", status.term, reason)
        return TickOutcome(leader=True, floor_raised_to=floor, plan=decided, result=result)

    @property
    def established(self) -> bool:
        """This replica leads and has claimed its term (it may grant and renew)."""
        status = self._node.status()
        return status.is_leader and self._stamp is not None and self._stamp.term == status.term

    def stamped(self, commands: Sequence[Command]) -> tuple[Command, ...]:
        """`commands` as an entry of this leader's term (refused if a newer leader claimed)."""
        status = self._node.status()
        if self._stamp is None or not status.is_leader or self._stamp.term != status.term:
            raise NotLeaderError("this replica is not (yet) the established leader")
        return (self._stamp, *commands)

    async def run(self) -> None:
        """Tick at a fixed cadence (no drift); `wake.set()` ticks early."""
        next_tick = time.monotonic()
        while True:
            try:
                await self.run_once()
            except RaftorchError as exc:  # not leader any more, outcome unknown, DB down
                log.warning("leader tick failed code=%s error=%s", exc.code, exc.message)
            except Exception:  # a bug in one tick must not end the loop for good
                log.exception("leader tick crashed")
            next_tick += self._tick
            delay = next_tick - time.monotonic()
            if delay < 0:  # fell behind: skip missed ticks rather than burst
                next_tick = time.monotonic()
                delay = 0
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)

    async def _take_office(self, status: RaftStatus) -> int:
        """A new term: claim it and raise the epoch floor in one entry, before any grant.

        Only after that commit does the tracker count every pod as renewed (later is
        safer: no lease expires sooner than an earlier leader could have promised).
        """
        snapshot = self._node.snapshot()
        from_database = True
        try:
            recorded = await self._floor_source.max_epoch()
        except UnavailableError:
            if not snapshot.floor_confirmed:
                raise  # fresh Raft state: only PostgreSQL knows which epochs were used
            # The Raft state has seen PostgreSQL's floor, and every epoch since went through it.
            log.warning("epoch floor: database unavailable; Raft counter=%d suffices",
                        snapshot.epoch_counter)  # fmt: skip
            recorded, from_database = 0, False
        claim = ClaimLeadership(status.self_id, status.term)
        result = await self._bridge.submit([claim, RaiseEpochFloor(recorded, from_database)])
        self._count(result, "claim")
        if not result.ok:
            raise NotLeaderError(f"leadership claim refused: {result.rejected or result.error}")
        self._stamp = LeaderStamp(status.self_id, status.term)
        self.tracker.become_leader(status.term, self._clock(), self._node.snapshot().pods)
        log.info("leader term=%d pods=%d floor=%d", status.term, len(snapshot.pods), recorded)
        self._audit.record("leader", term=status.term, floor=recorded)
        if self._reporter is not None:
            self._reporter.leader_change(status.term)
        return recorded

    def _count(self, result: ApplyResult, purpose: str) -> None:
        if self._metrics is None:
            return
        self._metrics.entries_submitted.labels(purpose=purpose).inc()
        if result.error:
            self._metrics.apply_errors.inc()
        if result.rejected:
            self._metrics.rejected_commands.inc(len(result.rejected))

    def _observe(self, status: RaftStatus) -> None:
        if status.leader_id != self._last_leader:
            log.info("raft leader=%s term=%d", status.leader_id, status.term)
            if self._last_leader is not None and self._metrics is not None:
                self._metrics.leader_changes.inc()
            self._last_leader = status.leader_id
        if self._metrics is not None:
            role = "leader" if status.is_leader else "follower"
            self._metrics.observe_role(role, status.term, status.commit_index)
