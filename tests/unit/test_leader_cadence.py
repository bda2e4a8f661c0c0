"""When the leader loop ticks: a fixed cadence that early ticks do not push ahead, and a
plan the grant budget cut short goes on at once (a mass failover is a run of plans).

Against the real appliers behind the fake Raft of tests/unit/test_rebalance_leader.py
(it commits every entry at once) and a fake clock; no timing is asserted.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import cast

import pytest

from protocol.values import DeploymentMode, SlotStatus
from raftorch.core.model import AdapterSpec, Grant, Policy, RegisterPod, RemovePod
from raftorch.leader import loop as loop_module
from raftorch.leader.cadence import Cadence, Sweep
from raftorch.leader.leases import LeaseTracker
from raftorch.leader.loop import OPENING_TTLS, UNHEARD_PODS, LeaderLoop, TickOutcome
from raftorch.raft.bridge import RaftBridge
from tests.unit.test_rebalance_leader import TERM, TTL, Adapters, FakeRaft, Floor

BUDGET = 10
ADAPTERS = 35


def test_early_ticks_do_not_move_the_periodic_ones() -> None:
    cadence = Cadence(0.25, 100.0)
    assert cadence.after_tick(100.01) == 100.25
    # Woken many times before it is due (adapters enabled one by one, plans carried
    # over): the periodic tick stays where it was.
    for i in range(1, 50):
        assert cadence.after_tick(100.01 + i * 0.004) == 100.25
    assert cadence.after_tick(100.26) == 100.5


def test_the_backstop_covers_every_adapter_within_its_period_a_slice_per_plan() -> None:
    sweep = Sweep(10.0, 0.25)  # the shipped period and tick: 40 plans
    ids = {f"a{i:04d}" for i in range(1000)}
    slices = [sweep.next(ids) for _ in range(40)]
    assert set().union(*slices) == ids
    assert max(len(one) for one in slices) == 25  # never a plan over all of them
    grown = ids | {"late"}  # an adapter added meanwhile is reached within a period too
    assert "late" in set().union(*(sweep.next(grown) for _ in range(41)))
    assert Sweep(10.0, 0.25).next(set()) == set()
    assert Sweep(10.0, 0.25).next({"only"}) == {"only"}


def test_a_stall_skips_the_missed_ticks_without_a_burst() -> None:
    cadence = Cadence(0.25, 100.0)
    assert cadence.after_tick(100.0) == 100.25
    assert cadence.after_tick(103.0) == 103.0  # late: one tick now, not twelve
    assert cadence.after_tick(103.01) == 103.25


class Leader:
    """The loop with a small grant budget, one pod renewing at every tick."""

    def __init__(self, adapters: int = ADAPTERS, budget: int = BUDGET) -> None:
        self.raft = FakeRaft()
        self.now = 1000.0
        specs = {f"a{i}": AdapterSpec(f"a{i}", "fix", DeploymentMode.SINGLE, enabled=True)
                 for i in range(adapters)}  # fmt: skip
        policy = Policy(ttl_seconds=TTL, max_grants_per_tick=budget)
        self.loop = LeaderLoop(self.raft, cast(RaftBridge, self.raft), Adapters(specs), Floor(),
                               policy, tick_seconds=0.25, clock=lambda: self.now)  # fmt: skip

    def join(self, pod_id: str, capacity: int = 1000) -> None:
        self.raft.apply([RegisterPod(pod_id, f"{pod_id}-1", "", frozenset({"fix"}), capacity)])

    def tick(self, seconds: float) -> TickOutcome:
        """As `run()` does: clear the wake, tick; the wake then says "tick again at once"."""
        self.now += seconds
        for pod_id in self.raft.snapshot().pods:
            self.loop.tracker.renew(pod_id, self.now, TERM)
        self.loop.wake.clear()
        return asyncio.run(self.loop.run_once())

    def owners(self) -> set[str | None]:
        return {s.owner for s in self.raft.snapshot().slots.values()}


def test_a_plan_cut_short_by_the_budget_goes_on_at_once() -> None:
    leader = Leader()
    leader.join("p0")
    waiting = leader.tick(0.0)
    assert not waiting.plan.commands and waiting.plan.pending  # new slots wait for p0 to settle
    assert not leader.loop.wake.is_set()  # nothing done: no busy loop while settling
    while not (outcome := leader.tick(1.0)).plan.commands:  # until p0 has settled
        assert not leader.loop.wake.is_set()
    grants = []
    while outcome.plan.commands:
        grants.append(sum(isinstance(c, Grant) for c in outcome.plan.commands))
        assert leader.loop.wake.is_set() == bool(outcome.plan.pending)
        outcome = leader.tick(0.0)
    assert grants == [10, 10, 10, 5]
    assert leader.owners() == {"p0"}


def test_a_mass_failover_runs_plan_after_plan() -> None:
    leader = Leader()
    leader.join("p0")
    while leader.tick(1.0).plan.commands or leader.loop.wake.is_set() or not leader.owners():
        pass
    leader.join("p1")
    incarnation = leader.raft.snapshot().pods["p0"].incarnation
    leader.raft.apply([RemovePod("p0", incarnation, reason="expired")])
    ticks = 0
    while True:
        leader.tick(0.0)
        ticks += 1
        if not leader.loop.wake.is_set():
            break
    assert ticks == 4  # 10 + 10 + 10 + 5 failovers, each plan followed by the next at once
    slots = leader.raft.snapshot().slots.values()
    assert {s.owner for s in slots} == {"p1"} and all(s.epoch > 1 for s in slots)
    assert all(s.status is SlotStatus.CLAIMING for s in slots)


def test_a_long_plan_goes_out_in_entries_of_bounded_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plan of 10 grants, at most 3 of its commands an entry (each with the leader's
    stamp besides): four entries, applied in the plan's order, every grant in."""
    monkeypatch.setattr(loop_module, "ENTRY_COMMANDS", 3)
    leader = Leader(adapters=10, budget=1000)
    leader.join("p0")
    entries_before = leader.raft.entries
    while not (outcome := leader.tick(1.0)).plan.commands:  # until p0 has settled
        entries_before = leader.raft.entries
    assert len(outcome.plan.commands) == 10
    assert leader.raft.entries - entries_before == 4  # ceil(10 / 3) entries
    assert outcome.result is not None and outcome.result.ok
    slots = leader.raft.snapshot().slots
    planned = [c.slot for c in outcome.plan.commands if isinstance(c, Grant)]
    assert sorted(slots) == sorted(planned)
    epochs = [slots[slot].epoch for slot in planned]
    assert epochs == sorted(epochs)  # epochs are handed out in the order of application
    assert leader.owners() == {"p0"}


class Ticks(LeaderLoop):
    """A loop whose first tick leaves work behind (as a plan cut short by the budget)."""

    ticks = 0
    second: asyncio.Event

    async def run_once(self) -> TickOutcome:
        self.ticks += 1
        if self.ticks == 1:
            self.wake.set()
        else:
            self.second.set()
        return TickOutcome(leader=False)


def test_a_wake_during_a_tick_is_not_lost() -> None:
    async def scenario() -> None:
        raft = FakeRaft()
        loop = Ticks(raft, cast(RaftBridge, raft), Adapters({}), Floor(), Policy(ttl_seconds=TTL),
                     tick_seconds=3600.0)  # fmt: skip
        loop.second = asyncio.Event()
        task = asyncio.create_task(loop.run())
        try:
            # The periodic tick is an hour away: only the wake can bring the second tick.
            await asyncio.wait_for(loop.second.wait(), 30.0)
        finally:
            task.cancel()
        assert loop.ticks == 2

    asyncio.run(scenario())


class Looks:
    """Sets `looked` once `look()` was called three times (since `looks` was reset)."""

    looks = 0
    looked: asyncio.Event

    def look(self) -> None:
        self.looks += 1
        if self.looks >= 3:
            self.looked.set()


class Counted(Looks, LeaderLoop):
    """Counts how often the pacing looked at the pods it waits for."""

    def _unheard(self) -> int:
        self.look()
        return super()._unheard()


def test_more_placing_waits_until_the_pods_given_work_were_heard_from() -> None:
    pods = 3 * UNHEARD_PODS
    leader = Leader(adapters=2 * pods, budget=2 * UNHEARD_PODS)
    leader.loop.__class__ = Counted  # the same loop, with its looks counted
    loop = cast(Counted, leader.loop)
    for i in range(pods):
        leader.join(f"p{i:03d}", capacity=1)  # one slot each: every grant is a new pod
    while not (outcome := leader.tick(1.0)).plan.commands:  # until the pods have settled
        pass
    granted = {c.pod_id for c in outcome.plan.commands if isinstance(c, Grant)}
    assert len(granted) == 2 * UNHEARD_PODS and outcome.plan.pending

    async def scenario() -> None:
        loop.looked = asyncio.Event()
        pacing = asyncio.create_task(loop._pace())
        async with asyncio.timeout(30.0):
            await loop.looked.wait()  # it looked three times and is still waiting
        assert not pacing.done()
        heard = sorted(granted)[: len(granted) - UNHEARD_PODS]
        for pod_id in heard:  # their reports arrive after the grant
            assert loop.tracker.renew(pod_id, leader.now + 0.5, TERM)
        async with asyncio.timeout(30.0):
            await pacing  # all but UNHEARD_PODS heard from: the next plan may go

    asyncio.run(scenario())


def test_placing_waits_for_silent_pods_given_work_until_their_leases_run_out() -> None:
    """Not only a heartbeat interval, as it used to: at 1,000 pods that placed more on
    pods that had not absorbed the last plans, and their leases lapsed."""
    leader = Leader(adapters=400, budget=2 * UNHEARD_PODS)
    leader.loop.__class__ = Counted
    loop = cast(Counted, leader.loop)
    for i in range(400):
        leader.join(f"p{i:03d}", capacity=1)
    while not leader.tick(1.0).plan.commands:
        pass

    async def looked_again(pacing: asyncio.Task[None]) -> None:
        """Until it looked three more times, or stopped waiting."""
        loop.looks, loop.looked = 0, asyncio.Event()
        looking = asyncio.create_task(loop.looked.wait())
        await asyncio.wait({looking, pacing}, timeout=30.0, return_when=asyncio.FIRST_COMPLETED)
        looking.cancel()

    async def scenario() -> None:
        pacing = asyncio.create_task(loop._pace())
        await looked_again(pacing)
        assert not pacing.done()
        leader.now += TTL / 3  # nobody answered for a heartbeat interval: still waiting
        await looked_again(pacing)
        assert not pacing.done()
        leader.now += TTL * 2 / 3  # their leases (renewed as the plan went out) ran out
        async with asyncio.timeout(30.0):
            await pacing
        assert loop._unheard() == 2 * UNHEARD_PODS  # it went on without them

    asyncio.run(scenario())


def test_placing_waits_while_the_event_loop_runs_late() -> None:
    """Every pod given work was heard from, but something hogs this replica's event loop
    (heartbeats queued behind the last plan's answers): the next plan waits, for at most a
    TTL."""
    leader = Leader(adapters=400, budget=2 * UNHEARD_PODS)
    leader.loop.__class__ = Counted
    loop = cast(Counted, leader.loop)
    for i in range(400):
        leader.join(f"p{i:03d}", capacity=1)
    while not (outcome := leader.tick(1.0)).plan.commands:
        pass
    for pod_id in {c.pod_id for c in outcome.plan.commands if isinstance(c, Grant)}:
        assert loop.tracker.renew(pod_id, leader.now + 0.5, TERM)

    def hog() -> None:  # holds the event loop for longer than a probe may overrun, again
        until = time.perf_counter() + 3 * loop_module.PACE_LAG_SECONDS
        while time.perf_counter() < until:
            pass
        hogging[0] = asyncio.get_running_loop().call_soon(hog)

    hogging: list[asyncio.Handle] = []

    async def scenario() -> None:
        loop.looked = asyncio.Event()
        hogging.append(asyncio.get_running_loop().call_soon(hog))
        pacing = asyncio.create_task(loop._pace())
        try:
            async with asyncio.timeout(30.0):
                await loop.looked.wait()
            assert not pacing.done()  # everybody was heard from: only the lateness holds it
            assert loop._unheard() == 0
            leader.now += TTL
            async with asyncio.timeout(30.0):
                await pacing
        finally:
            hogging[0].cancel()

    asyncio.run(scenario())


def test_plans_within_the_budget_wait_for_the_pods_given_work_too() -> None:
    # As 100 adapters enabled one by one: plans the budget never cuts short, adding up.
    pods = 2 * UNHEARD_PODS
    leader = Leader(adapters=pods, budget=10 * pods)
    for i in range(pods):
        leader.join(f"p{i:03d}", capacity=1)
    while not (outcome := leader.tick(1.0)).plan.commands:
        pass
    granted = sorted(c.pod_id for c in outcome.plan.commands if isinstance(c, Grant))
    assert len(granted) == pods and not outcome.plan.pending  # within the budget
    assert leader.loop._must_pace()  # 200 pods given work, none heard from since
    for pod_id in granted[:UNHEARD_PODS]:
        assert leader.loop.tracker.renew(pod_id, leader.now + 0.5, TERM)
    assert not leader.loop._must_pace()  # at most UNHEARD_PODS left unheard


def test_placing_never_holds_back_the_tick_that_expires_a_pod() -> None:
    leader = Leader(adapters=400, budget=2 * UNHEARD_PODS)
    for i in range(400):
        leader.join(f"p{i:03d}", capacity=1)
    while not leader.tick(1.0).plan.commands:
        pass
    loop = leader.loop
    assert loop._unheard() == 2 * UNHEARD_PODS  # placing would wait for them...
    leader.now += TTL + 0.1  # ...but every lease has run out since (pods gone silent)

    async def scenario() -> None:
        async with asyncio.timeout(30.0):
            await loop._pace()  # at once: the clock does not move here, only expiry ends it

    asyncio.run(scenario())


class Looked(Looks, LeaseTracker):
    """Counts how often the new term's wait asked who is unheard."""

    def unheard_in_term(self) -> int:
        self.look()
        return super().unheard_in_term()


class Ticked(LeaderLoop):
    """Sets `ticked` when a tick (`run_once`) has run."""

    ticked: asyncio.Event

    async def run_once(self) -> TickOutcome:
        outcome = await super().run_once()
        self.ticked.set()
        return outcome


def opening_leader(pods: int) -> tuple[Leader, Ticked, Looked]:
    """A replica that has just won an election, with `pods` registered pods."""
    leader = Leader()
    for i in range(pods):
        leader.join(f"p{i}")
    leader.loop.__class__ = Ticked
    leader.loop.tracker.__class__ = Looked
    return leader, cast(Ticked, leader.loop), cast(Looked, leader.loop.tracker)


async def looked_again(tracker: Looked, loop: Ticked) -> None:
    """Until the wait asked three more times who is unheard, or the loop ticked."""
    tracker.looks, tracker.looked = 0, asyncio.Event()
    waits = {asyncio.create_task(tracker.looked.wait()), asyncio.create_task(loop.ticked.wait())}
    await asyncio.wait(waits, timeout=30.0, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()


@contextlib.asynccontextmanager
async def ticking(loop: Ticked) -> AsyncIterator[None]:
    """One `_tick_once`, as `run()` takes it, running in the background meanwhile."""
    loop.ticked = asyncio.Event()
    task = asyncio.create_task(loop._tick_once(Cadence(0.25, time.monotonic())))
    try:
        yield
    finally:
        task.cancel()


def test_a_new_term_plans_once_every_pod_has_renewed_with_it() -> None:
    """The term's first plan, a full pass that holds the event loop, does not stand in
    the way of the heartbeats that waited out the election (docs/performance.md)."""
    leader, loop, tracker = opening_leader(3)

    async def scenario() -> None:
        async with ticking(loop):
            await looked_again(tracker, loop)
            assert not loop.ticked.is_set()  # claimed, and waiting
            assert loop.established and tracker.unheard_in_term() == 3
            assert tracker.renew("p0", leader.now + 0.1, TERM)
            assert tracker.renew("p1", leader.now + 0.2, TERM)
            await looked_again(tracker, loop)
            assert not loop.ticked.is_set()  # p2 has not renewed yet: no plan
            assert tracker.renew("p2", leader.now + 0.3, TERM)
            async with asyncio.timeout(30.0):
                await loop.ticked.wait()  # every pod heard from: the plan goes

    asyncio.run(scenario())


def test_a_new_term_waits_for_a_silent_pod_a_third_of_a_ttl_at_most() -> None:
    leader, loop, tracker = opening_leader(2)

    async def scenario() -> None:
        async with ticking(loop):
            await looked_again(tracker, loop)
            assert not loop.ticked.is_set()
            assert tracker.renew("p0", leader.now + 0.1, TERM)
            leader.now += OPENING_TTLS * TTL * 0.9
            await looked_again(tracker, loop)
            assert not loop.ticked.is_set()  # p1 silent, the bound not reached yet
            leader.now += OPENING_TTLS * TTL * 0.1
            async with asyncio.timeout(30.0):
                await loop.ticked.wait()
            assert tracker.unheard_in_term() == 1 and loop.established
            assert tracker.live("p1", leader.now)  # its lease, renewed on taking office, runs

    asyncio.run(scenario())


def test_a_tracker_counts_the_pods_unheard_in_its_term() -> None:
    tracker = LeaseTracker(TTL)
    tracker.become_leader(TERM, 100.0, ["a", "b", "c"])
    assert tracker.unheard_in_term() == 3
    assert tracker.renew("a", 100.5, TERM)
    tracker.registered("d", 100.6, TERM)  # a registration is heard from too
    assert not tracker.renew("b", 100.7, TERM + 1)  # confirmed in another term: not heard
    assert tracker.unheard_in_term() == 2
    tracker.admit(["a", "d"], 100.8)  # b and c gone from the state
    assert tracker.unheard_in_term() == 0
    tracker.become_leader(TERM + 2, 200.0, ["a", "d"])  # another term: heard afresh
    assert tracker.unheard_in_term() == 2
    tracker.step_down()
    assert tracker.unheard_in_term() == 0
