"""The change stream the Portal follows: a long-poll that answers when what it shows changed.

``GET /api/v1/changes?since=R&wait_seconds=S`` answers at once when this replica's
revision differs from ``R`` (or ``R`` is absent), else when it changes, else after
``S`` seconds with the same revision. Any replica answers from its own state, so the
Portal stays live through followers too. The revision moves when the Raft state a
user can see changed (pods, slots, replicas, leader, term — not the renewal barriers
that commit every heartbeat window), when the configuration cache changed, and on
every change-feed notification (events, tokens, artifacts, plugins). It is opaque:
it starts with a per-process id, so a client that reaches another replica, or one
that restarted, sees a new revision and reloads.
"""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from persistence.changefeed import Change
from persistence.tokens import Role
from raftorch.api.assignments import Signal
from raftorch.api.context import Context
from raftorch.api.edge import CTX, Principal, check_query, guarded, json_response, query_int
from raftorch.api.openapi import QueryParam, RouteSpec

MAX_WAIT_SECONDS = 30


class ChangesOut(msgspec.Struct, kw_only=True):
    revision: str
    """Pass it back as ``since`` to wait for the next change."""
    changed: bool
    """True when ``revision`` differs from ``since``."""
    leader: str | None
    """Node id of the Raft leader as this replica knows it (null while unknown)."""
    term: int


@dataclass
class _Seen:
    applied_entries: int = -1
    cache_version: int = -1
    visible: Any = None


class ChangeStream:
    """The revision of one replica. `applied` is the signal fired on every applied Raft
    entry and configuration change; `notified` is fired by the change-feed listener."""

    def __init__(self, ctx: Context, applied: Signal) -> None:
        self._ctx = ctx
        self._applied = applied
        self.notified = Signal()
        self._boot = secrets.token_hex(4)
        self._counter = 0
        self._seen = _Seen()
        self.closed = False

    def on_change(self, _change: Change) -> None:
        """A change-feed listener (on the event loop): anything the feed says is news."""
        self._counter += 1
        self.notified.fire()

    def revision(self) -> str:
        """Moves when what users see moved: O(1) (the state counts its visible changes)."""
        snapshot = self._ctx.node.snapshot()
        status = self._ctx.node.status()
        seen = self._seen
        now = (snapshot.changes, self._ctx.cache.version, status.leader_id, status.term)
        if now != seen.visible:
            if seen.visible is not None:
                self._counter += 1
            self._seen = _Seen(snapshot.applied_entries, self._ctx.cache.version, now)
        return f"{self._boot}.{self._counter}"

    def close(self) -> None:
        """The server is shutting down: waiting requests answer now."""
        self.closed = True
        self.notified.fire()

    async def wait(self, since: str | None, seconds: float) -> tuple[str, bool]:
        """The revision once it differs from `since`, or after `seconds` unchanged."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            current = self.revision()
            remaining = deadline - loop.time()
            if current != since or remaining <= 0 or self.closed:
                return current, current != since
            await self._either(remaining)

    async def _either(self, seconds: float) -> None:
        waits = {asyncio.ensure_future(self._applied.wait(seconds)),
                 asyncio.ensure_future(self.notified.wait(seconds))}  # fmt: skip
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()


CHANGE_STREAM = web.AppKey("change_stream", ChangeStream)


async def changes(request: web.Request, ctx: Context, _p: Principal) -> web.Response:
    check_query(request, ("since", "wait_seconds"))
    since = request.query.get("since")
    wait = query_int(request, "wait_seconds", minimum=0, maximum=MAX_WAIT_SECONDS)
    revision, changed = await request.app[CHANGE_STREAM].wait(since, 0 if wait is None else wait)
    status = ctx.node.status()
    leader = ctx.node.snapshot().replicas.get(status.leader_id) if status.leader_id else None
    body = {"revision": revision, "changed": changed,
            "leader": leader.node_id if leader else None, "term": status.term}  # fmt: skip
    return json_response(body, headers={"Cache-Control": "no-store"})


_QUERY = (
    QueryParam("since", "The revision the caller has; absent: answer at once.", kind="string"),
    QueryParam("wait_seconds", f"How long to wait for a change, 0-{MAX_WAIT_SECONDS} (default 0).",
               minimum=0, maximum=MAX_WAIT_SECONDS),
)  # fmt: skip

CHANGE_ROUTES = [
    RouteSpec("GET", "/api/v1/changes", "Long-poll: answers when what the Portal shows changed",
              "viewer", response=ChangesOut, tags=("portal",), query=_QUERY),
]  # fmt: skip


def add_change_routes(app: web.Application, applied: Signal) -> ChangeStream:
    """Serve the change stream of this replica (call after `add_admin_routes`)."""
    ctx = app[CTX]
    stream = ChangeStream(ctx, applied)
    app[CHANGE_STREAM] = stream
    ctx.cache.listeners.append(stream.on_change)
    app.router.add_get("/api/v1/changes", guarded(Role.VIEWER, changes))
    return stream
