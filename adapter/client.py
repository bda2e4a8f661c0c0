"""The pod's client of the pod API: any replica, the leader first, hedged when one hangs.

Answers are read as the shared wire types of `protocol.pod`. A 503 (a follower behind,
a leader taking office) and no answer at all are "try elsewhere"; every other status
is an answer the caller maps to exactly one action.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import aiohttp
import msgpack
import msgspec

from protocol.codec import MSGPACK, ErrorBody
from protocol.pod import HEDGE_HEADER, LEADER_HEADER

log = logging.getLogger(__name__)

Reply = tuple[int, Any]  # HTTP status, decoded body
Request = tuple[bytes | None, dict[str, str]]  # body, headers
T = TypeVar("T")

UNREACHABLE_BACKOFF_SECONDS = 1.0
"""A replica that refused the connection (no process listening: it died or restarts) is
not tried again for this long while another one may answer. Asking a dead leader again
every retry interval gains nothing: a replica that just started cannot lead sooner."""

ATTEMPTS_PER_REPLICA = 1
"""Heartbeat attempts one replica may hold open at once while the pod hedges. A second
one to the same replica gains nothing (a hung replica holds it as well) and a slow
leader only gets more of the same work; the other replicas are tried meanwhile."""


class PodClient:
    """HTTP to the orchestrator replicas; `start()` before use, `close()` after."""

    def __init__(
        self,
        urls: tuple[str, ...],
        *,
        follow_leader: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.urls = list(urls)
        self._follow = follow_leader
        self._clock = clock
        self._down: dict[str, float] = {}  # url -> until when it is not asked (refused)
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._http is None:
            self._http = aiohttp.ClientSession()

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def call(
        self, method: str, path: str, body: Any, token: str, timeout: float, *, spread: float = 0.0
    ) -> Reply | None:
        """Try each replica in turn, the last known leader first; None when none answered.

        With `spread`, each replica after the first is asked only after a random pause of
        up to `spread` seconds: when a replica dies, every pod's call to it ends at the
        same instant, and without the pause they would all reach the next replica in the
        same few milliseconds (while it may be electing or taking office)."""
        request = _request(body, token)
        for i, url in enumerate(list(self.urls)):
            if i and spread > 0:
                await asyncio.sleep(random.uniform(0.0, spread))
            won = await self.attempt(method, url, path, request, timeout)
            if won is not None:
                return won[1]
        return None

    async def attempt(
        self, method: str, url: str, path: str, request: Request, timeout: float
    ) -> tuple[float, Reply] | None:
        """One request to one replica: (its send time, the reply), or None (no answer, 503)."""
        if self._http is None:
            raise RuntimeError("PodClient.start() was not called")
        data, headers = request
        sent = self._clock()
        try:
            async with self._http.request(
                method, url + path, data=data, headers=headers,
                timeout=aiohttp.ClientTimeout(total=max(0.01, timeout)),
            ) as answer:  # fmt: skip
                payload = await answer.read()
                self._prefer(answer.headers.get(LEADER_HEADER), url)
                if answer.status == 503:
                    return None
                return sent, (answer.status, _decode(payload, answer.content_type))
        except aiohttp.ClientConnectorError as exc:
            log.debug("orchestrator refused url=%s error=%s", url, exc)
            self._down[url] = self._clock() + UNREACHABLE_BACKOFF_SECONDS
            return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.debug("orchestrator unreachable url=%s error=%s", url, exc)
            return None

    async def hedged_post(
        self, path: str, body: Any, token: str, *, budget: float, hedge: float
    ) -> tuple[float, Reply] | None:
        """POST to the preferred replica; while no answer comes, again to the next one every
        `hedge` seconds (round robin), earlier attempts left running. The first answer wins,
        with the send time of the attempt that got it. None when nothing answered in time.

        A replica that hangs (a paused leader, a follower still forwarding to it) then
        costs one hedge interval, not the lease: once the others have elected a new
        leader, the next attempt through any of them reaches it.
        """
        request = _request(body, token)
        urls = list(self.urls)
        give_up = self._clock() + budget
        next_launch, launched, turn = self._clock(), 0, 0
        tasks: dict[asyncio.Task[tuple[float, Reply] | None], str] = {}
        try:
            while (now := self._clock()) < give_up:
                down = self._refusing(urls, now)
                if now >= next_launch and (url := _next_free(urls, turn, tasks, down)):
                    # A copy only while an earlier attempt is still open: one that was
                    # refused (a dead leader, no leader known) left nothing to duplicate.
                    sent = _hedged(request) if tasks else request
                    attempt = self.attempt("POST", url, path, sent, give_up - now)
                    tasks[asyncio.create_task(attempt)] = url
                    launched, turn = launched + 1, urls.index(url) + 1
                    next_launch = now + hedge
                # All replicas busy or refusing: wait for an attempt to end (or a refusing
                # replica's back-off), not in a tight loop.
                back = min((self._down[url] for url in down), default=give_up)
                until = next_launch if _next_free(urls, turn, tasks, down) else back
                wait = max(0.0, min(until, give_up) - self._clock())
                if not tasks:
                    await asyncio.sleep(wait)
                    continue
                done, _ = await asyncio.wait(
                    tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    del tasks[task]
                    if (won := task.result()) is not None:
                        return won
                if done and launched < len(urls):
                    next_launch = self._clock()  # refused at once: try the next replica now
            return None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _refusing(self, urls: list[str], now: float) -> frozenset[str]:
        """The replicas not to ask now: those that refused a connection lately, unless
        every one did (the pod's own network, most likely: any may be the first back)."""
        down = frozenset(url for url in urls if self._down.get(url, 0.0) > now)
        return down if len(down) < len(urls) else frozenset()

    def _prefer(self, leader: str | None, answered: str) -> None:
        preferred = leader.rstrip("/") if leader and self._follow else answered
        if preferred in self.urls:
            self.urls.remove(preferred)
        self.urls.insert(0, preferred)


def _next_free(
    urls: list[str], start: int, in_flight: Mapping[Any, str], down: frozenset[str] = frozenset()
) -> str | None:
    """The next replica in round robin from `start`, not `down`, with fewer than
    ATTEMPTS_PER_REPLICA attempts still open: one that holds requests (a leader cut off
    from the others keeps them until it steps down) must not use up the attempts meant
    for the rest (bug 8)."""
    held = Counter(in_flight.values())
    for i in range(len(urls)):
        url = urls[(start + i) % len(urls)]
        if held[url] < ATTEMPTS_PER_REPLICA and url not in down:
            return url
    return None


def typed(reply: Reply | None, status: int, kind: type[T]) -> T | None:
    """The answer as `kind` when it came with `status`; None otherwise (a malformed one is
    logged: it is a replica's bug, not ours to act on)."""
    if reply is None or reply[0] != status:
        return None
    try:
        return msgspec.convert(reply[1], kind)
    except msgspec.ValidationError as exc:
        log.warning("malformed answer from the orchestrator: %s", exc)
        return None


def refusal(reply: Reply | None) -> str:
    """The orchestrator's error message of a refusal, or what little is known."""
    if reply is None:
        return "no replica answered"
    try:
        return msgspec.convert(reply[1], ErrorBody).error.message
    except msgspec.ValidationError:
        return f"HTTP {reply[0]}"


def _request(body: Any, token: str) -> Request:
    """The msgpack body (None without one) and headers of a call to the pod API."""
    headers = {"Authorization": f"Bearer {token}", "Accept": MSGPACK}
    if body is None:
        return None, headers
    headers["Content-Type"] = MSGPACK
    return msgpack.packb(body), headers


def _hedged(request: Request) -> Request:
    """The same call marked as a hedge (HEDGE_HEADER)."""
    data, headers = request
    return data, {**headers, HEDGE_HEADER: "1"}


def _decode(payload: bytes, content_type: str) -> Any:
    if not payload:
        return {}
    try:
        return msgpack.unpackb(payload) if content_type == MSGPACK else json.loads(payload)
    except ValueError:
        return {}
