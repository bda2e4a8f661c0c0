"""A connector whose start takes `start_seconds` (config): a venue that is slow to answer.

While it starts, the session is CLAIMING; then ACTIVE until stopped. It touches nothing
else, so what a test sees is the pod runtime's behaviour around a slow start.
"""

from __future__ import annotations

import asyncio
import contextlib

from adapter.sdk import Connector, SessionContext, SessionStatus


class SlowStart(Connector):
    type = "test-slow-start"
    version = "0.0.0"

    def __init__(self) -> None:
        self._never = asyncio.Event()

    async def start(self, context: SessionContext) -> None:
        seconds = float(context.info.config.get("start_seconds", 0))
        context.report(SessionStatus.CLAIMING, f"starting, {seconds:g}s")
        if seconds > 0:
            # The behaviour under test is exactly this wait: a start that hangs.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._never.wait(), seconds)
        context.report(SessionStatus.ACTIVE)

    async def stop(self) -> None:
        self._never.set()
