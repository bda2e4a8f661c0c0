"""Leader-only lease keeping: renewal times in memory, acknowledged only after a commit.

Renewals never go through the Raft log. The leader keeps each pod's last renewal
receipt on its monotonic clock (`LeaseTracker`) and expires a pod at receipt + TTL.
It acknowledges a heartbeat only after a Raft commit that *began after the
heartbeat arrived* (`RenewalConfirmer`): at most one small barrier entry per
batching window, shared by every heartbeat that arrived before it began. A leader
that has been deposed or cut off cannot get that commit, so it can never extend a
lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from raftorch.core.model import ApplyResult, Command
from raftorch.raft.bridge import NotLeaderError, RaftBridge
from raftorch.raft.node import RaftStatus

log = logging.getLogger(__name__)

MAX_COMMANDS_PER_BARRIER = 5000
"""A window's commands beyond this go in the next barrier entry (bounded entries)."""
STALL_PROBE_SECONDS = 0.1
"""How often the leader's `StallMeter` looks (a follower's, once a second: it credits
nothing; each look costs about 0.15 ms of CPU)."""
STALL_SECONDS = 0.25
"""A leader whose event loop woke this much later than a probe was due was deaf for that
long: the renewals that arrived meanwhile wait unread (`StallMeter`)."""


class LeaseTracker:
    """Each pod's last confirmed renewal, valid only for one leader term.

    A new leader counts every pod as renewed at the moment it became leader: no
    lease can then expire sooner than an earlier leader could have promised.
    """

    def __init__(self, ttl_seconds: float) -> None:
        self.term: int | None = None
        self._ttl = ttl_seconds
        self._renewals: dict[str, float] = {}
        self._doomed: set[str] = set()
        self._deaf: deque[tuple[float, float]] = deque()  # (when a stall ended, its length)
        self._heard: set[str] = set()  # pods renewed or registered in this term

    def become_leader(self, term: int, now: float, pod_ids: Iterable[str]) -> None:
        self.term = term
        self._renewals = dict.fromkeys(pod_ids, now)
        self._heard.clear()
        self._doomed.clear()
        self._deaf.clear()

    def step_down(self) -> None:
        self.term = None
        self._heard.clear()
        self._renewals.clear()
        self._doomed.clear()
        self._deaf.clear()

    def stalled(self, seconds: float, now: float) -> float:
        """This leader could not read renewals for `seconds` up to `now` (its event loop
        stalled): every lease counts that time as not passed. Returns the time credited.

        A leader that stalls (a long collection, the GIL held elsewhere, the process
        stopped) and then ticks before reading the heartbeats queued meanwhile would
        expire pods that renewed on time. Expiring later is always safe: the pod's own
        deadline does not move, and its slots are granted elsewhere only after the
        expiry. Bounded so that a pod that went silent is still expired: at most one
        TTL credited over any two TTLs, so no later than receipt + 2 TTL in all."""
        if self.term is None or seconds <= 0:
            return 0.0
        while self._deaf and self._deaf[0][0] < now - 3 * self._ttl:
            self._deaf.popleft()
        recent = sum(length for end, length in self._deaf if end > now - 2 * self._ttl)
        credit = min(seconds, self._ttl - recent)
        if credit <= 0:
            return 0.0
        self._deaf.append((now, credit))
        return credit

    def _since(self, last: float) -> float:
        """`last` moved on by the stalls that ended after it (see `stalled`)."""
        return last + sum(length for end, length in self._deaf if end > last)

    def doom(self, pod_ids: Iterable[str]) -> None:
        """The planner decided to expire these pods: no renewal may save them now.

        Called in the same synchronous step as the planner read the renewals, so a
        heartbeat is either seen by the plan or refused after it.
        """
        self._doomed.update(pod_ids)

    def admit(self, pod_ids: Iterable[str], now: float) -> None:
        """Pods new to the state start with a full TTL; pods gone from it are forgotten."""
        present = set(pod_ids)
        for pod_id in present - self._renewals.keys():
            self._renewals[pod_id] = now
        for pod_id in self._renewals.keys() - present:
            del self._renewals[pod_id]
        self._doomed &= present
        self._heard &= present

    def unheard_in_term(self) -> int:
        """Pods with no renewal (or registration) confirmed since this leader took office."""
        heard = self._heard
        return sum(1 for pod_id in self._renewals if pod_id not in heard)

    def registered(self, pod_id: str, now: float, term: int) -> None:
        """A pod whose registration just committed starts with a full TTL."""
        if term == self.term:
            self._renewals[pod_id] = now
            self._heard.add(pod_id)
            self._doomed.discard(pod_id)

    def renew(self, pod_id: str, receipt: float, term: int) -> bool:
        """Record a confirmed renewal. Refused when confirmed in another term, for a pod
        the planner is expiring, or for a lease that had already run out at receipt."""
        last = self._renewals.get(pod_id)
        if term != self.term or last is None or pod_id in self._doomed:
            return False
        if receipt - self._since(last) > self._ttl:
            return False
        self._renewals[pod_id] = max(last, receipt)
        self._heard.add(pod_id)
        return True

    def live(self, pod_id: str, now: float) -> bool:
        """True while the pod's lease (in this leader's view) has not run out."""
        last = self._renewals.get(pod_id)
        return (
            last is not None and now - self._since(last) <= self._ttl
            and pod_id not in self._doomed
        )  # fmt: skip

    def renewals(self) -> Mapping[str, float]:
        """Each pod's lease start as expiry counts it: its last receipt, moved on by
        this leader's stalls since (`stalled`). A lease runs out at this + TTL."""
        if not self._deaf:
            return dict(self._renewals)
        return {pod_id: self._since(last) for pod_id, last in self._renewals.items()}

    def received(self) -> Mapping[str, float]:
        """Each pod's last confirmed renewal receipt, as it happened (for display)."""
        return dict(self._renewals)

    def last_renewal(self, pod_id: str) -> float | None:
        """The receipt of the pod's last confirmed renewal (None: not tracked)."""
        return self._renewals.get(pod_id)

    def earliest_renewal(self) -> float | None:
        """The lease start that runs out first (see `renewals`), or None without pods."""
        if not self._deaf:
            return min(self._renewals.values(), default=None)
        return min(self.renewals().values(), default=None)


class StallMeter:
    """Tells the tracker when this replica's event loop stalled (`LeaseTracker.stalled`):
    a probe that sleeps STALL_PROBE_SECONDS, and `check()` before the leader plans, so a
    tick that runs first after a stall does not act on the stale receipts."""

    def __init__(self, tracker: LeaseTracker, clock: Callable[[], float]) -> None:
        self._tracker = tracker
        self._clock = clock
        self._due = clock() + STALL_PROBE_SECONDS  # when the probe should wake next

    def check(self) -> None:
        now = self._clock()
        deaf = now - self._due
        if deaf >= STALL_SECONDS:
            self._due = now
            if credit := self._tracker.stalled(deaf, now):
                log.warning("event loop stalled %.2fs: leases run out %.2fs later", deaf, credit)

    async def run(self) -> None:
        while True:
            self.check()  # first: a stall since the last look (or since made) counts
            leading = self._tracker.term is not None
            interval = STALL_PROBE_SECONDS if leading else 10 * STALL_PROBE_SECONDS
            self._due = self._clock() + interval
            await asyncio.sleep(interval)


@dataclass(frozen=True, slots=True)
class Confirmed:
    """A renewal confirmed by a barrier of `term`, and what became of the caller's commands
    (their outcome within the barrier entry, indexes relative to the caller's own list)."""

    term: int
    rejected: tuple[tuple[int, str], ...] = ()
    error: str = ""


@dataclass(slots=True)
class _Group:
    """The callers of one batching window: they share one barrier entry."""

    future: asyncio.Future[tuple[int, ApplyResult | None]]
    commands: list[Command] = field(default_factory=list)


def _refuse(groups: Iterable[_Group], why: str) -> None:
    for group in groups:
        if not group.future.done():
            group.future.set_exception(NotLeaderError(why))


class RenewalConfirmer:
    """Batches heartbeats into barrier commits (see the module docstring).

    Group commit: the commands heartbeats bring (status reports, releases) travel in the
    barrier entry itself, so one entry per window carries every pod's changes, however
    many pods there are. `confirm()` returns the term of the barrier that confirmed the
    caller, or raises NotLeaderError / OutcomeUnknownError: then the caller must not renew.
    """

    def __init__(
        self,
        bridge: RaftBridge,
        status: Callable[[], RaftStatus],
        *,
        window_seconds: float,
        stamp: Callable[[Sequence[Command]], tuple[Command, ...]] | None = None,
        max_commands: int = MAX_COMMANDS_PER_BARRIER,
    ) -> None:
        self._bridge = bridge
        self._status = status
        self._window = window_seconds
        self._stamp = stamp
        self._max = max_commands
        self._group: _Group | None = None
        self._pending: list[_Group] = []
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.barriers = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="renewal-barriers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        _refuse(self._pending, "replica is shutting down")
        self._pending, self._group = [], None

    async def confirm(self, commands: Sequence[Command] = ()) -> Confirmed:
        """Wait for the next barrier (carrying `commands`, which need the leader's stamp)."""
        if self._task is not None and self._task.done():
            self._task.result()  # surface a crashed batcher instead of hanging
        if commands and self._stamp is None:
            raise RuntimeError("this confirmer cannot carry commands: no stamp given")
        group = self._group
        if group is None or len(group.commands) + len(commands) > self._max:
            if group is not None:
                self._full.set()  # this window is full: commit it now, start another
            future: asyncio.Future[tuple[int, ApplyResult | None]] = (
                asyncio.get_running_loop().create_future()
            )
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            group = self._group = _Group(future)
            self._pending.append(group)
        first = len(group.commands)
        group.commands.extend(commands)
        self._wake.set()
        term, result = await asyncio.shield(group.future)
        if result is None or not commands:
            return Confirmed(term)
        # Entry index j is the group's command j - 1 (the stamp comes first).
        mine = range(first, first + len(commands))
        rejected = tuple((j - 1 - first, why) for j, why in result.rejected if j - 1 in mine)
        return Confirmed(term, rejected, result.error)

    async def run_once(self) -> None:
        """Commit a barrier for everyone waiting now (the waiters all arrived before it):
        one, or one per full group. Later callers wait for the next call."""
        groups, self._pending, self._group = self._pending, [], None
        try:
            for group in groups:
                try:
                    group.future.set_result(await self._barrier(group.commands))
                except Exception as exc:  # every failure means "not confirmed"
                    group.future.set_exception(exc)
        finally:  # cancelled mid-barrier (shutdown): release the waiters
            _refuse(groups, "replica is shutting down")

    async def _barrier(self, commands: list[Command]) -> tuple[int, ApplyResult | None]:
        before = self._status()
        if not before.is_leader:
            raise NotLeaderError("this replica is not the Raft leader")
        entry: tuple[Command, ...] = ()
        if commands:
            assert self._stamp is not None
            entry = self._stamp(commands)
        result = await self._bridge.submit(entry, request_id=f"barrier-{uuid.uuid4().hex}")
        after = self._status()
        # pysyncobj forwards a follower's commands to the leader: a commit alone does
        # not prove that *this* replica was leader throughout.
        if not after.is_leader or after.term != before.term:
            raise NotLeaderError("leadership changed while the renewal was confirmed")
        if result.error:  # a stale stamp refuses the whole entry: nothing was confirmed
            raise NotLeaderError(f"the barrier entry was refused: {result.error}")
        self.barriers += 1
        return before.term, (result if commands else None)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        started = -math.inf
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                continue  # woken by callers whom the last barrier already took
            # At most one barrier per window, counted from the last one's start: the first
            # heartbeat after a quiet spell is confirmed at once, and under load every
            # window's heartbeats share one entry. A full group goes out at once.
            wait = started + self._window - loop.time()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._full.wait()
            self._full.clear()
            started = loop.time()
            await self.run_once()
