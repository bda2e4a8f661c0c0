"""The `tcp-client` connector: keeps one TCP connection to host:port open, reconnecting
with exponential backoff; ACTIVE while connected, ERROR (with the reason) while not.

It is the smallest useful connector and a template for protocol clients: incoming
bytes are read and discarded, so a peer closing the connection is noticed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from adapter.connectors import Backoff, ConfigReader, cancel_and_wait
from adapter.sdk import Connector, SessionContext, SessionInfo, SessionStatus
from protocol.values import EventLevel

log = logging.getLogger(__name__)

_READ_CHUNK = 65536
_CLOSE_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class TcpClientConfig:
    host: str
    port: int
    reconnect_initial_seconds: float = 0.2
    reconnect_max_seconds: float = 5.0
    connect_timeout_seconds: float = 5.0

    @classmethod
    def parse(cls, config: Any) -> TcpClientConfig:
        """Raise ConfigError naming the key on anything missing, malformed or unknown."""
        reader = ConfigReader(TcpClient.type, config)
        parsed = cls(
            host=reader.text("host"),
            port=reader.integer("port", low=1, high=65535),
            reconnect_initial_seconds=reader.seconds("reconnect_initial_seconds", default=0.2),
            reconnect_max_seconds=reader.seconds("reconnect_max_seconds", default=5.0),
            connect_timeout_seconds=reader.seconds("connect_timeout_seconds", default=5.0),
        )
        reader.finish()
        if parsed.reconnect_max_seconds < parsed.reconnect_initial_seconds:
            raise reader.error(
                "reconnect_max_seconds",
                f"({parsed.reconnect_max_seconds}) must be at least "
                f"reconnect_initial_seconds ({parsed.reconnect_initial_seconds})",
            )
        return parsed


def describe(exc: BaseException) -> str:
    """A short reason for a socket failure: "Connection refused", not the errno repr."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return str(exc.strerror or exc)
    if isinstance(exc, OSError):
        return os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {exc}"


class TcpClient(Connector):
    """One TCP connection per session, kept open by a task of its own.

    `start()` validates the config and starts the task (it reports ACTIVE once
    connected); `stop()` cancels the task, which closes the connection. Reasons
    reported: ``connect to H:P: <why>``, ``connection to H:P closed by peer``,
    ``connection to H:P lost: <why>``.
    """

    type = "tcp-client"
    version = "0.1.0"

    def __init__(self) -> None:
        self._config: TcpClientConfig | None = None
        self._task: asyncio.Task[None] | None = None
        self._reported: tuple[SessionStatus, str] | None = None

    async def prepare(self, info: SessionInfo) -> None:
        """Validate the configuration (no I/O)."""
        self._config = TcpClientConfig.parse(info.config)

    async def start(self, context: SessionContext) -> None:
        """Validate the configuration (ConfigError) and start connecting; returns at once.
        May be called once per instance."""
        if self._task is not None:
            raise RuntimeError("TcpClient.start() called twice")
        self._config = TcpClientConfig.parse(context.info.config)
        self._task = asyncio.create_task(
            self._run(context, self._config), name=f"tcp-client:{context.info.slot}"
        )

    async def stop(self) -> None:
        """Close the connection and end the task. Idempotent."""
        task = self._task
        if task is None or task.done():
            return
        await cancel_and_wait(task)

    async def _run(self, context: SessionContext, config: TcpClientConfig) -> None:
        """The task body: connect, hold, reconnect. Every connect failure is retried; this
        only catches failures of the reporting itself, so they are seen, not lost."""
        try:
            await self._connect_loop(context, config)
        except Exception as exc:
            log.exception("tcp client failed session=%s", context.info.slot)
            detail = f"internal error: {type(exc).__name__}: {exc}"
            self._report(context, SessionStatus.ERROR, detail)

    async def _connect_loop(self, context: SessionContext, config: TcpClientConfig) -> None:
        backoff = Backoff(config.reconnect_initial_seconds, config.reconnect_max_seconds)
        target = f"{config.host}:{config.port}"
        while True:
            try:
                async with asyncio.timeout(config.connect_timeout_seconds):
                    reader, writer = await asyncio.open_connection(config.host, config.port)
            except Exception as exc:  # OSError (TimeoutError included) or a bad host name
                if not isinstance(exc, OSError):
                    log.warning("connect failed session=%s", context.info.slot, exc_info=exc)
                self._failed(context, backoff, f"connect to {target}: {describe(exc)}")
                await asyncio.sleep(backoff.next_delay())
                continue
            backoff.reset()
            self._report(context, SessionStatus.ACTIVE)
            context.event(f"connected to {target}")
            try:
                reason = await self._hold(reader, target)
            finally:
                await _close(writer)
            self._failed(context, backoff, reason)
            await asyncio.sleep(backoff.next_delay())

    @staticmethod
    async def _hold(reader: asyncio.StreamReader, target: str) -> str:
        """Read and discard until the connection ends; return why it ended."""
        try:
            while await reader.read(_READ_CHUNK):
                pass
        except OSError as exc:
            return f"connection to {target} lost: {describe(exc)}"
        return f"connection to {target} closed by peer"

    def _failed(self, context: SessionContext, backoff: Backoff, reason: str) -> None:
        """Report ERROR; the first failure in a row also goes to the event log."""
        log.info("tcp client down session=%s reason=%s", context.info.slot, reason)
        self._report(context, SessionStatus.ERROR, reason)
        if backoff.failures == 0:
            context.event(reason, level=EventLevel.WARNING)

    def _report(self, context: SessionContext, status: SessionStatus, detail: str = "") -> None:
        """Forward a change of status or detail; repeats are dropped."""
        if self._reported != (status, detail):
            self._reported = (status, detail)
            context.report(status, detail)


async def _close(writer: asyncio.StreamWriter) -> None:
    """Close the connection, waiting (bounded) until the transport is gone."""
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(_CLOSE_TIMEOUT_SECONDS):
            await writer.wait_closed()
