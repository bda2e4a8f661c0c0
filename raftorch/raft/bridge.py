"""The one bridge from pysyncobj callbacks to asyncio: every command is an awaitable.

Raft runs on its own thread. `RaftBridge.submit` queues an entry and returns its
`ApplyResult` once committed and applied. A timeout raises `OutcomeUnknownError`:
the entry may still commit later, so the caller retries with the same request id,
which the appliers treat as a no-op if it did. Commands in flight are capped; the
cap is back-pressure, not an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from pysyncobj import FAIL_REASON

from protocol.errors import UnavailableError
from raftorch.core.model import ApplyResult, Command
from raftorch.raft.metrics import RaftMetrics
from raftorch.raft.node import DoneCallback


class NotLeaderError(UnavailableError):
    """This replica is not the leader (or lost leadership before the commit)."""

    code = "not_leader"


class OutcomeUnknownError(UnavailableError):
    """No answer in time: the entry may or may not commit; retry with the same id."""

    code = "outcome_unknown"


class RaftNode(Protocol):
    """What the bridge needs of a Raft node (LeaseNode, or a fake in unit tests)."""

    def submit(
        self, request_id: str, at: float, commands: tuple[Command, ...], on_done: DoneCallback
    ) -> None: ...


def _failure(reason: int) -> UnavailableError:
    if reason in (FAIL_REASON.NOT_LEADER, FAIL_REASON.MISSING_LEADER):
        return NotLeaderError("this replica is not the Raft leader")
    if reason == FAIL_REASON.DISCARDED:
        return NotLeaderError("leadership changed before the entry committed; it was discarded")
    if reason == FAIL_REASON.QUEUE_FULL:
        return UnavailableError("the Raft command queue is full")
    return OutcomeUnknownError(f"Raft reported failure reason {reason}; the outcome is unknown")


class RaftBridge:
    """Submit commands from asyncio and await their committed result."""

    def __init__(
        self,
        node: RaftNode,
        *,
        timeout_seconds: float,
        max_in_flight: int,
        metrics: RaftMetrics | None = None,
    ) -> None:
        self._node = node
        self._timeout = timeout_seconds
        self._slots = asyncio.Semaphore(max_in_flight)
        self._metrics = metrics
        self.in_flight = 0

    async def submit(
        self,
        commands: Sequence[Command],
        *,
        request_id: str | None = None,
        at: float | None = None,
        timeout_seconds: float | None = None,
    ) -> ApplyResult:
        """Commit one entry carrying `commands`; raises NotLeaderError or OutcomeUnknownError."""
        request_id = request_id or uuid.uuid4().hex
        at = time.time() if at is None else at
        loop = asyncio.get_running_loop()
        async with self._slots:
            future: asyncio.Future[ApplyResult] = loop.create_future()
            # A late outcome after a timeout is nobody's to read: mark it retrieved.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            started = time.monotonic()
            self._track(+1)
            try:
                self._node.submit(request_id, at, tuple(commands), _settler(loop, future))
                async with asyncio.timeout(timeout_seconds or self._timeout):
                    return await asyncio.shield(future)
            except TimeoutError:
                raise OutcomeUnknownError(
                    f"no commit within {timeout_seconds or self._timeout:.1f}s for "
                    f"request {request_id}; retry with the same request id"
                ) from None
            finally:
                self._track(-1)
                if self._metrics is not None and future.done() and not future.exception():
                    self._metrics.commit_latency.observe(time.monotonic() - started)

    def _track(self, delta: int) -> None:
        self.in_flight += delta
        if self._metrics is not None:
            self._metrics.commands_in_flight.set(self.in_flight)


def _settler(loop: asyncio.AbstractEventLoop, future: asyncio.Future[ApplyResult]) -> DoneCallback:
    """A pysyncobj callback that hands the outcome to `future` on its loop's thread."""

    def settle(result: Any, reason: int) -> None:
        if future.done():
            return
        if reason == FAIL_REASON.SUCCESS and isinstance(result, ApplyResult):
            future.set_result(result)
        elif reason == FAIL_REASON.SUCCESS:
            future.set_exception(OutcomeUnknownError(f"unexpected applier result {result!r}"))
        else:
            future.set_exception(_failure(reason))

    def on_done(result: Any, reason: int) -> None:
        # Runs on the Raft thread: must never raise (a closed loop just drops it).
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, reason)

    return on_done
