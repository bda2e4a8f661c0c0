"""The asyncpg pool: connects with retry and backoff, and translates driver errors.

This is the boundary the rest of raftorch talks to. Nothing above it ever sees an
asyncpg exception: every failure leaves as a `protocol.errors` type, so the HTTP
layer can answer 503 for "database unavailable" and 409 for a conflict.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from protocol.errors import (
    ConflictError,
    NotFoundError,
    RaftorchError,
    UnavailableError,
    ValidationError,
)

log = logging.getLogger(__name__)

# A pooled connection, as handed out by `Database.connection()`.
if TYPE_CHECKING:
    Connection: TypeAlias = PoolConnectionProxy[asyncpg.Record]
else:
    Connection = PoolConnectionProxy

# SQLSTATE classes: 08 connection exception, 57 operator intervention (shutdown),
# 53 insufficient resources; 23 integrity constraint violation; 22 data exception.
_UNAVAILABLE_CLASSES = ("08", "57", "53")


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """How to reach PostgreSQL and how hard to try."""

    min_size: int = 1
    max_size: int = 10
    connect_timeout_seconds: float = 5.0
    connect_attempts: int = 10
    retry_backoff_initial_seconds: float = 0.1
    retry_backoff_max_seconds: float = 2.0
    command_timeout_seconds: float = 10.0
    # PostgreSQL ends a session that sits idle inside a transaction this long. For
    # pods it bounds how long a paused ("zombie") owner can hold a session's fence
    # row lock and so block its successor's claim. None: the server's setting.
    idle_in_transaction_timeout_seconds: float | None = None


def translate(exc: BaseException) -> RaftorchError:
    """Map a driver or socket failure to the project's own error type.

    The message reaches API clients, so it never carries PostgreSQL's own text (which may
    quote a row, a query argument or a server detail): that goes to the log, here.
    """
    if isinstance(exc, RaftorchError):
        return exc
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        log.warning("database refused sqlstate=%s error=%s", state, describe(exc))
        if isinstance(exc, asyncpg.UniqueViolationError):
            return ConflictError("already exists")
        if isinstance(exc, asyncpg.CheckViolationError | asyncpg.NotNullViolationError):
            return ValidationError("a value is out of the allowed range")
        if isinstance(exc, asyncpg.ForeignKeyViolationError):
            return NotFoundError("a referenced object does not exist")
        if state.startswith("23"):
            return ConflictError(f"a database constraint was violated (SQLSTATE {state})")
        if state.startswith("22"):
            return ValidationError(f"the database cannot store a value (SQLSTATE {state})")
        if state[:2] in _UNAVAILABLE_CLASSES:
            return UnavailableError(f"database unavailable (SQLSTATE {state})")
        return RaftorchError(f"database error (SQLSTATE {state})")
    if isinstance(
        exc,
        OSError | asyncpg.InterfaceError | asyncpg.InternalClientError | TimeoutError | EOFError,
    ):  # InternalClientError: a connection broken mid-operation (seen during server shutdown)
        return UnavailableError(f"database unavailable: {type(exc).__name__}")
    return RaftorchError(f"unexpected database failure: {type(exc).__name__}")


def describe(exc: BaseException) -> str:
    """A driver failure for the log: its type and the server's or socket's own words."""
    detail = getattr(exc, "detail", None)
    return f"{type(exc).__name__}: {exc}" + (f" ({detail})" if detail else "")


_TRANSLATED = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
    EOFError,
)


def _server_settings(settings: PoolSettings) -> dict[str, str]:
    idle = settings.idle_in_transaction_timeout_seconds
    if idle is None:
        return {}
    return {"idle_in_transaction_session_timeout": str(max(1, int(idle * 1000)))}


def _strict_dumps(value: object) -> str:
    """JSON for PostgreSQL: a NaN or infinity that got past the edge fails here, in Python,
    instead of in the server (whose message would quote the value)."""
    return json.dumps(value, allow_nan=False)


async def _init_connection(conn: asyncpg.Connection) -> None:
    """Per-connection setup: JSON columns in and out as Python objects."""
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=_strict_dumps, decoder=json.loads, schema="pg_catalog"
        )


async def connect_with_retry(
    dsn: str, settings: PoolSettings, *, what: str = "database"
) -> asyncpg.Connection:
    """One standalone connection (for LISTEN), retried like the pool."""
    conn: asyncpg.Connection = await _retry(
        lambda: asyncpg.connect(dsn, timeout=settings.connect_timeout_seconds),
        settings,
        what,
    )
    return conn


async def _retry(factory: Any, settings: PoolSettings, what: str) -> Any:
    delay = settings.retry_backoff_initial_seconds
    last: BaseException | None = None
    for attempt in range(1, settings.connect_attempts + 1):
        try:
            async with asyncio.timeout(settings.connect_timeout_seconds):
                return await factory()
        except _TRANSLATED as exc:
            last = exc
            log.warning(
                "connect failed what=%s attempt=%d/%d error=%s",
                what,
                attempt,
                settings.connect_attempts,
                describe(exc),
            )
        if attempt < settings.connect_attempts:
            await asyncio.sleep(delay)
            delay = min(delay * 2, settings.retry_backoff_max_seconds)
    raise UnavailableError(
        f"cannot reach the {what} after {settings.connect_attempts} attempts: "
        f"{describe(last) if last else 'no attempt made'}"
    )


class Database:
    """An asyncpg pool with error translation.

    `start()` connects (with retry); after that a lost server only fails the calls
    made while it is gone: the pool replaces dead connections on the next acquire,
    so the same `Database` works again once PostgreSQL is back.
    """

    def __init__(self, dsn: str, settings: PoolSettings | None = None) -> None:
        self._dsn = dsn
        self.settings = settings or PoolSettings()
        self._pool: asyncpg.Pool | None = None

    @property
    def dsn(self) -> str:
        return self._dsn

    async def start(self, *, lazy: bool = False) -> None:
        """Create the pool. `lazy`: connect on first use, so a service can start (and
        serve from its caches) while PostgreSQL is still down."""
        s = self.settings

        async def create() -> asyncpg.Pool:
            return await asyncpg.create_pool(
                self._dsn,
                min_size=0 if lazy else s.min_size,
                max_size=s.max_size,
                timeout=s.connect_timeout_seconds,
                command_timeout=s.command_timeout_seconds,
                init=_init_connection,
                server_settings=_server_settings(s),
            )

        self._pool = await _retry(create, s, "database")

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                async with asyncio.timeout(self.settings.command_timeout_seconds):
                    await pool.close()
            except (TimeoutError, *_TRANSLATED):
                pool.terminate()

    async def __aenter__(self) -> Database:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection; any driver error leaving the block is translated."""
        if self._pool is None:
            raise UnavailableError("database pool is not started")
        try:
            async with self._pool.acquire(timeout=self.settings.connect_timeout_seconds) as conn:
                yield conn
        except _TRANSLATED as exc:
            raise translate(exc) from exc

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A pooled connection inside one transaction (committed when the block ends)."""
        async with self.connection() as conn, conn.transaction():
            yield conn

    async def execute(self, query: str, *args: Any) -> str:
        async with self.connection() as conn:
            result: str = await conn.execute(query, *args)
            return result

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with self.connection() as conn:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        async with self.connection() as conn:
            row: asyncpg.Record | None = await conn.fetchrow(query, *args)
            return row

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with self.connection() as conn:
            return await conn.fetchval(query, *args)

    async def ping(self) -> bool:
        """True when a trivial query succeeds now."""
        try:
            await self.fetchval("SELECT 1")
        except UnavailableError:
            return False
        return True
