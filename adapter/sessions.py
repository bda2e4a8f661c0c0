"""The pod's sessions: start, prepare (standby), stop, and what to report about them.

The agent decides *when* (assignments, lease deadline, stop orders); this module
does it, one connector instance per session. Starting an owned session first
claims its fence, so the previous owner is shut out of the store before the new
one writes anything.
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
from persistence.errors import RaftorchError, StaleEpochError, UnavailableError
from persistence.events import EventCategory, EventLevel, NewEvent
from persistence.session_state import SessionStateStore
from persistence.writebehind import WriteBehind

log = logging.getLogger(__name__)


@dataclass
class Session:
    info: SessionInfo
    connector: Connector
    role: str  # ACTIVE or STANDBY
    status: SessionStatus = SessionStatus.CLAIMING
    detail: str = ""
    context: SessionContext | None = field(default=None, repr=False)


class SessionManager:
    """Owns the connector instances of one pod. Runs on the agent's event loop."""

    def __init__(
        self,
        pod_id: str,
        connectors: Mapping[str, type[Connector]],
        db: Database,
        events: WriteBehind[NewEvent],
        *,
        stop_timeout_seconds: float,
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
        self._stop_timeout = stop_timeout_seconds
        self.sessions: dict[str, Session] = {}
        self.stopped: dict[str, int] = {}  # slot -> epoch stopped since the last report
        self.on_change: Callable[[], None] = lambda: None

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

    def _report(self, slot: str, status: SessionStatus, detail: str) -> None:
        session = self.sessions.get(slot)
        if session is not None and (session.status, session.detail) != (status, detail):
            session.status, session.detail = status, detail[:1000]
            self.on_change()

    def active(self) -> list[Session]:
        return [s for s in self.sessions.values() if s.role == "ACTIVE"]

    def reports(self) -> list[dict[str, Any]]:
        """What the next heartbeat says: running sessions, then the ones stopped since."""
        running = [
            {
                "slot": s.info.slot,
                "epoch": s.info.epoch,
                "status": s.status.value,
                "detail": s.detail,
            }
            for s in self.active()
        ]
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

    async def start(self, info: SessionInfo) -> bool:
        """Own the session: claim the fence, then start the connector. False if refused."""
        kind = self._types.get(info.connector)
        if kind is None:
            log.error("no connector type=%s slot=%s", info.connector, info.slot)
            return False
        previous = self.sessions.get(info.slot)
        connector = previous.connector if previous and previous.role == "STANDBY" else kind()
        state = FencedState(self._store, info, lambda exc: self._fence_rejected(info, exc))
        context = SessionContext(info, self._db, state, self._artifacts, self.emit, self._report,
                                 metrics=self._metrics_registry)  # fmt: skip
        session = Session(info, connector, "ACTIVE", context=context)
        self.sessions[info.slot] = session
        self._audit.record("session_start", slot=info.slot, epoch=info.epoch)
        claimed = False
        try:
            await state.claim()
            claimed = True
            await context.pin_artifacts()
            await connector.start(context)
        except (StaleEpochError, UnavailableError) as exc:  # stale grant, or retry next beat
            log.warning(
                "start refused slot=%s epoch=%d error=%s", info.slot, info.epoch, exc.message
            )
            await self._stop_connector(session)
            del self.sessions[info.slot]
            # After a successful claim the session may have run briefly: say so.
            self._audit.record("session_refused", slot=info.slot, epoch=info.epoch,
                               reason=exc.message, claimed=claimed)  # fmt: skip
            return False
        except RaftorchError as exc:  # bad config, database down: report it, do not hide it
            log.warning("start failed slot=%s error=%s", info.slot, exc.message)
            session.status, session.detail = SessionStatus.ERROR, exc.message[:1000]
            return True
        except Exception:
            log.exception("connector start failed slot=%s", info.slot)
            session.status, session.detail = SessionStatus.ERROR, "connector failed to start"
            return True
        log.info("session started slot=%s epoch=%d", info.slot, info.epoch)
        self._audit.record("session_running", slot=info.slot, epoch=info.epoch)
        return True

    def _fence_rejected(self, info: SessionInfo, exc: StaleEpochError) -> None:
        self._audit.record(
            "write_rejected", slot=info.slot, epoch=info.epoch, detail=exc.message[:300]
        )

    async def prepare(self, info: SessionInfo) -> None:
        """Warm standby: a connector instance, prepared, not started."""
        kind = self._types.get(info.connector)
        if kind is None or info.slot in self.sessions:
            return
        connector = kind()
        try:
            await connector.prepare(info)
        except Exception:
            log.exception("standby prepare failed slot=%s", info.slot)
            return
        self.sessions[info.slot] = Session(info, connector, "STANDBY")

    async def stop(self, slot: str, reason: str) -> None:
        session = self.sessions.pop(slot, None)
        if session is None:
            return
        if session.role == "ACTIVE":
            began = time.monotonic()
            await self._stop_connector(session)
            # Recorded once the connector has stopped (an end is written after the fact).
            self._audit.record("session_stop", slot=slot, epoch=session.info.epoch,
                               reason=reason, began=began)  # fmt: skip
            self.stopped[slot] = session.info.epoch
            log.info("session stopped slot=%s epoch=%d reason=%s", slot, session.info.epoch, reason)
            self.emit(
                session.info.adapter_id,
                EventLevel.INFO,
                EventCategory.SYSTEM,
                f"session stopped on pod {self._pod_id}: {reason}",
                {"slot": slot, "epoch": session.info.epoch},
            )

    async def stop_all(self, reason: str, *, standbys: bool = False) -> None:
        for slot in [s.info.slot for s in self.sessions.values() if s.role == "ACTIVE" or standbys]:
            await self.stop(slot, reason)

    async def _stop_connector(self, session: Session) -> None:
        try:
            await asyncio.wait_for(session.connector.stop(), self._stop_timeout)
        except TimeoutError:
            log.warning(
                "connector did not stop within %.1fs slot=%s", self._stop_timeout, session.info.slot
            )
        except Exception:
            log.exception("connector stop failed slot=%s", session.info.slot)
