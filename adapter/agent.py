"""The pod agent: registers, heartbeats, follows assignments, and fences itself.

Lease keeping, on the monotonic clock: the pod's deadline is the *send time* of its
last acknowledged heartbeat + TTL - safety margin. While no replica answers, the
sessions keep running until that deadline; past it the watchdog stops every owned
session on its own (self-fencing). Only a heartbeat answer (which comes from the
leader, after a Raft commit) may stop a session for being no longer assigned; the
assignments long-poll, which any replica answers, may only start or prepare.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import msgpack

from adapter.config import AgentConfig
from adapter.metrics import PodMetrics
from adapter.sdk import Connector, SessionInfo
from adapter.sessions import SessionManager
from persistence.audit import AuditTrail
from persistence.db import Database, PoolSettings
from persistence.events import EventCategory, EventLevel, EventRepository, NewEvent
from persistence.writebehind import WriteBehind

log = logging.getLogger(__name__)

MSGPACK = "application/msgpack"
LEADER_HEADER = "X-Raftorch-Leader"
Reply = tuple[int, dict[str, Any]]
Request = tuple[bytes | None, dict[str, str]]  # body, headers
RETRY_SECONDS = 0.5  # between attempts while registering or after a failed heartbeat
HEDGE_FRACTION = 0.2  # of a heartbeat interval: how long a heartbeat waits before also
# asking the next replica


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
        self.sessions = SessionManager(
            config.pod_id,
            self._types,
            self.db,
            self.events,
            stop_timeout_seconds=config.stop_timeout_seconds,
            audit=self.audit,
            metrics_registry=metrics.registry,
        )
        self.sessions.on_change = self.wake
        self.credential: str | None = None
        self.ttl = 6.0
        self.interval = 2.0
        self.deadline = -math.inf  # the lease is valid while clock() < deadline
        self.version = ""
        # Entries applied to the newest state whose assignments were applied here: an
        # answer read from older state (a slow heartbeat reply, a lagging replica) must
        # not undo what a newer one started.
        self.revision = -1
        self.last_heartbeat_ok = True
        self._urls = list(config.orchestrators)
        self._http: aiohttp.ClientSession | None = None
        self._wake = asyncio.Event()
        self._renewed = asyncio.Event()
        self._registered = asyncio.Event()
        self._apply_lock = asyncio.Lock()

    def wake(self) -> None:
        self._wake.set()

    def lease_remaining(self) -> float:
        return max(0.0, self.deadline - self._clock())

    # --- HTTP -----------------------------------------------------------------------

    async def start(self) -> None:
        self.audit.open()
        await self.db.start(lazy=True)
        self._http = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.events.flush_once(), 2.0)
        await self.db.close()
        self.audit.close()

    async def _call(
        self, method: str, path: str, body: Any, token: str, timeout: float
    ) -> Reply | None:
        """Try each replica in turn, the last known leader first; None when none answered."""
        request = _request(body, token)
        for url in list(self._urls):
            won = await self._attempt(method, url, path, request, timeout)
            if won is not None:
                return won[1]
        return None

    async def _attempt(
        self, method: str, url: str, path: str, request: Request, timeout: float
    ) -> tuple[float, Reply] | None:
        """One request to one replica: (its send time, the reply), or None (no answer, 503)."""
        assert self._http is not None
        data, headers = request
        sent = self._clock()
        try:
            async with self._http.request(
                method,
                url + path,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as answer:
                payload = await answer.read()
                self._follow_leader(answer.headers.get(LEADER_HEADER), url)
                if answer.status == 503:
                    return None
                return sent, (answer.status, _decode(payload, answer.content_type))
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("orchestrator unreachable url=%s error=%s", url, exc)
            return None

    async def _hedged_post(
        self, path: str, body: Any, token: str, budget: float
    ) -> tuple[float, Reply] | None:
        """POST to the preferred replica; while no answer comes, again to the next one every
        hedge interval (round robin), earlier attempts left running. The first answer wins,
        with the send time of the attempt that got it. None when nothing answered in time.

        A replica that hangs (a paused leader, a follower still forwarding to it) then
        costs one hedge interval, not the lease: once the others have elected a new
        leader, the next attempt through any of them reaches it. A first-round refusal
        moves on at once.
        """
        request = _request(body, token)
        urls = list(self._urls)
        hedge = max(0.05, self.interval * HEDGE_FRACTION)
        give_up = self._clock() + budget
        next_launch, launched = self._clock(), 0
        tasks: set[asyncio.Task[tuple[float, Reply] | None]] = set()
        try:
            while (now := self._clock()) < give_up:
                if now >= next_launch and len(tasks) < 2 * len(urls):
                    url = urls[launched % len(urls)]
                    attempt = self._attempt("POST", url, path, request, give_up - now)
                    tasks.add(asyncio.create_task(attempt))
                    launched += 1
                    next_launch = now + hedge
                wait = max(0.0, min(next_launch, give_up) - self._clock())
                if not tasks:
                    await asyncio.sleep(wait)
                    continue
                done, tasks = await asyncio.wait(
                    tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if (won := task.result()) is not None:
                        return won
                if done and launched < len(urls):
                    next_launch = self._clock()  # refused at once: try the next replica now
            return None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _follow_leader(self, leader: str | None, answered: str) -> None:
        preferred = leader.rstrip("/") if leader and self.config.follow_leader else answered
        if preferred in self._urls:
            self._urls.remove(preferred)
        self._urls.insert(0, preferred)

    # --- registration and heartbeats -------------------------------------------------

    async def register(self) -> bool:
        body = {
            "pod_id": self.config.pod_id,
            "address": self.config.address,
            "capacity": self.config.capacity,
            "labels": dict(self.config.labels),
            "connectors": [{"type": t, "version": c.version} for t, c in self._types.items()],
            "sessions": [{"slot": s["slot"], "epoch": s["epoch"]} for s in self.sessions.reports()],
        }
        reply = await self._call(
            "POST",
            "/pod/v1/register",
            body,
            self.config.bootstrap_token.reveal(),
            self.config.request_timeout_seconds,
        )
        if reply is None or reply[0] != 201:
            log.warning("registration not accepted: %s", reply)
            return False
        answer = reply[1]
        self.credential = str(answer["credential"])
        self.revision = -1  # a new registration may be with a rebuilt cluster: start over
        self.ttl = float(answer["lease_ttl_seconds"])
        self.interval = float(answer["heartbeat_interval_seconds"])
        self._registered.set()
        log.info("registered pod=%s ttl=%.1fs", self.config.pod_id, self.ttl)
        self.audit.record("registered", ttl=self.ttl)
        return True

    async def heartbeat(self) -> None:
        if self.credential is None:
            return
        reports = self.sessions.reports()
        stopped = {r["slot"]: r["epoch"] for r in reports if r["status"] == "STOPPED"}
        won = await self._hedged_post(
            "/pod/v1/heartbeat",
            {"pod_id": self.config.pod_id, "sessions": reports},
            self.credential,
            max(self.interval, self.config.request_timeout_seconds),
        )
        if won is None or won[1][0] not in (200, 403, 410):
            self.metrics.heartbeat_failures.inc()
            self.last_heartbeat_ok = False
            return
        sent, reply = won  # the lease counts from the send time of the attempt answered
        self.last_heartbeat_ok = True
        status, answer = reply
        if status != 200:
            await self._registration_lost(answer.get("error", {}).get("message", str(status)))
            return
        deadline = sent + float(answer["lease_ttl_seconds"]) - self.config.safety_margin_seconds
        self.audit.record("lease", deadline=deadline)  # before it takes effect
        self.deadline = deadline
        self._renewed.set()
        self.metrics.heartbeat_rtt.observe(self._clock() - sent)
        self.sessions.reported(stopped)
        for order in answer["stop"]:
            await self.sessions.stop(
                order["slot"], f"fenced by the orchestrator: {order['reason']}"
            )
        await self._apply_newer(answer, may_stop=True)

    async def _registration_lost(self, why: str) -> None:
        log.warning("registration lost pod=%s: %s", self.config.pod_id, why)
        await self.sessions.stop_all(f"registration lost: {why}", standbys=True)
        self.credential = None
        self._registered.clear()
        self.deadline = -math.inf
        self.audit.record("lease", deadline=None)

    # --- assignments ------------------------------------------------------------------

    def _info(self, assignment: Mapping[str, Any]) -> SessionInfo:
        return SessionInfo(
            slot=str(assignment["slot"]),
            adapter_id=str(assignment["adapter_id"]),
            epoch=int(assignment["epoch"]),
            pod_id=self.config.pod_id,
            connector=str(assignment["connector"]),
            config=dict(assignment["config"]),
            artifacts=tuple(assignment.get("artifacts", ())),
        )

    async def _apply_newer(self, answer: Mapping[str, Any], *, may_stop: bool) -> None:
        """Apply an answer's assignments unless they were read from older replicated state
        than ones already applied (answers of one pod can arrive out of order)."""
        revision = int(answer.get("revision", 0))
        if revision < self.revision:
            log.debug("older assignments ignored revision=%d have=%d", revision, self.revision)
            return
        self.revision = revision
        self.version = str(answer["version"])
        await self._apply(answer["assignments"], may_stop=may_stop)

    async def _apply(self, assignments: list[Mapping[str, Any]], *, may_stop: bool) -> None:
        async with self._apply_lock:
            desired = {str(a["slot"]): a for a in assignments}
            for slot, session in list(self.sessions.sessions.items()):
                wanted = desired.get(slot)
                stale = (
                    wanted is not None
                    and wanted["role"] == "ACTIVE"
                    and (session.role == "ACTIVE" and session.info.epoch != wanted["epoch"])
                )
                demoted = (
                    wanted is not None and wanted["role"] == "STANDBY" and session.role == "ACTIVE"
                )
                if may_stop and (wanted is None or stale or demoted):
                    await self.sessions.stop(slot, "no longer assigned to this pod")
            for slot, wanted in desired.items():
                current = self.sessions.sessions.get(slot)
                if wanted["role"] == "ACTIVE" and (current is None or current.role != "ACTIVE"):
                    if self._clock() < self.deadline:
                        await self.sessions.start(self._info(wanted))
                elif wanted["role"] == "STANDBY" and current is None:
                    await self.sessions.prepare(self._info(wanted))

    # --- loops ------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        tasks = [
            asyncio.create_task(coro(), name=name)
            for name, coro in (
                ("heartbeats", self._heartbeat_loop),
                ("long-poll", self._poll_loop),
                ("watchdog", self._watchdog),
                ("pod-events", self.events.run),
            )
        ]
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def run_once(self) -> None:
        """One step of the main loop: register if needed, else heartbeat."""
        if self.credential is None:
            if await self.register():
                await self.heartbeat()
            return
        await self.heartbeat()

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # keep beating: a bug here must not stop lease keeping
                log.exception("heartbeat step failed")
            # The lease is ticking: after a failed heartbeat try again soon, sooner still
            # when little of the lease is left.
            wait = self.interval
            if self.credential is None:
                wait = RETRY_SECONDS
            elif not self.last_heartbeat_ok:
                wait = min(RETRY_SECONDS, max(0.1, self.lease_remaining() / 3))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _poll_loop(self) -> None:
        while True:
            await self._registered.wait()
            credential = self.credential or ""
            path = (
                f"/pod/v1/assignments?pod_id={self.config.pod_id}&version={self.version}"
                f"&wait_seconds={self.config.long_poll_seconds:g}"
            )
            reply = await self._call(
                "GET", path, None, credential, self.config.long_poll_seconds + 5
            )
            if reply is not None and reply[0] == 200:
                await self._apply_newer(reply[1], may_stop=False)
            else:
                await asyncio.sleep(0.5)  # back off before asking again

    async def _watchdog(self) -> None:
        """Stop every owned session the moment the lease deadline passes."""
        while True:
            remaining = self.deadline - self._clock()
            if remaining <= 0 and self.sessions.active():
                await self._self_fence()
            self._renewed.clear()
            timeout = remaining if remaining > 0 else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._renewed.wait(), timeout)

    async def _self_fence(self) -> None:
        self.metrics.self_fencing.inc()
        for session in self.sessions.active():
            self.sessions.emit(
                session.info.adapter_id,
                EventLevel.WARNING,
                EventCategory.SYSTEM,
                f"pod {self.config.pod_id} fenced itself: lease expired",
                {"slot": session.info.slot, "epoch": session.info.epoch},
            )
        log.warning(
            "self-fencing pod=%s: no acknowledged heartbeat for the TTL", self.config.pod_id
        )
        await self.sessions.stop_all("lease expired: fenced itself")

    async def drain(self) -> None:
        """SIGTERM: stop every session cleanly, then hand them over at once."""
        released = [{"slot": s.info.slot, "epoch": s.info.epoch} for s in self.sessions.active()]
        await self.sessions.stop_all("drain: pod shutting down", standbys=True)
        if self.credential is not None:
            reply = await self._call(
                "POST",
                "/pod/v1/release",
                {"pod_id": self.config.pod_id, "sessions": released, "drain": True, "leave": True},
                self.credential,
                self.config.request_timeout_seconds,
            )
            log.info("released sessions=%d answer=%s", len(released), reply and reply[0])


def _request(body: Any, token: str) -> Request:
    """The msgpack body (None without one) and headers of a call to the pod API."""
    headers = {"Authorization": f"Bearer {token}", "Accept": MSGPACK}
    if body is None:
        return None, headers
    headers["Content-Type"] = MSGPACK
    return msgpack.packb(body), headers


def _decode(payload: bytes, content_type: str) -> dict[str, Any]:
    if not payload:
        return {}
    try:
        value = msgpack.unpackb(payload) if content_type == MSGPACK else json.loads(payload)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
