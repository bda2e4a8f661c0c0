"""How a load-generator process is told to stop: a line `stop` on its standard input."""

from __future__ import annotations

import asyncio
import sys


async def stop_on_stdin(stop: asyncio.Event) -> asyncio.Task[None]:
    """A task that sets `stop` when `stop` (or end of file) arrives on standard input."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def control() -> None:
        while line := await reader.readline():
            if line.strip() == b"stop":
                break
        stop.set()

    return asyncio.create_task(control())
