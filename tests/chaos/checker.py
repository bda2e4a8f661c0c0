"""Invariant checker over a recorded chaos-campaign history: pure, stdlib only.

`check(history)` walks the events recorded by the orchestrator replicas, the
adapter pods and the nemesis, plus the sink table and the producer's log, and
reports every breach of the invariants in DESIGN.md ("Invariants the tests must
check"), numbered as there, with 6 = exactly-once, in-order delivery.

All `t` values come from one CLOCK_MONOTONIC shared by every process on the
host, so they are compared across sources without any slack. Messages give
times relative to the first event ("+12.345s").

How events are read:

- Invariant 1 rests on lease intervals and on real holdings. A session that runs
  past its lease (beyond the fencing tolerance, frozen time excepted) is a breach
  (`tests/chaos/zombies.py`), a double owner if the slot was granted on meanwhile.
  For the overlap of valid leases, a pod incarnation (source, pid) holds a
  slot from its `session_start` until the first of its `session_stop` (at `t`,
  written once the connector has stopped: later is conservative), the lapse of
  its lease, and the end of the history. A `session_refused` with `claimed: true`
  came after the pod claimed the fence, so the session may have run: it ends the
  interval like a stop. Any other refusal means the start held nothing. A start
  while the incarnation holds no valid lease breaches invariant 1: the pod starts
  sessions only inside its lease.
- Invariant 4: a `session_stop` whose reason does not start with "drain" (SIGTERM),
  "handoff" (a move by graceful handoff) or "revoked" (the adapter disabled) is a
  drop. It dates from `began` (when the stop started) if given, else from `t`,
  and must lie in the excuse window of a fault whose `may_drop` names the pod
  (or "*"). If the fault names the pid it hit (`pids: {pod: pid}`), only that
  process is excused, not the pod's restarted successor. A window runs from the
  fault to the first `recovered` after its `heal` (or the `healed_all` that
  healed it) or the next fault after that heal, whichever comes first; without
  either, to heal + ttl + recovery_bound; never healed, to the end of history.
  A stop of an adapter the nemesis had just disabled is the user's order carried
  out, not a drop (`tests/chaos/orders.py`). Seen from outside, a slot that the
  public API showed under a new owner or epoch while a fault that may drop nothing
  was open is a drop too (`tests/chaos/observed.py`), unless its owner had stopped
  it to hand it over (handoff, SIGTERM drain). A handover is checked like any other
  change of owner: invariant 1 (the new owner's grant and start come after the old
  owner's stop) and 6 (no message lost, repeated or reordered across it).
- Invariant 5 also covers `crashed` {process, returncode}: a process the
  nemesis did not kill exited on its own.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any

from tests.chaos.history import (
    Event,
    History,
    HistoryError,
    event_problem,
    field_of,
    integer,
    number,
    pids_of,
    read_events,
    text,
    texts,
)
from tests.chaos.observed import POD_FAULTS, api_failovers, api_moves
from tests.chaos.orders import disabled_windows, ordered
from tests.chaos.report import Failover, Interval, Report, Violation
from tests.chaos.zombies import Holding, check_outlived

__all__ = [
    "GRACEFUL_PREFIXES",
    "POD_FAULTS",
    "Event",
    "Failover",
    "History",
    "HistoryError",
    "Interval",
    "Report",
    "Violation",
    "check",
    "lease_intervals",
    "read_events",
]

GRACEFUL_PREFIXES = ("drain", "handoff", "revoked")
"""A `session_stop` reason starting with one of these is a clean hand-over (a drain, a move
by graceful handoff, an adapter disabled); any other is a drop."""

_FEW = 5  # how many examples a message lists


@dataclass(frozen=True)
class _Grant:
    slot: str
    pod: str
    epoch: int
    entry: str
    t: float  # earliest copy


@dataclass(frozen=True)
class _Fault:
    id: str
    fault: str
    targets: list[str]
    may_drop: list[str]
    pids: dict[str, int]  # pod -> the process the fault hit, where known
    t: float
    until: float  # end of the window in which it excuses drops

    def excuses(self, pod: str, pid: object) -> bool:
        """May this fault drop `pod`'s process `pid`?"""
        if "*" in self.may_drop:
            return True
        return pod in self.may_drop and (pod not in self.pids or self.pids[pod] == pid)

    def __str__(self) -> str:
        pids = f" (pids {self.pids})" if self.pids else ""
        return f"{self.fault} {self.id} may drop {self.may_drop}{pids}"


@dataclass(frozen=True)
class _Row:
    queue: str
    seq: int
    msg_id: int
    slot: str
    epoch: int
    pod: str


def _row(queue: str, r: dict[str, Any]) -> _Row:
    return _Row(
        queue,
        integer(r, "seq"),
        integer(r, "msg_id"),
        text(r, "slot"),
        integer(r, "epoch"),
        text(r, "pod_id"),
    )


@dataclass
class _Facts:
    """What every check needs, derived once from the history."""

    history: History
    events: list[Event]  # sorted by t
    t0: float
    t_end: float
    grants: list[_Grant]  # deduplicated, by (t, epoch)
    diverged: list[Violation]
    intervals: list[Interval]
    faults: list[_Fault]
    rows: list[_Row]  # every delivery, by (queue, seq)
    starts: Counter[str]
    holdings: list[Holding]

    def at(self, t: float) -> str:
        return f"+{t - self.t0:.3f}s"

    def of(self, *kinds: str) -> list[Event]:
        return [ev for ev in self.events if ev["kind"] in kinds]


def check(history: History) -> Report:
    """Check every invariant over `history`; raises `HistoryError` if it is malformed."""
    facts = _facts(history)
    drop_violations, drops, by_fault = _check_drops(facts)
    seen = api_failovers(facts.events)
    moves = [Violation(4, f"the API showed a session move: {m}") for m in api_moves(facts.events)]
    violations = [
        *moves,
        *_check_single_owner(facts),
        *check_outlived(facts.holdings, facts.grants, facts.events, facts.t_end, facts.at),
        *_check_fence(facts),
        *facts.diverged,
        *_check_epochs(facts),
        *drop_violations,
        *_check_recovery(facts),
        *_check_crashes(facts),
        *_check_messages(facts),
    ]
    violations.sort(key=lambda v: v.invariant)
    queues = sorted(set(history.produced) | set(history.deliveries))
    return Report(
        violations=violations,
        fault_counts=dict(Counter(text(ev, "fault") for ev in facts.of("fault"))),
        failovers=_failovers(facts),
        ttl=history.ttl,
        writes_rejected=len(facts.of("write_rejected")),
        grants=len(facts.grants),
        sessions_started=facts.starts["held"] + facts.starts["without lease"],
        sessions_refused=facts.starts["refused"],
        sessions_without_lease=facts.starts["without lease"],
        drops=drops,
        drops_excused=drops - by_fault["unexcused"],
        stops_ordered=by_fault["ordered"],
        handoffs=_stops_for(facts, "handoff"),
        drain_stops=_stops_for(facts, "drain"),
        drops_by_fault={k: n for k, n in sorted(by_fault.items()) if n and k != "ordered"},
        fault_holds=_holds(facts),
        api_failovers=seen.failovers,
        api_failovers_missing=seen.missing,
        api_resolution=seen.worst_resolution,
        api_samples=sum(integer(ev, "samples") for ev in facts.of("api_summary")),
        api_max_gap=max((number(ev, "max_gap") for ev in facts.of("api_summary")), default=None),
        crashes=len(facts.of("crashed")),
        messages={
            q: {
                "produced": len(history.produced.get(q, [])),
                "delivered": len(history.deliveries.get(q, [])),
            }
            for q in queues
        },
    )


def lease_intervals(history: History) -> list[Interval]:
    """Every lease-backed session holding in `history` (the basis of invariant 1)."""
    return _facts(history).intervals


def _facts(history: History) -> _Facts:
    for i, ev in enumerate(history.events):
        problem = event_problem(ev)
        if problem:
            raise HistoryError(f"event #{i}: {problem}")
    events = sorted(history.events, key=lambda ev: float(ev["t"]))
    t0 = float(events[0]["t"]) if events else 0.0
    t_end = float(events[-1]["t"]) if events else 0.0
    grants, diverged = _grants(events, lambda t: f"+{t - t0:.3f}s")
    intervals, starts, holdings = _intervals(events, t_end)
    rows = [_row(q, r) for q, queue_rows in history.deliveries.items() for r in queue_rows]
    rows.sort(key=lambda r: (r.queue, r.seq))
    faults = _faults(events, t_end, history.ttl + history.recovery_bound)
    return _Facts(history, events, t0, t_end, grants, diverged, intervals, faults, rows, starts,
                  holdings)  # fmt: skip


def _grants(
    events: list[Event], at: Callable[[float], str]
) -> tuple[list[_Grant], list[Violation]]:
    """Deduplicate replica copies by (entry, slot); copies that disagree breach invariant 3."""
    first: dict[tuple[str, str], _Grant] = {}
    versions: dict[tuple[str, str], dict[tuple[str, int], set[str]]] = defaultdict(dict)
    for ev in events:
        if ev["kind"] != "grant":
            continue
        slot, pod, epoch, t = (
            text(ev, "slot"),
            text(ev, "pod"),
            integer(ev, "epoch"),
            number(ev, "t"),
        )
        key = (str(field_of(ev, "entry", str, int)), slot)
        if key not in first:
            first[key] = _Grant(slot, pod, epoch, key[0], t)
        elif t < first[key].t:
            first[key] = replace(first[key], t=t)
        versions[key].setdefault((pod, epoch), set()).add(str(ev["source"]))
    diverged: list[Violation] = []
    for (entry, slot), seen in versions.items():
        if len(seen) > 1:
            copies = "; ".join(
                f"{pod} epoch {epoch} on {','.join(sorted(src))}"
                for (pod, epoch), src in sorted(seen.items())
            )
            when = at(first[entry, slot].t)
            msg = f"replicas diverged on entry {entry} slot {slot} (applied from {when}): {copies}"
            diverged.append(Violation(3, msg))
    return sorted(first.values(), key=lambda g: (g.t, g.epoch)), diverged


_CLAIMED_REFUSAL = "refused after claim"
"""A `session_refused` with `claimed: true`: the session may have run, so it ends like a stop."""


def _intervals(
    events: list[Event], t_end: float
) -> tuple[list[Interval], Counter[str], list[Holding]]:
    """One interval per session start that was not refused, per pod incarnation, and
    its holding (lapse and real stop, for `zombies.check_outlived`).

    A start without a valid lease yields an empty interval that `ended` with "no lease".
    """
    leases: dict[tuple[str, int], list[tuple[float, float | None]]] = defaultdict(list)
    sessions: dict[tuple[str, int, str, int], list[tuple[float, str]]] = defaultdict(list)
    for ev in events:
        kind = ev["kind"]
        if kind == "lease":
            deadline = None if ev.get("deadline") is None else number(ev, "deadline")
            leases[ev["source"], integer(ev, "pid")].append((number(ev, "t"), deadline))
        elif kind in ("session_start", "session_refused", "session_stop"):
            key = (str(ev["source"]), integer(ev, "pid"), text(ev, "slot"), integer(ev, "epoch"))
            if kind == "session_refused" and _claimed(ev):
                kind = _CLAIMED_REFUSAL
            sessions[key].append((number(ev, "t"), kind))
    intervals: list[Interval] = []
    holdings: list[Holding] = []
    starts: Counter[str] = Counter()
    for (pod, pid, slot, epoch), seq in sessions.items():
        for i, (start, kind) in enumerate(seq):
            if kind != "session_start":
                continue
            refused, stop, stopped = _session_outcome(seq[i + 1 :])
            if refused:
                starts["refused"] += 1
                continue
            lapse = _lapse(leases[pod, pid], start)
            if lapse <= start:
                starts["without lease"] += 1
                intervals.append(Interval(slot, pod, pid, epoch, start, start, "no lease"))
                continue
            starts["held"] += 1
            holdings.append(Holding(slot, pod, pid, epoch, start, lapse, stop))
            ends = ((stop, stopped), (lapse, "lapse"), (t_end, "end of history"))
            end, ended = min(ends, key=lambda candidate: candidate[0])  # ties: first wins
            intervals.append(Interval(slot, pod, pid, epoch, start, max(start, end), ended))
    intervals.sort(key=lambda iv: (iv.start, iv.slot))
    return intervals, starts, holdings


def _claimed(ev: Event) -> bool:
    claimed = ev.get("claimed", False)
    if not isinstance(claimed, bool):
        raise HistoryError(f"bad 'claimed' in {ev!r}")
    return claimed


def _session_outcome(later: list[tuple[float, str]]) -> tuple[bool, float, str]:
    """(refused, end time, what ended it) of a start, given the same session's later events."""
    restarted = False
    for t, kind in later:
        if kind == "session_refused" and not restarted:
            return True, t, "refused"
        if kind == "session_stop":
            return False, t, "stop"
        if kind == _CLAIMED_REFUSAL:
            return False, t, kind
        restarted = restarted or kind == "session_start"
    return False, math.inf, "stop"


def _lapse(leases: list[tuple[float, float | None]], start: float) -> float:
    """When the lease an incarnation holds at `start` lapses (`start` if it holds none)."""
    i = bisect_right(leases, start, key=lambda lease: lease[0])
    deadline = leases[i - 1][1] if i else None
    if deadline is None or deadline <= start:
        return start
    for t, new_deadline in leases[i:]:
        if t >= deadline:
            break
        if new_deadline is None or new_deadline <= t:
            return t
        deadline = new_deadline
    return deadline


def _faults(events: list[Event], t_end: float, grace: float) -> list[_Fault]:
    """Faults with their excuse windows; `healed_all` heals every open fault.

    A window runs from the fault to the first `recovered` or `fault` after its heal (the
    harness waits for recovery before the next fault, so a window must not excuse what
    the next one does), else to heal + `grace`; never healed, to `t_end`.
    """
    faults: list[_Fault] = []
    for i, ev in enumerate(events):
        if ev["kind"] != "fault":
            continue
        fault_id = text(ev, "id")
        heal = next(
            (
                j
                for j in range(i + 1, len(events))
                if events[j]["kind"] == "healed_all"
                or (events[j]["kind"] == "heal" and events[j].get("id") == fault_id)
            ),
            None,
        )
        if heal is None:
            until = t_end
        else:
            until = next(
                (
                    number(later, "t")
                    for later in islice(events, heal + 1, None)
                    if later["kind"] in ("recovered", "fault")
                ),
                number(events[heal], "t") + grace,
            )
        kind, targets, may_drop = text(ev, "fault"), texts(ev, "targets"), texts(ev, "may_drop")
        faults.append(
            _Fault(fault_id, kind, targets, may_drop, pids_of(ev), number(ev, "t"), until)
        )
    return faults


def _check_single_owner(facts: _Facts) -> list[Violation]:
    """Invariant 1: no two incarnations hold one slot at once; no lease outlives a newer grant."""
    out: list[Violation] = []
    held = [iv for iv in facts.intervals if iv.end > iv.start]

    def who(iv: Interval) -> str:
        return (
            f"{iv.pod} pid {iv.pid} epoch {iv.epoch} "
            f"[{facts.at(iv.start)}, {facts.at(iv.end)}) until {iv.ended}"
        )

    by_slot: dict[str, list[Interval]] = defaultdict(list)
    for iv in held:
        by_slot[iv.slot].append(iv)
    for slot, ivs in sorted(by_slot.items()):
        for i, a in enumerate(ivs):  # sorted by start
            for b in ivs[i + 1 :]:
                if b.start >= a.end:
                    break
                if (a.pod, a.pid) != (b.pod, b.pid):
                    overlap = min(a.end, b.end) - b.start
                    msg = f"slot {slot}: holders overlap for {overlap:.3f}s: {who(a)} and {who(b)}"
                    out.append(Violation(1, msg))
    for iv in facts.intervals:
        if iv.ended == "no lease":
            msg = (
                f"{iv.pod} pid {iv.pid} started slot {iv.slot} epoch {iv.epoch} at "
                f"{facts.at(iv.start)} without a valid lease"
            )
            out.append(Violation(1, msg))
    grants: dict[str, list[_Grant]] = defaultdict(list)
    for g in facts.grants:
        grants[g.slot].append(g)
    for iv in held:
        newer = next(
            (g for g in grants[iv.slot] if g.epoch > iv.epoch and g.pod != iv.pod and g.t < iv.end),
            None,
        )
        if newer is not None:
            msg = (
                f"slot {iv.slot}: old owner's lease outlived the new owner's grant by "
                f"{iv.end - newer.t:.3f}s: {who(iv)}, but epoch {newer.epoch} was granted "
                f"to {newer.pod} at {facts.at(newer.t)}"
            )
            out.append(Violation(1, msg))
    return out


def _check_fence(facts: _Facts) -> list[Violation]:
    """Invariant 2: per slot the accepted epochs never go down; rows come from the epoch's owner."""
    out: list[Violation] = []
    owners: dict[tuple[str, int], set[str]] = defaultdict(set)
    for g in facts.grants:
        owners[g.slot, g.epoch].add(g.pod)
    by_slot: dict[tuple[str, str], list[_Row]] = defaultdict(list)
    for row in facts.rows:
        by_slot[row.queue, row.slot].append(row)
    for (queue, slot), rows in sorted(by_slot.items()):
        top: _Row | None = None
        stale: list[tuple[_Row, _Row]] = []
        for row in rows:
            if top is not None and row.epoch < top.epoch:
                stale.append((row, top))
            elif top is None or row.epoch > top.epoch:
                top = row
        if stale:
            examples = ", ".join(
                f"seq {r.seq} epoch {r.epoch} by {r.pod} after seq {t.seq} epoch {t.epoch}"
                f" by {t.pod}"
                for r, t in stale[:_FEW]
            )
            msg = f"queue {queue} slot {slot}: {len(stale)} stale writes accepted: {examples}"
            out.append(Violation(2, msg))
        intruders = Counter(
            (r.epoch, r.pod)
            for r in rows
            if owners.get((slot, r.epoch)) and r.pod not in owners[slot, r.epoch]
        )
        for (epoch, pod), n in sorted(intruders.items()):
            granted = ", ".join(sorted(owners[slot, epoch]))
            msg = f"queue {queue} slot {slot}: {n} rows of epoch {epoch} written by {pod}"
            out.append(Violation(2, f"{msg}, but that epoch was granted to {granted}"))
    return out


def _check_epochs(facts: _Facts) -> list[Violation]:
    """Invariant 3: the grants of one slot carry strictly increasing epochs."""
    out: list[Violation] = []
    top: dict[str, _Grant] = {}
    for g in facts.grants:
        prev = top.get(g.slot)
        if prev is not None and g.epoch <= prev.epoch:
            msg = (
                f"slot {g.slot}: epoch {g.epoch} granted to {g.pod} at {facts.at(g.t)} "
                f"(entry {g.entry}) after epoch {prev.epoch} to {prev.pod} at "
                f"{facts.at(prev.t)} (entry {prev.entry})"
            )
            out.append(Violation(3, msg))
        if prev is None or g.epoch > prev.epoch:
            top[g.slot] = g
    return out


def _check_drops(facts: _Facts) -> tuple[list[Violation], int, Counter[str]]:
    """Invariant 4: every non-graceful stop lies in the window of a fault that may drop it.

    A stop dates from `began` (when it started) if recorded, else from `t`. Returns the
    violations, the number of drops and the drops per fault kind that excused them
    ("unexcused" for the rest, "ordered" for stops of adapters the nemesis disabled,
    which are not counted as drops).
    """
    out: list[Violation] = []
    drops = 0
    by_fault: Counter[str] = Counter(unexcused=0, ordered=0)
    windows = disabled_windows(facts.events)
    for ev in facts.of("session_stop"):
        reason, pod, pid = text(ev, "reason"), str(ev["source"]), ev.get("pid")
        if reason.startswith(GRACEFUL_PREFIXES):
            continue
        t = number(ev, "began") if ev.get("began") is not None else number(ev, "t")
        if ordered(windows, text(ev, "slot"), t):
            by_fault["ordered"] += 1
            continue
        drops += 1
        open_faults = [f for f in facts.faults if f.t <= t <= f.until]
        excusing = next((f for f in open_faults if f.excuses(pod, pid)), None)
        if excusing is not None:
            by_fault[excusing.fault] += 1
            continue
        by_fault["unexcused"] += 1
        context = ", ".join(str(f) for f in open_faults)
        msg = (
            f"unexcused drop: {pod} pid {pid} stopped slot {ev.get('slot')} epoch "
            f"{ev.get('epoch')} at {facts.at(t)} ({reason!r}); faults open: {context or 'none'}"
        )
        out.append(Violation(4, msg))
    return out, drops, by_fault


def _stops_for(facts: _Facts, prefix: str) -> int:
    """Session stops whose reason starts with `prefix` ("handoff": a move; "drain": SIGTERM)."""
    return sum(1 for ev in facts.of("session_stop") if text(ev, "reason").startswith(prefix))


def _holds(facts: _Facts) -> dict[str, list[float]]:
    """Seconds each fault was held, by kind (from the `held` its heal records)."""
    kinds = {text(ev, "id"): text(ev, "fault") for ev in facts.of("fault")}
    holds: dict[str, list[float]] = defaultdict(list)
    for ev in facts.of("heal"):
        if ev.get("held") is not None and ev.get("id") in kinds:
            holds[kinds[text(ev, "id")]].append(number(ev, "held"))
    return dict(holds)


def _check_recovery(facts: _Facts) -> list[Violation]:
    """Invariant 5: after each `healed_all`, the next `recovered` is ok and within ttl + bound.

    A `recovered` event may say since when the recovered state held (`active_since`,
    monotonic): the harness records it only after watching the state stay put for a
    while, and the recovery dates from the start of that stretch, not from the record.
    """
    out: list[Violation] = []
    bound = facts.history.ttl + facts.history.recovery_bound
    pending: list[float] = []
    for ev in facts.of("healed_all", "recovered"):
        t = number(ev, "t")
        if ev["kind"] == "healed_all":
            pending.append(t)
            continue
        ok, missing = ev.get("ok") is True, texts(ev, "missing")
        if ok and isinstance(ev.get("active_since"), int | float):
            t = min(t, float(ev["active_since"]))
        for healed in pending:
            took, since = max(0.0, t - healed), f"healed_all at {facts.at(healed)}"
            if not ok:
                not_active = ", ".join(missing) or "?"
                msg = f"{since}: gave up after {took:.3f}s, not ACTIVE: {not_active}"
                out.append(Violation(5, msg))
            elif took > bound:
                msg = f"{since}: recovered after {took:.3f}s > ttl + recovery_bound {bound:.3f}s"
                out.append(Violation(5, msg))
        pending = []
    for healed in pending:
        msg = f"no recovered event in the {facts.t_end - healed:.3f}s until the end"
        out.append(Violation(5, f"healed_all at {facts.at(healed)}: {msg}"))
    return out


def _check_crashes(facts: _Facts) -> list[Violation]:
    """Invariant 5: no process exits unless the nemesis killed it (`crashed` events)."""
    out: list[Violation] = []
    for ev in facts.of("crashed"):
        process = text(ev, "process")
        code = None if ev.get("returncode") is None else integer(ev, "returncode")
        returncode = "unknown" if code is None else str(code)
        msg = f"process {process} exited on its own (returncode {returncode})"
        out.append(Violation(5, f"{msg} at {facts.at(number(ev, 't'))}"))
    return out


def _check_messages(facts: _Facts) -> list[Violation]:
    """Invariant 6: every produced message delivered exactly once, in order of seq."""
    out: list[Violation] = []
    produced = facts.history.produced
    by_queue: dict[str, list[_Row]] = defaultdict(list)
    for row in facts.rows:
        by_queue[row.queue].append(row)
    for queue in sorted(set(produced) | set(by_queue)):
        rows = by_queue[queue]
        if queue not in produced:
            if rows:
                out.append(Violation(6, f"queue {queue}: {len(rows)} rows but nothing produced"))
            continue
        counts = Counter(r.msg_id for r in rows)
        wanted = set(produced[queue])
        dups = sorted(i for i, n in counts.items() if n > 1)
        lost = sorted(wanted - counts.keys())
        phantom = sorted(counts.keys() - wanted)
        extra = sum(counts[i] - 1 for i in dups)
        for ids, what in (
            (dups, f"delivered more than once ({extra} extra rows)"),
            (lost, f"of {len(wanted)} produced lost"),
            (phantom, "delivered but never produced"),
        ):
            if ids:
                out.append(Violation(6, f"queue {queue}: {len(ids)} {what}, e.g. ids {ids[:_FEW]}"))
        out.extend(_out_of_order(queue, rows))
    return out


def _out_of_order(queue: str, rows: list[_Row]) -> list[Violation]:
    """First deliveries of ids must increase with seq; a repeat counts as a duplicate only."""
    seen: set[int] = set()
    top: _Row | None = None
    late: list[tuple[_Row, _Row]] = []
    for row in rows:
        if row.msg_id in seen:
            continue
        seen.add(row.msg_id)
        if top is not None and row.msg_id < top.msg_id:
            late.append((row, top))
        else:
            top = row
    if not late:
        return []
    examples = ", ".join(
        f"id {r.msg_id} at seq {r.seq} after id {t.msg_id} at seq {t.seq}" for r, t in late[:_FEW]
    )
    return [Violation(6, f"queue {queue}: {len(late)} messages out of order: {examples}")]


def _failovers(facts: _Facts) -> list[Failover]:
    """Per pod fault and slot its target held: time until another incarnation ran the slot."""
    running: dict[str, list[tuple[float, str, int]]] = defaultdict(list)
    for ev in facts.of("session_running"):
        running[text(ev, "slot")].append((number(ev, "t"), str(ev["source"]), integer(ev, "pid")))
    out: list[Failover] = []
    for f in facts.faults:
        if f.fault not in POD_FAULTS:
            continue
        held = {
            iv.slot: iv
            for iv in facts.intervals
            if iv.pod in f.targets and iv.start <= f.t < iv.end
        }
        for slot, iv in sorted(held.items()):
            taken = next(
                (t for t, pod, pid in running[slot] if t > f.t and (pod, pid) != (iv.pod, iv.pid)),
                None,
            )
            if taken is not None:
                out.append(Failover(f.id, f.fault, iv.pod, slot, taken - f.t))
    return out
