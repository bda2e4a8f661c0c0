"""The sending half of a FIX session: every message we send passes the fence first.

A new MsgSeqNum is reserved in a committed fenced transaction before the message
carrying it is written; the same transaction delivers the inbound messages received
so far to the inbox and moves the durable expected MsgSeqNum up to them. The
outbox is drained here too, and heartbeats, TestRequests, Logout and Reject go out
from here. `inbound` builds on this class, `session` runs the loop over both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from adapter.connectors.fix import codec
from adapter.connectors.fix.bridge import BATCH, Bridge
from adapter.connectors.fix.codec import Message, MsgType
from adapter.connectors.fix.dictionary import DataDictionary
from adapter.connectors.fix.metrics import FixMetrics
from adapter.connectors.fix.resend import ResendResponder
from adapter.connectors.fix.states import EndKind, SessionEnd, State
from adapter.connectors.fix.store import SeqTransaction, SequenceStore
from adapter.sdk import SessionContext
from persistence.session_state import ResetRequest
from protocol.fix import FixConfig
from protocol.values import EventLevel

log = logging.getLogger(__name__)

LOGON_TIMEOUT_SECONDS = 10.0
LOGOUT_TIMEOUT_SECONDS = 2.0
"""How long a Logout waits for the counterparty's (inside the runtime's 5 s stop bound)."""
OUTBOX_POLL_SECONDS = 0.02
RESET_POLL_SECONDS = 1.0
READ_CHUNK = 65536
TOO_LOW = re.compile(r"MsgSeqNum too low", re.IGNORECASE)


class Outbound:
    """Session state shared by both halves, and everything that sends."""

    def __init__(
        self,
        config: FixConfig,
        context: SessionContext,
        store: SequenceStore,
        dictionary: DataDictionary | None,
        streams: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        *,
        reset: ResetRequest | None,
        on_logon: Callable[[str], None],
    ) -> None:
        self._config, self._context, self._store = config, context, store
        self._dictionary = dictionary
        self._reader, self._writer = streams
        self._bridge = Bridge(context.info, dictionary)
        self._metrics = FixMetrics.of(context.metrics)
        self._header = codec.Header(
            config.begin_string, config.sender_comp_id, config.target_comp_id
        )
        self._reset_request = reset
        self._on_logon = on_logon
        self._initiator = config.role == "initiator"
        self.state = State.LOGON_SENT if self._initiator else State.AWAIT_LOGON
        self.heartbeat = float(config.heartbeat_interval_seconds)
        self.expected = store.seqs.next_target
        self._framer = codec.Framer()
        self._pending: list[Message] = []  # inbound app messages not yet in the inbox
        now = time.monotonic()
        self._last_sent = self._last_received = now
        self._deadline = now + LOGON_TIMEOUT_SECONDS  # for the Logon, later the Logout
        self._test_request_at: float | None = None
        self._resend_until: int | None = None  # a ResendRequest of ours is outstanding
        self._resend_asked_at = 0.0
        self._awaiting_reset_ack = False
        self._sent_reset = False  # our Logon on this connection carried ResetSeqNumFlag=Y
        self._next_outbox = self._next_reset_check = now
        self._stop: tuple[EndKind, str] | None = None
        self._logout: tuple[EndKind, str] = (EndKind.STOPPED, "")
        self._wake = asyncio.Event()
        self._resender = ResendResponder(self._header, store, self._write, self._metrics)

    def request_stop(self, reason: str, kind: EndKind = EndKind.STOPPED) -> None:
        """Log out (when logged on) and end; safe to call from any task of the loop."""
        if self._stop is None:
            self._stop = (kind, reason)
        self._wake.set()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[SeqTransaction]:
        """A fenced transaction that also delivers the pending inbound messages and moves
        the durable expected MsgSeqNum up to them (never past an undelivered one)."""
        async with self._store.transaction() as tx:
            if self._pending:
                await self._bridge.deliver(tx.connection, self._pending, tx.seqs.generation)
            tx.set_target(self.expected)
            yield tx
        self._pending.clear()

    async def _write(self, data: bytes) -> None:
        self._writer.write(data)
        self._last_sent = time.monotonic()
        if self._writer.transport.get_write_buffer_size() > READ_CHUNK:
            await self._writer.drain()

    async def _send(self, msg_type: str, body: list[tuple[int, str]]) -> int:
        """Reserve the next MsgSeqNum durably, then send a session-level message."""
        async with self._transaction() as tx:
            seq, sending_time = tx.reserve(msg_type, None)
        await self._write(codec.encode(self._header, msg_type, seq, sending_time, body))
        self._metrics.messages.labels("out", "admin").inc()
        return seq

    def _logon_body(self, *, reset: bool) -> list[tuple[int, str]]:
        body = [(codec.ENCRYPT_METHOD, "0"), (codec.HEART_BT_INT, str(int(self.heartbeat)))]
        if reset:
            body.append((codec.RESET_SEQ_NUM_FLAG, "Y"))
        if self._config.appl_ver_id is not None:
            body.append((codec.DEFAULT_APPL_VER_ID, self._config.appl_ver_id))
        return body

    def _wants_reset(self) -> bool:
        return self._config.reset_on_logon or self._reset_request is not None

    async def _send_logon(self, *, reset: bool, expect_next: int | None = None) -> None:
        """Our Logon; with `reset`, both sides start again at 1 (ResetSeqNumFlag=Y), which
        is committed, together with any admin reset request, before the Logon leaves."""
        async with self._transaction() as tx:
            if reset:
                await tx.reset(self._reset_request.id if self._reset_request else None)
                self.expected = 1 if expect_next is None else expect_next
                tx.set_target(self.expected)
            seq, sending_time = tx.reserve(MsgType.LOGON, None)
        body = self._logon_body(reset=reset)
        await self._write(codec.encode(self._header, MsgType.LOGON, seq, sending_time, body))
        self._metrics.messages.labels("out", "admin").inc()
        if reset:
            self._sent_reset = True
            self._report_reset(seq)

    def _report_reset(self, seq: int) -> None:
        request, self._reset_request = self._reset_request, None
        why = (
            f"as requested by {request.requested_by}"
            if request
            else "reset_on_logon"
            if self._config.reset_on_logon
            else "the counterparty asked"
        )
        self._context.event(
            f"sequence numbers reset to 1 ({why}): Logon with ResetSeqNumFlag=Y, MsgSeqNum {seq}",
            details={"generation": self._store.seqs.generation},
        )

    async def _start_logout(self, kind: EndKind, reason: str) -> None:
        await self._send(MsgType.LOGOUT, [(codec.TEXT, reason)] if reason else [])
        self.state, self._logout = State.LOGOUT_SENT, (kind, reason)
        self._deadline = time.monotonic() + LOGOUT_TIMEOUT_SECONDS

    async def _fatal(self, kind: EndKind, reason: str, text: str) -> None:
        """Log out with `text` (best effort) and end the connection."""
        with contextlib.suppress(OSError):
            await self._send(MsgType.LOGOUT, [(codec.TEXT, text)])
        raise SessionEnd(kind, reason)

    async def _reject(self, message: Message, reason: int, text: str) -> None:
        body = [
            (codec.REF_SEQ_NUM, str(message.seq_num or 0)),
            (codec.TEXT, text[:200]),
            (codec.REF_MSG_TYPE, message.msg_type),
            (codec.SESSION_REJECT_REASON, str(reason)),
        ]
        await self._send(MsgType.REJECT, body)
        self._metrics.rejects.labels("out").inc()
        self._context.event(
            f"sent Reject of MsgSeqNum {message.seq_num}: {text}", level=EventLevel.WARNING
        )

    async def _pump_outbox(self, now: float) -> None:
        """Send what the outbox holds: rows marked sent and MsgSeqNums reserved in one
        fenced transaction, written to the socket only after it committed."""
        if now < self._next_outbox:
            return
        self._next_outbox = now + OUTBOX_POLL_SECONDS
        async with self._context.db.connection() as conn:
            if not await self._bridge.has_pending(conn):
                return
        frames: list[bytes] = []
        async with self._transaction() as tx:
            rows, rejected = await self._bridge.take(tx.connection)
            sent = []
            for row in rows:
                assert row.body is not None
                seq, sending_time = tx.reserve(row.msg_type, codec.encode_body(row.body))
                sent.append((row.id, seq))
                frames.append(codec.encode(self._header, row.msg_type, seq, sending_time, row.body))
            await self._bridge.mark_sent(tx.connection, sent, tx.seqs.generation)
        if frames:
            await self._write(b"".join(frames))
            await self._writer.drain()
            self._metrics.messages.labels("out", "app").inc(len(frames))
        if rejected:
            self._context.event(
                f"{rejected} outbox rows refused (see fix_outbox.rejected)",
                level=EventLevel.WARNING,
            )
        if len(rows) + rejected >= BATCH:
            self._next_outbox = now  # more waiting: next round at once

    def _silence_limit(self) -> float:
        if self._test_request_at is not None:
            return self._test_request_at + self.heartbeat * 1.2
        return self._last_received + self.heartbeat * 1.2

    async def _keep_alive(self, now: float) -> None:
        if now >= self._last_sent + self.heartbeat:
            await self._send(MsgType.HEARTBEAT, [])
        if now < self._silence_limit():
            return
        if self._test_request_at is not None:
            raise SessionEnd(EndKind.NETWORK, "heartbeat missed: no answer to our TestRequest")
        self._metrics.heartbeats_missed.inc()
        self._test_request_at = now
        await self._send(MsgType.TEST_REQUEST, [(codec.TEST_REQ_ID, f"raftorch-{int(now)}")])

    async def _check_reset(self, now: float) -> None:
        """Pick up an admin reset: log out now, reset at the next Logon (the FIX way)."""
        self._next_reset_check = now + RESET_POLL_SECONDS
        if self.state is not State.ACTIVE or self._stop is not None:
            return
        request = await self._context.state.pending_reset()
        if request is not None:
            self._reset_request = request
            self.request_stop(f"sequence reset requested by {request.requested_by}", EndKind.RESET)

    async def _close(self, *, graceful: bool) -> None:
        """Close the connection: after flushing (bounded) what we sent, or at once."""
        transport = self._writer.transport
        if not graceful:
            transport.abort()
            return
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self._writer.drain()
        transport.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()
