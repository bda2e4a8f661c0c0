"""A follower holds a pod's hedged heartbeat while the leader is alive (HedgeHold)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

from protocol.pod import HEDGE_HEADER
from raftorch.api.forwarding import HedgeHold

HOLD = 2.0  # long, so that "released by the change, not the hold" has a wide margin


class Leader:
    """What the follower knows of the leader: its id, and when it last heard from it."""

    def __init__(self) -> None:
        self.id: str | None = "r0"
        self.silent = False

    def contact(self) -> float:
        return -1e9 if self.silent else time.monotonic()


def _hold(leader: Leader) -> HedgeHold:
    return HedgeHold(leader_now=lambda: leader.id, leader_contact=leader.contact,
                     fresh_seconds=0.2, hold_seconds=HOLD)  # fmt: skip


def _request(*, hedge: bool = True, closing: bool = False) -> Any:
    transport = SimpleNamespace(is_closing=lambda: closing)
    return SimpleNamespace(headers={HEDGE_HEADER: "1"} if hedge else {}, transport=transport)


async def test_a_first_attempt_is_relayed_at_once() -> None:
    hold = _hold(Leader())
    assert await asyncio.wait_for(hold.relay(_request(hedge=False)), 0.1)


async def test_a_hedge_is_dropped_when_the_pod_closed_it_while_held() -> None:
    hold = _hold(Leader())
    request = _request()
    held = asyncio.create_task(hold.relay(request))
    await asyncio.wait({held}, timeout=0.1)
    assert not held.done()  # held while the leader is heard from
    request.transport = None  # the pod's first attempt was answered: it closed this one
    assert await asyncio.wait_for(held, HOLD + 1) is False
    assert hold.dropped == 1


async def test_a_hedge_still_awaited_is_relayed_after_the_hold() -> None:
    hold = _hold(Leader())
    began = time.monotonic()
    assert await asyncio.wait_for(hold.relay(_request()), HOLD + 1)
    assert time.monotonic() - began >= HOLD * 0.9


async def test_a_leader_change_releases_every_held_hedge_at_once() -> None:
    leader = Leader()
    hold = _hold(leader)
    held = [asyncio.create_task(hold.relay(_request())) for _ in range(3)]
    await asyncio.wait(held, timeout=0.1)
    assert not any(task.done() for task in held)
    began = time.monotonic()
    leader.id = "r1"
    assert all(await asyncio.wait_for(asyncio.gather(*held), HOLD + 1))
    assert time.monotonic() - began < HOLD / 2  # released by the change, not by the hold


async def test_a_silent_leader_releases_held_hedges_and_holds_no_more() -> None:
    leader = Leader()
    hold = _hold(leader)
    held = asyncio.create_task(hold.relay(_request()))
    await asyncio.wait({held}, timeout=0.1)
    began = time.monotonic()
    leader.silent = True  # no append-entries any more: a relay may be what reaches a new one
    assert await asyncio.wait_for(held, HOLD + 1)
    assert time.monotonic() - began < HOLD / 2
    assert await asyncio.wait_for(hold.relay(_request()), 0.1)  # not held at all now
