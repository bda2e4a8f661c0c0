"""A pod's assignments as the pod API shows them: built from the pod's own index, versioned.

Cost proportional to the pod, not to the cluster: the assignments come from the state's
index of the pod's slots, and the version is the pod's own version in the state (the
number of the last entry that changed its assignments) with the revisions of its
adapters' configurations, so a heartbeat or a long-poll can tell "nothing changed" in
O(the pod's slots) without building anything. Long-polls wait on a signal per pod,
fired only by entries that changed that pod's assignments, or by a change of the
configuration of an adapter the pod serves (`ConfigChanges`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from typing import Literal, Protocol

from persistence.adapters import AdapterRecord
from persistence.changefeed import RESYNC, Change
from protocol.pod import Assignment
from raftorch.core.ownership import Snapshot
from raftorch.core.snapshot import STOPPING


class Records(Protocol):
    def get(self, adapter_id: str) -> AdapterRecord | None: ...


class VersionedRecords(Records, Protocol):
    version: int
    """Grows with every change of any record (`ConfigCache.version`)."""


class Signal:
    """One-shot broadcast: `fire` wakes everyone waiting now."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()


class PodSignals:
    """A signal per pod with a waiting long-poll; `any` fires on every change (the Portal)."""

    def __init__(self) -> None:
        self._pods: dict[str, Signal] = {}
        self._waiting: dict[str, int] = {}
        self.any = Signal()
        self.closed = False

    def waiting(self) -> int:
        """Long-polls waiting now (a gauge: pods connected for their assignments)."""
        return sum(self._waiting.values())

    def close(self) -> None:
        """The server is shutting down: every long-poll answers now instead of holding
        the shutdown for its remaining wait."""
        self.closed = True
        self.fire_all()

    def fire(self, pod_ids: Iterable[str]) -> None:
        for pod_id in pod_ids:
            signal = self._pods.get(pod_id)
            if signal is not None:
                signal.fire()
        self.any.fire()

    def fire_all(self) -> None:
        self.fire(list(self._pods))

    async def wait(self, pod_id: str, seconds: float) -> None:
        if self.closed:
            return
        signal = self._pods.setdefault(pod_id, Signal())
        self._waiting[pod_id] = self._waiting.get(pod_id, 0) + 1
        try:
            await signal.wait(seconds)
        finally:
            self._waiting[pod_id] -= 1
            if not self._waiting[pod_id]:
                del self._waiting[pod_id]
                self._pods.pop(pod_id, None)


class ConfigChanges:
    """Whose long-polls a configuration change concerns.

    A pod's assignments (and their version) depend on the configuration of the adapters
    it serves and no other, so a changed adapter wakes the pods holding a slot of it;
    a resync wakes the pods of the adapters it found changed (`resynced()`), or every pod
    when it cannot tell (the cache's first load). Waking every long-poll on every change
    cost about a million wake-ups per replica when 1,000 pods were connected and 1,000
    adapters were created one by one (docs/performance.md)."""

    def __init__(self, resynced: Callable[[], frozenset[str] | None] = lambda: None) -> None:
        self._resynced = resynced
        self._adapters: set[str] = set()
        self._all = False

    def note(self, change: Change) -> None:
        """A cache listener: called for every change the cache applied."""
        if change == RESYNC:
            found = self._resynced()
            if found is None:
                self._all = True
            else:
                self._adapters |= found
        elif change.table == "adapters":
            self._adapters.add(change.key)

    def take(self, snapshot: Snapshot) -> set[str] | None:
        """The pods to wake for the changes noted since the last call; None: all of them."""
        adapters, everyone = self._adapters, self._all
        self._adapters, self._all = set(), False
        if everyone:
            return None
        pods: set[str] = set()
        for adapter_id in adapters:
            for slot in snapshot.slots_of_adapter(adapter_id):
                if slot.owner is not None:
                    pods.add(slot.owner)
                pods.update(slot.standbys)
        return pods


def version(snapshot: Snapshot, pod_id: str, records: Records) -> str:
    """Changes whenever the pod's assignments (slots, roles, epochs) or their adapters'
    configurations do: the pod's version in the state and the sum of the revisions of
    the adapters it serves (revisions only grow, so any change raises the sum)."""
    return f"{snapshot.pod_versions.get(pod_id, 0)}.{_revisions(snapshot, pod_id, records)}"


def _revisions(snapshot: Snapshot, pod_id: str, records: Records) -> int:
    adapters = {slot.rsplit("/", 1)[0] for slot in snapshot.slots_of_pod(pod_id)}
    revisions = 0
    for adapter_id in adapters:
        record = records.get(adapter_id)
        revisions += record.revision if record is not None else 0
    return revisions


class Versions:
    """`version` of each pod, its revisions part remembered while neither the pod's roles
    (the same map object in the state: persistent maps are replaced, never changed) nor
    the configuration changed. Every heartbeat and long-poll asks for it; at 1,000 pods
    of 100 slots each, working it out afresh was 5% of the leader's time while placing."""

    MAX_REMEMBERED = 65_536
    """More pod ids than this (pods come and go): forget them all and start again."""

    def __init__(self, records: VersionedRecords) -> None:
        self._records = records
        self._known: dict[str, tuple[object, int, int]] = {}  # pod -> roles, config, sum

    def of(self, snapshot: Snapshot, pod_id: str) -> str:
        roles, config = snapshot.slots_of_pod(pod_id), self._records.version
        known = self._known.get(pod_id)
        if known is not None and known[0] is roles and known[1] == config:
            revisions = known[2]
        else:
            revisions = _revisions(snapshot, pod_id, self._records)
            if len(self._known) >= self.MAX_REMEMBERED:
                self._known.clear()
            self._known[pod_id] = (roles, config, revisions)
        return f"{snapshot.pod_versions.get(pod_id, 0)}.{revisions}"


def build(snapshot: Snapshot, pod_id: str, records: Records) -> list[Assignment]:
    """The pod's assignments, ordered by slot; slots it must stop (revoked, handed off) are
    left out, and so are adapters whose configuration this replica does not have."""
    found: list[Assignment] = []
    for key, role_name in sorted(snapshot.slots_of_pod(pod_id).items()):
        slot = snapshot.slots[key]
        if role_name == "ACTIVE" and slot.status in STOPPING:
            continue
        record = records.get(slot.adapter_id)
        if record is None:
            continue
        role: Literal["ACTIVE", "STANDBY"] = "ACTIVE" if role_name == "ACTIVE" else "STANDBY"
        found.append(
            Assignment(
                slot=key,
                adapter_id=slot.adapter_id,
                role=role,
                epoch=slot.epoch if role == "ACTIVE" else 0,
                connector=record.connector,
                config=record.config,
                artifacts=list(record.artifacts),
            )
        )
    return found
