"""The built-in connectors against a real PostgreSQL and real loopback sockets.

pg-queue-consumer must deliver every message exactly once and in order, also across a
handover to a newer epoch while producers keep writing, and ride out a database outage.
tcp-client must follow its peer: ACTIVE while connected, ERROR with the reason while not.
"""

from __future__ import annotations

import asyncio
import inspect
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

from adapter.connectors import pg_queue
from adapter.connectors.pg_queue import PgQueueConsumer
from adapter.connectors.tcp_client import TcpClient
from adapter.sdk import Connector, FencedState, SessionContext, SessionInfo, SessionStatus
from persistence.artifacts import ArtifactRepository
from persistence.db import Database, PoolSettings
from persistence.migrate import migrate
from persistence.session_state import SessionStateStore
from protocol.errors import ConfigError
from protocol.values import EventCategory, EventLevel
from tests.pgserver import PostgresServer

T = TypeVar("T")

SLOT = "a1/0"
QUEUE = "queue"
SINK = "sink"
WAIT_SECONDS = 20.0


# --- helpers ------------------------------------------------------------------------


async def eventually(
    condition: Callable[[], T | Awaitable[T | None] | None],
    what: str,
    timeout: float = WAIT_SECONDS,
) -> T:
    """Poll `condition` (sync or async) until it returns something truthy; fail at the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = condition()
        value = await result if inspect.isawaitable(result) else result
        if value:
            return value  # type: ignore[return-value]
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Recorder:
    """The status and event sinks of one session, kept for assertions."""

    statuses: list[tuple[SessionStatus, str]] = field(default_factory=list)
    events: list[tuple[EventLevel, EventCategory, str, Mapping[str, Any]]] = field(
        default_factory=list
    )

    def report(self, slot: str, status: SessionStatus, detail: str) -> None:
        assert slot == SLOT
        self.statuses.append((status, detail))

    def emit(
        self,
        adapter_id: str,
        level: EventLevel,
        category: EventCategory,
        description: str,
        details: Mapping[str, Any],
    ) -> None:
        assert adapter_id == "a1"
        self.events.append((level, category, description, details))

    @property
    def status(self) -> SessionStatus | None:
        return self.statuses[-1][0] if self.statuses else None

    def reported(self, status: SessionStatus, detail_part: str = "") -> bool:
        return any(s is status and detail_part in d for s, d in self.statuses)


def session(
    connector: str, config: Mapping[str, Any], epoch: int = 1, pod: str = "pod-a"
) -> SessionInfo:
    return SessionInfo(
        slot=SLOT, adapter_id="a1", epoch=epoch, pod_id=pod, connector=connector, config=config
    )


def context_for(db: Database, info: SessionInfo, recorder: Recorder) -> SessionContext:
    return SessionContext(
        info=info,
        db=db,
        state=FencedState(SessionStateStore(db), info),
        _artifacts=ArtifactRepository(db),
        _emit=recorder.emit,
        _report=recorder.report,
    )


def queue_config(**extra: Any) -> dict[str, Any]:
    return {"queue_table": QUEUE, "sink_table": SINK, **extra}


async def start_consumer(
    db: Database, epoch: int = 1, pod: str = "pod-a", **config: Any
) -> tuple[PgQueueConsumer, Recorder]:
    """A consumer for SLOT that has claimed `epoch` (as the runtime does) and started."""
    info = session(PgQueueConsumer.type, queue_config(**config), epoch, pod)
    recorder = Recorder()
    context = context_for(db, info, recorder)
    await context.state.claim()
    consumer = PgQueueConsumer()
    await consumer.start(context)
    return consumer, recorder


async def enqueue(db: Database, first: int, last: int) -> None:
    await db.execute(
        f"INSERT INTO {QUEUE} (id, payload) "
        "SELECT g, 'm' || g FROM generate_series($1::bigint, $2) g",
        first,
        last,
    )


async def delivered(db: Database) -> int:
    count: int = await db.fetchval(f"SELECT count(*) FROM {SINK}")
    return count


async def assert_exactly_once_in_order(db: Database, last: int) -> list[Any]:
    """The sink holds messages 1..last, each once, in seq order; returns its rows."""
    counts = await db.fetchrow(f"SELECT count(*) AS n, count(DISTINCT msg_id) AS d FROM {SINK}")
    assert counts is not None and counts["n"] == counts["d"] == last
    rows = await db.fetch(
        f"SELECT seq, msg_id, payload, slot, epoch, pod_id FROM {SINK} ORDER BY seq"
    )
    assert [r["msg_id"] for r in rows] == list(range(1, last + 1))
    assert all(r["payload"] == f"m{r['msg_id']}" and r["slot"] == SLOT for r in rows)
    return rows


async def stored_offset(db: Database) -> Any:
    return await SessionStateStore(db).get(SLOT, "offset")


@pytest.fixture
async def db(pg_dsn: str) -> AsyncIterator[Database]:
    async with Database(pg_dsn) as database:
        await database.execute(f"CREATE TABLE {QUEUE} (id bigint PRIMARY KEY, payload text)")
        yield database


# --- pg-queue-consumer --------------------------------------------------------------


async def test_delivers_every_queued_message_exactly_once_in_order(db: Database) -> None:
    await enqueue(db, 1, 2000)
    consumer, recorder = await start_consumer(db, batch_size=150)
    try:
        assert recorder.statuses == [(SessionStatus.ACTIVE, "")]
        await eventually(lambda: consumer.offset == 2000, "offset 2000")
    finally:
        await consumer.stop()
    rows = await assert_exactly_once_in_order(db, 2000)
    assert {(r["epoch"], r["pod_id"]) for r in rows} == {(1, "pod-a")}
    assert await stored_offset(db) == 2000
    assert recorder.statuses == [(SessionStatus.ACTIVE, "")]


async def test_picks_up_messages_inserted_while_running(db: Database) -> None:
    consumer, recorder = await start_consumer(db, poll_interval_seconds=0.01)
    try:
        assert recorder.status is SessionStatus.ACTIVE
        assert await delivered(db) == 0 and await stored_offset(db) is None
        await enqueue(db, 1, 5)
        await eventually(lambda: delivered(db), "the first messages")
        await eventually(lambda: consumer.offset == 5, "offset 5")
        await enqueue(db, 6, 6)
        await eventually(lambda: consumer.offset == 6, "offset 6")
    finally:
        await consumer.stop()
    await assert_exactly_once_in_order(db, 6)
    assert await stored_offset(db) == 6


async def test_resumes_from_the_stored_offset(db: Database) -> None:
    await enqueue(db, 1, 30)
    first, _ = await start_consumer(db, batch_size=7)
    await eventually(lambda: first.offset == 30, "offset 30")
    await first.stop()
    await enqueue(db, 31, 40)
    second, _ = await start_consumer(db, epoch=2, pod="pod-b")
    try:
        await eventually(lambda: second.offset == 40, "offset 40")
    finally:
        await second.stop()
    rows = await assert_exactly_once_in_order(db, 40)
    assert {r["msg_id"] for r in rows if r["epoch"] == 2} == set(range(31, 41))


async def _produce(db: Database, stop: asyncio.Event) -> int:
    """Insert messages 1, 2, ... in small batches until told to stop; return the last id."""
    last = 0
    while not stop.is_set():
        await enqueue(db, last + 1, last + 10)
        last += 10
        await asyncio.sleep(0.002)  # pacing, not synchronisation
    return last


async def test_handover_to_a_newer_epoch_delivers_exactly_once(pg_dsn: str, db: Database) -> None:
    stop_producing = asyncio.Event()
    producer = asyncio.create_task(_produce(db, stop_producing))
    async with Database(pg_dsn) as db_a, Database(pg_dsn) as db_b:
        a, a_seen = await start_consumer(db_a, epoch=1, pod="pod-a", batch_size=20)
        b: PgQueueConsumer | None = None
        try:
            await eventually(lambda: (a.offset or 0) >= 200, "pod-a to deliver 200 messages")
            b, b_seen = await start_consumer(db_b, epoch=2, pod="pod-b", batch_size=20)
            await eventually(
                lambda: a_seen.reported(SessionStatus.ERROR, "fenced: "), "pod-a to be fenced off"
            )
            await eventually(lambda: (b.offset or 0) > 0, "pod-b to deliver")
            stop_producing.set()
            last = await producer
            await eventually(lambda: b.offset == last, f"pod-b to reach offset {last}")
        finally:
            stop_producing.set()
            await producer
            await a.stop()
            if b is not None:
                await b.stop()

    rows = await assert_exactly_once_in_order(db, last)
    last_of_a = max(r["seq"] for r in rows if r["epoch"] == 1)
    first_of_b = min(r["seq"] for r in rows if r["epoch"] == 2)
    assert last_of_a < first_of_b  # nothing of pod-a committed after the handover
    assert {r["pod_id"] for r in rows if r["epoch"] == 2} == {"pod-b"}
    assert await stored_offset(db) == last
    fence = await SessionStateStore(db).fence(SLOT)
    assert fence is not None and (fence.epoch, fence.owner) == (2, "pod-b")
    assert a_seen.status is SessionStatus.ERROR and "fence is at epoch 2" in a_seen.statuses[-1][1]
    assert any(
        level is EventLevel.WARNING
        and category is EventCategory.SYSTEM
        and text.startswith("fenced off: ")
        for level, category, text, _ in a_seen.events
    )
    assert not b_seen.reported(SessionStatus.ERROR)


async def test_rides_out_a_database_outage(pg_dedicated: PostgresServer) -> None:
    name = f"c_{uuid.uuid4().hex}"
    pg_dedicated.create_database(name)
    settings = PoolSettings(connect_timeout_seconds=1.0, command_timeout_seconds=2.0)
    async with Database(pg_dedicated.dsn(name), settings) as db:
        await migrate(db)
        await db.execute(f"CREATE TABLE {QUEUE} (id bigint PRIMARY KEY, payload text)")
        await enqueue(db, 1, 100)
        consumer, recorder = await start_consumer(db, poll_interval_seconds=0.01)
        try:
            await eventually(lambda: consumer.offset == 100, "offset 100")
            await asyncio.to_thread(pg_dedicated.stop)
            await eventually(
                lambda: recorder.reported(SessionStatus.ERROR, "database unavailable"),
                "ERROR while the database is down",
            )
            await asyncio.to_thread(pg_dedicated.start)
            await eventually(lambda: recorder.status is SessionStatus.ACTIVE, "ACTIVE again")
            await enqueue(db, 101, 150)
            await eventually(lambda: consumer.offset == 150, "offset 150")
        finally:
            await consumer.stop()
        await assert_exactly_once_in_order(db, 150)
        assert not recorder.reported(SessionStatus.ERROR, "fenced")
        assert [text for _, _, text, _ in recorder.events][-1] == "delivering again"


async def test_stop_waits_for_the_batch_in_flight_and_ends_the_loop(db: Database) -> None:
    await enqueue(db, 1, 2000)
    consumer, _ = await start_consumer(db, batch_size=1)
    await eventually(lambda: (consumer.offset or 0) >= 10, "some deliveries")
    await consumer.stop()
    stopped_at = consumer.offset
    assert stopped_at is not None and stopped_at < 2000
    await consumer.stop()  # idempotent
    assert await stored_offset(db) == stopped_at
    await assert_exactly_once_in_order(db, stopped_at)


async def test_stop_cancels_a_stuck_transaction_after_its_bound(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await enqueue(db, 1, 10)
    consumer, _ = await start_consumer(db)
    await eventually(lambda: consumer.offset == 10, "offset 10")
    monkeypatch.setattr(pg_queue, "STOP_TIMEOUT_SECONDS", 0.2)
    async with db.transaction() as blocker:
        # Hold the fence row: the consumer's next fenced transaction waits on it.
        await blocker.execute("SELECT 1 FROM session_fences WHERE session = $1 FOR UPDATE", SLOT)
        await enqueue(db, 11, 20)
        await eventually(
            lambda: db.fetchval("SELECT count(*) FROM pg_locks WHERE NOT granted"),
            "the consumer to wait on the fence row",
        )
        await asyncio.wait_for(consumer.stop(), 5.0)
    assert await stored_offset(db) == 10
    await assert_exactly_once_in_order(db, 10)


def _nan() -> float:
    return math.nan


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"sink_table": SINK}, "queue_table is required"),
        (queue_config(queue_table="q; DROP TABLE x"), "queue_table must be a table name"),
        (queue_config(queue_table='a"b'), "queue_table must be a table name"),
        (queue_config(queue_table="a.b.c"), "queue_table must be a table name"),
        (queue_config(queue_table="x" * 64), "queue_table must be a table name"),
        (queue_config(queue_table=7), "queue_table must be a non-empty string"),
        ({"queue_table": QUEUE}, "sink_table is required"),
        (queue_config(sink_table=QUEUE), "sink_table must differ from queue_table"),
        (queue_config(batch_size=0), "batch_size must be between 1 and 10000, got 0"),
        (queue_config(batch_size=10_001), "batch_size must be between 1 and 10000"),
        (queue_config(batch_size="100"), "batch_size must be an integer, got '100'"),
        (queue_config(batch_size=True), "batch_size must be an integer"),
        (queue_config(poll_interval_seconds=0), "poll_interval_seconds must be a positive"),
        (queue_config(poll_interval_seconds=_nan()), "poll_interval_seconds must be a positive"),
        (queue_config(poll_interval_seconds="fast"), "poll_interval_seconds must be a number"),
        (queue_config(batchsize=10), "batchsize is not a known key"),
    ],
)
async def test_bad_queue_config_names_the_key(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        await PgQueueConsumer().prepare(session(PgQueueConsumer.type, config))
    assert err.value.message.startswith("pg-queue-consumer config: ")
    assert message in err.value.message


async def test_start_with_bad_config_raises_and_starts_nothing(db: Database) -> None:
    info = session(PgQueueConsumer.type, queue_config(batch_size=-1))
    recorder = Recorder()
    consumer = PgQueueConsumer()
    with pytest.raises(ConfigError, match="batch_size"):
        await consumer.start(context_for(db, info, recorder))
    assert recorder.statuses == [] and recorder.events == []
    assert await db.fetchval("SELECT to_regclass($1)", SINK) is None
    await consumer.stop()


async def test_schema_qualified_tables_are_quoted(db: Database) -> None:
    await db.execute('CREATE SCHEMA "Q"')
    await db.execute('CREATE TABLE "Q"."In" (id bigint PRIMARY KEY, payload text)')
    await db.execute("""INSERT INTO "Q"."In" VALUES (1, 'x'), (2, 'y')""")
    info = session(PgQueueConsumer.type, {"queue_table": "Q.In", "sink_table": "Q.Out"})
    consumer = PgQueueConsumer()
    await consumer.start(context_for(db, info, Recorder()))
    try:
        await eventually(lambda: consumer.offset == 2, "offset 2")
    finally:
        await consumer.stop()
    assert [r["payload"] for r in await db.fetch('SELECT payload FROM "Q"."Out" ORDER BY seq')] == [
        "x",
        "y",
    ]


# --- tcp-client ---------------------------------------------------------------------


class PeerServer:
    """A loopback TCP server that greets, counts connections and notes when clients hang up."""

    def __init__(self) -> None:
        self.connections = 0
        self.hangups = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._dropped: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        bound: int = self._server.sockets[0].getsockname()[1]
        return bound

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            writer.write(b"hello\r\n" * 1000)  # the client must read and discard this
            await writer.drain()
            while await reader.read(4096):
                pass
            if writer not in self._dropped:
                self.hangups += 1
        except OSError:
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def close(self) -> None:
        """Stop listening and drop every connection (the peer is gone)."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                self._dropped.add(writer)
                writer.close()
            await self._server.wait_closed()
            self._server = None


async def test_tcp_client_follows_its_peer() -> None:
    unused_db = Database(
        "postgresql://127.0.0.1:1/unused"
    )  # never started: tcp-client has no state
    server = PeerServer()
    port = await server.start()
    target = f"127.0.0.1:{port}"
    config = {
        "host": "127.0.0.1",
        "port": port,
        "reconnect_initial_seconds": 0.02,
        "reconnect_max_seconds": 0.1,
    }
    recorder = Recorder()
    client = TcpClient()
    await client.prepare(session(TcpClient.type, config))
    await client.start(context_for(unused_db, session(TcpClient.type, config), recorder))
    try:
        await eventually(lambda: recorder.status is SessionStatus.ACTIVE, "ACTIVE")
        assert server.connections == 1

        await server.close()
        await eventually(
            lambda: recorder.reported(
                SessionStatus.ERROR, f"connect to {target}: Connection refused"
            ),
            "ERROR: connection refused",
        )
        assert recorder.reported(SessionStatus.ERROR, f"connection to {target} closed by peer")
        assert recorder.status is SessionStatus.ERROR

        await server.start(port)
        await eventually(lambda: recorder.status is SessionStatus.ACTIVE, "ACTIVE again")
        await eventually(lambda: server.connections == 2, "the second connection")

        await client.stop()
        await eventually(lambda: server.hangups == 1, "the server to see the client hang up")
        await client.stop()  # idempotent
        assert recorder.status is SessionStatus.ACTIVE  # stopping is not a failure
    finally:
        await client.stop()
        await server.close()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"port": 80}, "host is required"),
        ({"host": "", "port": 80}, "host must be a non-empty string"),
        ({"host": "h"}, "port is required"),
        ({"host": "h", "port": 0}, "port must be between 1 and 65535, got 0"),
        ({"host": "h", "port": 65536}, "port must be between 1 and 65535"),
        ({"host": "h", "port": "80"}, "port must be an integer"),
        ({"host": "h", "port": 80, "reconnect_initial_seconds": -1}, "reconnect_initial_seconds"),
        ({"host": "h", "port": 80, "reconnect_max_seconds": 0.1}, "reconnect_max_seconds (0.1)"),
        ({"host": "h", "port": 80, "timeout": 1}, "timeout is not a known key"),
    ],
)
async def test_bad_tcp_config_names_the_key(config: dict[str, Any], message: str) -> None:
    client: Connector = TcpClient()
    with pytest.raises(ConfigError) as err:
        await client.prepare(session(TcpClient.type, config))
    assert err.value.message.startswith("tcp-client config: ")
    assert message in err.value.message
