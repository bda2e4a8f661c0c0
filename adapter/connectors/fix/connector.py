"""The `fix` connector: the lifecycle of one FIX session on the pod that owns it.

`prepare()` (warm standby) checks the configuration and listens nowhere. `start()`
loads the data dictionary at the version pinned for this run, reads the durable
sequence numbers, binds the listening socket (acceptor) and starts one task that
connects or accepts, runs a `FixSession` per connection, and decides what follows
each: reconnect with back-off, ERROR that waits for an operator (MsgSeqNum too
low), or the end (fenced, stopped). `stop()` logs out, waits a bounded time for the
counterparty's Logout, closes, and stops listening. On Kubernetes an acceptor's owner
also labels its own Pod while it listens (`ownerlabel`), in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from adapter.connectors import Backoff, cancel_and_wait
from adapter.connectors.fix.dictionary import DataDictionary
from adapter.connectors.fix.ownerlabel import OwnerLabels
from adapter.connectors.fix.session import Ended, EndKind, FixSession
from adapter.connectors.fix.store import SequenceStore
from adapter.sdk import Connector, SessionContext, SessionInfo, SessionStatus
from persistence.session_state import ResetRequest
from protocol.errors import ConfigError, RaftorchError, ValidationError
from protocol.fix import FixConfig, validate_fix_config
from protocol.values import EventCategory, EventLevel

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 4.0
"""Within the runtime's 5 s bound on `stop()`: Logout, the answer, the close."""
HOLD_POLL_SECONDS = 1.0
_BACKOFF_FACTOR = 8.0
_DETAIL_MAX = 500

TOO_LOW_ADVICE = (
    "Our outbound MsgSeqNum is behind what the counterparty has already received, so "
    "continuing would reuse sequence numbers. This happens after a database restore to an "
    "older point or when the counterparty's store is newer than ours. Agree with the "
    "counterparty how to proceed: either reset both sides to 1 (POST "
    "/api/v1/adapters/{id}/reset: the next Logon carries ResetSeqNumFlag=Y), or set "
    "fix.next_sender_seq to the number they expect while the adapter is disabled; see the "
    "sequence-number recovery runbook in docs/fix.md."
)


def parse_config(info: SessionInfo) -> FixConfig:
    try:
        return validate_fix_config(info.config, artifacts=info.artifacts)
    except ValidationError as exc:
        raise ConfigError(f"fix {exc.message}") from None


class FixConnector(Connector):
    """One FIX session per instance (initiator or acceptor)."""

    type = "fix"
    version = "0.1.0"

    def __init__(self) -> None:
        self._config: FixConfig | None = None
        self._context: SessionContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: FixSession | None = None
        self._server: asyncio.Server | None = None
        self._accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue(maxsize=1)
        )
        self._stopping = asyncio.Event()
        self._reported: tuple[SessionStatus, str] | None = None
        self._labels: OwnerLabels | None = None

    async def prepare(self, info: SessionInfo) -> None:
        """Warm standby: check the configuration; a standby never listens."""
        self._config = parse_config(info)

    async def start(self, context: SessionContext) -> None:
        """Load what the session needs, bind (acceptor), start the session task."""
        if self._task is not None or self._stopping.is_set():
            raise RuntimeError("FixConnector.start() called twice or after stop()")
        config = self._config = parse_config(context.info)
        self._context = context
        dictionary = None
        if config.data_dictionary is not None:
            content = await context.artifact(config.data_dictionary)
            dictionary = DataDictionary.parse(content, f"artifact {config.data_dictionary!r}")
        store = SequenceStore(context.state, context.info)
        await store.load()
        if config.role == "acceptor":
            self._labels = OwnerLabels.for_pod(context.metrics)
            await self._listen(config)
        self._task = asyncio.create_task(
            self._run(config, context, store, dictionary), name=f"fix:{context.info.slot}"
        )

    async def stop(self) -> None:
        """Log out, wait (bounded) for the counterparty's Logout, close, stop listening."""
        self._stopping.set()
        self._unlabel()  # first: the Service stops sending the venue here while we log out
        if self._session is not None:
            self._session.request_stop("adapter stopped")
        task = self._task
        try:
            if task is not None and not task.done():
                done, _ = await asyncio.wait({task}, timeout=STOP_TIMEOUT_SECONDS)
                if not done:
                    log.warning("fix stop timed out, cancelling session=%s", self._slot())
                    await cancel_and_wait(task)
        finally:
            await self._unlisten()

    # --- connections ------------------------------------------------------------------

    async def _listen(self, config: FixConfig) -> bool:
        """Bind the acceptor's socket; False (reported, retried later) if it cannot."""
        if self._server is not None:
            return True
        try:
            self._server = await asyncio.start_server(self._on_connection, config.host, config.port)
        except OSError as exc:
            self._problem(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}")
            return False
        log.info(
            "fix acceptor listening session=%s on=%s:%d", self._slot(), config.host, config.port
        )
        if self._labels is not None and self._context is not None:
            self._labels.listening(self._context, config.port, config.host)
        return True

    def _unlabel(self) -> None:
        if self._labels is not None and self._context is not None:
            self._labels.released(self._context.info.slot, self._context.info.epoch)

    async def _unlisten(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            self._unlabel()
            server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await server.wait_closed()
        while not self._accepted.empty():
            _reader, writer = self._accepted.get_nowait()
            writer.transport.abort()

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """One FIX session at a time: a second connection is closed at once."""
        if self._session is not None or self._accepted.full() or self._stopping.is_set():
            log.warning("fix acceptor refused a second connection session=%s", self._slot())
            writer.transport.abort()
            return
        self._accepted.put_nowait((reader, writer))

    async def _connection(
        self, config: FixConfig, backoff: Backoff
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """The next connection: dialled (initiator) or accepted (acceptor); None to retry."""
        if config.role == "acceptor":
            if not await self._listen(config):
                await self._pause(config.reconnect_interval_seconds)
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HOLD_POLL_SECONDS):
                    return await self._accepted.get()
            return None
        target = f"{config.host}:{config.port}"
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
                return await asyncio.open_connection(config.host, config.port)
        except (OSError, TimeoutError) as exc:
            why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            self._problem(f"connect to {target}: {why}", first=backoff.failures == 0)
            await self._pause(backoff.next_delay())
            return None

    # --- the session task -------------------------------------------------------------

    async def _run(
        self,
        config: FixConfig,
        context: SessionContext,
        store: SequenceStore,
        dictionary: DataDictionary | None,
    ) -> None:
        """Connections one after another until stopped, fenced, or in need of an operator."""
        interval = config.reconnect_interval_seconds
        backoff = Backoff(interval, max(interval, min(60.0, interval * _BACKOFF_FACTOR)))
        held = False  # MsgSeqNum too low: wait for a reset request
        try:
            while not self._stopping.is_set():
                reset = await self._pending_reset(context)
                if held and reset is None:
                    await self._pause(HOLD_POLL_SECONDS)
                    continue
                streams = await self._connection(config, backoff)
                if streams is None or self._stopping.is_set():
                    if streams is not None:
                        streams[1].transport.abort()
                    continue
                await store.load()  # start each connection from what is durably stored
                self._session = FixSession(
                    config,
                    context,
                    store,
                    dictionary,
                    streams,
                    reset=reset,
                    on_logon=self._logged_on,
                )
                try:
                    ended = await self._session.run()
                finally:
                    self._session = None
                held = await self._after(ended, config, backoff)
                if ended.kind is EndKind.FENCED or ended.kind is EndKind.STOPPED:
                    return
        except RaftorchError as exc:
            self._problem(f"session state unavailable: {exc.message}")
        except Exception as exc:
            log.exception("fix session task failed session=%s", context.info.slot)
            self._report(SessionStatus.ERROR, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if config.role == "acceptor":
                await self._unlisten()

    async def _pending_reset(self, context: SessionContext) -> ResetRequest | None:
        try:
            return await context.state.pending_reset()
        except RaftorchError as exc:
            log.warning("reset request check failed session=%s error=%s", self._slot(), exc.message)
            return None

    async def _after(self, ended: Ended, config: FixConfig, backoff: Backoff) -> bool:
        """Report how a connection ended and wait before the next; True: hold for an operator."""
        log.info(
            "fix session ended session=%s kind=%s reason=%s",
            self._slot(),
            ended.kind.value,
            ended.reason,
        )
        if ended.logged_on:
            backoff.reset()
        if ended.kind is EndKind.STOPPED:
            self._event(f"logged out: {ended.reason or 'adapter stopped'}")
            return False
        if ended.kind is EndKind.FENCED:
            self._fenced(ended.reason)
            return False
        if ended.kind is EndKind.SEQUENCE_TOO_LOW:
            self._report(
                SessionStatus.ERROR,
                f"{ended.reason}. Needs an operator: see the adapter's event log",
            )
            self._event(f"{ended.reason}. {TOO_LOW_ADVICE}", level=EventLevel.ERROR)
            return True
        if ended.kind is EndKind.RESET:
            self._event(f"logged out to reset sequence numbers: {ended.reason}")
            return False
        self._problem(f"disconnected: {ended.reason}")
        if config.role == "initiator":
            await self._pause(backoff.next_delay())
        return False

    # --- reporting ----------------------------------------------------------------------

    def _logged_on(self, detail: str) -> None:
        self._report(SessionStatus.ACTIVE)
        self._event(detail)

    def _problem(self, detail: str, *, first: bool = True) -> None:
        log.info("fix session problem session=%s detail=%s", self._slot(), detail)
        self._report(SessionStatus.ERROR, detail)
        if first:
            self._event(detail, level=EventLevel.WARNING)

    def _fenced(self, reason: str) -> None:
        self._report(SessionStatus.ERROR, reason)
        if self._context is not None:
            self._context.event(
                f"fenced off, stopped sending at once: {reason}"[:_DETAIL_MAX],
                level=EventLevel.WARNING,
                category=EventCategory.SYSTEM,
                details={"epoch": self._context.info.epoch, "pod": self._context.info.pod_id},
            )

    def _event(self, description: str, *, level: EventLevel = EventLevel.INFO) -> None:
        if self._context is not None:
            self._context.event(description[:2000], level=level)

    def _report(self, status: SessionStatus, detail: str = "") -> None:
        if self._context is not None and self._reported != (status, detail):
            self._reported = (status, detail)
            self._context.report(status, detail[:_DETAIL_MAX])

    def _slot(self) -> str:
        return self._context.info.slot if self._context else "?"

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
