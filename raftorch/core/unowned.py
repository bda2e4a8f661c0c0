"""The slots a plan grants, in the order it grants them, found as the plan takes them.

Failovers come first (slots that had an owner), then new slots, each in adapter order
and slot order. A plan the budget cuts short stops taking, and what it left is counted
per adapter without looking at each slot again: placing 100,000 sessions a thousand at
a time, building the whole list for every plan was 8% of the leader's time. Part of the
planner (`raftorch.core.planner`), on its working copy; pure.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

from protocol.values import SlotStatus
from raftorch.core.cowmap import EMPTY
from raftorch.core.model import AdapterSpec, SlotState, slot_index, wanted_count

if TYPE_CHECKING:
    from raftorch.core.planner import _Slot, _Work


def grantable(current: _Slot | SlotState) -> bool:
    """No owner, and not being revoked (a revoked slot must vanish before it is granted)."""
    return current.owner is None and current.status is SlotStatus.UNASSIGNED


class Unowned:
    """The unowned wanted slots of `desired` (adapters in sorted order): `take` the next
    one, `rest` counts what is left. New slots wait while pods settle (`place_new`)."""

    def __init__(self, work: _Work, desired: Mapping[str, AdapterSpec]) -> None:
        self._work = work
        self._specs = list(desired.values())
        self._failovers = deque(self._find_failovers(desired))
        self._next = 0  # the next adapter to look at for new slots
        self._keys: deque[str] = deque()  # new slots of the adapter before it, not taken
        self._stuck: set[str] = set()  # connectors no new slot can be placed on (`stick`)
        self.skipped = 0  # new slots of those connectors, counted and not taken
        if not work.view.place_new:  # pods are still joining: new work waits for them
            settling = 0
            for spec in self._specs:
                if count := self._count_new(spec):
                    settling += count
                    work.pending.add(spec.adapter_id)
            self._next = len(self._specs)
            if settling:
                work.reasons.append(f"{settling} new slot(s) wait for joining pods to settle")

    def take(self) -> tuple[str, str] | None:
        """The next (adapter, slot) to grant, or None when there is none."""
        if self._failovers:
            return self._failovers.popleft()
        while not self._keys:
            if self._next >= len(self._specs):
                return None
            spec = self._specs[self._next]
            self._next += 1
            if spec.connector in self._stuck:
                self.skipped += self._count_new(spec)
            else:
                self._keys = deque(self._new_of(spec))
        return self._specs[self._next - 1].adapter_id, self._keys.popleft()

    def stick(self, connector: str) -> None:
        """A new slot of `connector` could not be placed: nor can any other in this plan
        (the choice for a slot with no members depends only on the connector, and the
        pods' load only grows while a plan grants). The rest of them are counted in
        `skipped`, not taken: 100,000 slots of a connector no pod offers cost a full
        pass 0.5 s on this replica's event loop when each was looked at."""
        self._stuck.add(connector)
        if self._keys and self._specs[self._next - 1].connector == connector:
            self.skipped += len(self._keys)
            self._keys.clear()

    def rest(self) -> tuple[int, set[str]]:
        """How many slots are left to take, and of which adapters."""
        count = len(self._failovers) + len(self._keys)
        adapters = {adapter for adapter, _ in self._failovers}
        if self._keys:
            adapters.add(self._specs[self._next - 1].adapter_id)
        for spec in self._specs[self._next :]:
            if found := self._count_new(spec):
                count += found
                adapters.add(spec.adapter_id)
        return count, adapters

    def _find_failovers(self, desired: Mapping[str, AdapterSpec]) -> list[tuple[str, str]]:
        """Slots that had an owner and have none: only unassigned ones (in the view's
        index, or changed by this plan) can be; slots beyond what is wanted were revoked
        or deleted by this plan already."""
        work = self._work
        found: list[tuple[str, int, str]] = []
        for key in {*work.unassigned, *work.changed()}:
            current = work.peek(key)
            if current is None or current.adapter_id not in desired:
                continue
            if grantable(current) and current.epoch > 0:
                found.append((current.adapter_id, slot_index(key), key))
        found.sort()
        return [(adapter_id, key) for adapter_id, _, key in found]

    def _new_of(self, spec: AdapterSpec) -> list[str]:
        """The adapter's wanted slots that never had an owner and have none, in order."""
        work, found = self._work, []
        for key in work.open_slots(spec):
            current = work.peek(key)
            if current is None or (grantable(current) and current.epoch <= 0):
                found.append(key)
        return found

    def _count_new(self, spec: AdapterSpec) -> int:
        """len(_new_of(spec)), without a look at each slot for an adapter that has none."""
        work = self._work
        if not work.adapter_slots.get(spec.adapter_id, EMPTY) and not work.added(spec.adapter_id):
            return wanted_count(spec)
        return len(self._new_of(spec))
