"""Answering a ResendRequest from the journal: application messages again, with
PossDupFlag=Y and their OrigSendingTime; session-level ones replaced by gap fills.

Resends consume no new MsgSeqNum, so they need no reservation; they do pass the
fence first (reading the journal is a fenced transaction), so a superseded owner
resends nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from adapter.connectors.fix import codec
from adapter.connectors.fix.codec import Message, MsgType
from adapter.connectors.fix.metrics import FixMetrics
from adapter.connectors.fix.store import SequenceStore

log = logging.getLogger(__name__)

CHUNK = 500
"""Journal entries read and written per round of a long resend."""


class ResendResponder:
    def __init__(
        self,
        header: codec.Header,
        store: SequenceStore,
        write: Callable[[bytes], Awaitable[None]],
        metrics: FixMetrics,
    ) -> None:
        self._header = header
        self._store = store
        self._write = write
        self._metrics = metrics
        self.last: tuple[int, int, int] | None = None  # (begin, end, messages resent)

    async def answer(self, request: Message) -> tuple[int, int, int] | None:
        """Resend what `request` asks for; returns (begin, end, resent) or None if it asks
        for nothing we have sent."""
        begin = request.get_int(codec.BEGIN_SEQ_NO)
        end = request.get_int(codec.END_SEQ_NO)
        last = self._store.seqs.next_sender - 1
        if begin is None or begin < 1 or begin > last:
            log.info("ResendRequest for nothing sent begin=%s last=%d", begin, last)
            return None
        stop = last if end is None or end == 0 or end > last else end
        resent = 0
        for first in range(begin, stop + 1, CHUNK):
            resent += await self._resend(first, min(stop, first + CHUNK - 1))
        self._metrics.resent.inc(resent)
        self.last = (begin, stop, resent)
        return self.last

    async def _resend(self, begin: int, end: int) -> int:
        """One chunk: app messages as they were, runs of anything else as one gap fill."""
        entries = await self._store.journal(self._store.seqs.generation, begin, end)
        frames: list[bytes] = []
        gap_from: int | None = None
        for seq in range(begin, end + 1):
            entry = entries.get(seq)
            if entry is None or entry.body is None:
                gap_from = seq if gap_from is None else gap_from
                continue
            if gap_from is not None:
                frames.append(self._gap_fill(gap_from, seq))
                gap_from = None
            body = codec.split_body(entry.body)
            frames.append(
                codec.encode(
                    self._header,
                    entry.msg_type,
                    seq,
                    codec.timestamp(),
                    body,
                    orig_sending_time=entry.sending_time,
                )
            )
        if gap_from is not None:
            frames.append(self._gap_fill(gap_from, end + 1))
        await self._write(b"".join(frames))
        return sum(1 for e in entries.values() if e.body is not None)

    def _gap_fill(self, seq: int, new_seq: int) -> bytes:
        now = codec.timestamp()
        body: list[tuple[int, str | bytes]] = [
            (codec.GAP_FILL_FLAG, "Y"),
            (codec.NEW_SEQ_NO, str(new_seq)),
        ]
        return codec.encode(
            self._header, MsgType.SEQUENCE_RESET, seq, now, body, orig_sending_time=now
        )
