"""The connector SDK: what a connector implements and what it gets for one session.

A connector type is a `Connector` subclass published under the Python entry-point
group ``raftorch.connectors`` (the entry-point name is its type). The pod runtime
creates one instance per session: `prepare()` on a warm standby, `start()` when
the pod owns the session, `stop()` when it must let go. Session state goes only
through `context.state`, which is fenced by the session's epoch: once a newer
owner has claimed the session, every write of this one is rejected whole.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prometheus_client import CollectorRegistry

from persistence.artifacts import ArtifactRepository
from persistence.db import Connection, Database
from persistence.session_state import ResetRequest, SessionStateStore, complete_reset_in, put_in
from protocol.errors import NotFoundError, StaleEpochError
from protocol.values import EventCategory, EventLevel


class SessionStatus(enum.StrEnum):
    CLAIMING = "CLAIMING"
    ACTIVE = "ACTIVE"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """One assignment: which session, under which epoch, with which configuration."""

    slot: str
    adapter_id: str
    epoch: int
    pod_id: str
    connector: str
    config: Mapping[str, Any]
    artifacts: tuple[str, ...] = ()


class FencedState:
    """The session's key/value state, every write fenced by the session's epoch."""

    def __init__(
        self,
        store: SessionStateStore,
        info: SessionInfo,
        on_rejected: Callable[[StaleEpochError], None] | None = None,
    ) -> None:
        self._store = store
        self._info = info
        self._on_rejected = on_rejected  # the runtime's audit of fence rejections

    def _rejected(self, exc: StaleEpochError) -> None:
        if self._on_rejected is not None:
            self._on_rejected(exc)

    async def claim(self) -> None:
        """Raise the fence to this epoch (the runtime does it before `start`)."""
        try:
            await self._store.claim(self._info.slot, self._info.epoch, self._info.pod_id)
        except StaleEpochError as exc:
            self._rejected(exc)
            raise

    async def get(self, key: str) -> Any:
        return await self._store.get(self._info.slot, key)

    async def put(self, key: str, value: Any) -> None:
        """Write one value; raises StaleEpochError (changing nothing) once fenced off."""
        try:
            await self._store.put(self._info.slot, key, value, self._info.epoch, self._info.pod_id)
        except StaleEpochError as exc:
            self._rejected(exc)
            raise

    async def pending_reset(self) -> ResetRequest | None:
        """The newest reset the admin asked for and nobody carried out yet (see
        `FencedTransaction.complete_reset`), or None."""
        return await self._store.pending_reset(self._info.slot)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[FencedTransaction]:
        """One transaction that has passed the fence: the connector's own rows and its
        state commit together, or (StaleEpochError) not at all."""
        try:
            async with self._store.fenced(
                self._info.slot, self._info.epoch, self._info.pod_id
            ) as conn:
                yield FencedTransaction(conn, self._info)
        except StaleEpochError as exc:
            self._rejected(exc)
            raise


@dataclass(frozen=True, slots=True)
class FencedTransaction:
    connection: Connection
    info: SessionInfo

    async def put(self, key: str, value: Any) -> None:
        await put_in(self.connection, self.info.slot, key, value, self.info.epoch)

    async def complete_reset(self, request_id: int) -> None:
        """Record, in this transaction, that the reset requests up to `request_id` are done."""
        await complete_reset_in(self.connection, self.info.slot, request_id, self.info.epoch)


EventSink = Callable[[str, EventLevel, EventCategory, str, Mapping[str, Any]], None]
StatusSink = Callable[[str, SessionStatus, str], None]


@dataclass
class SessionContext:
    """Everything a connector may use for one session."""

    info: SessionInfo
    db: Database
    state: FencedState
    _artifacts: ArtifactRepository
    _emit: EventSink
    _report: StatusSink
    _pinned: dict[str, int] = field(default_factory=dict)
    metrics: CollectorRegistry | None = None
    """The pod's Prometheus registry, for connectors that export metrics (bounded labels
    only: never a session or pod id). None when the runtime keeps no metrics."""

    async def pin_artifacts(self) -> None:
        """Fix the version of every referenced artifact (the runtime calls it at start)."""
        for name in self.info.artifacts:
            if name not in self._pinned:
                self._pinned[name] = (await self._artifacts.get(name)).info.version

    async def artifact(self, name: str) -> bytes:
        """The artifact's content at the version pinned when the session started: a new
        upload reaches the session only when it restarts."""
        if name not in self.info.artifacts:
            raise NotFoundError(f"artifact {name!r} is not referenced by adapter")
        found = await self._artifacts.get(name, self._pinned.get(name))
        self._pinned.setdefault(name, found.info.version)
        return found.content

    def event(
        self,
        description: str,
        *,
        level: EventLevel = EventLevel.INFO,
        category: EventCategory = EventCategory.CONNECTION,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Add an entry to the adapter's event log (buffered; never blocks)."""
        self._emit(self.info.adapter_id, level, category, description, details or {})

    def report(self, status: SessionStatus, detail: str = "") -> None:
        """CLAIMING while starting, ACTIVE when up, ERROR (with a detail) when failing."""
        self._report(self.info.slot, status, detail)


class Connector(abc.ABC):
    """Base class of every connector type."""

    type: ClassVar[str]
    version: ClassVar[str] = "0.1.0"

    async def prepare(self, info: SessionInfo) -> None:  # noqa: B027 - optional hook
        """Warm standby: get ready to start quickly (validate config, load artifacts)."""

    @abc.abstractmethod
    async def start(self, context: SessionContext) -> None:
        """Start the session and return; long-running work goes in tasks the connector
        owns. Report ACTIVE once the session is really up."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Close the session cleanly and return (the runtime bounds how long it waits)."""
