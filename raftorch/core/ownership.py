"""The replicated ownership state: pods, slots and the epoch counter, as Raft applies them.

`OwnershipState.apply` is what every Raft replica runs for a committed entry. It
must give the same result on every replica, so it reads no clock, no randomness and
no I/O: time comes in as an argument. An entry applies whole or not at all (the
appliers change a working copy that replaces the state only at the end), and an
unexpected exception is caught and reported in the result, because an exception
escaping a pysyncobj applier wedges the node for good. The state itself is an
immutable `Snapshot` (`raftorch.core.snapshot`); the appliers are in
`raftorch.core.appliers`.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace

from protocol.values import SlotStatus
from raftorch.core.appliers import APPLIERS, StaleLeader
from raftorch.core.cowmap import CowMap
from raftorch.core.dump import UnreadableDumpError, dump_state, load_state
from raftorch.core.model import ApplyResult, Command, PodInfo, SlotState
from raftorch.core.snapshot import Batch, Rejected, Snapshot
from raftorch.core.transitions import IllegalTransitionError

__all__ = ["APPLIED_REQUESTS_KEPT", "OwnershipState", "Rejected", "Snapshot", "StaleLeader"]

APPLIED_REQUESTS_KEPT = 10_000


class OwnershipState:
    """Pods, slots and the epoch counter, as replicated by Raft.

    Thread contract: `apply` runs on the Raft thread only; `snapshot` may run on any
    thread (it reads one reference). pysyncobj serialises the state for its full dump
    through `__getstate__`, in a plain format of our own (`raftorch.core.dump`), so a
    dump never depends on module or class names.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current = Snapshot()
        self.applied: dict[str, ApplyResult] = {}

    def __getstate__(self) -> dict[str, object]:
        return {"dump": dump_state(self._current, self.applied)}

    def __setstate__(self, state: dict[str, object]) -> None:
        self._lock = threading.Lock()
        payload = state.get("dump")
        if not isinstance(payload, bytes):
            raise UnreadableDumpError("the Raft state dump is not in raftorch's own format")
        self._current, self.applied = load_state(payload)

    def snapshot(self) -> Snapshot:
        return self._current

    def frozen(self) -> OwnershipState:
        """A copy that later entries do not change, for writing the full dump elsewhere
        (raftorch.raft.dumps): the snapshot is immutable and shared, the table of applied
        request ids is copied."""
        copy = OwnershipState()
        copy._current, copy.applied = self._current, dict(self.applied)
        return copy

    def apply(self, request_id: str, at: float, commands: Sequence[Command]) -> ApplyResult:
        """Apply one committed entry; never raises, idempotent on `request_id`."""
        previous = self.applied.get(request_id)
        if previous is not None:
            return replace(previous, duplicate=True)
        try:
            batch = Batch(self._current, at)
            rejected: list[tuple[int, str]] = []
            for index, command in enumerate(commands):
                try:
                    APPLIERS[type(command)](batch, command)
                except (Rejected, IllegalTransitionError) as exc:
                    rejected.append((index, str(exc)))
            result = ApplyResult(request_id, tuple(rejected), tuple(batch.granted),
                                 touched=frozenset(batch.touched))  # fmt: skip
            finished = batch.finish(self._current.applied_entries + 1)
        except StaleLeader as exc:
            result = ApplyResult(request_id, error=f"stale leader: {exc}")
            self._remember(request_id, result)
            return result
        except Exception as exc:  # an applier bug must not wedge the node
            result = ApplyResult(request_id, error=f"{type(exc).__name__}: {exc}")
            self._remember(request_id, result)
            return result
        with self._lock:
            self._current = finished
        self._remember(request_id, result)
        return result

    def _remember(self, request_id: str, result: ApplyResult) -> None:
        self.applied[request_id] = result
        while len(self.applied) > APPLIED_REQUESTS_KEPT:
            del self.applied[next(iter(self.applied))]

    # Read-only views kept for tests and tools that inspect the live state.
    @property
    def pods(self) -> CowMap[str, PodInfo]:
        return self._current.pods

    @property
    def slots(self) -> CowMap[str, SlotState]:
        return self._current.slots

    @property
    def epoch_counter(self) -> int:
        return self._current.epoch_counter

    @property
    def epoch_floor(self) -> int:
        return self._current.epoch_floor

    @property
    def applied_entries(self) -> int:
        return self._current.applied_entries


def by_status(snapshot: Snapshot) -> Mapping[SlotStatus, int]:
    """Slots per status, from the kept counts."""
    return snapshot.status_counts
