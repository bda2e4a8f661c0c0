"""Loopback TCP proxies that inject network faults (partitions, connection resets) into a link.

The chaos harness routes every link between real processes (replica to replica, adapter pod to
replica) through a `FaultProxy`, so a test can partition or reset that link without touching the
product code. All proxies of a test share one `ProxyServer`: one background thread running one
asyncio event loop. Every piece of proxy state lives on that loop; the public methods called from
the test thread hop onto it and wait for the change to be in force before returning.

Fault model:

- `FaultProxy.cut()` is a partition. Connections through the proxy stay open but nothing is
  forwarded either way any more: the proxy stops reading both sockets, so senders' buffers fill
  and their peers wait, as across a dead network. Connections accepted during the cut are
  black-holed too (never connected upstream), so clients see timeouts rather than refusals.
- `FaultProxy.heal()` ends the partition. A real network would let TCP retransmit; we simplify:
  every connection that lived through the partition is reset (RST), so both ends notice and
  reconnect. New connections forward normally again.
- `FaultProxy.reset()` resets every current connection at once and keeps forwarding new ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import struct
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self, TypeVar, cast

log = logging.getLogger(__name__)

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
# SO_LINGER on with a zero timeout: close() discards unsent data and sends RST instead of FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


class ProxyState(enum.Enum):
    """What a proxy does with its connections; every transition between the first two is legal."""

    FORWARDING = "forwarding"
    CUT = "cut"
    CLOSED = "closed"  # final: not listening, every connection reset


class _Side(asyncio.Protocol):
    """One socket of a proxied connection; what it receives is handed to its link.

    Runs on the event loop thread only, like everything in `_Link`.
    """

    def __init__(self, link: _Link, *, is_client: bool) -> None:
        self.link = link
        self.is_client = is_client
        self.transport: asyncio.Transport | None = None
        self.eof = False  # the remote end has finished sending
        self.lost = False  # the socket is closed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.link.side_made(self)

    def data_received(self, data: bytes) -> None:
        self.link.forward(self, data)

    def eof_received(self) -> bool:
        self.link.forward_eof(self)
        return True  # keep the socket open: the other direction may still carry data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.link.side_lost(self, exc)

    def pause_writing(self) -> None:
        self.link.throttle(self, paused=True)

    def resume_writing(self) -> None:
        self.link.throttle(self, paused=False)

    def stop_reading(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.pause_reading()

    def start_reading(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()

    def close(self) -> None:
        """Close after the pending outgoing bytes are written (FIN)."""
        if self.transport is not None and not self.lost:
            self.transport.close()

    def abort_with_reset(self) -> None:
        """Close at once, discarding pending bytes, so the remote end sees a RST."""
        if self.transport is None or self.lost:
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # already shut down by the kernel
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        self.transport.abort()


class _Link:
    """One connection through a proxy: the accepted client socket and its upstream socket."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self, is_client=True)
        self.upstream: _Side | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.black_holed = False
        self.was_reset = False

    def peer(self, side: _Side) -> _Side | None:
        return self.upstream if side.is_client else self.client

    @property
    def finished(self) -> bool:
        """Both sockets are closed and no upstream connection is still being made."""
        connecting = self.connect_task is not None and not self.connect_task.done()
        upstream_open = self.upstream is not None and not self.upstream.lost
        return self.client.lost and not upstream_open and not connecting

    def side_made(self, side: _Side) -> None:
        if side.is_client:
            # Nothing is read from the client until its upstream connection is ready.
            side.stop_reading()
            self.proxy._accepted(self)
            return
        self.upstream = side
        if self.black_holed:
            side.stop_reading()

    def upstream_ready(self) -> None:
        """The upstream connection is made: start forwarding the client's bytes."""
        if self.black_holed:
            return
        if self.client.lost:
            if self.upstream is not None:
                self.upstream.close()
            return
        self.client.start_reading()

    def forward(self, side: _Side, data: bytes) -> None:
        peer = self.peer(side)
        if self.black_holed or peer is None or peer.lost or peer.transport is None:
            return
        peer.transport.write(data)
        self.proxy._forwarded(to_upstream=side.is_client, size=len(data))

    def forward_eof(self, side: _Side) -> None:
        peer = self.peer(side)
        if self.black_holed or peer is None or peer.lost or peer.transport is None:
            return
        side.eof = True
        if peer.transport.can_write_eof():
            peer.transport.write_eof()  # sent once the pending bytes are written
        if peer.eof:  # both directions are finished
            side.close()
            peer.close()

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        if side.is_client and self.connect_task is not None:
            self.connect_task.cancel()
        peer = self.peer(side)
        # Across a partition the other end never learns of the close; it is reset on heal.
        if not (self.black_holed or self.was_reset) and peer is not None:
            if exc is None:
                peer.close()
            else:
                peer.abort_with_reset()
        self.proxy._maybe_forget(self)

    def throttle(self, side: _Side, *, paused: bool) -> None:
        """Flow control: stop reading from the peer while `side` cannot write fast enough."""
        peer = self.peer(side)
        if peer is None:
            return
        if paused:
            peer.stop_reading()
        elif not self.black_holed:
            peer.start_reading()

    def black_hole(self) -> None:
        self.black_holed = True
        if self.connect_task is not None:
            self.connect_task.cancel()
        self.client.stop_reading()
        if self.upstream is not None:
            self.upstream.stop_reading()

    def reset(self) -> bool:
        """Reset both sockets; False if this link was already reset."""
        if self.was_reset:
            return False
        self.was_reset = True
        if self.connect_task is not None:
            self.connect_task.cancel()
        self.client.abort_with_reset()
        if self.upstream is not None:
            self.upstream.abort_with_reset()
        return True


class FaultProxy:
    """Listens on 127.0.0.1 and forwards every accepted connection to one upstream address.

    Made by `ProxyServer.add`. `cut`, `heal`, `reset` and `close` may be called from any thread
    except the proxy server's own; each is idempotent and returns once the change is in force
    on the event loop. Counters are only written on the event loop; reading one from another
    thread gives a recent value.
    """

    def __init__(
        self,
        server: ProxyServer,
        name: str,
        upstream_host: str,
        upstream_port: int,
        *,
        connect_timeout_seconds: float,
    ) -> None:
        self.name = name
        self.upstream = (upstream_host, upstream_port)
        self._server = server
        self._connect_timeout_seconds = connect_timeout_seconds
        self._state = ProxyState.FORWARDING
        self._listener: asyncio.Server | None = None
        self._port = 0
        self._links: set[_Link] = set()
        self._drained = asyncio.Event()
        self._drained.set()
        self._connections_accepted = 0
        self._connections_cut = 0
        self._connections_reset = 0
        self._upstream_failures = 0
        self._bytes_to_upstream = 0
        self._bytes_to_client = 0

    def __repr__(self) -> str:
        return (
            f"FaultProxy(name={self.name!r}, address={self.address}, "
            f"upstream={self.upstream[0]}:{self.upstream[1]}, state={self._state.value})"
        )

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        """Where clients connect instead of the upstream, as "127.0.0.1:port"."""
        return f"{LOOPBACK}:{self._port}"

    @property
    def state(self) -> ProxyState:
        return self._state

    @property
    def connections_accepted(self) -> int:
        return self._connections_accepted

    @property
    def connections_cut(self) -> int:
        """Connections black-holed: open at a `cut()`, or accepted while cut."""
        return self._connections_cut

    @property
    def connections_reset(self) -> int:
        """Connections closed with a RST by `heal()` or `reset()`."""
        return self._connections_reset

    @property
    def upstream_failures(self) -> int:
        """Connections whose upstream could not be reached (the client was reset)."""
        return self._upstream_failures

    @property
    def bytes_to_upstream(self) -> int:
        return self._bytes_to_upstream

    @property
    def bytes_to_client(self) -> int:
        return self._bytes_to_client

    @property
    def open_connections(self) -> int:
        return len(self._links)

    def cut(self) -> None:
        """Partition the link: black-hole every current and new connection."""
        self._change(self._cut)

    def heal(self) -> None:
        """End a partition: reset the connections that lived through it, forward new ones."""
        self._change(self._heal)

    def reset(self) -> None:
        """Reset every current connection; keep accepting (and, unless cut, forwarding)."""
        self._change(self._reset_all)

    def close(self) -> None:
        """Stop listening and reset every connection. Final."""
        if self._state is not ProxyState.CLOSED:
            self._server.run(self.aclose())

    async def listen(self, port: int) -> None:
        """Start accepting on `port` (0: any free port). Event loop thread."""
        loop = asyncio.get_running_loop()
        self._listener = await loop.create_server(self._make_client_side, LOOPBACK, port)
        self._port = self._listener.sockets[0].getsockname()[1]
        log.debug("proxy listening proxy=%s address=%s", self.name, self.address)

    async def aclose(self) -> None:
        """Stop listening, reset every connection and wait (bounded) for the sockets to close.

        Event loop thread.
        """
        self._state = ProxyState.CLOSED
        if self._listener is not None:
            self._listener.close()
        for link in list(self._links):
            link.reset()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._server.call_timeout_seconds / 2):
                await self._drained.wait()
        if self._listener is not None:
            await self._listener.wait_closed()
        if self._links:
            log.warning(
                "proxy closed with open links proxy=%s links=%d", self.name, len(self._links)
            )

    def _change(self, fn: Callable[[], None]) -> None:
        # A closed proxy has no connections left to change (and its server may be stopped).
        if self._state is not ProxyState.CLOSED:
            self._server.call(fn)

    def _make_client_side(self) -> _Side:
        return _Link(self).client

    def _cut(self) -> None:
        if self._state is not ProxyState.FORWARDING:
            return
        self._state = ProxyState.CUT
        for link in self._links:
            if not link.black_holed:
                link.black_hole()
                self._connections_cut += 1
        log.info("proxy cut proxy=%s connections=%d", self.name, len(self._links))

    def _heal(self) -> None:
        if self._state is not ProxyState.CUT:
            return
        self._state = ProxyState.FORWARDING
        for link in list(self._links):
            if link.black_holed and link.reset():
                self._connections_reset += 1
        log.info("proxy healed proxy=%s", self.name)

    def _reset_all(self) -> None:
        for link in list(self._links):
            if link.reset():
                self._connections_reset += 1
        log.info("proxy reset proxy=%s", self.name)

    def _accepted(self, link: _Link) -> None:
        self._connections_accepted += 1
        self._links.add(link)
        self._drained.clear()
        if self._state is ProxyState.CLOSED:
            link.reset()
        elif self._state is ProxyState.CUT:
            link.black_hole()
            self._connections_cut += 1
        else:
            task = asyncio.get_running_loop().create_task(self._connect(link))
            link.connect_task = task
            task.add_done_callback(lambda done: self._connect_done(link, done))

    async def _connect(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        host, port = self.upstream
        try:
            async with asyncio.timeout(self._connect_timeout_seconds):
                await loop.create_connection(lambda: _Side(link, is_client=False), host, port)
        except (OSError, TimeoutError) as exc:
            self._upstream_failures += 1
            log.info("proxy upstream unreachable proxy=%s error=%r", self.name, exc)
            link.client.abort_with_reset()
            return
        link.upstream_ready()

    def _connect_done(self, link: _Link, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("proxy connect task failed proxy=%s", self.name, exc_info=task.exception())
            link.reset()
        self._maybe_forget(link)

    def _maybe_forget(self, link: _Link) -> None:
        if link.finished:
            self._links.discard(link)
            if not self._links:
                self._drained.set()

    def _forwarded(self, *, to_upstream: bool, size: int) -> None:
        if to_upstream:
            self._bytes_to_upstream += size
        else:
            self._bytes_to_client += size


class ProxyServer:
    """One background thread with one event loop hosting any number of `FaultProxy`.

    Use `start()`/`stop()` or `with ProxyServer() as server:`. Nothing runs before `start()`.
    Every call from another thread waits at most `call_timeout_seconds` (TimeoutError).
    """

    def __init__(self, *, call_timeout_seconds: float = 5.0) -> None:
        self.call_timeout_seconds = call_timeout_seconds
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._proxies: list[FaultProxy] = []  # event loop thread only

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("proxy server already started")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        thread = threading.Thread(
            target=self._run_loop, args=(loop, ready), name="fault-proxy", daemon=True
        )
        self._loop, self._thread = loop, thread
        thread.start()
        if not ready.wait(self.call_timeout_seconds):
            raise TimeoutError("proxy server thread did not start")

    def stop(self) -> None:
        """Close every proxy (resetting their connections), stop the loop, join the thread.

        Bounded by about twice `call_timeout_seconds`; idempotent.
        """
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if thread.is_alive():
                self.run(self._close_all())
        except TimeoutError:
            log.warning("proxy server did not close its proxies in time")
        finally:
            self._loop = None
            if thread.is_alive():
                loop.call_soon_threadsafe(loop.stop)
            thread.join(self.call_timeout_seconds)
            self._thread = None
        if thread.is_alive():
            raise TimeoutError("proxy server thread did not stop")

    def add(
        self,
        upstream_host: str,
        upstream_port: int,
        name: str,
        *,
        port: int = 0,
        connect_timeout_seconds: float = 2.0,
    ) -> FaultProxy:
        """A new proxy forwarding 127.0.0.1:`port` (0: any free port) to the upstream."""
        proxy = FaultProxy(
            self,
            name,
            upstream_host,
            upstream_port,
            connect_timeout_seconds=connect_timeout_seconds,
        )
        self.run(self._open(proxy, port))
        return proxy

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the event loop and wait for its result. Not from the loop's thread."""
        loop = self._running_loop(coro)
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result(self.call_timeout_seconds)
        except TimeoutError:
            future.cancel()
            raise

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the event loop and wait for its result. Not from the loop's thread."""

        async def invoke() -> T:
            return fn()

        return self.run(invoke())

    def _running_loop(self, coro: Coroutine[Any, Any, Any]) -> asyncio.AbstractEventLoop:
        # A refused coroutine is closed, so it raises no "never awaited" RuntimeWarning.
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            coro.close()
            raise RuntimeError("proxy server is not running")
        if threading.current_thread() is thread:
            coro.close()
            raise RuntimeError("blocking call from the proxy server's own thread would deadlock")
        return loop

    async def _open(self, proxy: FaultProxy, port: int) -> None:
        await proxy.listen(port)
        self._proxies.append(proxy)

    async def _close_all(self) -> None:
        await asyncio.gather(*(proxy.aclose() for proxy in self._proxies))

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            try:
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                # Also runs the pending callbacks that close the aborted sockets.
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
