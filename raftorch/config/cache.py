"""The configuration cache: adapters from PostgreSQL, kept current by the change feed.

The leader plans from this cache, so leases keep being renewed and reassigned while
PostgreSQL is down. Until the first full load succeeds `specs()` raises
UnavailableError: planning from an empty cache would revoke every session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence

from persistence.adapters import AdapterRecord, AdapterRepository
from persistence.changefeed import RESYNC, Change, ChangeFeed
from persistence.db import Database, PoolSettings
from persistence.migrate import migrate
from protocol.errors import RaftorchError, UnavailableError
from protocol.values import AdminState, canonical_id
from raftorch.core.model import AdapterSpec

log = logging.getLogger(__name__)

MAX_CHANGES_AT_ONCE = 1000
"""Changes the feed had waiting that are applied together (one query for their adapters)."""


class ConfigCache:
    """Adapters by id. `run()` migrates, loads, then follows the change feed forever."""

    def __init__(
        self,
        db: Database,
        dsn: str,
        settings: PoolSettings,
        *,
        resync_interval_seconds: float,
        retry_seconds: float = 1.0,
    ) -> None:
        self._db = db
        self._repo = AdapterRepository(db)
        self._dsn = dsn
        self._settings = settings
        self._resync_interval = resync_interval_seconds
        self._retry = retry_seconds
        self._records: dict[str, AdapterRecord] = {}
        self._specs: dict[str, AdapterSpec] = {}
        self._changed: set[str] | None = None  # adapters changed since `take_changed`
        self.loaded = False
        self.changed = asyncio.Event()
        self.version = 0
        self.resynced: frozenset[str] | None = None
        """The adapters the last full load found changed (None: it was the first)."""
        self.listeners: list[Callable[[Change], None]] = []
        """Called on the event loop with every change applied (RESYNC after each full load,
        and rows of other tables: tokens, events, artifacts); they must not raise."""

    def records(self) -> list[AdapterRecord]:
        if not self.loaded:
            raise UnavailableError("configuration not loaded yet: the database is unavailable")
        return sorted(self._records.values(), key=lambda r: r.name)

    def get(self, adapter_id: str) -> AdapterRecord | None:
        return self._records.get(adapter_id)

    def specs(self) -> Mapping[str, AdapterSpec]:
        if not self.loaded:
            raise UnavailableError("configuration not loaded yet: the database is unavailable")
        return self._specs

    def take_changed(self) -> set[str] | None:
        """The adapters changed since the last call (None: all may have, after a reload)."""
        changed, self._changed = self._changed, set()
        return changed

    def put(self, record: AdapterRecord) -> None:
        """Take a record this replica just wrote (the feed will confirm it)."""
        current = self._records.get(record.id)
        if current is None or current.revision <= record.revision:
            self.put_fresh(record)

    def drop(self, adapter_id: str) -> None:
        if self._records.pop(adapter_id, None) is not None:
            del self._specs[adapter_id]
            self._note(adapter_id)
            self._bump()

    async def resync(self) -> None:
        """Load every adapter. After the first load only the adapters that differ count
        as changed (`resynced`): the reload is the backstop for a lost notification, run
        every `resync_interval_seconds`, and taking it for "everything changed" made the
        leader plan over every slot and every replica wake every pod's long-poll each
        time (docs/performance.md, "The resync every 30 s")."""
        records = {r.id: r for r in await self._repo.list_all()}
        old, specs = self._records, self._specs
        differs = None
        if self.loaded:
            differs = frozenset(i for i in old.keys() | records.keys()
                                if old.get(i) != records.get(i))  # fmt: skip
        self._records = records
        self._specs = {
            i: specs[i] if differs is not None and i not in differs else _spec(r)
            for i, r in records.items()
        }
        self.resynced = differs
        if differs is None:
            self._changed = None
        elif self._changed is not None:
            self._changed |= differs
        self.loaded = True
        if differs is None or differs:
            self._bump()

    async def apply(self, changes: Sequence[Change]) -> None:
        """Apply changes that arrived together: one full load if a resync is among them
        (it covers every adapter), else one query for every adapter they name. Enabling
        1,000 adapters in one call notifies 1,000 changes at once; fetched one by one,
        they were 1,000 round trips on every replica and as many wake-ups of the leader
        loop, while heartbeats waited (docs/performance.md, "Enabling 100,000 at once")."""
        if RESYNC in changes:
            await self.resync()
        else:
            named = list(dict.fromkeys(c.key for c in changes if c.table == "adapters"))
            if named:
                found = {r.id: r for r in await self._repo.get_many(named)}
                for adapter_id in named:
                    record = found.get(canonical_id(adapter_id) or adapter_id)
                    if record is None:
                        self.drop(adapter_id)
                    else:
                        self.put_fresh(record)
        for change in changes:
            for listener in self.listeners:
                listener(change)

    def put_fresh(self, record: AdapterRecord) -> None:
        self._records[record.id] = record
        self._specs[record.id] = _spec(record)
        self._note(record.id)
        self._bump()

    def _note(self, adapter_id: str) -> None:
        if self._changed is not None:
            self._changed.add(adapter_id)

    def _bump(self) -> None:
        self.version += 1
        self.changed.set()

    async def run(self) -> None:
        """Migrate and follow the feed; on any database failure wait, then start over."""
        while True:
            try:
                await migrate(self._db)
                async with ChangeFeed(self._dsn, self._settings) as feed:
                    await self._follow(feed)
            except RaftorchError as exc:
                log.warning("config cache: %s; retrying", exc.message)
            await asyncio.sleep(self._retry)

    async def _follow(self, feed: ChangeFeed) -> None:
        loop = asyncio.get_running_loop()
        next_resync = loop.time() + self._resync_interval
        while True:
            timeout = max(0.0, next_resync - loop.time())
            change: Change | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    change = await feed.get()
            if change is None:
                change = RESYNC
            changes = [change, *feed.pending(MAX_CHANGES_AT_ONCE - 1)]
            if RESYNC in changes:
                next_resync = loop.time() + self._resync_interval
            await self.apply(changes)


def _spec(record: AdapterRecord) -> AdapterSpec:
    enabled = record.admin_state is AdminState.ENABLED
    return AdapterSpec(record.id, record.connector, record.mode, record.instances, enabled)
