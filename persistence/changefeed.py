"""The change feed: configuration changes pushed by PostgreSQL (LISTEN/NOTIFY).

Triggers on `adapters`, `artifacts` and `plugins` send a notification per row
change. Notifications sent while the listening connection is down are lost for
good (PostgreSQL does not queue them for absent listeners), so after every
reconnect the feed delivers `RESYNC`: the consumer must re-read full state with
the repositories' list calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg

from persistence.db import PoolSettings, connect_with_retry
from protocol.errors import RaftorchError, UnavailableError

log = logging.getLogger(__name__)

CHANNEL = "raftorch_changes"


@dataclass(frozen=True, slots=True)
class Change:
    """One changed row (`table`, `op` insert/update/delete, `key` its id or name)."""

    table: str
    op: str
    key: str


RESYNC = Change(table="*", op="resync", key="")


class ChangeFeed:
    """A supervised LISTEN connection that reconnects by itself.

    Use as ``async with ChangeFeed(dsn) as feed: change = await feed.get()``.
    The first item after `start()` is always RESYNC, so a consumer loads full state
    once and then applies changes.
    """

    def __init__(
        self,
        dsn: str,
        settings: PoolSettings | None = None,
        *,
        check_interval_seconds: float = 1.0,
        max_pending: int = 10_000,
    ) -> None:
        self._dsn = dsn
        self._settings = settings or PoolSettings()
        self._check_interval = check_interval_seconds
        self._queue: asyncio.Queue[Change] = asyncio.Queue(max_pending)
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = False

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.create_task(self._supervise(), name="changefeed-supervisor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop_connection()

    async def __aenter__(self) -> ChangeFeed:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def get(self) -> Change:
        """The next change; raises if the supervisor died (it should never)."""
        if self._task is not None and self._task.done() and self._queue.empty():
            self._task.result()
            raise UnavailableError("change feed is stopped")
        return await self._queue.get()

    def pending(self, limit: int) -> list[Change]:
        """Up to `limit` changes already waiting, without waiting for more."""
        found: list[Change] = []
        while len(found) < limit and not self._queue.empty():
            found.append(self._queue.get_nowait())
        return found

    async def __aiter__(self) -> AsyncIterator[Change]:
        while True:
            yield await self.get()

    def _push(self, change: Change) -> None:
        try:
            self._queue.put_nowait(change)
        except asyncio.QueueFull:
            # Too far behind to replay one by one: replace the backlog by one resync.
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(RESYNC)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            data = json.loads(str(payload))
            change = Change(str(data["table"]), str(data["op"]), str(data["key"]))
        except (ValueError, KeyError, TypeError):
            log.warning("change feed: unreadable notification payload=%r", payload)
            change = RESYNC
        self._push(change)

    def _on_terminate(self, _conn: object) -> None:
        self._lost.set()

    async def _connect(self) -> None:
        conn = await connect_with_retry(self._dsn, self._settings, what="database (change feed)")
        try:
            conn.add_termination_listener(self._on_terminate)
            await conn.add_listener(CHANNEL, self._on_notify)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            conn.terminate()
            raise UnavailableError(f"change feed cannot LISTEN: {exc}") from exc
        self._conn = conn
        self._lost.clear()
        self.connected = True
        # Anything may have changed while no one listened.
        self._push(RESYNC)
        log.info("change feed listening channel=%s", CHANNEL)

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        self.connected = False
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def _healthy(self) -> bool:
        conn = self._conn
        if conn is None or conn.is_closed() or self._lost.is_set():
            return False
        try:
            await conn.fetchval("SELECT 1", timeout=self._check_interval * 2)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                OSError, TimeoutError):  # fmt: skip
            # InternalClientError: the check raced the server closing the connection
            # ("another operation is in progress"); the connection is no good either way.
            return False
        return True

    async def _supervise(self) -> None:
        """Check the connection every interval (or at once when it terminates); reconnect."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._check_interval):
                    await self._lost.wait()
            if await self._healthy():
                continue
            log.warning("change feed connection lost; reconnecting")
            await self._drop_connection()
            while self._conn is None:
                try:
                    await self._connect()
                except RaftorchError as exc:
                    log.warning("change feed reconnect failed error=%s", exc.message)
