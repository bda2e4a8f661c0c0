"""The configuration cache's periodic full reload counts only what differs as changed.

The reload (every `database.resync_interval_seconds`) is the backstop for a lost
notification. Taken for "everything changed", it made the leader plan over every slot
and every replica wake every pod's long-poll each time. The repository is a stand-in:
this is the comparison's logic; the reload against PostgreSQL is in
tests/integration/test_outage.py.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from persistence.adapters import AdapterRecord
from persistence.db import PoolSettings
from protocol.values import AdminState, DeploymentMode
from raftorch.config.cache import ConfigCache


class Rows:
    """What `list_all` returns: the adapters table."""

    def __init__(self, *ids: str) -> None:
        now = datetime.now(UTC)
        self.rows = {i: AdapterRecord(i, i, "fix", DeploymentMode.SINGLE, 1, {"k": 1}, (),
                                      AdminState.ENABLED, 1, now, now) for i in ids}  # fmt: skip

    async def list_all(self) -> list[AdapterRecord]:
        return list(self.rows.values())

    def update(self, adapter_id: str, **fields: Any) -> None:
        record = self.rows[adapter_id]
        fields.setdefault("revision", record.revision + 1)
        self.rows[adapter_id] = dataclasses.replace(record, **fields)


def _cache(rows: Rows) -> ConfigCache:
    cache = ConfigCache(None, "", PoolSettings(), resync_interval_seconds=30.0)  # type: ignore[arg-type]
    cache._repo = rows  # type: ignore[assignment]
    return cache


async def test_the_first_load_changes_everything_and_a_reload_only_what_differs() -> None:
    rows = Rows("a", "b", "c")
    cache = _cache(rows)
    await cache.resync()
    assert cache.resynced is None and cache.take_changed() is None  # a full plan first
    version, spec_b = cache.version, cache.specs()["b"]
    cache.changed.clear()  # as the replica's waker does

    await cache.resync()  # nothing moved: no wake, no full plan, no new version
    assert cache.resynced == frozenset() and cache.take_changed() == set()
    assert cache.version == version and not cache.changed.is_set()

    rows.update("a", config={"k": 2})  # a notification that was lost
    del rows.rows["c"]
    await cache.resync()
    assert cache.resynced == {"a", "c"} and cache.take_changed() == {"a", "c"}
    assert cache.version > version and cache.changed.is_set()
    assert cache.specs()["b"] is spec_b  # unchanged adapters keep their spec
    assert "c" not in cache.specs() and cache.get("a") == rows.rows["a"]


async def test_a_reload_before_the_leader_took_the_changes_keeps_them() -> None:
    rows = Rows("a", "b")
    cache = _cache(rows)
    await cache.resync()
    cache.take_changed()
    rows.update("a", admin_state=AdminState.DISABLED)
    await cache.resync()
    rows.update("b", instances=3)
    await cache.resync()
    assert cache.take_changed() == {"a", "b"}  # not only the last reload's
