"""A FIX session's durable state behind the epoch fence: sequence numbers and the journal.

Three session-state keys hold the sequence numbers (``fix.next_sender_seq``,
``fix.next_target_seq``, ``fix.generation``); the outbound journal is the
``fix_journal`` table. Everything is written in fenced transactions
(`FencedState.transaction`), so an owner whose epoch has been superseded changes
nothing: its transaction raises StaleEpochError and is rolled back whole.

The rules the session relies on:

- a MsgSeqNum is reserved (journal row + next sender number) in a transaction that
  commits *before* the message carrying it is written to the socket, so no owner,
  now or later, ever sends two messages under one number;
- the next target number is written in the transaction that stores the inbound
  messages below it, never earlier;
- the in-memory copy (`SequenceStore.seqs`) changes only after a commit succeeded.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from adapter.connectors.fix.codec import timestamp
from adapter.sdk import FencedState, FencedTransaction, SessionInfo
from protocol.errors import ValidationError

SENDER_KEY = "fix.next_sender_seq"
TARGET_KEY = "fix.next_target_seq"
GENERATION_KEY = "fix.generation"


@dataclass(frozen=True, slots=True)
class Sequences:
    """Next MsgSeqNum we send, next one we expect, and the count of resets so far."""

    next_sender: int = 1
    next_target: int = 1
    generation: int = 0


@dataclass(frozen=True, slots=True)
class JournalEntry:
    seq_num: int
    msg_type: str
    body: bytes | None  # None: a session-level message, gap-filled on resend
    sending_time: str


@dataclass
class SeqTransaction:
    """One fenced transaction of the session: reservations, target, reset, own rows."""

    fenced: FencedTransaction
    seqs: Sequences
    _journal: list[tuple[Any, ...]] = field(default_factory=list)
    _dirty: set[str] = field(default_factory=set)

    @property
    def connection(self) -> Any:
        return self.fenced.connection

    def reserve(self, msg_type: str, body: bytes | None) -> tuple[int, str]:
        """The next MsgSeqNum and its SendingTime, journalled when the transaction commits."""
        seq, sending_time = self.seqs.next_sender, timestamp()
        info = self.fenced.info
        self._journal.append(
            (info.slot, self.seqs.generation, seq, msg_type, body, sending_time, info.epoch)
        )
        self.seqs = replace(self.seqs, next_sender=seq + 1)
        self._dirty.add(SENDER_KEY)
        return seq, sending_time

    def set_target(self, next_target: int) -> None:
        if next_target != self.seqs.next_target:
            self.seqs = replace(self.seqs, next_target=next_target)
            self._dirty.add(TARGET_KEY)

    async def reset(self, request_id: int | None) -> None:
        """Both sides start again at 1 in a new generation; completes the admin request."""
        self.seqs = Sequences(1, 1, self.seqs.generation + 1)
        self._dirty |= {SENDER_KEY, TARGET_KEY, GENERATION_KEY}
        if request_id is not None:
            await self.fenced.complete_reset(request_id)

    async def flush(self) -> None:
        if self._journal:
            await self.connection.executemany(
                "INSERT INTO fix_journal (slot, generation, seq_num, msg_type, body, "
                "sending_time, epoch) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                self._journal,
            )
            self._journal.clear()
        values = {
            SENDER_KEY: self.seqs.next_sender,
            TARGET_KEY: self.seqs.next_target,
            GENERATION_KEY: self.seqs.generation,
        }
        for key in sorted(self._dirty):
            await self.fenced.put(key, values[key])
        self._dirty.clear()


class SequenceStore:
    """The session's sequence numbers (in memory, mirrored durably) and its journal."""

    def __init__(self, state: FencedState, info: SessionInfo) -> None:
        self._state = state
        self._info = info
        self.seqs = Sequences()

    async def load(self) -> Sequences:
        """Read the durable numbers (1, 1, generation 0 for a session never used)."""
        values = []
        for key, default in ((SENDER_KEY, 1), (TARGET_KEY, 1), (GENERATION_KEY, 0)):
            value = await self._state.get(key)
            if value is None:
                value = default
            if isinstance(value, bool) or not isinstance(value, int) or value < default:
                raise ValidationError(f"stored {key} is not a valid number: {value!r}")
            values.append(value)
        self.seqs = Sequences(*values)
        return self.seqs

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SeqTransaction]:
        """A fenced transaction; `seqs` takes its result only once it has committed."""
        async with self._state.transaction() as fenced:
            tx = SeqTransaction(fenced, self.seqs)
            yield tx
            await tx.flush()
        self.seqs = tx.seqs

    async def check_fence(self) -> None:
        """Pass the fence without writing (before resending: a zombie must not)."""
        async with self._state.transaction():
            pass

    async def journal(self, generation: int, begin: int, end: int) -> dict[int, JournalEntry]:
        """What was sent under MsgSeqNum begin..end (inclusive) in `generation`."""
        async with self._state.transaction() as fenced:  # fenced: a zombie reads nothing
            rows = await fenced.connection.fetch(
                "SELECT seq_num, msg_type, body, sending_time FROM fix_journal "
                "WHERE slot = $1 AND generation = $2 AND seq_num BETWEEN $3 AND $4",
                self._info.slot,
                generation,
                begin,
                end,
            )
        return {
            int(r["seq_num"]): JournalEntry(
                int(r["seq_num"]), str(r["msg_type"]), r["body"], str(r["sending_time"])
            )
            for r in rows
        }
