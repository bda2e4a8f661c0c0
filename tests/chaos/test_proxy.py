"""FaultProxy on real loopback sockets: forwarding, partitions, resets and shutdown."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from tests.chaos.proxy import LOOPBACK, FaultProxy, ProxyServer, ProxyState
from tests.integration.processes import wait_until

pytestmark = pytest.mark.timeout(10)

IO_SECONDS = 3.0  # bound on any wait for something that should happen
SILENCE_SECONDS = 0.3  # how long we listen to conclude that nothing arrives


class EchoServer:
    """A threaded TCP server on 127.0.0.1 that sends back what it receives.

    With `deferred`, each connection is read to EOF before anything is sent back; then the
    whole input is returned and the server half-closes: that needs half-close support from
    whatever sits in between.
    """

    def __init__(self, *, deferred: bool = False) -> None:
        self._deferred = deferred
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._closing = False
        self.accepted = 0
        self.bytes_received = 0

    def start(self) -> None:
        self._acceptor.start()

    def close(self) -> None:
        with self._lock:
            self._closing = True
        with contextlib.suppress(OSError):  # wakes the acceptor up
            socket.create_connection((LOOPBACK, self.port), timeout=IO_SECONDS).close()
        self._acceptor.join(IO_SECONDS)
        self._listener.close()
        for conn in self._connections:
            with contextlib.suppress(OSError):  # wakes its thread up
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(IO_SECONDS)
        for conn in self._connections:
            conn.close()

    def _accept_loop(self) -> None:
        while True:
            conn, _ = self._listener.accept()
            with self._lock:
                if self._closing:
                    conn.close()
                    return
                self.accepted += 1
                self._connections.append(conn)
                thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        received = bytearray()
        with contextlib.suppress(OSError):  # resets are what the proxy is for
            while data := conn.recv(65536):
                with self._lock:
                    self.bytes_received += len(data)
                if self._deferred:
                    received += data
                else:
                    conn.sendall(data)
            conn.sendall(received)
            conn.shutdown(socket.SHUT_WR)


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    server.start()
    yield server
    server.close()


@pytest.fixture
def proxies() -> Iterator[ProxyServer]:
    with ProxyServer() as server:
        yield server


def connect(proxy: FaultProxy) -> socket.socket:
    return socket.create_connection((LOOPBACK, proxy.port), timeout=IO_SECONDS)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, f"EOF after {len(data)} of {size} bytes"
        data += chunk
    return bytes(data)


def recv_to_eof(sock: socket.socket) -> bytes:
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def roundtrip(sock: socket.socket, payload: bytes = b"ping") -> None:
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload


def assert_silent(sock: socket.socket) -> None:
    """Nothing arrives, not even EOF, for a while."""
    sock.settimeout(SILENCE_SECONDS)
    with pytest.raises(TimeoutError):
        sock.recv(1)
    sock.settimeout(IO_SECONDS)


def assert_reset(sock: socket.socket) -> None:
    with pytest.raises(ConnectionResetError):
        sock.recv(1)


def free_port() -> int:
    with socket.create_server((LOOPBACK, 0)) as sock:
        port: int = sock.getsockname()[1]
        return port


def test_forwards_both_ways_and_counts_bytes(echo: EchoServer, proxies: ProxyServer) -> None:
    proxy = proxies.add(LOOPBACK, echo.port, "echo")
    assert proxy.port > 0
    assert proxy.address == f"127.0.0.1:{proxy.port}"
    assert proxy.state is ProxyState.FORWARDING

    with connect(proxy) as sock:
        for payload in (b"one", b"two" * 100, b"three"):
            roundtrip(sock, payload)

    sent = 3 + 300 + 5
    wait_until(lambda: proxy.bytes_to_client == sent, IO_SECONDS, "echoed bytes counted")
    assert proxy.bytes_to_upstream == sent
    assert proxy.connections_accepted == 1
    assert echo.accepted == 1


def test_large_payload_across_a_half_closed_connection(proxies: ProxyServer) -> None:
    upstream = EchoServer(deferred=True)
    upstream.start()
    try:
        proxy = proxies.add(LOOPBACK, upstream.port, "deferred")
        payload = os.urandom(1 << 20)
        with connect(proxy) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)  # the upstream answers only after this EOF
            assert recv_to_eof(sock) == payload
        assert proxy.bytes_to_upstream == len(payload)
        assert proxy.bytes_to_client == len(payload)
        wait_until(lambda: proxy.open_connections == 0, IO_SECONDS, "the connection to close")
    finally:
        upstream.close()


def test_listens_on_a_given_port(echo: EchoServer, proxies: ProxyServer) -> None:
    port = free_port()
    proxy = proxies.add(LOOPBACK, echo.port, "fixed", port=port)
    assert proxy.port == port
    with connect(proxy) as sock:
        roundtrip(sock)


def test_cut_black_holes_an_open_connection_until_heal_resets_it(
    echo: EchoServer, proxies: ProxyServer
) -> None:
    proxy = proxies.add(LOOPBACK, echo.port, "link")
    with connect(proxy) as sock:
        roundtrip(sock)
        proxy.cut()
        assert proxy.state is ProxyState.CUT
        assert proxy.connections_cut == 1

        sock.sendall(b"into the void")
        assert_silent(sock)
        assert echo.bytes_received == 4  # only the first "ping" got through

        proxy.heal()
        assert_reset(sock)
    assert proxy.connections_reset == 1

    with connect(proxy) as sock:
        roundtrip(sock)


def test_connections_made_during_a_cut_are_accepted_but_black_holed(
    echo: EchoServer, proxies: ProxyServer
) -> None:
    proxy = proxies.add(LOOPBACK, echo.port, "link")
    proxy.cut()
    with connect(proxy) as sock:  # accepted: the client would time out, not be refused
        wait_until(lambda: proxy.connections_accepted == 1, IO_SECONDS, "the proxy to accept")
        sock.sendall(b"hello?")
        assert_silent(sock)
        assert echo.accepted == 0
        assert proxy.connections_cut == 1

        proxy.heal()
        assert_reset(sock)

    with connect(proxy) as sock:
        roundtrip(sock)
    assert echo.accepted == 1


def test_reset_kills_current_connections_and_keeps_forwarding(
    echo: EchoServer, proxies: ProxyServer
) -> None:
    proxy = proxies.add(LOOPBACK, echo.port, "link")
    with connect(proxy) as first, connect(proxy) as second:
        roundtrip(first)
        roundtrip(second)
        proxy.reset()
        assert_reset(first)
        assert_reset(second)
    assert proxy.connections_reset == 2
    assert proxy.state is ProxyState.FORWARDING

    with connect(proxy) as sock:
        roundtrip(sock)
    wait_until(lambda: echo.accepted == 3, IO_SECONDS, "the upstream to see the new connection")


def test_unreachable_upstream_resets_the_client_promptly(proxies: ProxyServer) -> None:
    proxy = proxies.add(LOOPBACK, free_port(), "nobody-home")
    started = time.monotonic()
    # The RST may even beat the client's connect() call back from the kernel.
    with pytest.raises(ConnectionResetError), connect(proxy) as sock:
        sock.recv(1)
    assert time.monotonic() - started < 1.0
    wait_until(lambda: proxy.upstream_failures == 1, IO_SECONDS, "the failure to be counted")


def test_a_broken_connection_does_not_affect_the_others(
    echo: EchoServer, proxies: ProxyServer
) -> None:
    proxy = proxies.add(LOOPBACK, echo.port, "link")
    with connect(proxy) as healthy:
        broken = connect(proxy)
        roundtrip(broken)
        broken.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        broken.close()  # RST towards the proxy

        wait_until(lambda: proxy.open_connections == 1, IO_SECONDS, "the broken one dropped")
        roundtrip(healthy)


def test_many_proxies_share_one_server(echo: EchoServer, proxies: ProxyServer) -> None:
    links = [proxies.add(LOOPBACK, echo.port, f"link-{i}") for i in range(8)]
    assert len({proxy.port for proxy in links}) == len(links)
    links[0].cut()
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(connect(proxy)) for proxy in links]
        socks[0].sendall(b"ping")
        for sock in socks[1:]:
            roundtrip(sock)
        assert_silent(socks[0])

        links[1].close()  # one proxy goes away, the others stay
        assert_reset(socks[1])
        with pytest.raises(ConnectionRefusedError):
            connect(links[1])
        for sock in socks[2:]:
            roundtrip(sock)


def test_state_changes_are_idempotent_and_thread_safe(
    echo: EchoServer, proxies: ProxyServer
) -> None:
    proxy = proxies.add(LOOPBACK, echo.port, "link")
    proxy.heal()  # healing a healthy link changes nothing
    proxy.cut()
    proxy.cut()
    assert proxy.connections_cut == 0  # nothing was open to cut

    def flap() -> None:
        for _ in range(20):
            proxy.cut()
            proxy.reset()
            proxy.heal()

    threads = [threading.Thread(target=flap) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(IO_SECONDS)
    proxy.heal()
    proxy.heal()

    assert proxy.state is ProxyState.FORWARDING
    with connect(proxy) as sock:
        roundtrip(sock)


def test_stop_with_open_connections_is_quick_and_final(echo: EchoServer) -> None:
    server = ProxyServer()
    server.start()
    forwarding = server.add(LOOPBACK, echo.port, "forwarding")
    partitioned = server.add(LOOPBACK, echo.port, "partitioned")
    partitioned.cut()
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(connect(proxy)) for proxy in (forwarding, partitioned)]
        roundtrip(socks[0])
        wait_until(lambda: partitioned.connections_accepted == 1, IO_SECONDS, "the proxy to accept")

        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 1.0
        for sock in socks:
            assert_reset(sock)

    server.stop()  # idempotent
    assert forwarding.state is ProxyState.CLOSED
    forwarding.heal()  # a closed proxy ignores state changes
    with pytest.raises(RuntimeError, match="not running"):
        server.add(LOOPBACK, echo.port, "late")
    with pytest.raises(ConnectionRefusedError):
        connect(forwarding)
