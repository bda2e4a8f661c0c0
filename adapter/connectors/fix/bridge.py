"""The application bridge: the `fix_outbox` and `fix_inbox` tables of one adapter.

Applications talk FIX by inserting rows into the outbox and reading the inbox; they
link nothing. Both tables are written only inside the session's fenced
transactions: an outbox row is marked sent in the transaction that reserves its
MsgSeqNum, and an inbound message is inserted in the transaction that advances the
expected MsgSeqNum past it. Schema and an example: docs/fix.md.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adapter.connectors.fix.codec import HEADER_TAGS, SOH, Message
from adapter.connectors.fix.dictionary import DataDictionary
from adapter.sdk import SessionInfo

BATCH = 200
"""Most outbox rows sent per fenced transaction."""
_MSG_TYPE = re.compile(r"^[0-9A-Za-z]{1,4}$")
_MAX_TAG = 99_999


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    msg_type: str
    body: list[tuple[int, str]] | None  # None: the row is malformed (see `problem`)
    problem: str = ""


def parse_row(row_id: int, msg_type: Any, fields: Any) -> OutboxRow:
    """Check one outbox row's shape: ``fields`` is a JSON array of [tag, value] pairs."""
    if not isinstance(msg_type, str) or not _MSG_TYPE.match(msg_type):
        return OutboxRow(row_id, str(msg_type), None, f"msg_type {msg_type!r} is not a MsgType")
    if msg_type in ("0", "1", "2", "3", "4", "5", "A"):
        return OutboxRow(row_id, msg_type, None, "session-level messages are the session's own")
    if not isinstance(fields, list) or not fields:
        return OutboxRow(row_id, msg_type, None, "fields must be a non-empty array of [tag, value]")
    body: list[tuple[int, str]] = []
    for index, pair in enumerate(fields):
        problem = _pair_problem(pair)
        if problem:
            return OutboxRow(row_id, msg_type, None, f"fields[{index}]: {problem}")
        body.append((int(pair[0]), str(pair[1])))
    return OutboxRow(row_id, msg_type, body)


def _pair_problem(pair: Any) -> str:
    if not isinstance(pair, list) or len(pair) != 2:
        return "expected [tag, value]"
    tag, value = pair
    if isinstance(tag, bool) or not isinstance(tag, int) or not 1 <= tag <= _MAX_TAG:
        return f"tag {tag!r} is not a number 1-{_MAX_TAG}"
    if tag in HEADER_TAGS:
        return f"tag {tag} belongs to the header or trailer, which the session writes"
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return f"value of tag {tag} must be a string or a number"
    text = str(value)
    if not text or SOH.decode() in text:
        return f"value of tag {tag} must be non-empty and hold no SOH"
    return ""


class Bridge:
    """Outbox and inbox access for one session; every method runs on a fenced connection."""

    def __init__(self, info: SessionInfo, dictionary: DataDictionary | None) -> None:
        self._info = info
        self._dictionary = dictionary

    async def has_pending(self, conn: Any) -> bool:
        """Whether the outbox holds unsent rows (a cheap, unfenced read)."""
        pending: bool = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM fix_outbox WHERE adapter_id = $1 "
            "AND sent_at IS NULL AND rejected IS NULL)",
            self._info.adapter_id,
        )
        return pending

    async def take(self, conn: Any, limit: int = BATCH) -> tuple[list[OutboxRow], int]:
        """The oldest unsent rows that pass the checks, in id order; rows that fail are
        marked rejected (with the reason) on the same connection. Returns (rows, rejected)."""
        rows = await conn.fetch(
            "SELECT id, msg_type, fields FROM fix_outbox WHERE adapter_id = $1 "
            "AND sent_at IS NULL AND rejected IS NULL ORDER BY id LIMIT $2 FOR UPDATE",
            self._info.adapter_id,
            limit,
        )
        good: list[OutboxRow] = []
        bad: list[tuple[int, str]] = []
        for row in rows:
            parsed = parse_row(int(row["id"]), row["msg_type"], row["fields"])
            problem = parsed.problem
            if parsed.body is not None and self._dictionary is not None:
                found = self._dictionary.check(parsed.msg_type, parsed.body)
                problem = f"data dictionary: {found.text}" if found else ""
            if problem:
                bad.append((parsed.id, problem[:500]))
            else:
                good.append(parsed)
        if bad:
            await conn.executemany("UPDATE fix_outbox SET rejected = $2 WHERE id = $1", bad)
        return good, len(bad)

    async def mark_sent(self, conn: Any, sent: Sequence[tuple[int, int]], generation: int) -> None:
        """Record (row id, MsgSeqNum) pairs as sent by this epoch."""
        info = self._info
        await conn.executemany(
            "UPDATE fix_outbox SET sent_at = now(), seq_num = $2, slot = $3, generation = $4, "
            "epoch = $5 WHERE id = $1 AND sent_at IS NULL",
            [(row_id, seq, info.slot, generation, info.epoch) for row_id, seq in sent],
        )

    async def deliver(self, conn: Any, messages: Sequence[Message], generation: int) -> None:
        """Insert inbound application messages. The unique (adapter, slot, generation,
        seq_num) key makes a second write of one message fail loudly, never land."""
        info = self._info
        await conn.executemany(
            "INSERT INTO fix_inbox (adapter_id, slot, generation, seq_num, msg_type, fields, "
            "poss_dup, sending_time, raw, epoch) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, "
            "$10)",
            [
                (
                    info.adapter_id,
                    info.slot,
                    generation,
                    m.seq_num,
                    m.msg_type,
                    [[tag, value] for tag, value in m.body()],
                    m.flag(43),
                    m.get(52) or "",
                    m.raw,
                    info.epoch,
                )
                for m in messages
            ],
        )
