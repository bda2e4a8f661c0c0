"""Followers forward pod calls to the leader, so a pod may talk to any replica."""

from __future__ import annotations

import aiohttp
from aiohttp import web

from protocol.errors import UnavailableError
from protocol.pod import FORWARDED_HEADER, LEADER_HEADER
from raftorch.core.ownership import Snapshot
from raftorch.raft.bridge import NotLeaderError
from raftorch.raft.node import RaftStatus

_PASSED_HEADERS = ("Authorization", "Content-Type", "Accept")


class Forwarder:
    """One HTTP client session per replica; `forward` relays a request to the leader."""

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds
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
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        try:
            async with self._session.request(
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
