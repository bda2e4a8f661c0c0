"""Self-fencing never abandons a session: a stop that overruns the fence budget still ends.

Bug 6 in docs/reliability.md: the pod cancelled stops that did not finish within the
0.3 s fence budget; those sessions were never forgotten, never recorded as stopped,
never started again and kept being reported as held. Real PostgreSQL (the start claims
the session's fence), the pod's own session manager.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from adapter.sdk import Connector, SessionContext, SessionInfo, SessionStatus
from adapter.sessions import SessionManager, Timeouts
from persistence.audit import AuditTrail
from persistence.db import Database
from persistence.events import NewEvent
from persistence.writebehind import WriteBehind

FENCE_BUDGET = 0.3
"""The shipped fence-stop budget (half the 0.6 s safety margin at TTL 3 s)."""
SLOW_STOP = 1.0


class SlowStop(Connector):
    """Its stop takes SLOW_STOP seconds and ignores cancellation, as a connector blocked
    in a close handshake does."""

    type = "test-slow-stop"
    version = "0.0.0"

    async def start(self, context: SessionContext) -> None:
        context.report(SessionStatus.ACTIVE)

    async def stop(self) -> None:
        loop = asyncio.get_running_loop()
        end = loop.time() + SLOW_STOP
        while loop.time() < end:
            try:
                await asyncio.sleep(end - loop.time())
            except asyncio.CancelledError:
                continue  # the behaviour under test: it does not give up when asked


async def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.01)


def _info(index: int, epoch: int) -> SessionInfo:
    return SessionInfo(f"slot-{index}", f"adapter-{index}", epoch, "pod-1", SlowStop.type, {})


async def test_a_stop_over_the_fence_budget_still_ends_and_is_recorded(
    tmp_path: Path, pg_dsn: str
) -> None:
    trail = tmp_path / "pod-1.audit"
    async with Database(pg_dsn) as db:
        events: WriteBehind[NewEvent] = WriteBehind("events", lambda batch: asyncio.sleep(0))
        sessions = SessionManager(
            "pod-1", {SlowStop.type: SlowStop}, db, events,
            timeouts=Timeouts(start_seconds=5.0, stop_seconds=5.0),
            audit=AuditTrail(trail, "pod-1"),
        )  # fmt: skip
        for index in range(3):
            sessions.start(_info(index, epoch=1))
        await _wait(lambda: all(s.status is SessionStatus.ACTIVE for s in sessions.active())
                    and len(sessions.active()) == 3, 10.0, "three sessions ACTIVE")  # fmt: skip

        began = time.monotonic()
        await sessions.fence_all("lease expired: fenced itself", FENCE_BUDGET, standbys=False)
        assert time.monotonic() - began < SLOW_STOP  # the watchdog is not held up
        assert len(sessions.active()) == 3  # still stopping: over budget

        # The stops go on to the end: forgotten, recorded, reported STOPPED.
        await _wait(lambda: not sessions.sessions, 5 * SLOW_STOP, "the stops to end")
        assert sessions.stopped == {f"slot-{i}": 1 for i in range(3)}
        assert {r["status"] for r in sessions.reports()} == {"STOPPED"}
        stops = [json.loads(line) for line in trail.read_text().splitlines()]
        stops = [e for e in stops if e["kind"] == "session_stop"]
        assert sorted(e["slot"] for e in stops) == [f"slot-{i}" for i in range(3)]
        assert all(e["t"] - e["began"] >= SLOW_STOP * 0.9 for e in stops)

        # Granted again later, the session starts again.
        sessions.start(_info(0, epoch=2))
        await _wait(lambda: [s.info.epoch for s in sessions.active()
                             if s.status is SessionStatus.ACTIVE] == [2],
                    10.0, "the session started again")  # fmt: skip
        await sessions.stop_all("drain: test over")
