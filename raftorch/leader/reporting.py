"""Leader-side reporting: committed decisions become events, lease history and metrics.

Only the leader reports (it made the decisions), and only from committed results:
a command the appliers rejected is never reported. Everything goes through
write-behind buffers, so reporting never waits on PostgreSQL.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from persistence.events import NewEvent
from persistence.lease_history import LeaseGrant, LeaseHistoryRepository
from persistence.writebehind import WriteBehind
from protocol.pod import StopOrder
from protocol.values import EventCategory, EventLevel, SlotStatus, canonical_id
from raftorch.core.model import (
    ApplyResult,
    Command,
    Grant,
    Handoff,
    Release,
    RemovePod,
    ReportStatus,
    Revoke,
    slot_adapter,
)
from raftorch.core.ownership import Snapshot
from raftorch.leader.metrics import ServiceMetrics


@dataclass(frozen=True, slots=True)
class LeaseEnd:
    session: str
    epoch: int
    reason: str


HistoryItem = LeaseGrant | LeaseEnd

FENCE_WINDOW_SECONDS = 10.0
FENCE_EVENTS_PER_WINDOW = 20
MAX_FENCE_WINDOWS = 10_000

log = logging.getLogger(__name__)


async def write_history(repo: LeaseHistoryRepository, batch: Sequence[HistoryItem]) -> None:
    """Grants in one statement, then ends (an end may refer to a grant in the same batch)."""
    await repo.record_grants([i for i in batch if isinstance(i, LeaseGrant)])
    for item in batch:
        if isinstance(item, LeaseEnd):
            await repo.record_end(item.session, item.epoch, item.reason)


class Reporter:
    """Turns the leader's committed entries into events, history rows and failover timings."""

    def __init__(
        self,
        events: WriteBehind[NewEvent],
        history: WriteBehind[HistoryItem],
        metrics: ServiceMetrics | None,
        *,
        node_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._node_id = node_id
        self._events = events
        self._history = history
        self._metrics = metrics
        self._clock = clock
        self._lost_at: dict[str, float] = {}  # slot -> when its previous owner was lost
        # pod -> [window start, adapter events in it, summary sent]
        self._fence_windows: dict[str, list[Any]] = {}

    def _event(
        self, slot: str, level: EventLevel, category: EventCategory, text: str, **details: object
    ) -> None:
        # A slot name a pod made up: keep the event, cluster-wide.
        adapter = canonical_id(slot_adapter(slot))
        self._events.add(NewEvent(adapter, level, category, text, {"slot": slot, **details}))

    def committed(
        self,
        before: Snapshot,
        commands: Sequence[Command],
        result: ApplyResult,
        renewals: Mapping[str, float],
    ) -> None:
        """Report one committed entry; `before` is the state it was planned from."""
        rejected = {index for index, _ in result.rejected}
        epochs = {slot: (pod, epoch) for slot, pod, epoch in result.granted}
        for index, command in enumerate(commands):
            if index in rejected or result.error:
                continue
            if isinstance(command, RemovePod):
                self._pod_removed(before, command, renewals)
            elif isinstance(command, Grant) and command.slot in epochs:
                self._granted(command, epochs[command.slot][1])
            elif isinstance(command, Revoke):
                self._lost_at.pop(command.slot, None)
                self._event(command.slot, EventLevel.INFO, EventCategory.SYSTEM,
                            f"revoked: {command.reason}")  # fmt: skip
            elif isinstance(command, Release):
                self._released(command)
            elif isinstance(command, Handoff):
                self._handed_off(command)
            elif isinstance(command, ReportStatus):
                self._reported(before, command)

    def fenced(self, state: Snapshot, pod_id: str, orders: Sequence[StopOrder]) -> None:
        """A pod reported sessions it does not hold and was told to stop them.

        A real session gets an event in its adapter's log, up to `FENCE_EVENTS_PER_WINDOW`
        per pod and window; the rest, and anything about sessions that do not exist, is
        one cluster-wide event per pod and window (and a log line), so what one pod sends
        can neither flood the event log nor push other events out of its buffer.
        """
        now = self._clock()
        window = self._fence_windows.get(pod_id)
        if window is None or now - window[0] >= FENCE_WINDOW_SECONDS:
            window = self._fence_windows[pod_id] = [now, 0, False]
            if len(self._fence_windows) > MAX_FENCE_WINDOWS:  # forget the oldest pods
                del self._fence_windows[next(iter(self._fence_windows))]
        others: list[StopOrder] = []
        for order in orders:
            if order.slot in state.slots and window[1] < FENCE_EVENTS_PER_WINDOW:
                window[1] += 1
                self._event(order.slot, EventLevel.WARNING, EventCategory.SYSTEM,
                            f"pod {pod_id} fenced off (epoch {order.epoch}): {order.reason}",
                            pod=pod_id, epoch=order.epoch)  # fmt: skip
            else:
                others.append(order)
        if self._metrics is not None:
            self._metrics.fenced_reports.inc(len(orders))
        if others and not window[2]:
            window[2] = True
            examples = ", ".join(f"{o.slot} (epoch {o.epoch}: {o.reason})" for o in others[:3])
            text = (f"pod {pod_id} reported {len(others)} sessions it does not hold, e.g. "
                    f"{examples}; more within {FENCE_WINDOW_SECONDS:g}s are only counted "
                    "(raftorch_fenced_reports_total)")  # fmt: skip
            log.warning("%s", text)
            self._events.add(NewEvent(None, EventLevel.WARNING, EventCategory.SYSTEM, text,
                                      {"pod": pod_id, "count": len(others)}))  # fmt: skip

    def leader_change(self, term: int) -> None:
        self._lost_at.clear()  # timings from an earlier term would be meaningless
        self._events.add(
            NewEvent(None, EventLevel.INFO, EventCategory.SYSTEM,
                     f"{self._node_id} became Raft leader", {"term": term})
        )  # fmt: skip

    def _pod_removed(
        self, before: Snapshot, command: RemovePod, renewals: Mapping[str, float]
    ) -> None:
        expired = command.reason == "expired"
        if expired and self._metrics is not None:
            self._metrics.lease_expirations.inc()
        last = renewals.get(command.pod_id, self._clock())
        for key, role in before.slots_of_pod(command.pod_id).items():
            if role != "ACTIVE":
                continue
            slot = before.slots[key]
            self._lost_at[slot.slot] = last
            self._history.add(LeaseEnd(slot.slot, slot.epoch, command.reason))
            level = EventLevel.WARNING if expired else EventLevel.INFO
            text = (f"lease of pod {command.pod_id} expired (epoch {slot.epoch})" if expired
                    else f"pod {command.pod_id} left (epoch {slot.epoch})")  # fmt: skip
            self._event(slot.slot, level, EventCategory.SYSTEM, text, pod=command.pod_id)

    def _granted(self, command: Grant, epoch: int) -> None:
        self._history.add(LeaseGrant(command.slot, command.pod_id, epoch))
        verb = "failover to" if command.slot in self._lost_at else "claimed by"
        self._event(command.slot, EventLevel.INFO, EventCategory.SYSTEM,
                    f"{verb} pod {command.pod_id} (epoch {epoch})",
                    pod=command.pod_id, epoch=epoch)  # fmt: skip

    def _handed_off(self, command: Handoff) -> None:
        if self._metrics is not None:
            self._metrics.handoffs.labels(reason=command.reason).inc()
        self._event(command.slot, EventLevel.INFO, EventCategory.SYSTEM,
                    f"handing over from pod {command.pod_id} to pod {command.to_pod} "
                    f"({command.reason})", reason=command.reason, pod=command.pod_id,
                    to_pod=command.to_pod, epoch=command.epoch)  # fmt: skip

    def _released(self, command: Release) -> None:
        self._history.add(LeaseEnd(command.slot, command.epoch, command.reason))
        self._lost_at.setdefault(command.slot, self._clock())
        self._event(command.slot, EventLevel.INFO, EventCategory.SYSTEM,
                    f"released by pod {command.pod_id}: {command.reason}",
                    pod=command.pod_id, epoch=command.epoch)  # fmt: skip

    def _reported(self, before: Snapshot, command: ReportStatus) -> None:
        previous = before.slots.get(command.slot)
        if command.status is SlotStatus.ERROR:
            self._event(command.slot, EventLevel.ERROR, EventCategory.CONNECTION,
                        f"connector error on pod {command.pod_id}: {command.detail}",
                        pod=command.pod_id, epoch=command.epoch)  # fmt: skip
            return
        if command.status is not SlotStatus.ACTIVE or (
            previous is not None and previous.status is SlotStatus.ACTIVE
        ):
            return
        self._event(command.slot, EventLevel.INFO, EventCategory.CONNECTION,
                    f"session running on pod {command.pod_id} (epoch {command.epoch})",
                    pod=command.pod_id, epoch=command.epoch)  # fmt: skip
        lost = self._lost_at.pop(command.slot, None)
        if lost is not None:
            took = max(0.0, self._clock() - lost)
            if self._metrics is not None:
                self._metrics.failovers.inc()
                self._metrics.failover_duration.observe(took)
            self._event(command.slot, EventLevel.INFO, EventCategory.SYSTEM,
                        f"failover completed in {took:.2f}s", seconds=round(took, 3),
                        pod=command.pod_id)  # fmt: skip
