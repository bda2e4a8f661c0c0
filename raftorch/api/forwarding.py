"""Followers forward pod calls to the leader, so a pod may talk to any replica."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from protocol.errors import UnavailableError
from protocol.pod import FORWARDED_HEADER, HEDGE_HEADER, LEADER_HEADER
from raftorch.core.ownership import Snapshot
from raftorch.raft.bridge import NotLeaderError
from raftorch.raft.node import RaftStatus

_PASSED_HEADERS = ("Authorization", "Content-Type", "Accept")
Hold = Callable[[web.Request], Awaitable[bool]]
"""Awaited before a call is relayed: whether to relay it (`HedgeHold.relay`)."""


CHANGE_WATCH_SECONDS = 0.02
"""How often calls waiting on this replica for a leader, relayed to one (in case it is
deposed) or held as hedges check on it."""


class LeaderUnreachableError(UnavailableError):
    """The relay could not connect to the leader: the call never reached it."""


class NodeView(Protocol):
    def status(self) -> RaftStatus: ...
    def snapshot(self) -> Snapshot: ...


class Changes:
    """Calls waiting for a polled value to change, all served by one watcher task (a
    thousand pods waiting out an election must not mean a thousand pollers)."""

    def __init__(self, value: Callable[[], Hashable], clock: Callable[[], float]) -> None:
        self._value = value
        self._clock = clock
        self._changed = asyncio.Event()
        self._waiting = 0
        self._watcher: asyncio.Task[None] | None = None

    async def after(self, seen: Hashable, deadline: float) -> bool:
        """Whether the value differs from `seen` before `deadline` (this clock's time)."""
        while self._value() == seen:
            left = deadline - self._clock()
            if left <= 0:
                return False
            changed = self._changed
            self._waiting += 1
            if self._watcher is None:
                self._watcher = asyncio.create_task(self._watch(seen), name="leader-changes")
            try:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await changed.wait()
            finally:
                self._waiting -= 1
        return True

    async def _watch(self, last: Hashable) -> None:
        try:
            while self._waiting > 0:
                await asyncio.sleep(CHANGE_WATCH_SECONDS)
                if (now := self._value()) != last:
                    self._changed.set()
                    self._changed, last = asyncio.Event(), now
        finally:
            self._watcher = None


class Forwarder:
    """One HTTP client session per replica; `forward` relays a request to the leader.

    A forward ends as soon as this replica learns of another leader (or of none): a pod
    waiting on a relay to a deposed or cut-off leader gets a 503 and asks again, instead
    of holding one of its few attempts until the timeout while a new leader is there.

    `route` waits for a leader first: while none is known, or the known one refuses
    connections (it died, the others have not noticed yet), a pod's call stays here for
    up to `awaiting_seconds` and goes to the new leader as soon as one is known, instead
    of being refused at once. Refused at once, every pod would ask again every retry
    interval, round all replicas, during the very election they wait for (docs/
    performance.md, "The leader kill's second").
    """

    def __init__(
        self,
        timeout_seconds: float,
        leader_now: Callable[[], str | None] | None = None,
        *,
        awaiting_seconds: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._timeout = timeout_seconds
        self._leader_now = leader_now
        self._awaiting = awaiting_seconds
        self._clock = clock
        self._changes = Changes(leader_now or (lambda: None), clock)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def leader_url(self, snapshot: Snapshot, status: RaftStatus) -> str | None:
        if status.leader_id is None:
            return None
        replica = snapshot.replicas.get(status.leader_id)
        return replica.api_url.rstrip("/") if replica and replica.api_url else None

    async def route(
        self,
        request: web.Request,
        body: bytes,
        node: NodeView,
        hold: Hold | None = None,
    ) -> web.Response | None:
        """None when this replica leads (serve the call here); else the leader's answer,
        relayed once a leader is known and, first, once `hold(request)` said to (a 503
        when it said not to: the pod is no longer waiting)."""
        status = node.status()
        if status.is_leader:
            return None
        if request.headers.get(FORWARDED_HEADER):
            raise NotLeaderError("this replica is not the leader (request was forwarded here)")
        deadline = self._clock() + self._awaiting
        while True:
            if status.is_leader:  # elected while the call waited: its body is read already
                raise NotLeaderError("this replica has just become the leader; retry")
            if status.leader_id is not None:
                if hold is not None and not await hold(request):
                    return web.Response(status=503)
                hold = None
                try:
                    return await self.forward(request, body, node.snapshot(), status)
                except LeaderUnreachableError:
                    if not await self._awaited(request, status.leader_id, deadline):
                        raise
            elif not await self._awaited(request, None, deadline):
                raise NotLeaderError("this replica is not the leader and no leader is known")
            status = node.status()

    async def _awaited(self, request: web.Request, leader: str | None, deadline: float) -> bool:
        """Whether another leader than `leader` became known in time, the pod still waiting."""
        return await self._changes.after(leader, deadline) and not _gone(request)

    async def forward(
        self, request: web.Request, body: bytes, snapshot: Snapshot, status: RaftStatus
    ) -> web.Response:
        if request.headers.get(FORWARDED_HEADER):
            raise NotLeaderError("this replica is not the leader (request was forwarded here)")
        url = self.leader_url(snapshot, status)
        if url is None or self._session is None:
            raise NotLeaderError("this replica is not the leader and no leader is known")
        headers = {h: request.headers[h] for h in _PASSED_HEADERS if h in request.headers}
        headers[FORWARDED_HEADER] = "1"
        relay = asyncio.ensure_future(self._relay(self._session, request, url, body, headers))
        watched: set[asyncio.Future[Any]] = {relay}
        if self._leader_now is not None:  # the relay times out by itself meanwhile
            deadline = self._clock() + self._timeout + 1.0
            watched.add(asyncio.ensure_future(self._changes.after(status.leader_id, deadline)))
        try:
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            if not relay.done():
                raise UnavailableError(f"the leader changed while forwarding to {url}")
            return relay.result()
        finally:
            for task in watched:
                task.cancel()
            await asyncio.gather(*watched, return_exceptions=True)

    async def _relay(
        self,
        session: aiohttp.ClientSession,
        request: web.Request,
        url: str,
        body: bytes,
        headers: dict[str, str],
    ) -> web.Response:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        try:
            async with session.request(
                request.method, url + str(request.rel_url), data=body, headers=headers,
                timeout=timeout,
            ) as answer:  # fmt: skip
                data = await answer.read()
                content_type = answer.headers.get("Content-Type", "application/json")
                return web.Response(
                    status=answer.status,
                    body=data,
                    headers={"Content-Type": content_type, LEADER_HEADER: url},
                )
        except aiohttp.ClientConnectorError as exc:
            raise LeaderUnreachableError(f"cannot reach the leader at {url}: {exc}") from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UnavailableError(f"cannot reach the leader at {url}: {exc}") from exc


def _gone(request: web.Request) -> bool:
    """The pod closed the call (another attempt of its own was answered)."""
    transport = request.transport
    return transport is None or transport.is_closing()


class HedgeHold:
    """A follower holds a hedged heartbeat (HEDGE_HEADER) while the leader is alive.

    A pod whose heartbeat is not answered within the retry interval sends it to another
    replica as well; a follower relays that copy to the leader, which serves it in full.
    When the leader is merely busy (placing 100,000 sessions), most heartbeats then reach
    it two or three times, which makes it busier still (docs/performance.md, "Pods that
    behave like the agent"). So while this follower still hears from the leader, it holds
    a hedged heartbeat for up to `hold_seconds` before relaying it: the first attempt is
    usually answered meanwhile, the pod closes the copy, and nothing is relayed. The hold
    ends at once when the leader changes or falls silent for `fresh_seconds` (then a
    relay may be what reaches the new leader, as fast as before), and after
    `hold_seconds` in any case (a pod that cannot reach the leader itself still renews
    through this follower, later by that much). Holding only delays a renewal; what a
    renewal means is unchanged.
    """

    def __init__(
        self,
        *,
        leader_now: Callable[[], str | None],
        leader_contact: Callable[[], float],
        fresh_seconds: float,
        hold_seconds: float,
        counted: Callable[[str], None] = lambda _outcome: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leader_now = leader_now
        self._counted = counted
        self._contact = leader_contact
        self._fresh = fresh_seconds
        self._hold = hold_seconds
        self._clock = clock
        self._changes = Changes(lambda: (leader_now(), self._alive()), clock)
        self.dropped = 0
        """Hedges not relayed: the pod had closed them (its first attempt was answered)."""

    def _alive(self) -> bool:
        return self._clock() - self._contact() < self._fresh

    async def relay(self, request: web.Request) -> bool:
        """Whether to relay `request` now (after holding it if it is a hedge); False when
        the pod closed it meanwhile."""
        if not request.headers.get(HEDGE_HEADER) or self._hold <= 0:
            return True
        if self._leader_now() is None or not self._alive():
            return True
        await self._changes.after((self._leader_now(), True), self._clock() + self._hold)
        if _gone(request):
            self.dropped += 1
            self._counted("dropped")
            return False
        self._counted("relayed")
        return True
