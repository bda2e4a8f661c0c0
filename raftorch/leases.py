"""Leader-only lease keeping: renewal times in memory, acknowledged only after a commit.

Renewals never go through the Raft log. The leader keeps each pod's last renewal
receipt on its monotonic clock (`LeaseTracker`) and expires a pod at receipt + TTL.
It acknowledges a heartbeat only after a Raft commit that *began after the
heartbeat arrived* (`RenewalConfirmer`): one small barrier entry per batching
window, shared by every heartbeat of that window. A leader that has been deposed
or cut off cannot get that commit, so it can never extend a lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping

from raftorch.bridge import NotLeaderError, RaftBridge
from raftorch.replication import RaftStatus

log = logging.getLogger(__name__)


class LeaseTracker:
    """Each pod's last confirmed renewal, valid only for one leader term.

    A new leader counts every pod as renewed at the moment it became leader: no
    lease can then expire sooner than an earlier leader could have promised.
    """

    def __init__(self) -> None:
        self.term: int | None = None
        self._renewals: dict[str, float] = {}

    def become_leader(self, term: int, now: float, pod_ids: Iterable[str]) -> None:
        self.term = term
        self._renewals = dict.fromkeys(pod_ids, now)

    def step_down(self) -> None:
        self.term = None
        self._renewals.clear()

    def admit(self, pod_ids: Iterable[str], now: float) -> None:
        """Pods new to the state start with a full TTL; pods gone from it are forgotten."""
        present = set(pod_ids)
        for pod_id in present - self._renewals.keys():
            self._renewals[pod_id] = now
        for pod_id in self._renewals.keys() - present:
            del self._renewals[pod_id]

    def registered(self, pod_id: str, now: float, term: int) -> None:
        """A pod whose registration just committed starts with a full TTL."""
        if term == self.term:
            self._renewals[pod_id] = now

    def renew(self, pod_id: str, receipt: float, term: int) -> bool:
        """Record a confirmed renewal; refused when it was confirmed in another term."""
        if term != self.term or pod_id not in self._renewals:
            return False
        self._renewals[pod_id] = max(self._renewals[pod_id], receipt)
        return True

    def renewals(self) -> Mapping[str, float]:
        return dict(self._renewals)


class RenewalConfirmer:
    """Batches heartbeats into barrier commits (see the module docstring).

    `confirm()` returns the Raft term of the barrier that confirmed the caller, or
    raises NotLeaderError / OutcomeUnknownError: then the caller must not renew.
    """

    def __init__(
        self,
        bridge: RaftBridge,
        status: Callable[[], RaftStatus],
        *,
        window_seconds: float,
    ) -> None:
        self._bridge = bridge
        self._status = status
        self._window = window_seconds
        self._waiting: asyncio.Future[int] | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.barriers = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="renewal-barriers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_exception(NotLeaderError("replica is shutting down"))

    async def confirm(self) -> int:
        if self._task is not None and self._task.done():
            self._task.result()  # surface a crashed batcher instead of hanging
        if self._waiting is None:
            self._waiting = asyncio.get_running_loop().create_future()
            self._waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._wake.set()
        return await asyncio.shield(self._waiting)

    async def run_once(self) -> None:
        """Commit one barrier for everyone waiting now (the waiters all arrived before it)."""
        group, self._waiting = self._waiting, None
        if group is None:
            return
        status = self._status()
        if not status.is_leader:
            group.set_exception(NotLeaderError("this replica is not the Raft leader"))
            return
        try:
            await self._bridge.submit((), request_id=f"barrier-{uuid.uuid4().hex}")
        except Exception as exc:  # every failure means "not confirmed"
            group.set_exception(exc)
            return
        self.barriers += 1
        group.set_result(status.term)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self._window)  # the batching window
            await self.run_once()
