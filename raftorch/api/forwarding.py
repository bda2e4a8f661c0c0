"""Followers forward pod calls to the leader, so a pod may talk to any replica."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web

from protocol.errors import UnavailableError
from protocol.pod import FORWARDED_HEADER, HEDGE_HEADER, LEADER_HEADER
from raftorch.core.ownership import Snapshot
from raftorch.raft.bridge import NotLeaderError
from raftorch.raft.node import RaftStatus

_PASSED_HEADERS = ("Authorization", "Content-Type", "Accept")


LEADER_WATCH_SECONDS = 0.05
"""How often a forward in flight checks that its leader is still the leader."""


class Forwarder:
    """One HTTP client session per replica; `forward` relays a request to the leader.

    A forward ends as soon as this replica learns of another leader (or of none): a pod
    waiting on a relay to a deposed or cut-off leader gets a 503 and asks again, instead
    of holding one of its few attempts until the timeout while a new leader is there."""

    def __init__(
        self, timeout_seconds: float, leader_now: Callable[[], str | None] | None = None
    ) -> None:
        self._timeout = timeout_seconds
        self._leader_now = leader_now
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
        try:
            while not relay.done():
                await asyncio.wait({relay}, timeout=LEADER_WATCH_SECONDS)
                moved = self._leader_now is not None and self._leader_now() != status.leader_id
                if moved and not relay.done():
                    raise UnavailableError(f"the leader changed while forwarding to {url}")
            return relay.result()
        finally:
            if not relay.done():
                relay.cancel()
                await asyncio.gather(relay, return_exceptions=True)

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
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UnavailableError(f"cannot reach the leader at {url}: {exc}") from exc


HOLD_WATCH_SECONDS = 0.02
"""How often a follower holding hedged heartbeats checks on the leader."""


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
        self._moved: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._held = 0
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
        if self._moved is None:
            self._moved = asyncio.Event()
        moved = self._moved
        self._held += 1
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(), name="hedge-hold")
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._hold):
                    await moved.wait()
        finally:
            self._held -= 1
        transport = request.transport
        if transport is None or transport.is_closing():
            self.dropped += 1
            self._counted("dropped")
            return False
        self._counted("relayed")
        return True

    async def _watch(self) -> None:
        """While anything is held: release it all when the leader changes or falls silent."""
        leader = self._leader_now()
        try:
            while self._held > 0:
                await asyncio.sleep(HOLD_WATCH_SECONDS)
                now = self._leader_now()
                if now != leader or not self._alive():
                    assert self._moved is not None
                    self._moved.set()
                    self._moved, leader = asyncio.Event(), now
        finally:
            self._watcher = None
