"""Followers forward pod calls to the leader, so a pod may talk to any replica."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp
from aiohttp import web

from protocol.errors import UnavailableError
from protocol.pod import FORWARDED_HEADER, LEADER_HEADER
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
