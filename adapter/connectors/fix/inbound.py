"""The receiving half of a FIX session: envelope checks, the sequence rules, the replies.

Per the FIX session protocol: a MsgSeqNum above the expected one is a gap (one
ResendRequest through infinity; later messages are dropped until the resend closes
it, since the resend covers them); below it is a duplicate when PossDupFlag=Y and
fatal otherwise ("MsgSeqNum too low", never a silent reset). Logout, SequenceReset
in reset mode and a Logon with ResetSeqNumFlag=Y are taken whatever their number.
Application messages that pass the data dictionary wait in `_pending` for the next
fenced transaction, which writes them to the inbox.
"""

from __future__ import annotations

import contextlib
import logging
import time

from adapter.connectors.fix import codec
from adapter.connectors.fix.codec import Garbled, Message, MsgType
from adapter.connectors.fix.outbound import TOO_LOW, Outbound
from adapter.connectors.fix.states import EndKind, SessionEnd, State
from protocol.values import EventLevel

log = logging.getLogger(__name__)


class Inbound(Outbound):
    """What the session does with each message it receives."""

    async def _on_frame(self, frame: bytes | Garbled) -> None:
        try:
            if isinstance(frame, Garbled):
                raise frame
            message = codec.decode(frame)
        except Garbled as exc:
            log.warning("garbled message dropped session=%s why=%s", self._context.info.slot, exc)
            if self.state in (State.AWAIT_LOGON, State.LOGON_SENT):
                raise SessionEnd(EndKind.PROTOCOL, f"garbled message before Logon: {exc}") from None
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
            raise SessionEnd(
                EndKind.PROTOCOL, f"first message is MsgType {message.msg_type!r}, not Logon"
            )
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
        self._on_logon(
            f"logged on: next MsgSeqNum out {self._store.seqs.next_sender}, "
            f"expected in {self.expected}"
        )

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
        await self._fatal(
            EndKind.SEQUENCE_TOO_LOW,
            f"the counterparty sent {text} (MsgType {message.msg_type})",
            text,
        )

    async def _gap(self, seq: int) -> None:
        """Messages are missing: ask for them once (through infinity), drop later ones
        until the resend closes the gap (the resend covers them)."""
        now = time.monotonic()
        stalled = now - self._resend_asked_at > 3 * self.heartbeat
        if self._resend_until is None or stalled:
            self._metrics.sequence_gaps.inc()
            self._resend_asked_at = now
            await self._send(
                MsgType.RESEND_REQUEST,
                [(codec.BEGIN_SEQ_NO, str(self.expected)), (codec.END_SEQ_NO, "0")],
            )
            self._context.event(
                f"sequence gap: expected MsgSeqNum {self.expected}, received "
                f"{seq}; sent ResendRequest from {self.expected}"
            )
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
                self._context.event(
                    f"ResendRequest from the counterparty for {begin}..{end}: "
                    f"resent {resent} application messages with PossDupFlag=Y, "
                    "gap-filled the rest"
                )
        if seq > self.expected:
            return await self._gap(seq)
        self.expected += 1
        if kind == MsgType.SEQUENCE_RESET:
            await self._on_sequence_reset(message, reset_mode=False)
        elif kind == MsgType.TEST_REQUEST:
            await self._send(
                MsgType.HEARTBEAT, [(codec.TEST_REQ_ID, message.get(codec.TEST_REQ_ID) or "")]
            )
        elif kind == MsgType.REJECT:
            self._metrics.rejects.labels("in").inc()
            self._context.event(
                f"the counterparty rejected our MsgSeqNum "
                f"{message.get(codec.REF_SEQ_NUM)}: {message.get(codec.TEXT)}",
                level=EventLevel.WARNING,
            )
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
            self._context.event(
                f"the counterparty reset its MsgSeqNum to {new} "
                f"(SequenceReset, we expected {self.expected})",
                level=EventLevel.WARNING,
            )
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
