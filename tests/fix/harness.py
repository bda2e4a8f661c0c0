"""Run the `fix` connector in the test's own process against a real PostgreSQL.

`FixHarness` plays the pod runtime for one session: it claims the fence for an epoch,
builds the `SessionContext` and starts the connector, and records the statuses and
events the connector reports. Tables and helpers for the outbox and inbox live here too.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry

from adapter.connectors.fix.connector import FixConnector
from adapter.sdk import FencedState, SessionContext, SessionInfo, SessionStatus
from persistence.adapters import AdapterRepository
from persistence.artifacts import ArtifactRepository
from persistence.db import Database
from persistence.session_state import SessionStateStore
from protocol.values import DeploymentMode, EventCategory, EventLevel
from tests.fix.venue import US, VENUE, dictionary_file

T = TypeVar("T")
WAIT_SECONDS = 30.0


async def eventually(
    condition: Callable[[], Awaitable[T | None]], what: str, timeout: float = WAIT_SECONDS
) -> T:
    """Await `condition` until it is truthy; fail at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Wait until the synchronous `condition` is truthy; fail at the deadline."""

    async def check() -> bool:
        return bool(condition())

    await eventually(check, what, timeout)


def fix_config(role: str, begin_string: str, port: int, **extra: Any) -> dict[str, Any]:
    """Our side's config; the heartbeat is 1 s so heartbeats and TestRequests show in seconds."""
    config = {
        "role": role,
        "begin_string": begin_string,
        "sender_comp_id": US,
        "target_comp_id": VENUE,
        "host": "127.0.0.1",
        "port": port,
        "heartbeat_interval_seconds": 1,
        "reconnect_interval_seconds": 0.5,
    }
    config.update(extra)
    return config


@dataclass
class FixHarness:
    db: Database
    adapter_id: str
    config: dict[str, Any]
    artifacts: tuple[str, ...] = ()
    epoch: int = 1
    pod: str = "pod-a"
    statuses: list[tuple[SessionStatus, str]] = field(default_factory=list)
    events: list[tuple[EventLevel, str]] = field(default_factory=list)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    connector: FixConnector | None = None

    @property
    def slot(self) -> str:
        return f"{self.adapter_id}/0"

    def _report(self, slot: str, status: SessionStatus, detail: str) -> None:
        self.statuses.append((status, detail))

    def _emit(
        self,
        adapter_id: str,
        level: EventLevel,
        category: EventCategory,
        description: str,
        details: Mapping[str, Any],
    ) -> None:
        self.events.append((level, description))

    async def start(self, epoch: int | None = None, pod: str | None = None) -> FixConnector:
        self.epoch, self.pod = epoch or self.epoch, pod or self.pod
        info = SessionInfo(
            self.slot, self.adapter_id, self.epoch, self.pod, "fix", self.config, self.artifacts
        )
        context = SessionContext(
            info,
            self.db,
            FencedState(SessionStateStore(self.db), info),
            ArtifactRepository(self.db),
            self._emit,
            self._report,
            metrics=self.registry,
        )
        await context.state.claim()
        await context.pin_artifacts()
        self.connector = FixConnector()
        await self.connector.start(context)
        return self.connector

    async def stop(self) -> None:
        if self.connector is not None:
            await self.connector.stop()

    @property
    def status(self) -> SessionStatus | None:
        return self.statuses[-1][0] if self.statuses else None

    def said(self, part: str) -> list[str]:
        return [text for _level, text in self.events if part in text]

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


async def create_adapter(
    db: Database, config: Mapping[str, Any], name: str = "venue", artifacts: tuple[str, ...] = ()
) -> str:
    record = await AdapterRepository(db).create(
        name, "fix", DeploymentMode.SINGLE, dict(config), artifacts=list(artifacts)
    )
    return record.id


async def upload_dictionary(db: Database, begin_string: str) -> str:
    name = f"dict-{begin_string.replace('.', '')}"
    await ArtifactRepository(db).put(
        name, dictionary_file(begin_string).read_bytes(), "application/xml"
    )
    return name


def new_order(order_id: int, *, fixt: bool = False) -> list[list[Any]]:
    """A NewOrderSingle body as an outbox row's ``fields`` (valid for 4.4 and 5.0 SP2)."""
    fields: list[list[Any]] = [
        [11, f"ord-{order_id}"],
        [55, "RAFT"],
        [54, "1"],
        [60, "20260101-00:00:00.000"],
        [38, 100],
        [40, "1"],
    ]
    if not fixt:
        fields.append([21, "1"])  # HandlInst: allowed in 4.4, required in 4.2
    return fields


async def enqueue_orders(
    db: Database, adapter_id: str, first: int, last: int, *, fixt: bool = False
) -> None:
    async with db.connection() as conn:
        await conn.executemany(
            "INSERT INTO fix_outbox (adapter_id, msg_type, fields) VALUES ($1, 'D', $2)",
            [(adapter_id, new_order(i, fixt=fixt)) for i in range(first, last + 1)],
        )


async def inbox_exec_ids(db: Database, adapter_id: str) -> Counter[str]:
    """ExecID -> times it is in the inbox."""
    rows = await db.fetch("SELECT fields FROM fix_inbox WHERE adapter_id = $1", adapter_id)
    found: Counter[str] = Counter()
    for row in rows:
        found.update(str(v) for t, v in row["fields"] if t == 17)
    return found


async def sequences(db: Database, slot: str) -> dict[str, Any]:
    return {
        k: v for k, v in (await SessionStateStore(db).get_all(slot)).items() if k.startswith("fix.")
    }


async def produce_orders(
    db: Database, adapter_id: str, total: int, rate: float, *, fixt: bool = False
) -> None:
    """Insert `total` orders into the outbox at about `rate` per second (batches of 1/20 s)."""
    batch = max(1, int(rate / 20))
    loop = asyncio.get_running_loop()
    started = loop.time()
    for first in range(1, total + 1, batch):
        due = started + (first - 1) / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        await enqueue_orders(db, adapter_id, first, min(total, first + batch - 1), fixt=fixt)
