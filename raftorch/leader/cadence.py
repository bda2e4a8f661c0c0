"""When the leader loop plans, and which adapters a plan looks at besides those changed.

Pure: no clock of its own, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Collection


class Cadence:
    """The leader loop's periodic ticks: every `period` seconds without drift, missed ones
    skipped (no burst after a stall). A tick in between (a wake) does not move them: were
    every early tick to push the next periodic one a period further, a burst of wakes
    (adapters enabled one by one, a plan carried over) would leave it seconds ahead, and
    the loop would tick only when a lease runs out (plans 2-3 s apart in a mass failover
    until the cadence caught up; docs/performance.md)."""

    def __init__(self, period: float, now: float) -> None:
        self.period = period
        self.next = now

    def after_tick(self, now: float) -> float:
        """A tick ended at `now`: when the next periodic one is due."""
        if now >= self.next:
            self.next = max(self.next + self.period, now)
        return self.next


class Sweep:
    """A backstop over every adapter: each plan also looks at the next slice of them,
    round-robin, so that each is planned at least every `period` seconds (at one plan
    per `tick`) whatever names it. In slices, because one plan over every adapter at
    1,000 adapters of 100 slots held the leader's event loop for 0.2-0.3 s in process,
    and in the scale bench's hold (one such plan every 10 s) kept heartbeats waiting for
    over a second (docs/performance.md)."""

    def __init__(self, period: float, tick: float) -> None:
        self._share = tick / period
        self._start = 0

    def next(self, ids: Collection[str]) -> set[str]:
        """The next slice of `ids` (all there are now), in sorted order around the end."""
        ordered = sorted(ids)
        if not ordered:
            return set()
        share = max(1, math.ceil(len(ordered) * self._share))
        start = self._start % len(ordered)
        chosen = ordered[start : start + share]
        chosen += ordered[: share - len(chosen)]  # around the end, to the start again
        self._start = start + share
        return set(chosen)
