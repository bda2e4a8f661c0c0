"""The FIX session protocol on one connection: Logon to Logout, one task, one state machine.

States: AWAIT_LOGON (acceptor, before the counterparty's Logon) or LOGON_SENT
(initiator) -> ACTIVE -> LOGOUT_SENT -> ended. A `FixSession` lives for one
connection and returns an `Ended` saying why it stopped; the connector decides what
follows (reconnect, ERROR, stop).

Every message we send first passes the fence: a new MsgSeqNum is reserved in a
committed fenced transaction (`store`), a resend checks the fence before it reads
the journal. Inbound application messages are collected and written to the inbox
by the next fenced transaction, which also advances the expected MsgSeqNum past
them. Any store failure ends the connection: the next one starts again from what
is durably stored, and the counterparty's or our ResendRequest recovers the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from adapter.connectors.fix import codec
from adapter.connectors.fix.bridge import BATCH, Bridge
from adapter.connectors.fix.codec import Garbled, Message, MsgType
from adapter.connectors.fix.dictionary import DataDictionary
from adapter.connectors.fix.metrics import FixMetrics
from adapter.connectors.fix.resend import ResendResponder
from adapter.connectors.fix.store import SequenceStore, SeqTransaction
from adapter.sdk import SessionContext
from persistence.errors import RaftorchError, StaleEpochError
from persistence.events import EventLevel
from persistence.session_state import ResetRequest
from protocol.fix import FixConfig

log = logging.getLogger(__name__)

LOGON_TIMEOUT_SECONDS = 10.0
LOGOUT_TIMEOUT_SECONDS = 2.0
"""How long a Logout waits for the counterparty's (inside the runtime's 5 s stop bound)."""
OUTBOX_POLL_SECONDS = 0.02
RESET_POLL_SECONDS = 1.0
READ_CHUNK = 65536
TOO_LOW = re.compile(r"MsgSeqNum too low", re.IGNORECASE)


class State(enum.Enum):
    AWAIT_LOGON = "await_logon"
    LOGON_SENT = "logon_sent"
    ACTIVE = "active"
    LOGOUT_SENT = "logout_sent"


class EndKind(enum.Enum):
    NETWORK = "network"  # connection lost, closed or silent: connect again
    LOGOUT = "logout"  # the counterparty logged out: connect again
    PROTOCOL = "protocol"  # the counterparty broke the protocol: connect again, later
    STORE = "store"  # PostgreSQL failed: connect again from the durable state
    STOPPED = "stopped"  # we were asked to stop and have logged out
    RESET = "reset"  # logged out to reset sequence numbers at the next Logon
    SEQUENCE_TOO_LOW = "sequence_too_low"  # needs an operator: ERROR, no retry
    FENCED = "fenced"  # a newer epoch owns the session: stop for good


@dataclass(frozen=True, slots=True)
class Ended:
    kind: EndKind
    reason: str
    logged_on: bool


class SessionEnd(Exception):
    def __init__(self, kind: EndKind, reason: str) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason


class FixSession:
    """One connection's session. `run()` once; `request_stop()` from the connector."""

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
        self._header = codec.Header(config.begin_string, config.sender_comp_id,
                                    config.target_comp_id)  # fmt: skip
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

    # --- the loop ---------------------------------------------------------------------

    def request_stop(self, reason: str, kind: EndKind = EndKind.STOPPED) -> None:
        """Log out (when logged on) and end; safe to call from any task of the loop."""
        if self._stop is None:
            self._stop = (kind, reason)
        self._wake.set()

    async def run(self) -> Ended:
        kind, reason = EndKind.NETWORK, "connection closed"
        try:
            if self._initiator:
                await self._send_logon(reset=self._wants_reset())
            await self._loop()
        except SessionEnd as end:
            kind, reason = await self._deliver_rest(end.kind, end.reason)
        except StaleEpochError as exc:
            kind, reason = EndKind.FENCED, f"fenced: {exc.message}"
        except RaftorchError as exc:
            kind, reason = EndKind.STORE, f"session state unavailable: {exc.message}"
        except (OSError, EOFError) as exc:
            kind, reason = EndKind.NETWORK, f"connection lost: {exc or type(exc).__name__}"
        finally:
            if kind is EndKind.FENCED or not self._writer.transport.is_closing():
                # A fenced owner sends nothing more: the kernel drops what is queued.
                await self._close(graceful=kind is not EndKind.FENCED)
        logged_on = self.state in (State.ACTIVE, State.LOGOUT_SENT)
        return Ended(kind, reason, logged_on)

    async def _deliver_rest(self, kind: EndKind, reason: str) -> tuple[EndKind, str]:
        """Write what was received before the end (e.g. messages before a Logout)."""
        if not self._pending or kind is EndKind.FENCED:
            return kind, reason
        try:
            async with self._transaction():
                pass
        except StaleEpochError as exc:
            return EndKind.FENCED, f"fenced: {exc.message}"
        except RaftorchError as exc:
            log.warning("inbox write at session end failed session=%s error=%s",
                        self._context.info.slot, exc.message)  # fmt: skip
        return kind, reason

    async def _loop(self) -> None:
        read: asyncio.Task[bytes] | None = None
        woken: asyncio.Task[bool] | None = None
        try:
            while True:
                read = read or asyncio.create_task(self._reader.read(READ_CHUNK))
                woken = woken or asyncio.create_task(self._wake.wait())
                await asyncio.wait({read, woken}, timeout=self._next_wake(),
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                if woken.done():
                    self._wake.clear()
                    woken = None
                if read.done():
                    data, read = read.result(), None
                    await self._on_data(data)
                await self._act()
        finally:
            for task in (read, woken):
                if task is not None:
                    task.cancel()

    def _next_wake(self) -> float:
        now = time.monotonic()
        moments = [self._deadline, self._next_reset_check]
        if self.state is State.ACTIVE:
            moments += [self._next_outbox, self._last_sent + self.heartbeat]
            moments.append(self._silence_limit())
        return max(0.0, min(moments) - now)

    def _silence_limit(self) -> float:
        if self._test_request_at is not None:
            return self._test_request_at + self.heartbeat * 1.2
        return self._last_received + self.heartbeat * 1.2

    async def _on_data(self, data: bytes) -> None:
        if not data:
            raise SessionEnd(EndKind.NETWORK, "connection closed by the counterparty")
        self._last_received = time.monotonic()
        self._test_request_at = None
        for frame in self._framer.feed(data):
            await self._on_frame(frame)
        if self._pending:
            async with self._transaction():
                pass

    async def _act(self) -> None:
        """Everything that is due: logout, outbox, heartbeats, resets, deadlines."""
        now = time.monotonic()
        if self.state in (State.AWAIT_LOGON, State.LOGON_SENT) and now >= self._deadline:
            raise SessionEnd(EndKind.PROTOCOL, f"no Logon within {LOGON_TIMEOUT_SECONDS:g}s")
        if self.state is State.LOGOUT_SENT and now >= self._deadline:
            kind, reason = self._logout
            raise SessionEnd(kind, f"{reason} (the counterparty did not answer the Logout)")
        if self._stop is not None and self.state is not State.LOGOUT_SENT:
            if self.state is not State.ACTIVE:
                raise SessionEnd(*self._stop)
            await self._start_logout(*self._stop)
        if now >= self._next_reset_check:
            await self._check_reset(now)
        if self.state is State.ACTIVE:
            await self._pump_outbox(now)
            await self._keep_alive(now)

    # --- sending ----------------------------------------------------------------------

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
        why = (f"as requested by {request.requested_by}" if request
               else "reset_on_logon" if self._config.reset_on_logon else "the counterparty asked")
        self._context.event(
            f"sequence numbers reset to 1 ({why}): Logon with ResetSeqNumFlag=Y, MsgSeqNum {seq}",
            details={"generation": self._store.seqs.generation},
        )  # fmt: skip

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
        body = [(codec.REF_SEQ_NUM, str(message.seq_num or 0)), (codec.TEXT, text[:200]),
                (codec.REF_MSG_TYPE, message.msg_type), (codec.SESSION_REJECT_REASON, str(reason))]
        await self._send(MsgType.REJECT, body)
        self._metrics.rejects.labels("out").inc()
        self._context.event(f"sent Reject of MsgSeqNum {message.seq_num}: {text}",
                            level=EventLevel.WARNING)  # fmt: skip

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
                frames.append(codec.encode(self._header, row.msg_type, seq, sending_time,
                                           row.body))  # fmt: skip
            await self._bridge.mark_sent(tx.connection, sent, tx.seqs.generation)
        if frames:
            await self._write(b"".join(frames))
            await self._writer.drain()
            self._metrics.messages.labels("out", "app").inc(len(frames))
        if rejected:
            self._context.event(f"{rejected} outbox rows refused (see fix_outbox.rejected)",
                                level=EventLevel.WARNING)  # fmt: skip
        if len(rows) + rejected >= BATCH:
            self._next_outbox = now  # more waiting: next round at once

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
            self.request_stop(f"sequence reset requested by {request.requested_by}",
                              EndKind.RESET)  # fmt: skip

    # --- receiving --------------------------------------------------------------------

    async def _on_frame(self, frame: bytes | Garbled) -> None:
        try:
            message = codec.decode(frame) if isinstance(frame, bytes) else None
        except Garbled as exc:
            frame = exc
            message = None
        if message is None:
            log.warning("garbled message dropped session=%s why=%s", self._context.info.slot, frame)
            if self.state in (State.AWAIT_LOGON, State.LOGON_SENT):
                raise SessionEnd(EndKind.PROTOCOL, f"garbled message before Logon: {frame}")
            return
        self._metrics.messages.labels("in", "admin" if message.is_admin else "app").inc()
        await self._check_envelope(message)
        if self.state in (State.AWAIT_LOGON, State.LOGON_SENT):
            if message.msg_type == MsgType.LOGOUT:  # e.g. our Logon's MsgSeqNum is too low
                await self._on_logout(message, message.seq_num or 0)
            await self._on_first_logon(message)
        else:
            await self._on_message(message)

    async def _check_envelope(self, message: Message) -> None:
        """BeginString, CompIDs and MsgSeqNum of every message (FIX session rules)."""
        before_logon = self.state in (State.AWAIT_LOGON, State.LOGON_SENT)
        begin = message.get(codec.BEGIN_STRING)
        if begin != self._config.begin_string:
            why = f"BeginString {begin!r} received, {self._config.begin_string!r} expected"
            if before_logon:
                raise SessionEnd(EndKind.PROTOCOL, why)
            await self._fatal(EndKind.PROTOCOL, why, f"Incorrect BeginString: {why}")
        sender, target = message.get(codec.SENDER_COMP_ID), message.get(codec.TARGET_COMP_ID)
        if (sender, target) != (self._config.target_comp_id, self._config.sender_comp_id):
            why = f"CompID problem: SenderCompID={sender!r} TargetCompID={target!r}"
            if before_logon:
                raise SessionEnd(EndKind.PROTOCOL, f"Logon from an unknown session ({why})")
            await self._reject(message, 9, why)
            await self._fatal(EndKind.PROTOCOL, why, why)
        if message.seq_num is None:
            if before_logon:
                raise SessionEnd(EndKind.PROTOCOL, "Logon without a MsgSeqNum")
            await self._fatal(EndKind.PROTOCOL, "message without MsgSeqNum", "MsgSeqNum missing")

    async def _on_first_logon(self, message: Message) -> None:
        if message.msg_type != MsgType.LOGON:
            raise SessionEnd(EndKind.PROTOCOL, f"first message is MsgType {message.msg_type!r}, "
                                               "not Logon")  # fmt: skip
        heartbeat = message.get_int(codec.HEART_BT_INT)
        if heartbeat is None or heartbeat < 1:
            raise SessionEnd(EndKind.PROTOCOL, "Logon without a valid HeartBtInt")
        seq = message.seq_num or 0
        if not self._initiator:
            self.heartbeat = float(heartbeat)  # the initiator proposes, the acceptor follows
            await self._answer_logon(message, seq)
        elif message.flag(codec.RESET_SEQ_NUM_FLAG) and not self._sent_reset:
            await self._send_logon(reset=True, expect_next=seq + 1)  # they reset: we follow
        else:
            await self._check_sequence(message, seq)
        self.state = State.ACTIVE
        self._on_logon(f"logged on: next MsgSeqNum out {self._store.seqs.next_sender}, "
                       f"expected in {self.expected}")  # fmt: skip

    async def _answer_logon(self, message: Message, seq: int) -> None:
        """Acceptor: answer the Logon; reset first when either side asks for it."""
        theirs = message.flag(codec.RESET_SEQ_NUM_FLAG)
        if theirs or self._wants_reset():
            # Their reset Logon is their MsgSeqNum 1; after ours they send a reset Logon.
            self._awaiting_reset_ack = not theirs
            await self._send_logon(reset=True, expect_next=seq + 1 if theirs else 1)
            return
        if seq < self.expected:
            await self._too_low(message, seq)
        await self._send_logon(reset=False)
        await self._check_sequence(message, seq)

    async def _check_sequence(self, message: Message, seq: int) -> None:
        """A Logon's MsgSeqNum: the expected one, a gap to fill, or too low (fatal)."""
        if seq < self.expected:
            await self._too_low(message, seq)
        if seq > self.expected:
            await self._gap(seq)
        else:
            self.expected += 1

    async def _too_low(self, message: Message, seq: int) -> None:
        text = f"MsgSeqNum too low, expecting {self.expected} but received {seq}"
        await self._fatal(EndKind.SEQUENCE_TOO_LOW, f"the counterparty sent {text} "
                          f"(MsgType {message.msg_type})", text)  # fmt: skip

    async def _gap(self, seq: int) -> None:
        """Messages are missing: ask for them once (through infinity), drop later ones
        until the resend closes the gap (the resend covers them)."""
        now = time.monotonic()
        stalled = now - self._resend_asked_at > 3 * self.heartbeat
        if self._resend_until is None or stalled:
            self._metrics.sequence_gaps.inc()
            self._resend_asked_at = now
            await self._send(MsgType.RESEND_REQUEST,
                             [(codec.BEGIN_SEQ_NO, str(self.expected)), (codec.END_SEQ_NO, "0")])
            self._context.event(f"sequence gap: expected MsgSeqNum {self.expected}, received "
                                f"{seq}; sent ResendRequest from {self.expected}")  # fmt: skip
        self._resend_until = max(self._resend_until or 0, seq)

    def _advanced(self) -> None:
        if self._resend_until is not None and self.expected > self._resend_until:
            self._resend_until = None
            self._context.event(f"sequence gap filled up to MsgSeqNum {self.expected - 1}")

    async def _on_message(self, message: Message) -> None:
        seq, kind = message.seq_num or 0, message.msg_type
        if kind == MsgType.LOGOUT:
            return await self._on_logout(message, seq)
        if kind == MsgType.SEQUENCE_RESET and not message.flag(codec.GAP_FILL_FLAG):
            return await self._on_sequence_reset(message, reset_mode=True)
        if kind == MsgType.LOGON and message.flag(codec.RESET_SEQ_NUM_FLAG):
            return await self._on_reset_logon(seq)
        if seq < self.expected:
            if message.flag(codec.POSS_DUP_FLAG):
                return None  # a resend of what we have: ignore it
            await self._too_low(message, seq)
        if kind == MsgType.RESEND_REQUEST:
            answered = await self._resender.answer(message)
            if answered is not None:
                begin, end, resent = answered
                self._context.event(f"ResendRequest from the counterparty for {begin}..{end}: "
                                    f"resent {resent} application messages with PossDupFlag=Y, "
                                    "gap-filled the rest")  # fmt: skip
        if seq > self.expected:
            return await self._gap(seq)
        self.expected += 1
        if kind == MsgType.SEQUENCE_RESET:
            await self._on_sequence_reset(message, reset_mode=False)
        elif kind == MsgType.TEST_REQUEST:
            await self._send(MsgType.HEARTBEAT, [(codec.TEST_REQ_ID,
                                                  message.get(codec.TEST_REQ_ID) or "")])
        elif kind == MsgType.REJECT:
            self._metrics.rejects.labels("in").inc()
            self._context.event(f"the counterparty rejected our MsgSeqNum "
                                f"{message.get(codec.REF_SEQ_NUM)}: {message.get(codec.TEXT)}",
                                level=EventLevel.WARNING)  # fmt: skip
        elif not message.is_admin:
            await self._on_application(message)
        self._advanced()
        return None

    async def _on_application(self, message: Message) -> None:
        if self._dictionary is not None:
            problem = self._dictionary.check(message.msg_type, message.body())
            if problem is not None:
                await self._reject(message, problem.reason, f"data dictionary: {problem.text}")
                return
        self._pending.append(message)

    async def _on_sequence_reset(self, message: Message, *, reset_mode: bool) -> None:
        new = message.get_int(codec.NEW_SEQ_NO)
        if new is None or new < self.expected:
            if not reset_mode:
                self.expected -= 1  # the bad gap fill is not processed
            await self._reject(message, 5, f"NewSeqNo {new} is below the expected {self.expected}")
            if not reset_mode:
                self.expected += 1
            return
        if reset_mode:
            self._context.event(f"the counterparty reset its MsgSeqNum to {new} "
                                f"(SequenceReset, we expected {self.expected})",
                                level=EventLevel.WARNING)  # fmt: skip
        self.expected = new
        self._advanced()

    async def _on_reset_logon(self, seq: int) -> None:
        """A Logon with ResetSeqNumFlag=Y while logged on: the acknowledgement of ours,
        or the counterparty resetting the session (we follow and answer)."""
        if self._awaiting_reset_ack:
            self._awaiting_reset_ack = False
            self.expected = seq + 1
            return
        await self._send_logon(reset=True, expect_next=seq + 1)

    async def _on_logout(self, message: Message, seq: int) -> None:
        if seq == self.expected:
            self.expected += 1
        text = message.get(codec.TEXT) or ""
        if TOO_LOW.search(text):
            raise SessionEnd(EndKind.SEQUENCE_TOO_LOW, f"the counterparty logged out: {text}")
        if self.state is State.LOGOUT_SENT:
            kind, reason = self._logout
            raise SessionEnd(kind, reason or "logged out")
        with contextlib.suppress(OSError):
            await self._send(MsgType.LOGOUT, [])
        raise SessionEnd(EndKind.LOGOUT, f"the counterparty logged out: {text or 'no reason'}")

    async def _close(self, *, graceful: bool) -> None:
        """Close the connection: after flushing (bounded) what we sent, or at once."""
        transport = self._writer.transport
        if not graceful:
            transport.abort()
            return
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self._writer.drain(), 1.0)
        transport.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 1.0)
