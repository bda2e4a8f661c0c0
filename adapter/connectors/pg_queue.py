"""The `pg-queue-consumer` connector: delivers a PostgreSQL queue table to a sink table, in
order and exactly once, its offset committed in the same fenced transaction as each batch.

Tables (see docs/connectors.md): the queue ``(id bigint primary key, payload text)``
is the producers'; ids must become visible in increasing order. The sink is created
if missing: ``(seq bigserial primary key, msg_id bigint not null, payload text,
slot text, epoch bigint, pod_id text, delivered_at timestamptz default now())``.

Exactly once rests on the fence: a batch's sink rows and its offset commit together
after the fence check, so once a newer epoch has claimed the session every
transaction of the old owner is rejected whole, and the new owner resumes from
the last offset that actually committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from typing import Any

from adapter.connectors import Backoff, ConfigReader, cancel_and_wait
from adapter.sdk import Connector, SessionContext, SessionInfo, SessionStatus
from protocol.errors import RaftorchError, StaleEpochError, ValidationError
from protocol.values import EventCategory, EventLevel

log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_RETRY_INITIAL_SECONDS = 0.1
_RETRY_MAX_SECONDS = 2.0
STOP_TIMEOUT_SECONDS = 4.0
"""How long `stop()` waits for the transaction in flight before cancelling it (under
the runtime's default bound on `stop()`, 5 s, so the connector cancels it itself)."""
_DETAIL_MAX = 500


def quote_table(reader: ConfigReader, key: str) -> str:
    """The table name under `key`, optionally schema-qualified, as a quoted SQL identifier.

    Each part must match ``^[A-Za-z_][A-Za-z0-9_]{0,62}$`` (so it can hold no quote);
    it is then double-quoted, which makes it case-sensitive: ``Queue`` is not ``queue``.
    """
    name = reader.text(key)
    parts = name.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.fullmatch(part) for part in parts):
        raise reader.error(
            key,
            f"must be a table name, optionally schema-qualified (letters, digits, _; "
            f"at most 63 characters per part), got {name!r}",
        )
    return ".".join(f'"{part}"' for part in parts)


@dataclass(frozen=True, slots=True)
class PgQueueConfig:
    """Checked configuration; table names are already quoted for SQL."""

    queue_table: str
    sink_table: str
    batch_size: int = 100
    poll_interval_seconds: float = 0.05

    @classmethod
    def parse(cls, config: Any) -> PgQueueConfig:
        """Raise ConfigError naming the key on anything missing, malformed or unknown."""
        reader = ConfigReader(PgQueueConsumer.type, config)
        parsed = cls(
            queue_table=quote_table(reader, "queue_table"),
            sink_table=quote_table(reader, "sink_table"),
            batch_size=reader.integer("batch_size", low=1, high=10_000, default=100),
            poll_interval_seconds=reader.seconds("poll_interval_seconds", default=0.05),
        )
        reader.finish()
        if parsed.queue_table == parsed.sink_table:
            raise reader.error("sink_table", "must differ from queue_table")
        return parsed


def _detail(text: str) -> str:
    return text if len(text) <= _DETAIL_MAX else text[: _DETAIL_MAX - 3] + "..."


class PgQueueConsumer(Connector):
    """Consumes `queue_table` in id order into `sink_table`; one instance per session.

    `start()` creates the sink if missing, reads the committed offset, reports ACTIVE
    and runs the consume loop in its own task; `stop()` lets the transaction in flight
    finish. Fenced off (StaleEpochError): reports ERROR and ends for good. Database
    errors: reports ERROR, retries with backoff (capped at 2 s), reports ACTIVE again.
    """

    type = "pg-queue-consumer"
    version = "0.1.0"

    def __init__(self) -> None:
        self._config: PgQueueConfig | None = None
        self._context: SessionContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._offset: int | None = None  # None: unknown, re-read before the next batch
        self._reported: tuple[SessionStatus, str] | None = None

    async def prepare(self, info: SessionInfo) -> None:
        """Validate the configuration (no I/O)."""
        self._config = PgQueueConfig.parse(info.config)

    async def start(self, context: SessionContext) -> None:
        """Validate the configuration (ConfigError), open the session and start consuming.

        A database failure while opening does not raise: it is reported as ERROR and
        the consume loop keeps retrying. May be called once per instance, not after
        `stop()`.
        """
        if self._task is not None or self._stopping.is_set():
            raise RuntimeError("PgQueueConsumer.start() called twice or after stop()")
        self._config = PgQueueConfig.parse(context.info.config)
        self._context = context
        try:
            await self._open(context, self._config)
        except Exception as exc:
            self._failed(context, exc)
        else:
            self._report(SessionStatus.ACTIVE)
        self._task = asyncio.create_task(
            self._run(context, self._config), name=f"pg-queue-consumer:{context.info.slot}"
        )

    async def stop(self) -> None:
        """Finish the transaction in flight (at most STOP_TIMEOUT_SECONDS, then cancel it:
        it rolls back) and end the consume loop. Idempotent. If `stop()` itself is
        cancelled, the loop is cancelled too."""
        self._stopping.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_SECONDS)
        except asyncio.CancelledError:
            task.cancel()  # our caller gave up first: do not leave the loop running
            raise
        if not done:
            log.warning("stop timed out, cancelling session=%s", self._slot())
            await cancel_and_wait(task)

    @property
    def offset(self) -> int | None:
        """The id of the last message this instance committed (None until known)."""
        return self._offset

    def _slot(self) -> str:
        return self._context.info.slot if self._context else "?"

    def _report(self, status: SessionStatus, detail: str = "") -> None:
        """Forward a status or detail change (repeats are dropped); a change of status
        also goes to the event log (the fenced case logs its own system event)."""
        if self._context is None or self._reported == (status, detail):
            return
        previous = self._reported[0] if self._reported else None
        self._reported = (status, detail)
        self._context.report(status, _detail(detail))
        if status is previous:
            return
        if status is SessionStatus.ERROR and not detail.startswith("fenced: "):
            self._context.event(_detail(detail), level=EventLevel.WARNING)
        elif status is SessionStatus.ACTIVE and previous is not None:
            self._context.event("delivering again")

    async def _open(self, context: SessionContext, config: PgQueueConfig) -> int:
        """Create the sink if missing, read the committed offset and return it."""
        await context.db.execute(
            f"""CREATE TABLE IF NOT EXISTS {config.sink_table} (
                    seq bigserial PRIMARY KEY,
                    msg_id bigint NOT NULL,
                    payload text,
                    slot text,
                    epoch bigint,
                    pod_id text,
                    delivered_at timestamptz DEFAULT now())"""
        )
        stored = await context.state.get("offset")
        if stored is None:
            stored = 0
        if isinstance(stored, bool) or not isinstance(stored, int):
            raise ValidationError(f"stored offset is not an integer: {stored!r}")
        self._offset = stored
        return stored

    async def _run(self, context: SessionContext, config: PgQueueConfig) -> None:
        """The task body: never ends with an exception that nobody sees (the loop retries
        every failure but fencing; this catches failures of the reporting itself)."""
        try:
            await self._consume(context, config)
        except Exception as exc:
            log.exception("consume loop failed session=%s", context.info.slot)
            detail = f"internal error: {type(exc).__name__}: {exc}"
            self._report(SessionStatus.ERROR, detail)

    async def _consume(self, context: SessionContext, config: PgQueueConfig) -> None:
        backoff = Backoff(_RETRY_INITIAL_SECONDS, _RETRY_MAX_SECONDS)
        while not self._stopping.is_set():
            try:
                offset = self._offset
                if offset is None:
                    offset = await self._open(context, config)
                delivered = await self._deliver_batch(context, config, offset)
            except StaleEpochError as exc:
                self._fenced(context, exc)
                return
            except Exception as exc:
                # A failed COMMIT may still have committed: forget the offset and
                # re-read it, so a retry can never deliver the same batch twice.
                self._offset = None
                self._failed(context, exc)
                await self._sleep(backoff.next_delay())
                continue
            backoff.reset()
            self._report(SessionStatus.ACTIVE)
            if delivered == 0:
                await self._sleep(config.poll_interval_seconds)

    async def _deliver_batch(
        self, context: SessionContext, config: PgQueueConfig, offset: int
    ) -> int:
        """Deliver up to batch_size messages after `offset` in one fenced transaction;
        return how many. An idle queue costs one read and no fence write."""
        pending = await context.db.fetchval(
            f"SELECT EXISTS (SELECT 1 FROM {config.queue_table} WHERE id > $1)", offset
        )
        if not pending:
            return 0
        info = context.info
        async with context.state.transaction() as tx:
            rows = await tx.connection.fetch(
                f"SELECT id, payload FROM {config.queue_table} WHERE id > $1 ORDER BY id LIMIT $2",
                offset,
                config.batch_size,
            )
            if not rows:
                return 0
            # executemany runs the rows in order, so seq follows msg_id.
            await tx.connection.executemany(
                f"INSERT INTO {config.sink_table} (msg_id, payload, slot, epoch, pod_id) "
                "VALUES ($1, $2, $3, $4, $5)",
                [(r["id"], r["payload"], info.slot, info.epoch, info.pod_id) for r in rows],
            )
            last = int(rows[-1]["id"])
            await tx.put("offset", last)
        self._offset = last
        return len(rows)

    def _failed(self, context: SessionContext, exc: Exception) -> None:
        """Report a failed batch. Expected failures are RaftorchErrors (the database is
        down, a table is missing); anything else is logged with its traceback but
        retried all the same: a stuck session helps nobody, and the error is visible."""
        if isinstance(exc, RaftorchError):
            log.warning("batch failed session=%s error=%s", context.info.slot, exc.message)
            self._report(SessionStatus.ERROR, exc.message)
        else:
            log.exception("batch failed unexpectedly session=%s", context.info.slot)
            self._report(SessionStatus.ERROR, f"unexpected error: {type(exc).__name__}: {exc}")

    def _fenced(self, context: SessionContext, exc: StaleEpochError) -> None:
        log.warning("fenced off session=%s error=%s", context.info.slot, exc.message)
        self._report(SessionStatus.ERROR, f"fenced: {exc.message}")
        context.event(
            _detail(f"fenced off: {exc.message}"),
            level=EventLevel.WARNING,
            category=EventCategory.SYSTEM,
            details={"epoch": context.info.epoch, "pod": context.info.pod_id},
        )

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when stop() is called."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
