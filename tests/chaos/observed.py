"""What the public API showed (the observer's `api_slot` records), read against the faults.

Pure functions over a history's events, no I/O:

- `api_failovers`: for each pod fault and each slot the API showed ACTIVE on the faulted pod
  just before it, the seconds from the fault until the API first showed that slot ACTIVE
  under a newer epoch (a new grant: in practice on another pod). Measured to the arrival
  of the answer that showed it, so it errs long by at most one sampling gap.
- `api_moves`: slots whose owner or epoch the API showed changing while a fault that may
  drop no session was open (a leader change, a partition, a database outage ...). A move
  there is a dropped session seen from outside, whatever the pods' trails say.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from tests.chaos.history import Event, integer, number, text, texts
from tests.chaos.report import Failover

POD_FAULTS = frozenset({"pod-kill", "pod-pause", "pod-isolate"})


@dataclass(frozen=True)
class ApiView:
    """One slot as one API answer showed it."""

    seen: float
    prev: float | None  # the answer before (the change happened in (prev, seen])
    status: str
    owner: str
    epoch: int


@dataclass(frozen=True)
class ApiFailovers:
    failovers: list[Failover]
    missing: list[str]  # "fault slot" that never came back ACTIVE under a newer epoch
    worst_resolution: float  # the largest (seen - prev) among the measured failovers


def api_views(events: list[Event]) -> dict[str, list[ApiView]]:
    """Each slot's API views in order of arrival."""
    views: dict[str, list[ApiView]] = defaultdict(list)
    for ev in events:
        if ev["kind"] != "api_slot":
            continue
        prev = None if ev.get("prev") is None else number(ev, "prev")
        views[text(ev, "slot")].append(ApiView(
            number(ev, "seen"), prev, text(ev, "status"), text(ev, "owner"), integer(ev, "epoch"),
        ))  # fmt: skip
    for seq in views.values():
        seq.sort(key=lambda v: v.seen)
    return views


def _before(seq: list[ApiView], t: float) -> ApiView | None:
    earlier = [v for v in seq if v.seen <= t]
    return earlier[-1] if earlier else None


def api_failovers(events: list[Event]) -> ApiFailovers:
    """Failover per pod fault and slot, as the API showed it (see the module docstring)."""
    views = api_views(events)
    out: list[Failover] = []
    missing: list[str] = []
    worst = 0.0
    for ev in events:
        if ev["kind"] != "fault" or text(ev, "fault") not in POD_FAULTS:
            continue
        t, targets = number(ev, "t"), set(texts(ev, "targets"))
        for slot, seq in sorted(views.items()):
            was = _before(seq, t)
            if was is None or was.status != "ACTIVE" or was.owner not in targets:
                continue
            back = next((v for v in seq if v.seen > t and v.status == "ACTIVE"
                         and v.epoch > was.epoch), None)  # fmt: skip
            if back is None:
                missing.append(f"{text(ev, 'id')} {slot}")
                continue
            out.append(Failover(text(ev, "id"), text(ev, "fault"), was.owner, slot,
                                back.seen - t, to=back.owner))  # fmt: skip
            if back.prev is not None:
                worst = max(worst, back.seen - back.prev)
    return ApiFailovers(out, missing, worst)


def _windows(events: list[Event]) -> list[tuple[Event, float]]:
    """Each fault with the end of its window: the first `recovered` after its heal (or the
    next fault, or the end of the history)."""
    t_end = number(events[-1], "t") if events else 0.0
    out: list[tuple[Event, float]] = []
    for i, ev in enumerate(events):
        if ev["kind"] != "fault":
            continue
        until, healed = t_end, False
        for later in events[i + 1 :]:
            kind = later["kind"]
            healed = healed or kind == "healed_all" or (
                kind == "heal" and later.get("id") == ev.get("id"))  # fmt: skip
            if kind == "fault" or (healed and kind == "recovered"):
                until = number(later, "t")
                break
        out.append((ev, until))
    return out


HANDED_OVER = ("handoff", "drain")
"""Stop reasons of a session handed over cleanly: a move by graceful handoff (the leader
rebalancing or draining a pod) or a pod draining on SIGTERM; either way the pod stopped
it, then released it, and only then was it granted on."""


def _handed_off(events: list[Event]) -> set[tuple[str, int]]:
    """(slot, epoch) of sessions their pod stopped to hand them over: a planned move, not a
    drop (as in the trail check)."""
    stops = [ev for ev in events if ev["kind"] == "session_stop"]
    return {(text(ev, "slot"), integer(ev, "epoch")) for ev in stops
            if text(ev, "reason").startswith(HANDED_OVER)}  # fmt: skip


def api_moves(events: list[Event]) -> list[str]:
    """Slots the API showed under a new owner or epoch inside the window of a fault that
    may drop nothing, other than moves by graceful handoff; each as "fault-id kind slot
    owner@epoch -> owner@epoch at +t"."""
    views = api_views(events)
    handed_off = _handed_off(events)
    t0 = number(events[0], "t") if events else 0.0
    out: list[str] = []
    for ev, until in _windows(events):
        if texts(ev, "may_drop"):
            continue
        start = number(ev, "t")
        for slot, seq in sorted(views.items()):
            was = _before(seq, start)
            for view in seq:
                if not start < view.seen <= until:
                    continue
                if view.status == "GONE":  # disabled: a later grant is a fresh start
                    was = view
                    continue
                # A new grant shows as a higher epoch; a lower one is a lagging replica's
                # answer (the observer may have switched replicas), not a move.
                if (
                    was is not None and was.owner and view.owner and view.epoch > was.epoch
                    and (slot, was.epoch) not in handed_off
                ):  # fmt: skip
                    out.append(f"{text(ev, 'id')} {text(ev, 'fault')} {slot} "
                               f"{was.owner}@{was.epoch} -> {view.owner}@{view.epoch} "
                               f"at +{view.seen - t0:.3f}s")  # fmt: skip
                if was is None or view.epoch >= was.epoch:
                    was = view
    return out
