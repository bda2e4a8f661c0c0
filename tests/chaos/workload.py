"""The workload's parts: queue producers, a TCP peer for tcp-client, the test-connector adapters."""

from __future__ import annotations

import asyncio
import threading

import asyncpg

QUEUE_SCHEMA = """
CREATE TABLE IF NOT EXISTS {queue} (id bigint PRIMARY KEY, payload text);
"""
PRODUCER_BATCH = 10
PRODUCER_PAUSE_SECONDS = 0.05  # pacing of the producers (about 200 messages/s per queue)

SLOW, FLOOD = "slow", "flood"
"""Adapters of the test connector `test-slow-start` (tests/plugins), created DISABLED; the
`slow-start` and `slot-flood` faults enable them and their heals disable them again."""
SLOW_START_SECONDS = 10.0  # how long the slow adapter's connector start hangs
FLOOD_INSTANCES = 600  # the flood adapter's instances: about 200 handed to each pod at once
FLOOD_START_SECONDS = 0.2  # each flood start takes a moment, as a real connect would
POD_CAPACITY = 400  # room for the flood on two pods (one may be restarting), and the rest


class Producer(threading.Thread):
    """Inserts ids 1, 2, 3 ... into one queue table, in order, until stopped.

    An insert whose outcome is unknown (the database went away) is retried with
    ON CONFLICT DO NOTHING before the next batch, so ids become visible in order and
    `produced` is exactly the ids known to be in the table.
    """

    def __init__(self, dsn: str, queue: str) -> None:
        super().__init__(daemon=True, name=f"producer-{queue}")
        self.dsn, self.queue = dsn, queue
        self.produced = 0
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._produce())
        except BaseException as exc:  # surfaced by the campaign
            self.error = exc

    async def _produce(self) -> None:
        conn: asyncpg.Connection | None = None
        sql = f"INSERT INTO {self.queue} (id, payload) VALUES ($1, $2) ON CONFLICT DO NOTHING"
        while not self.stopping.is_set():
            first = self.produced + 1
            batch = [(i, f"m{i}") for i in range(first, first + PRODUCER_BATCH)]
            try:
                if conn is None:
                    conn = await asyncpg.connect(self.dsn, timeout=2)
                await conn.executemany(sql, batch, timeout=5)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                if conn is not None:
                    conn.terminate()
                    conn = None
                await asyncio.sleep(0.2)  # pacing of retries while the database is away
                continue
            self.produced = batch[-1][0]
            await asyncio.sleep(PRODUCER_PAUSE_SECONDS)
        if conn is not None:
            await conn.close()


async def start_tcp_sink() -> asyncio.Server:
    """A TCP peer for the tcp-client sessions: accepts and reads until the client leaves."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.read(65536):
                pass
        except OSError:
            pass
        finally:
            writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0)
