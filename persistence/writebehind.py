"""Write-behind buffers (event log, lease history, plugins): nothing waits on PostgreSQL.

Events and lease-history rows are produced on hot paths (leader ticks, heartbeats)
and must survive a database outage. They wait in a bounded buffer and are written
in batches; while PostgreSQL is down they stay buffered (the oldest are dropped,
and counted, only when the buffer is full), and they are written on their own once
it is back.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from protocol.errors import RaftorchError

log = logging.getLogger(__name__)

T = TypeVar("T")


class WriteBehind(Generic[T]):
    """A bounded queue flushed by `run()` through `write(batch)`."""

    def __init__(
        self,
        name: str,
        write: Callable[[Sequence[T]], Awaitable[object]],
        *,
        capacity: int = 10_000,
        batch_size: int = 500,
        retry_seconds: float = 1.0,
    ) -> None:
        self.name = name
        self._write = write
        self._items: collections.deque[T] = collections.deque()
        self._capacity = capacity
        self._batch = batch_size
        self._retry = retry_seconds
        self._wake = asyncio.Event()
        self.dropped = 0
        self.written = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: T) -> None:
        if len(self._items) >= self._capacity:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._wake.set()

    async def flush_once(self) -> bool:
        """Write one batch; False (keeping it) when the database refused."""
        if not self._items:
            return True
        batch = [self._items[i] for i in range(min(self._batch, len(self._items)))]
        try:
            await self._write(batch)
        except RaftorchError as exc:
            if exc.retriable:
                log.warning("%s: %d waiting, not written: %s", self.name, len(self._items),
                            exc.message)  # fmt: skip
                return False
            # Retrying cannot help (the rows are refused): drop them rather than block.
            log.exception("%s: dropped %d refused rows", self.name, len(batch))
            self.dropped += len(batch)
        for item in batch:  # items evicted meanwhile (buffer full) are already gone
            if self._items and self._items[0] is item:
                self._items.popleft()
        self.written += len(batch)
        return True

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._items:
                if not await self.flush_once():
                    await asyncio.sleep(self._retry)
