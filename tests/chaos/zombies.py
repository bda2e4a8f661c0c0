"""Sessions that outlive their lease: a holding ends at the session's real stop.

Invariant 1 counts a holding as valid only up to its lease's lapse. That alone would
never see a pod that keeps running a session past its lease (a watchdog that does not
fence, a stop that hangs): the session still runs, and another pod may own it by then.
Here a holding ends where the session really ended: its `session_stop` (written once
the connector has stopped), the death of its process (a `pod-kill` naming its pid, or
the nemesis's `pod_exit` record once a process it stopped was gone), or the end of the
history.

Time while the process was frozen (SIGSTOP, from the nemesis's `pod-pause` faults)
does not count: a frozen process does nothing. A pod has `FENCE_TOLERANCE_SECONDS`
after its lease lapsed (or after it resumed, if it lapsed while frozen) to stop: the
self-fencing budget (`lease.fence_stop_seconds`, 0.3 s) plus scheduling slack.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tests.chaos.history import Event, integer, number, pids_of, text
from tests.chaos.report import Violation

FENCE_TOLERANCE_SECONDS = 0.5

Process = tuple[str, int]  # (pod, pid)


@dataclass(frozen=True)
class Holding:
    """One session start that held a lease: when its lease lapsed, when it stopped."""

    slot: str
    pod: str
    pid: int
    epoch: int
    start: float
    lapse: float
    stop: float  # math.inf when no stop was recorded


class GrantLike(Protocol):
    @property
    def slot(self) -> str: ...
    @property
    def pod(self) -> str: ...
    @property
    def epoch(self) -> int: ...
    @property
    def t(self) -> float: ...


def deaths(events: list[Event]) -> dict[Process, float]:
    """When each pod process the nemesis ended died: a `pod-kill` fault naming it (`pids`),
    or a `pod_exit` {pod, pid} recorded once the process was gone (`pod-churn`)."""
    out: dict[Process, float] = {}
    for ev in events:
        if ev["kind"] == "fault" and text(ev, "fault") == "pod-kill":
            for pod, pid in pids_of(ev).items():
                out.setdefault((pod, pid), number(ev, "t"))
        elif ev["kind"] == "pod_exit":
            out.setdefault((text(ev, "pod"), integer(ev, "pid")), number(ev, "t"))
    return out


def frozen_periods(events: list[Event], t_end: float) -> dict[Process, list[tuple[float, float]]]:
    """[from, to) of every `pod-pause` of each process, to its heal (or the end)."""
    out: dict[Process, list[tuple[float, float]]] = defaultdict(list)
    for i, ev in enumerate(events):
        if ev["kind"] != "fault" or text(ev, "fault") != "pod-pause":
            continue
        fault_id = text(ev, "id")
        healed = next(
            (number(later, "t") for later in events[i + 1 :]
             if later["kind"] == "healed_all"
             or (later["kind"] == "heal" and later.get("id") == fault_id)),
            t_end,
        )  # fmt: skip
        for pod, pid in pids_of(ev).items():
            out[pod, pid].append((number(ev, "t"), healed))
    return out


def _running(start: float, end: float, frozen: list[tuple[float, float]]) -> float:
    """Seconds of [start, end) the process was not frozen."""
    total = max(0.0, end - start)
    for a, b in frozen:
        total -= max(0.0, min(b, end) - max(a, start))
    return max(0.0, total)


def check_outlived(
    holdings: list[Holding],
    grants: Sequence[GrantLike],
    events: list[Event],
    t_end: float,
    at: Callable[[float], str],
) -> list[Violation]:
    """Invariant 1: no session runs past its lease (beyond the fencing tolerance)."""
    died, frozen = deaths(events), frozen_periods(events, t_end)
    by_slot: dict[str, list[GrantLike]] = defaultdict(list)
    for g in grants:
        by_slot[g.slot].append(g)
    out: list[Violation] = []
    for h in holdings:
        process = (h.pod, h.pid)
        end = min(h.stop, died.get(process, math.inf), t_end)
        if end <= h.lapse:
            continue
        periods = frozen.get(process, [])
        resumed = next((b for a, b in periods if a <= h.lapse < b), None)
        allowed = (resumed if resumed is not None else h.lapse) + FENCE_TOLERANCE_SECONDS
        overtime = _running(allowed, end, periods)
        if overtime <= 0:
            continue
        how = "still running at the end" if end == t_end and h.stop == math.inf else (
            f"stopped at {at(end)}")  # fmt: skip
        who = f"{h.pod} pid {h.pid} epoch {h.epoch}"
        newer = next((g for g in by_slot[h.slot]
                      if g.epoch > h.epoch and g.pod != h.pod and g.t < end), None)  # fmt: skip
        if newer is not None:
            msg = (f"slot {h.slot}: double owner: {who} ran its session {overtime:.3f}s past "
                   f"its lease (lapsed at {at(h.lapse)}, {how}) while epoch {newer.epoch} was "
                   f"granted to {newer.pod} at {at(newer.t)}")  # fmt: skip
        else:
            msg = (f"slot {h.slot}: {who} ran its session {overtime:.3f}s past its lease "
                   f"(lapsed at {at(h.lapse)}, {how})")  # fmt: skip
        out.append(Violation(1, msg))
    return out
