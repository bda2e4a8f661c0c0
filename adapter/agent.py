"""The pod agent: registers, heartbeats, follows assignments, and fences itself.

Lease keeping, on the monotonic clock: the pod's deadline is the *send time* of its
last acknowledged heartbeat + TTL - safety margin. While no replica answers, the
heartbeat is retried across replicas every retry interval and the sessions keep
running until that deadline; past it the watchdog stops every owned session at once,
within the fence-stop budget (self-fencing). Only a heartbeat answer (which comes from
the leader, after a Raft commit) may stop a session for being no longer assigned; the
assignments long-poll, which any replica answers, may only start or prepare.

Lease keeping never waits for connector work: starts and stops run in tasks of the
session manager, and the heartbeat loop, the long-poll, the watchdog and the event
writer are separate tasks. If one of them dies the pod fences itself, reports the
failure (log, metric, not ready) and exits: a pod that cannot keep its lease must not
hold sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from adapter.client import PodClient, Reply, refusal, typed
from adapter.config import AgentConfig
from adapter.metrics import PodMetrics
from adapter.sdk import Connector, SessionInfo
from adapter.sessions import Session, SessionManager, Timeouts
from persistence.audit import AuditTrail
from persistence.db import Database, PoolSettings
from persistence.events import EventRepository, NewEvent
from persistence.writebehind import WriteBehind
from protocol.errors import RaftorchError
from protocol.pod import Assignment, AssignmentsReply, HeartbeatReply, RegisterReply
from protocol.values import EventCategory, EventLevel

log = logging.getLogger(__name__)

REGISTER_RETRY_SECONDS = 0.5
"""Between registration attempts."""
POLL_BACKOFF_SECONDS = (0.1, 2.0)
"""The long-poll's back-off after a failure or an answer older than what was applied."""
POLL_WAIT_SPREAD = 0.25
"""Each long-poll asks to wait a random 75-100 % of `long_poll_seconds`: polls that began
together would otherwise all time out together every time, each answered with the pod's
whole list (docs/performance.md, "The long-polls' timeouts in step")."""
GRACEFUL_STOPS = {
    "revoked": "revoked: the adapter was disabled or deleted",
    "handoff": "handoff: the session moves to another pod",
}
"""Stop orders carried out with the graceful stop timeout (the connector closes cleanly);
every other reason means another owner may exist already: stopped within the fence budget."""
LOOP_STOP_SECONDS = 1.0
"""How long the pod waits for its cancelled loops before it drains anyway."""
FENCED_ITSELF = "lease expired: fenced itself"
"""The stop reason of a session the pod stopped because its own lease ran out."""
FULL_REPORT_EVERY = 10
"""Heartbeats carry only status changes; every this many, and after a registration or a
leader change, the complete list (so nothing can stay out of step for long)."""


class AgentFailedError(RaftorchError):
    """A task the pod's lease keeping depends on died: the pod fenced itself and stops."""

    code = "pod_runtime_failed"


class Agent:
    """One pod. `start()`, then `run(stop_event)`; `drain()` on SIGTERM."""

    def __init__(
        self,
        config: AgentConfig,
        connectors: Mapping[str, type[Connector]],
        metrics: PodMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._types = dict(connectors)
        self._clock = clock
        self.metrics = metrics
        # A pod paused mid-transaction must not hold its session's fence row forever.
        pool = PoolSettings(
            min_size=1, max_size=5, connect_attempts=3, idle_in_transaction_timeout_seconds=2.0
        )
        self.db = Database(config.database_dsn.reveal(), pool)
        self.events: WriteBehind[NewEvent] = WriteBehind(
            "pod events", EventRepository(self.db).append
        )
        self.audit = AuditTrail(Path(config.audit_file) if config.audit_file else None,
                                config.pod_id, clock=clock)  # fmt: skip
        self.client = PodClient(config.orchestrators, follow_leader=config.follow_leader,
                                clock=clock)  # fmt: skip
        timeouts = Timeouts(config.start_timeout_seconds, config.stop_timeout_seconds)
        self.sessions = SessionManager(config.pod_id, self._types, self.db, self.events,
                                       timeouts=timeouts, audit=self.audit,
                                       metrics_registry=metrics.registry)  # fmt: skip
        self.sessions.on_change = self.wake
        self.sessions.ask_again = self._ask_again
        self.credential: str | None = None
        # Until registration tells the orchestrator's values: conservative placeholders.
        self.ttl, self.interval, self.retry = 6.0, 2.0, 0.1
        self.margin = config.safety_margin_seconds
        self.fence_stop = config.safety_margin_seconds / 2
        self.deadline = -math.inf  # the lease is valid while clock() < deadline
        self.version = ""
        # Entries applied to the newest state whose assignments were applied here: an
        # answer read from older state (a slow heartbeat reply, a lagging replica) must
        # not undo what a newer one started.
        self.revision = -1
        self.last_heartbeat_ok = True
        self.failed: str | None = None  # why the pod runtime failed (then it is not ready)
        # What the leader acknowledged of each owned session: (epoch, status, detail).
        self._acked: dict[str, tuple[int, str, str]] = {}
        self._acked_term = -1
        self._refetch_at: float | None = None  # ask for the assignments again from then
        self._since_full = FULL_REPORT_EVERY
        self._wake = asyncio.Event()
        self._renewed = asyncio.Event()
        self._registered = asyncio.Event()

    @property
    def _urls(self) -> list[str]:  # the replicas in the order they are tried (tests)
        return self.client.urls

    def wake(self) -> None:
        """Heartbeat now (a session changed state: the leader hears of it at once)."""
        self._wake.set()

    def lease_remaining(self) -> float:
        return max(0.0, self.deadline - self._clock())

    @property
    def ready(self) -> bool:
        return self.failed is None and self.credential is not None

    async def start(self) -> None:
        self.audit.open()
        await self.db.start(lazy=True)
        await self.client.start()

    async def close(self) -> None:
        await self.client.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self.events.flush_once()
        await self.db.close()
        self.audit.close()

    # --- registration and heartbeats -------------------------------------------------

    async def register(self) -> bool:
        body = {
            "pod_id": self.config.pod_id,
            "address": self.config.address,
            "capacity": self.config.capacity,
            "labels": dict(self.config.labels),
            "connectors": [{"type": t, "version": c.version} for t, c in self._types.items()],
        }
        reply = await self.client.call("POST", "/pod/v1/register", body,
                                       self.config.bootstrap_token.reveal(),
                                       self.config.request_timeout_seconds)  # fmt: skip
        answer = typed(reply, 201, RegisterReply)
        if answer is None:
            level = logging.ERROR if reply is not None and reply[0] in (400, 401, 403) else (
                logging.WARNING)  # fmt: skip
            log.log(level, "registration not accepted pod=%s: %s", self.config.pod_id,
                    refusal(reply))  # fmt: skip
            return False
        self.credential = answer.credential
        self.revision = -1  # a new registration may be with a rebuilt cluster: start over
        self.version = ""
        self._acked, self._since_full = {}, FULL_REPORT_EVERY
        self.ttl, self.interval = answer.lease_ttl_seconds, answer.heartbeat_interval_seconds
        self.retry = answer.retry_interval_seconds
        self.margin = max(self.config.safety_margin_seconds, answer.safety_margin_seconds)
        self.fence_stop = min(answer.fence_stop_seconds, self.margin)
        self._registered.set()
        log.info("registered pod=%s ttl=%.1fs", self.config.pod_id, self.ttl)
        self.audit.record("registered", ttl=self.ttl)
        return True

    async def heartbeat(self) -> None:
        """One heartbeat, retried across replicas until answered or the lease runs out.

        One action per answer: 200 renews; 410 or 403 (registration gone, credential not
        ours) and any other 4xx (the orchestrator refuses what this pod sends) stop every
        session and register again; no answer (or 503, 5xx) is retried until the deadline.
        """
        if self.credential is None:
            return
        body, sent_reports = self._heartbeat_body()
        stopped = {r["slot"]: r["epoch"] for r in sent_reports if r["status"] == "STOPPED"}
        budget = max(self.retry, self.interval, self.deadline - self._clock())
        won = await self.client.hedged_post(
            "/pod/v1/heartbeat", body, self.credential, budget=budget, hedge=self.retry
        )
        status = won[1][0] if won is not None else None
        if won is None or status is None or status >= 500:
            self._heartbeat_failed(refusal(won[1] if won else None))
            return
        sent, reply = won  # the lease counts from the send time of the attempt answered
        if status != 200:
            if status not in (403, 410):
                log.error("the orchestrator refuses this pod's heartbeat pod=%s status=%d: %s",
                          self.config.pod_id, status, refusal(reply))  # fmt: skip
                self.metrics.heartbeat_refusals.inc()
            self.last_heartbeat_ok = True
            await self._registration_lost(refusal(reply))
            return
        answer = typed(reply, 200, HeartbeatReply)
        if answer is None:
            self._heartbeat_failed("malformed heartbeat answer")
            return
        self._acknowledged(answer.term, sent_reports, complete=body["complete"])
        self._renewed_by(sent, answer, stopped)

    def _ask_again(self, _slot: str) -> None:
        """A start that could not happen (refused by the session store, or its previous
        session still stopping) or a standby that failed to prepare leaves the slot
        assigned here, and nothing may change the assignments' version soon. A heartbeat
        interval later they are asked for again, so it is retried then (not at the next
        long-poll timeout): once an interval for as long as it keeps failing."""
        if self._refetch_at is None:
            self._refetch_at = self._clock() + self.interval

    def _heartbeat_body(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The heartbeat to send: every owned session's status when it is time for the
        complete list, else only what changed since the last acknowledged heartbeat."""
        if self._refetch_at is not None and self._clock() >= self._refetch_at:
            self._refetch_at = None
            self.version = ""  # matches no version: the answer carries the assignments
        reports = self.sessions.reports()
        complete = self._since_full >= FULL_REPORT_EVERY
        if not complete:
            acked = self._acked
            reports = [
                r for r in reports if r["status"] == "STOPPED"
                or acked.get(r["slot"]) != (r["epoch"], r["status"], r["detail"])
            ]  # fmt: skip
        body = {"pod_id": self.config.pod_id, "sessions": reports, "complete": complete,
                "version": self.version}  # fmt: skip
        return body, reports

    def _acknowledged(self, term: int, reports: list[dict[str, Any]], *, complete: bool) -> None:
        if term != self._acked_term:  # another leader: tell it everything next time
            self._acked, self._acked_term, self._since_full = {}, term, FULL_REPORT_EVERY
            return
        self._since_full = 0 if complete else self._since_full + 1
        if complete:
            self._acked = {}
        for r in reports:
            if r["status"] == "STOPPED":
                self._acked.pop(r["slot"], None)
            else:
                self._acked[r["slot"]] = (r["epoch"], r["status"], r["detail"])

    def _heartbeat_failed(self, why: str) -> None:
        log.debug("heartbeat not acknowledged pod=%s: %s", self.config.pod_id, why)
        self.metrics.heartbeat_failures.inc()
        self.last_heartbeat_ok = False

    def _renewed_by(self, sent: float, answer: HeartbeatReply, stopped: dict[str, int]) -> None:
        self.last_heartbeat_ok = True
        if (late := self._clock() - self.deadline) >= 0 and self._running():
            # The lease ran out before this answer came, and the watchdog has not run
            # yet (a busy event loop). The deadline is what the leader's margin counts
            # on, not the watchdog's luck: fence as if it had run (bug 8 in
            # docs/reliability.md). The renewal still holds for what is assigned next.
            self._begin_self_fence(f"renewal acknowledged {late:.2f}s after the lease ran out")
        deadline = sent + answer.lease_ttl_seconds - self.margin
        self.audit.record("lease", deadline=deadline)  # before it takes effect
        self.deadline = deadline
        self._renewed.set()
        self.metrics.heartbeat_rtt.observe(self._clock() - sent)
        self.sessions.reported(stopped)
        for order in answer.stop:
            session = self.sessions.sessions.get(order.slot)
            if session is None or session.info.epoch != order.epoch:
                continue  # about another epoch than the one running here now
            if order.reason in GRACEFUL_STOPS:  # disabled, or moving: close it cleanly
                self.sessions.release(order.slot, GRACEFUL_STOPS[order.reason])
            else:  # someone else may hold it already: stop as fast as fencing does
                self.sessions.release(order.slot, f"fenced by the orchestrator: {order.reason}",
                                      timeout=self.fence_stop)  # fmt: skip
        self._apply_newer(answer, may_stop=True)

    async def _registration_lost(self, why: str) -> None:
        log.warning("registration lost pod=%s: %s", self.config.pod_id, why)
        self.credential = None
        self._registered.clear()
        self.deadline = -math.inf
        self.audit.record("lease", deadline=None)
        await self.sessions.fence_all(f"registration lost: {why}", self.fence_stop, standbys=True)

    # --- assignments ------------------------------------------------------------------

    def _info(self, assignment: Assignment) -> SessionInfo:
        return SessionInfo(
            slot=assignment.slot,
            adapter_id=assignment.adapter_id,
            epoch=assignment.epoch,
            pod_id=self.config.pod_id,
            connector=assignment.connector,
            config=assignment.config,
            artifacts=tuple(assignment.artifacts),
        )

    def _apply_newer(self, answer: HeartbeatReply | AssignmentsReply, *, may_stop: bool) -> bool:
        """Apply an answer's assignments unless they were read from older replicated state
        than ones already applied (answers of one pod can arrive out of order)."""
        if answer.revision < self.revision:
            log.debug("older assignments ignored revision=%d have=%d", answer.revision,
                      self.revision)  # fmt: skip
            return False
        self.revision = answer.revision
        if isinstance(answer, HeartbeatReply) and answer.unchanged:
            return True  # still the version applied here
        self.version = answer.version
        self._apply(answer.assignments, may_stop=may_stop)
        return True

    def _runs_unassigned(self, assignments: list[Assignment]) -> bool:
        """An ACTIVE session here that `assignments` leave out (revoked, handed off)."""
        desired = {a.slot for a in assignments if a.role == "ACTIVE"}
        return any(slot not in desired and session.role == "ACTIVE"
                   for slot, session in self.sessions.sessions.items())  # fmt: skip

    def _apply(self, assignments: list[Assignment], *, may_stop: bool) -> None:
        """Ask the session manager for the difference; it returns at once (work in tasks)."""
        desired = {a.slot: a for a in assignments}
        for slot, session in list(self.sessions.sessions.items()):
            wanted = desired.get(slot)
            stale = (
                wanted is not None and wanted.role == "ACTIVE" and session.role == "ACTIVE"
                and session.info.epoch != wanted.epoch
            )  # fmt: skip
            demoted = wanted is not None and wanted.role == "STANDBY" and session.role == "ACTIVE"
            if may_stop and (wanted is None or stale or demoted):
                self.sessions.release(slot, "no longer assigned to this pod")
        for slot, wanted in desired.items():
            current = self.sessions.sessions.get(slot)
            if wanted.role == "ACTIVE" and (current is None or current.role != "ACTIVE"):
                if self._clock() < self.deadline:
                    self.sessions.start(self._info(wanted))
            elif wanted.role == "ACTIVE" and current is not None and current.stopping is not None:
                self._ask_again(slot)  # it starts once the session stopping there has stopped
            elif wanted.role == "STANDBY" and current is None:
                self.sessions.prepare(self._info(wanted))

    # --- loops ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run every loop until `stop`; if one of them dies, fence, then raise."""
        loops: dict[str, Coroutine[Any, Any, None]] = {
            "heartbeats": self._heartbeat_loop(),
            "long-poll": self._poll_loop(),
            "watchdog": self._watchdog(),
            "pod-events": self.events.run(),
        }
        tasks = {asyncio.create_task(coro, name=name): name for name, coro in loops.items()}
        stopping = asyncio.create_task(stop.wait(), name="stop")
        try:
            await asyncio.wait({stopping, *tasks}, return_when=asyncio.FIRST_COMPLETED)
            dead = [task for task in tasks if task.done()]
            if dead and not stop.is_set():
                await self._fail(tasks[dead[0]], dead[0])
        finally:
            for task in (stopping, *tasks):
                task.cancel()
            # Bounded: a loop that did not end when cancelled must not keep the pod from
            # draining (bug 10 in docs/reliability.md); it is logged and left behind.
            _, stuck = await asyncio.wait({stopping, *tasks}, timeout=LOOP_STOP_SECONDS)
            for task in stuck:
                log.error("pod loop did not stop when cancelled pod=%s loop=%s",
                          self.config.pod_id, task.get_name())  # fmt: skip
            for task in (stopping, *tasks):
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: a loop's own error was handled above

    async def _fail(self, name: str, task: asyncio.Task[None]) -> None:
        error = task.exception() if not task.cancelled() else None
        self.failed = f"{name} loop ended: {error!r}" if error else f"{name} loop ended"
        self.metrics.task_failures.labels(task=name).inc()
        log.critical("pod runtime failed pod=%s: %s", self.config.pod_id, self.failed,
                     exc_info=error)  # fmt: skip
        await self.sessions.fence_all(f"pod runtime failed: {self.failed}", self.fence_stop,
                                      standbys=True)  # fmt: skip
        raise AgentFailedError(f"the pod runtime failed ({self.failed}); sessions stopped")

    async def run_once(self) -> None:
        """One step of the heartbeat loop: register if needed, else heartbeat."""
        if self.credential is None:
            if await self.register():
                await self.heartbeat()
            return
        await self.heartbeat()

    def _next_wait(self, began: float) -> float:
        """How long to wait before the next heartbeat, the last one having begun at `began`.

        An interval after the last one *began*, not after its answer: the timing budget
        counts one interval between two sends, and a slow answer (a busy leader) must
        not push the next renewal back by its own length. An answer slower than the
        interval is followed by the next heartbeat at once."""
        if self.credential is None:
            return REGISTER_RETRY_SECONDS
        if not self.last_heartbeat_ok:  # the lease is ticking: try again soon
            return self.retry
        return max(0.0, began + self.interval - self._clock())

    async def _heartbeat_loop(self) -> None:
        while True:
            # Cleared before, not after: a session that changes state while a heartbeat
            # is in flight wakes the next one at once instead of an interval later.
            self._wake.clear()
            began = self._clock()
            await self.run_once()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._next_wait(began)):
                    await self._wake.wait()

    async def _poll_loop(self) -> None:
        backoff = POLL_BACKOFF_SECONDS[0]
        while True:
            await self._registered.wait()
            wait = self.config.long_poll_seconds * random.uniform(1.0 - POLL_WAIT_SPREAD, 1.0)
            path = (
                f"/pod/v1/assignments?pod_id={self.config.pod_id}&version={self.version}"
                f"&wait_seconds={wait:.3f}"
            )
            # After a poll that broke off, the next replica is asked after a random pause (not
            # by every pod at once); the next heartbeat's answer carries any change anyway.
            reply: Reply | None = await self.client.call(
                "GET", path, None, self.credential or "", wait + 5, spread=self.interval,
            )  # fmt: skip
            answer = typed(reply, 200, AssignmentsReply)
            if answer is not None and self._apply_newer(answer, may_stop=False):
                backoff = POLL_BACKOFF_SECONDS[0]
                if self._runs_unassigned(answer.assignments):
                    self.wake()  # the heartbeat's answer says how to stop it: now
                continue
            # No answer, a refusal, or one read from older state than applied (a lagging
            # replica answers at once): ask again later, not in a tight loop.
            await asyncio.sleep(backoff)
            backoff = min(POLL_BACKOFF_SECONDS[1], backoff * 2)

    async def _watchdog(self) -> None:
        """Stop every owned session the moment the lease deadline passes."""
        while True:
            remaining = self.deadline - self._clock()
            if remaining <= 0 and self.sessions.active():
                await self._self_fence()
            self._renewed.clear()
            timeout = remaining if remaining > 0 else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._renewed.wait()

    def _running(self) -> list[Session]:
        """Active sessions not being stopped already."""
        return [s for s in self.sessions.active() if s.stopping is None]

    async def _self_fence(self) -> None:
        self._begin_self_fence("no acknowledged heartbeat for the TTL")
        await self.sessions.fence_all(FENCED_ITSELF, self.fence_stop, standbys=False)

    def _begin_self_fence(self, why: str) -> None:
        """Count, tell and start stopping every owned active session at once."""
        self.metrics.self_fencing.inc()
        for session in self._running():
            self.sessions.emit(
                session.info.adapter_id,
                EventLevel.WARNING,
                EventCategory.SYSTEM,
                f"pod {self.config.pod_id} fenced itself: lease expired",
                {"slot": session.info.slot, "epoch": session.info.epoch},
            )
        log.warning("self-fencing pod=%s: %s", self.config.pod_id, why)
        self.sessions.begin_fence(FENCED_ITSELF, self.fence_stop, standbys=False)

    async def drain(self) -> None:
        """SIGTERM: stop every session cleanly, then hand them over at once."""
        released = [{"slot": s.info.slot, "epoch": s.info.epoch} for s in self.sessions.active()]
        await self.sessions.stop_all("drain: pod shutting down", standbys=True)
        if self.credential is not None:
            reply = await self.client.call(
                "POST",
                "/pod/v1/release",
                {"pod_id": self.config.pod_id, "sessions": released, "drain": True, "leave": True},
                self.credential,
                self.config.request_timeout_seconds,
            )
            log.info("released sessions=%d answer=%s", len(released), reply and reply[0])
