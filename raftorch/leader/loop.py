"""The leader loop: on the Raft leader, plan from a snapshot and commit the plan.

Each tick (`run_once`) on the leader: adopt a new term (claim it in one small entry;
from that commit on every pod counts as renewed and renewals are acknowledged), take a
snapshot, ask the pure planner, and commit the plan as one entry. Nothing here waits
for PostgreSQL: the epoch floor (needed before the first grant only, and only when the
Raft state has never seen it) is read by a task of its own with a short timeout, and a
leader whose configuration cache never loaded still expires pods. Followers keep their
lease tracker empty. Nothing here acts on an uncommitted decision."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from persistence.audit import DISABLED, AuditTrail
from protocol.errors import RaftorchError
from protocol.values import PodState
from raftorch.config.settings import PlacementConfig
from raftorch.core.model import (
    MAX_EPOCH,
    AdapterSpec,
    AddStandby,
    ApplyResult,
    ClaimLeadership,
    Command,
    Grant,
    Handoff,
    LeaderStamp,
    Moves,
    Plan,
    Policy,
    RaiseEpochFloor,
    RemovePod,
    View,
)
from raftorch.core.ownership import Snapshot
from raftorch.core.planner import plan
from raftorch.leader.cadence import Cadence, Sweep
from raftorch.leader.leases import LeaseTracker, StallMeter
from raftorch.leader.reporting import Reporter
from raftorch.raft.bridge import NotLeaderError, RaftBridge
from raftorch.raft.metrics import RaftMetrics
from raftorch.raft.node import RaftStatus

log = logging.getLogger(__name__)

Clock = Callable[[], float]
FLOOR_TIMEOUT_SECONDS = 2.0
"""One attempt to read the epoch floor from PostgreSQL; retried until it succeeds."""
EPOCH_HEADROOM_WARNING = 2**40
"""A floor this close to `MAX_EPOCH` did not come from real grants (a million a second
would take decades to get there): someone wrote it, and the operator must hear of it."""
FLOOR_RETRY_SECONDS = 0.5
FULL_PASS_SECONDS = 10.0
"""Besides planning what changed, a leader looks at every adapter this often (a backstop),
a slice of them each tick (`raftorch.leader.cadence.Sweep`)."""
UNHEARD_PODS = 100
"""A plan after one the grant budget cut short waits until all but this many of the pods
given work by earlier plans have been heard from since (`LeaderLoop._pace`)."""
OPENING_TTLS = 1 / 3
"""The longest a new term's first plan waits for the pods to renew (`_open_term`)."""
PACE_PROBE_SECONDS = 0.02
PACE_LAG_SECONDS = 0.05
"""Pacing waits while a probe's sleep of PACE_PROBE_SECONDS overruns by more than this."""
ENTRY_COMMANDS = 15_000
"""A plan longer than this goes out as several entries, in order (each with the leader's
stamp): a planned command encodes to at most 170 bytes (63-character pod ids), so an
entry stays under 2.6 MB, inside `MAX_ENTRY_BYTES`, whatever a plan holds (grants and
standbys up to their budgets, revokes without one)."""


class EpochFloorSource(Protocol):
    """The highest epoch recorded outside Raft (PostgreSQL's lease history and fences)."""

    async def max_epoch(self) -> int: ...


class AdapterSource(Protocol):
    """What should run: the adapters from the configuration cache, once it has loaded."""

    @property
    def loaded(self) -> bool: ...

    def specs(self) -> Mapping[str, AdapterSpec]: ...

    def take_changed(self) -> set[str] | None:
        """Adapters changed since the last call; None: any may have (a full reload)."""
        ...


class StateSource(Protocol):
    def snapshot(self) -> Snapshot: ...

    def status(self) -> RaftStatus: ...

    @property
    def blocked(self) -> str | None: ...

    def request_leadership_transfer(self) -> None: ...


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """What one tick did (for tests and logs)."""

    leader: bool
    plan: Plan = field(default_factory=Plan)
    result: ApplyResult | None = None
    stepped_down: bool = False


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
        placement: PlacementConfig | None = None,
        stalls: StallMeter | None = None,
    ) -> None:
        self._node = node
        self._stalls = stalls  # None: stalls of the event loop are not credited (tests)
        self._placement = placement or PlacementConfig()
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
        self._floor_task: asyncio.Task[None] | None = None
        self._failures = 0
        # Consecutive failed ticks after which a leader hands over: about half a TTL.
        self._max_failures = max(3, math.ceil(policy.ttl_seconds / 2 / tick_seconds))
        self._dirty: set[str] | None = None  # adapters to plan for; None: a full pass
        self._pods_seen = -1
        self._sweep = Sweep(FULL_PASS_SECONDS, tick_seconds)
        self._known_pods: frozenset[tuple[str, str]] = frozenset()  # (pod, incarnation)
        self._settle_from = -math.inf  # the last pod join (or taking office)
        self._deferring_since: float | None = None
        self._rebalance_until = -math.inf
        self._next_moves = 0.0
        self.wake = asyncio.Event()
        self._granted: dict[str, float] = {}  # pod -> when a plan gave it work (not heard since)
        self._paced = False  # the last plan was cut short by the budget

    async def run_once(self) -> TickOutcome:
        status = self._node.status()
        self._observe(status)
        if not status.is_leader:
            self._step_down_locally()
            return TickOutcome(leader=False)
        if self._node.blocked is not None:
            return self._hand_over(f"this replica's applier is blocked: {self._node.blocked}")
        if self._stamp is None or self._stamp.term != status.term:
            await self._take_office(status)
        snapshot = self._node.snapshot()
        if self._stalls is not None:
            self._stalls.check()  # a stall just ended: credit it before reading renewals
        now = self._clock()
        self.tracker.admit(snapshot.pods, now)
        renewals = self.tracker.renewals()
        if not snapshot.floor_confirmed:
            self._ensure_floor_task(status.term)
        specs = self._adapters.specs() if self._adapters.loaded else None
        dirty = self._take_dirty(snapshot, now)
        self._note_joins(snapshot, now)
        moves = self._moves(snapshot, now)
        view = View(specs, snapshot.pods, snapshot.slots, renewals, snapshot.floor_confirmed,
                    dirty=None if dirty is None else frozenset(dirty),
                    pod_slots=snapshot.pod_slots, adapter_slots=snapshot.adapter_slots,
                    unassigned=snapshot.unassigned, place_new=self._settled(now),
                    moves=moves)  # fmt: skip
        decided = plan(view, now, self._policy)
        self._carry(decided.pending)
        if any(isinstance(c, Handoff) for c in decided.commands):
            self._next_moves = now + 1.0  # budgets are per second
        # Same synchronous step as reading the renewals: a heartbeat confirmed from
        # now on cannot save a pod this plan expires.
        self.tracker.doom(c.pod_id for c in decided.commands if isinstance(c, RemovePod))
        if not decided:
            return TickOutcome(leader=True, plan=decided)
        result = await self._commit(snapshot, decided.commands, self.tracker.received())
        if decided.pending and result.ok:
            # The budget cut this plan short and it went through: go on at once (paced,
            # see `_pace`). Not after a plan that changed nothing (slots waiting for
            # joining pods to settle) nor one the appliers refused in part: those wait
            # for the next tick.
            self._paced = True
            self.wake.set()
        for reason in decided.reasons:
            log.info("plan term=%d %s", status.term, reason)
        return TickOutcome(leader=True, plan=decided, result=result)

    async def _commit(
        self, snapshot: Snapshot, commands: Sequence[Command], renewals: Mapping[str, float]
    ) -> ApplyResult:
        """Commit a plan in entries of at most ENTRY_COMMANDS, in order, stopping at the
        first that does not fully go through (the rest is planned again from the state)."""
        for start in range(0, len(commands), ENTRY_COMMANDS):
            entry = self.stamped(commands[start : start + ENTRY_COMMANDS])
            result = await self._bridge.submit(entry)
            self._count(result, "plan")
            committed = self._clock()
            for command in entry:
                if isinstance(command, (Grant, AddStandby)):
                    self._granted[command.pod_id] = committed
            if self._reporter is not None:
                self._reporter.committed(snapshot, entry, result, renewals)
            if not result.ok:
                break
        return result

    def _take_dirty(self, snapshot: Snapshot, now: float) -> set[str] | None:
        """What this plan must look at: the adapters changed since the last one and the
        backstop's next slice (`Sweep`), or all of them (after taking office, when pods
        came or went, after the configuration was reloaded)."""
        changed = self._adapters.take_changed() if self._adapters.loaded else None
        full = (
            self._dirty is None or changed is None
            or snapshot.pods_revision != self._pods_seen or not snapshot.floor_confirmed
        )  # fmt: skip
        self._pods_seen = snapshot.pods_revision
        if full:
            self._dirty = set()
            return None
        assert self._dirty is not None and changed is not None
        swept = self._sweep.next(set(self._adapters.specs()) | set(snapshot.adapter_slots))
        dirty, self._dirty = self._dirty | changed | swept, set()
        return dirty

    def request_rebalance(self) -> None:
        """An operator's one-shot rebalance: restore the spread now (within the window),
        at the configured moves per second (asking again does not lift them)."""
        self._rebalance_until = self._clock() + self._placement.rebalance_window_seconds
        self.wake.set()

    def _note_joins(self, snapshot: Snapshot, now: float) -> None:
        """Pods new since the last tick start the settle window (and, `on_join`, a window
        in which the spread is restored). A pod restarted under the same id is new too:
        its sessions failed over when it registered again."""
        pods = frozenset((p, info.incarnation) for p, info in snapshot.pods.items())
        if pods - self._known_pods:
            self._settle_from = now
            if self._placement.rebalance == "on_join" and self._known_pods:
                self._rebalance_until = now + self._placement.rebalance_window_seconds
        self._known_pods = pods

    def _settled(self, now: float) -> bool:
        """May slots never granted be placed now? Not while pods are still joining, for at
        most a TTL in all (a steady trickle of pods must not hold new work back for good)."""
        if now - self._settle_from >= self._placement.settle_seconds:
            self._deferring_since = None
            return True
        if self._deferring_since is None:
            self._deferring_since = now
        return now - self._deferring_since >= self._policy.ttl_seconds

    def _moves(self, snapshot: Snapshot, now: float) -> Moves:
        if now < self._next_moves:
            return Moves()
        placement = self._placement
        rebalancing = placement.rebalance == "continuous" or now < self._rebalance_until
        draining = any(p.state is PodState.DRAINING for p in snapshot.pods.values())
        return Moves(
            rebalance=max(1, int(placement.rebalance_moves_per_second)) if rebalancing else 0,
            drain=max(1, int(placement.drain_moves_per_second)) if draining else 0,
        )

    def _carry(self, pending: frozenset[str]) -> None:
        """Adapters whose work the grant budget cut short: planned again next tick."""
        if pending and self._dirty is not None:
            self._dirty |= pending

    @property
    def established(self) -> bool:
        """This replica leads and has claimed its term (it may renew leases)."""
        status = self._node.status()
        return status.is_leader and self._stamp is not None and self._stamp.term == status.term

    def stamped(self, commands: Sequence[Command]) -> tuple[Command, ...]:
        """`commands` as an entry of this leader's term (refused if a newer leader claimed)."""
        if (stamp := self._stamp) is None or not self.established:
            raise NotLeaderError("this replica is not (yet) the established leader")
        return (stamp, *commands)

    def next_expiry(self) -> float | None:
        """When the earliest lease this leader tracks runs out (its monotonic clock)."""
        earliest = self.tracker.earliest_renewal()
        return None if earliest is None else earliest + self._policy.ttl_seconds

    async def run(self) -> None:
        """Tick at a fixed cadence (no drift), and at the moment a lease runs out;
        `wake.set()` ticks early. Repeated failures make the leader hand over."""
        cadence = Cadence(self._tick, time.monotonic())
        meter = self._stalls
        stalls = None if meter is None else asyncio.create_task(meter.run(), name="stalls")
        try:
            while True:
                await self._tick_once(cadence)
        finally:
            if stalls is not None:
                stalls.cancel()

    async def _tick_once(self, cadence: Cadence) -> None:
        if self._must_pace():
            await self._pace()
        # Cleared before the tick, not after: a wake during it (more work carried
        # over, a change the tick's snapshot may have missed) ticks again at once.
        self.wake.clear()
        try:
            await self._open_term()
            await self.run_once()
            self._failures = 0
        except RaftorchError as exc:  # not leader any more, outcome unknown
            self._failed(f"code={exc.code} error={exc.message}")
        except Exception as exc:  # a bug in one tick must not end the loop for good
            log.exception("leader tick crashed")
            self._failed(f"{type(exc).__name__}: {exc}")
        now = time.monotonic()
        wake_at = cadence.after_tick(now)
        expiry = self.next_expiry() if self.established else None
        if expiry is not None:
            wake_at = min(wake_at, max(now, expiry + 0.001))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, wake_at - now)):
                await self.wake.wait()

    async def _open_term(self) -> None:
        """On winning an election (`run()` only): claim the term, then let every pod renew
        (OPENING_TTLS of a TTL at most) before the term's first plan, a full pass holding
        the event loop 0.2-0.4 s at 100,000 slots (docs/performance.md, "The first plan of
        a new term"). No lease runs out meanwhile (taking office renewed them all)."""
        self._observe(status := self._node.status())
        if status.is_leader and not self.established and self._node.blocked is None:
            await self._take_office(status)
            until = self._clock() + OPENING_TTLS * self._policy.ttl_seconds
            while self.established and self._clock() < until:
                if not self.tracker.unheard_in_term():
                    break
                await asyncio.sleep(PACE_PROBE_SECONDS)

    def _must_pace(self) -> bool:
        """Whether the next tick first waits for the pods given work (`_pace`): after a
        plan the budget cut short, and whenever more than UNHEARD_PODS of them have not
        been heard from since, however many plans (each within the budget) gave them work."""
        paced, self._paced = self._paced, False
        return paced or (len(self._granted) > UNHEARD_PODS and self._unheard() > UNHEARD_PODS)

    async def _pace(self) -> None:
        """Before more placing (see `_must_pace`): wait until all but UNHEARD_PODS of
        the pods given work have been heard from since. A pod that is not heard from has
        expired within a TTL, so the wait ends by then (and at once when any lease runs
        out: the tick that expires it waits for nobody).

        Each pod a plan touches costs this leader a few requests (a long-poll answer, a
        new poll, a report): the next plan goes only as fast as the pods and this leader
        keep up; a failover to a few pods never waits. It also waits while this event
        loop is late (a probe overran by PACE_LAG_SECONDS). Plans back to back, or after
        a heartbeat interval, expired live pods (docs/performance.md, "Waiting for the
        pods given work, and the leader's own stalls")."""
        deadline = self._clock() + self._policy.ttl_seconds
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(PACE_PROBE_SECONDS)
            late = loop.time() - before - PACE_PROBE_SECONDS
            if (unheard := self._unheard()) <= UNHEARD_PODS and late <= PACE_LAG_SECONDS:
                return
            expiry = self.next_expiry()
            if expiry is not None and self._clock() >= expiry:
                return  # a lease ran out: the tick that expires it waits for nobody
            if self._clock() >= deadline:
                log.info("placement paced: %d pods given work not heard from since, "
                         "event loop %.0f ms late", unheard, late * 1000)  # fmt: skip
                return

    def _unheard(self) -> int:
        """Pods given work by earlier plans with no renewal received since."""
        for pod_id, at in list(self._granted.items()):
            last = self.tracker.last_renewal(pod_id)
            if last is None or last > at:  # heard from since, or gone
                del self._granted[pod_id]
        return len(self._granted)

    def _failed(self, why: str) -> None:
        self._failures += 1
        self._dirty = None  # what the failed tick took on is planned again, in full
        if self._metrics is not None:
            self._metrics.tick_errors.inc()
        log.warning("leader tick failed failures=%d %s", self._failures, why)
        if self._failures >= self._max_failures and self._node.status().is_leader:
            self._hand_over(f"{self._failures} leader ticks in a row failed")
            self._failures = 0

    def _hand_over(self, why: str) -> TickOutcome:
        """A leader that cannot do its job asks a follower to take over."""
        log.error("leader steps down: %s", why)
        self._node.request_leadership_transfer()
        self._step_down_locally()
        return TickOutcome(leader=True, stepped_down=True)

    def _step_down_locally(self) -> None:
        self.tracker.step_down()
        self._granted.clear()
        self._stamp = None
        self._dirty = None  # a new term plans everything afresh
        if self._floor_task is not None:
            self._floor_task.cancel()
            self._floor_task = None

    async def _take_office(self, status: RaftStatus) -> None:
        """A new term: claim it in one small entry, then count every pod as renewed. Only
        after that commit are renewals acknowledged (later is safer: no lease expires
        sooner than an earlier leader could have promised). PostgreSQL is not asked."""
        self._step_down_locally()
        claim = ClaimLeadership(status.self_id, status.term)
        result = await self._bridge.submit([claim])
        self._count(result, "claim")
        if not result.ok:
            raise NotLeaderError(f"leadership claim refused: {result.rejected or result.error}")
        self._stamp = LeaderStamp(status.self_id, status.term)
        snapshot = self._node.snapshot()
        self._settle_from = self._clock()  # pods may be re-registering with a new leader
        self.tracker.become_leader(status.term, self._clock(), snapshot.pods)
        log.info("leader term=%d pods=%d floor_confirmed=%s", status.term, len(snapshot.pods),
                 snapshot.floor_confirmed)  # fmt: skip
        self._audit.record("leader", term=status.term)
        if self._reporter is not None:
            self._reporter.leader_change(status.term)

    def _ensure_floor_task(self, term: int) -> None:
        if self._floor_task is None or self._floor_task.done():
            self._floor_task = asyncio.create_task(self._raise_floor(term), name="epoch-floor")

    async def _raise_floor(self, term: int) -> None:
        """Read PostgreSQL's highest epoch and commit it as the floor (before any grant).
        Needed only while the Raft state has never seen it (a fresh cluster, a rebuilt
        one): afterwards every epoch ever issued went through the Raft counter."""
        while self.established and not self._node.snapshot().floor_confirmed:
            try:
                async with asyncio.timeout(FLOOR_TIMEOUT_SECONDS):
                    recorded = await self._floor_source.max_epoch()
                if recorded > MAX_EPOCH - EPOCH_HEADROOM_WARNING:
                    log.error(
                        "epoch floor from the database is %d, %d below the largest epoch: "
                        "grants stop when it is reached; see docs/security.md (epoch floor)",
                        recorded, MAX_EPOCH - recorded,
                    )  # fmt: skip
                entry = self.stamped([RaiseEpochFloor(recorded, from_database=True)])
                result = await self._bridge.submit(entry)
                self._count(result, "floor")
                log.info("epoch floor term=%d floor=%d from the database", term, recorded)
                self.wake.set()
                return
            except (RaftorchError, TimeoutError) as exc:
                log.warning("epoch floor: not read yet (%s); grants wait", exc)
            await asyncio.sleep(FLOOR_RETRY_SECONDS)

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
