"""The pod's sessions: start, prepare (standby), stop, fence, and what to report about them.

The agent decides *when* (assignments, lease deadline, stop orders); this module does it,
one connector instance per session, each start and stop in a task of its own with a
timeout. Nothing here is awaited by lease keeping: `start`, `prepare` and `release` return
at once, and `fence_all` (the watchdog's) stops every session concurrently within a fixed
budget, cancelling starts still under way. Starting an owned session first claims its
fence, so the previous owner is shut out of the store before the new one writes anything.

Runs on the agent's event loop only; no method holds state across an await that another
one could change under it (each session's work is serialised through its own task).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from adapter.sdk import Connector, FencedState, SessionContext, SessionInfo, SessionStatus
from persistence.artifacts import ArtifactRepository
from persistence.audit import DISABLED, AuditTrail
from persistence.db import Database
from persistence.events import NewEvent
from persistence.session_state import SessionStateStore
from persistence.writebehind import WriteBehind
from protocol.errors import RaftorchError, StaleEpochError, UnavailableError
from protocol.values import EventCategory, EventLevel

log = logging.getLogger(__name__)


@dataclass
class Session:
    info: SessionInfo
    connector: Connector
    role: str  # ACTIVE or STANDBY
    status: SessionStatus = SessionStatus.CLAIMING
    detail: str = ""
    context: SessionContext | None = field(default=None, repr=False)
    work: asyncio.Task[None] | None = field(default=None, repr=False)  # start or prepare
    stopping: asyncio.Task[None] | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Timeouts:
    start_seconds: float  # a connector start that takes longer is an ERROR
    stop_seconds: float  # a graceful stop (revoked, handed over, drain)


class SessionManager:
    """Owns the connector instances of one pod."""

    def __init__(
        self,
        pod_id: str,
        connectors: Mapping[str, type[Connector]],
        db: Database,
        events: WriteBehind[NewEvent],
        *,
        timeouts: Timeouts,
        audit: AuditTrail = DISABLED,
        metrics_registry: CollectorRegistry | None = None,
    ) -> None:
        self._pod_id = pod_id
        self._metrics_registry = metrics_registry  # handed to connectors (SessionContext)
        self._audit = audit
        self._types = connectors
        self._db = db
        self._store = SessionStateStore(db)
        self._artifacts = ArtifactRepository(db)
        self._events = events
        self._timeouts = timeouts
        self.sessions: dict[str, Session] = {}
        self.stopped: dict[str, int] = {}  # slot -> epoch stopped since the last report
        self.on_change: Callable[[], None] = lambda: None
        # A start that could not happen (the session store refused it, the slot's previous
        # session was still stopping) or a standby that failed to prepare: the slot stays
        # assigned here and nothing may change the assignments soon, so the agent asks for
        # them again later.
        self.ask_again: Callable[[str], None] = lambda slot: None

    # --- what the agent reads -------------------------------------------------------

    def emit(
        self,
        adapter_id: str,
        level: EventLevel,
        category: EventCategory,
        description: str,
        details: Mapping[str, Any],
    ) -> None:
        details = {"pod": self._pod_id, **details}
        self._events.add(NewEvent(adapter_id, level, category, description, details))

    def active(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.role == "ACTIVE"]

    def reports(self) -> list[dict[str, Any]]:
        """What the next heartbeat says: owned sessions (starting, running or still
        stopping), then the ones whose connector has stopped since the last report."""
        running = [
            {"slot": s.info.slot, "epoch": s.info.epoch, "status": s.status.value,
             "detail": s.detail}
            for s in self.active()
        ]  # fmt: skip
        gone = [
            {"slot": slot, "epoch": epoch, "status": "STOPPED"}
            for slot, epoch in self.stopped.items()
            if slot not in self.sessions
        ]
        return running + gone

    def reported(self, stopped: Mapping[str, int]) -> None:
        """The orchestrator acknowledged these STOPPED reports."""
        for slot, epoch in stopped.items():
            if self.stopped.get(slot) == epoch:
                del self.stopped[slot]

    def _report(self, slot: str, status: SessionStatus, detail: str) -> None:
        session = self.sessions.get(slot)
        if session is not None and (session.status, session.detail) != (status, detail):
            session.status, session.detail = status, detail[:1000]
            self.on_change()

    # --- what the agent asks for (each returns at once) -----------------------------

    def start(self, info: SessionInfo) -> None:
        """Own the session: claim the fence, then start the connector, in a task."""
        current = self.sessions.get(info.slot)
        if current is not None and current.stopping is not None and current.stopping.done():
            del self.sessions[info.slot]  # its stop ended without forgetting it: gone
            current = None
        if current is not None and current.stopping is not None:
            self.ask_again(info.slot)  # its previous session is still stopping
            return
        if current is not None and current.role == "ACTIVE":
            return  # already owned
        kind = self._types.get(info.connector)
        if kind is None:
            log.error("no connector type=%s slot=%s", info.connector, info.slot)
            return
        if current is not None and current.work is not None and not current.work.done():
            current.work.cancel()  # a standby still preparing: start fresh
            connector = kind()
        else:
            connector = current.connector if current is not None else kind()
        state = FencedState(self._store, info, lambda exc: self._fence_rejected(info, exc))
        context = SessionContext(info, self._db, state, self._artifacts, self.emit, self._report,
                                 metrics=self._metrics_registry)  # fmt: skip
        session = Session(info, connector, "ACTIVE", context=context)
        self.sessions[info.slot] = session
        self._audit.record("session_start", slot=info.slot, epoch=info.epoch)
        session.work = asyncio.create_task(self._run_start(session), name=f"start {info.slot}")

    def prepare(self, info: SessionInfo) -> None:
        """Warm standby: a connector instance, prepared (in a task), not started."""
        kind = self._types.get(info.connector)
        if kind is None or info.slot in self.sessions:
            return
        session = Session(info, kind(), "STANDBY")
        self.sessions[info.slot] = session
        session.work = asyncio.create_task(self._run_prepare(session), name=f"prepare {info.slot}")

    def release(self, slot: str, reason: str, *, timeout: float | None = None) -> None:
        """Stop a session in a task: cleanly within the graceful stop timeout, or within
        `timeout` (a stop order: someone else holds the session now)."""
        session = self.sessions.get(slot)
        if session is None or session.stopping is not None:
            return
        budget = self._timeouts.stop_seconds if timeout is None else timeout
        session.stopping = asyncio.create_task(
            self._run_stop(session, reason, budget), name=f"stop {slot}"
        )

    async def stop(self, slot: str, reason: str) -> None:
        """Stop one session and wait for it (drain, tests)."""
        self.release(slot, reason)
        session = self.sessions.get(slot)
        if session is not None and session.stopping is not None:
            await asyncio.shield(session.stopping)

    async def stop_all(self, reason: str, *, standbys: bool = False) -> None:
        """Stop sessions cleanly, all at once, and wait for every one (drain)."""
        for session in list(self.sessions.values()):
            if session.role == "ACTIVE" or standbys:
                self.release(session.info.slot, reason)
        await self._wait_stopping(None)

    async def fence_all(self, reason: str, budget_seconds: float, *, standbys: bool) -> None:
        """The lease ran out (or the registration is gone): stop every owned session at
        once, giving each at most `budget_seconds` (a start under way is cancelled)."""
        self.begin_fence(reason, budget_seconds, standbys=standbys)
        await self._wait_stopping(budget_seconds)

    def begin_fence(self, reason: str, budget_seconds: float, *, standbys: bool) -> None:
        """Start `fence_all`'s stops, all of them before returning, without waiting."""
        for session in list(self.sessions.values()):
            if session.role != "ACTIVE" and not standbys:
                continue
            if session.stopping is None:
                session.stopping = asyncio.create_task(
                    self._run_stop(session, reason, budget_seconds),
                    name=f"fence {session.info.slot}",
                )

    async def _wait_stopping(self, budget_seconds: float | None) -> None:
        pending = [s.stopping for s in self.sessions.values() if s.stopping is not None]
        if not pending:
            return
        done, late = await asyncio.wait(pending, timeout=budget_seconds)
        for task in late:
            # Over budget (a starved event loop, a start that ignores cancellation): it
            # goes on, never abandoned, so the session is still forgotten and its stop
            # recorded and reported when it ends. Cancelling it left the session owned
            # and reported as held for good (bug 6 in docs/reliability.md).
            log.error("session stop did not finish within %.2fs task=%s", budget_seconds or 0,
                      task.get_name())  # fmt: skip
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.error("session stop failed task=%s", task.get_name(), exc_info=task.exception())

    # --- the work itself ---------------------------------------------------------------

    async def _run_start(self, session: Session) -> None:
        info, context = session.info, session.context
        assert context is not None
        claimed = False
        try:
            await context.state.claim()
            claimed = True
            await context.pin_artifacts()
            async with asyncio.timeout(self._timeouts.start_seconds):
                await session.connector.start(context)
        except (StaleEpochError, UnavailableError) as exc:  # stale grant, or retry later
            log.warning("start refused slot=%s epoch=%d error=%s", info.slot, info.epoch,
                        exc.message)  # fmt: skip
            await self._stop_connector(session, self._timeouts.stop_seconds)
            if self.sessions.get(info.slot) is session:
                del self.sessions[info.slot]
            # After a successful claim the session may have run briefly: say so.
            self._audit.record("session_refused", slot=info.slot, epoch=info.epoch,
                               reason=exc.message, claimed=claimed)  # fmt: skip
            self.ask_again(info.slot)
            self.on_change()
            return
        except TimeoutError:
            detail = f"connector did not start within {self._timeouts.start_seconds:g}s"
            log.warning("start timed out slot=%s epoch=%d", info.slot, info.epoch)
            self._report(info.slot, SessionStatus.ERROR, detail)
            return
        except RaftorchError as exc:  # bad config, database down: report it, do not hide it
            log.warning("start failed slot=%s error=%s", info.slot, exc.message)
            self._report(info.slot, SessionStatus.ERROR, exc.message)
            return
        except Exception:
            log.exception("connector start failed slot=%s", info.slot)
            self._report(info.slot, SessionStatus.ERROR, "connector failed to start")
            return
        if session.stopping is not None:
            # Its stop began while the start ignored being cancelled: the stop goes on
            # without it, so this connector must not run on unseen.
            log.warning("start ended after its stop began slot=%s", info.slot)
            await self._stop_connector(session, self._timeouts.stop_seconds)
            return
        log.info("session started slot=%s epoch=%d", info.slot, info.epoch)
        self._audit.record("session_running", slot=info.slot, epoch=info.epoch)
        self.on_change()

    async def _run_prepare(self, session: Session) -> None:
        try:
            async with asyncio.timeout(self._timeouts.start_seconds):
                await session.connector.prepare(session.info)
        except Exception:
            log.exception("standby prepare failed slot=%s", session.info.slot)
            if self.sessions.get(session.info.slot) is session and session.role == "STANDBY":
                del self.sessions[session.info.slot]
                self.ask_again(session.info.slot)

    async def _run_stop(self, session: Session, reason: str, timeout: float) -> None:
        """Cancel a start under way, stop the connector, then forget (and report) it."""
        began = time.monotonic()
        work = session.work
        if work is not None and not work.done():
            work.cancel()
            # Bounded: a start that does not end when cancelled must not hold up the
            # stop (the connector is stopped regardless; the fence guards the store).
            await asyncio.wait({work}, timeout=timeout)
            if not work.done():
                log.warning("start did not end when cancelled slot=%s", session.info.slot)
            elif not work.cancelled() and work.exception() is not None:
                log.warning("start failed while cancelled slot=%s", session.info.slot)
        await self._stop_connector(session, max(0.0, timeout - (time.monotonic() - began)))
        slot = session.info.slot
        if self.sessions.get(slot) is session:
            del self.sessions[slot]
        if session.role != "ACTIVE":
            return
        # Recorded once the connector has stopped (an end is written after the fact).
        self._audit.record("session_stop", slot=slot, epoch=session.info.epoch, reason=reason,
                           began=began)  # fmt: skip
        self.stopped[slot] = session.info.epoch
        log.info("session stopped slot=%s epoch=%d reason=%s", slot, session.info.epoch, reason)
        self.emit(session.info.adapter_id, EventLevel.INFO, EventCategory.SYSTEM,
                  f"session stopped on pod {self._pod_id}: {reason}",
                  {"slot": slot, "epoch": session.info.epoch})  # fmt: skip
        self.on_change()

    async def _stop_connector(self, session: Session, timeout: float) -> None:
        """Stop the connector: past `timeout` it is cancelled, and still waited for, since
        the session's stop is recorded only once its connector has really stopped."""
        stopping = asyncio.ensure_future(session.connector.stop())
        done, _ = await asyncio.wait({stopping}, timeout=timeout)
        if not done:
            log.warning("connector did not stop within %.2fs slot=%s", timeout, session.info.slot)
            stopping.cancel()
            await asyncio.wait({stopping})
        if not stopping.cancelled() and (exc := stopping.exception()) is not None:
            log.error("connector stop failed slot=%s", session.info.slot, exc_info=exc)

    def _fence_rejected(self, info: SessionInfo, exc: StaleEpochError) -> None:
        self._audit.record(
            "write_rejected", slot=info.slot, epoch=info.epoch, detail=exc.message[:300]
        )
