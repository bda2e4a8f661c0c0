"""FIX on the wire: framing a byte stream into messages, checking them, encoding ours.

Framing follows BodyLength(9), so a raw data field may hold any byte; every frame's
BodyLength and CheckSum(10) are verified before simplefix splits it into fields.
A frame that fails either check is *garbled*: the FIX session protocol says to drop
it without consuming its sequence number, and the framer resynchronises on the
next ``8=``. Encoding goes through simplefix, which places 8, 9, 35 and 10 and
computes the length and checksum.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import simplefix

SOH = b"\x01"
MAX_BODY_LENGTH = 1 << 20
"""Frames claiming a longer body are garbage: no sane FIX message is a megabyte."""

# Tags of the standard header and trailer the session layer owns.
BEGIN_STRING, BODY_LENGTH, MSG_TYPE, CHECKSUM = 8, 9, 35, 10
SENDER_COMP_ID, TARGET_COMP_ID, MSG_SEQ_NUM, SENDING_TIME = 49, 56, 34, 52
POSS_DUP_FLAG, POSS_RESEND, ORIG_SENDING_TIME, APPL_VER_ID = 43, 97, 122, 1128
# Session-level body tags.
BEGIN_SEQ_NO, END_SEQ_NO, NEW_SEQ_NO, GAP_FILL_FLAG = 7, 16, 36, 123
TEXT, REF_SEQ_NUM, REF_MSG_TYPE, SESSION_REJECT_REASON = 58, 45, 372, 373
ENCRYPT_METHOD, HEART_BT_INT, RESET_SEQ_NUM_FLAG, TEST_REQ_ID = 98, 108, 141, 112
DEFAULT_APPL_VER_ID = 1137

HEADER_TAGS = frozenset(
    {
        BEGIN_STRING,
        BODY_LENGTH,
        MSG_TYPE,
        SENDER_COMP_ID,
        TARGET_COMP_ID,
        MSG_SEQ_NUM,
        SENDING_TIME,
        POSS_DUP_FLAG,
        POSS_RESEND,
        ORIG_SENDING_TIME,
        APPL_VER_ID,
        CHECKSUM,
        115,
        116,
        128,
        129,
        142,
        143,
        144,
        145,
        50,
        57,
        90,
        91,
        212,
        213,
        347,
        369,
        627,
        628,
        629,
        630,
        1129,
        1156,
    }
)
"""Header and trailer tags (FIX 4.2-5.0): never part of an application body."""


class MsgType:
    HEARTBEAT = "0"
    TEST_REQUEST = "1"
    RESEND_REQUEST = "2"
    REJECT = "3"
    SEQUENCE_RESET = "4"
    LOGOUT = "5"
    LOGON = "A"


ADMIN_TYPES = frozenset({"0", "1", "2", "3", "4", "5", "A"})
"""Session-level message types; every other MsgType is an application message."""

_BEGIN = re.compile(rb"8=[^\x01]{1,16}\x01")
_LENGTH = re.compile(rb"9=(\d{1,8})\x01")
_TRAILER = re.compile(rb"10=(\d{3})\x01")


class Garbled(ValueError):
    """A frame failed its BodyLength or CheckSum check, or is not FIX at all."""


@dataclass(frozen=True, slots=True)
class Message:
    """One inbound message: its fields in wire order and the frame it came in."""

    pairs: tuple[tuple[int, bytes], ...]
    raw: bytes

    def get(self, tag: int) -> str | None:
        """The first value of `tag` as text (FIX session fields are ASCII), or None."""
        for t, value in self.pairs:
            if t == tag:
                return value.decode("latin-1")
        return None

    def get_int(self, tag: int) -> int | None:
        value = self.get(tag)
        if value is None or not value.isdigit():
            return None
        return int(value)

    def flag(self, tag: int) -> bool:
        return self.get(tag) == "Y"

    @property
    def msg_type(self) -> str:
        return self.get(MSG_TYPE) or ""

    @property
    def seq_num(self) -> int | None:
        return self.get_int(MSG_SEQ_NUM)

    @property
    def is_admin(self) -> bool:
        return self.msg_type in ADMIN_TYPES

    def body(self) -> list[tuple[int, str]]:
        """The fields outside the standard header and trailer, as text."""
        return [
            (tag, value.decode("utf-8", errors="replace"))
            for tag, value in self.pairs
            if tag not in HEADER_TAGS
        ]


class Framer:
    """Accumulates bytes from the socket and cuts them into checked frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0  # start of the unconsumed bytes (compacted once per feed)

    def feed(self, data: bytes) -> list[bytes | Garbled]:
        """Append `data`; return every complete frame (or the reason one was dropped)."""
        self._buffer += data
        out: list[bytes | Garbled] = []
        while (item := self._next()) is not None:
            out.append(item)
        del self._buffer[: self._pos]
        self._pos = 0
        return out

    def _next(self) -> bytes | Garbled | None:
        buf, pos = self._buffer, self._pos
        start = buf.find(b"8=", pos)
        if start < 0:
            self._pos = max(pos, len(buf) - 1)  # a trailing "8" may start a frame
            return None
        if start > pos:
            self._pos = start
            return Garbled(f"{start - pos} bytes before BeginString dropped")
        begin = _BEGIN.match(buf, pos)
        if begin is None:
            return self._skip("BeginString is malformed") if len(buf) - pos >= 20 else None
        length = _LENGTH.match(buf, begin.end())
        if length is None:
            waiting = len(buf) - begin.end() < 11 and SOH not in buf[begin.end() :]
            return None if waiting else self._skip("no BodyLength after BeginString")
        body_length = int(length[1])
        if body_length > MAX_BODY_LENGTH:
            return self._skip(f"BodyLength {body_length} is too long")
        body_end = length.end() + body_length
        if len(buf) < body_end + 7:
            return None
        trailer = _TRAILER.match(buf, body_end)
        if trailer is None:
            return self._skip(f"BodyLength {body_length} does not end at CheckSum")
        frame = bytes(buf[pos : trailer.end()])
        self._pos = trailer.end()
        if sum(frame[: body_end - pos]) % 256 != int(trailer[1]):
            return Garbled(f"CheckSum {trailer[1].decode()} is wrong")
        return frame

    def _skip(self, why: str) -> Garbled:
        """Drop up to the next possible frame start."""
        following = self._buffer.find(b"\x018=", self._pos + 1)
        self._pos = following + 1 if following >= 0 else len(self._buffer)
        return Garbled(why)


def decode(frame: bytes) -> Message:
    """Split a checked frame into fields (simplefix handles raw data fields)."""
    parser = simplefix.FixParser()
    parser.append_buffer(frame)
    parsed = parser.get_message()
    if parsed is None:
        raise Garbled("frame has no fields")
    try:
        pairs = tuple((int(tag), value) for tag, value in parsed.pairs)
    except ValueError:
        raise Garbled("a tag is not a number") from None
    if len(pairs) < 4 or pairs[2][0] != MSG_TYPE:
        raise Garbled("MsgType is not the third field")
    return Message(pairs, frame)


def timestamp(now: datetime | None = None) -> str:
    """A UTCTimestamp with milliseconds, as SendingTime(52) wants it."""
    moment = now or datetime.now(UTC)
    return moment.strftime("%Y%m%d-%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


@dataclass(frozen=True, slots=True)
class Header:
    """What the session puts in front of every body it sends."""

    begin_string: str
    sender_comp_id: str
    target_comp_id: str


def encode_body(fields: Iterable[tuple[int, str]]) -> bytes:
    """Body fields in wire form (``tag=value<SOH>`` each), as the journal keeps them."""
    return b"".join(b"%d=%s\x01" % (tag, value.encode()) for tag, value in fields)


def split_body(body: bytes) -> list[tuple[int, bytes]]:
    """The inverse of `encode_body` (journal bodies hold no raw data fields)."""
    pairs = []
    for part in body.split(SOH):
        if part:
            tag, _, value = part.partition(b"=")
            pairs.append((int(tag), value))
    return pairs


def encode(
    header: Header,
    msg_type: str,
    seq_num: int,
    sending_time: str,
    body: Sequence[tuple[int, str | bytes]],
    *,
    orig_sending_time: str | None = None,
) -> bytes:
    """One message ready for the socket; `orig_sending_time` marks a PossDup resend."""
    message = simplefix.FixMessage()
    message.append_pair(BEGIN_STRING, header.begin_string, header=True)
    message.append_pair(MSG_TYPE, msg_type, header=True)
    message.append_pair(SENDER_COMP_ID, header.sender_comp_id, header=True)
    message.append_pair(TARGET_COMP_ID, header.target_comp_id, header=True)
    message.append_pair(MSG_SEQ_NUM, seq_num, header=True)
    if orig_sending_time is not None:
        message.append_pair(POSS_DUP_FLAG, "Y", header=True)
    message.append_pair(SENDING_TIME, sending_time, header=True)
    if orig_sending_time is not None:
        message.append_pair(ORIG_SENDING_TIME, orig_sending_time, header=True)
    for tag, value in body:
        message.append_pair(tag, value)
    return message.encode()
