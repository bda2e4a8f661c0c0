"""The FIX session protocol on one connection: Logon to Logout, one task, one state machine.

States (`states.State`): AWAIT_LOGON (acceptor, before the counterparty's Logon) or
LOGON_SENT (initiator) -> ACTIVE -> LOGOUT_SENT -> ended. A `FixSession` lives for
one connection and returns an `Ended` saying why it stopped; the connector decides
what follows (reconnect, ERROR, stop). Sending is `outbound`, receiving `inbound`;
this module runs the loop: read, act on what is due, repeat.

Any store failure ends the connection: the next one starts again from what is
durably stored, and the counterparty's or our ResendRequest recovers the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time

from adapter.connectors.fix.inbound import Inbound
from adapter.connectors.fix.outbound import LOGON_TIMEOUT_SECONDS, READ_CHUNK
from adapter.connectors.fix.states import Ended, EndKind, SessionEnd, State
from protocol.errors import RaftorchError, StaleEpochError

log = logging.getLogger(__name__)

__all__ = ["EndKind", "Ended", "FixSession"]


class FixSession(Inbound):
    """One connection's session. `run()` once; `request_stop()` from the connector."""

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
            log.warning(
                "inbox write at session end failed session=%s error=%s",
                self._context.info.slot,
                exc.message,
            )
        return kind, reason

    async def _loop(self) -> None:
        read: asyncio.Task[bytes] | None = None
        woken: asyncio.Task[bool] | None = None
        try:
            while True:
                read = read or asyncio.create_task(self._reader.read(READ_CHUNK))
                woken = woken or asyncio.create_task(self._wake.wait())
                await asyncio.wait(
                    {read, woken}, timeout=self._next_wake(), return_when=asyncio.FIRST_COMPLETED
                )
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
