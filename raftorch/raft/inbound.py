"""Bounds on inbound Raft connections: announced message size, handshake time, logged drops.

pysyncobj trusts the 4-byte length a peer announces and buffers that many bytes, copying
the buffer on every read of the tick thread; it never times out a connection that sends
nothing, and it drops a message that fails authentication without a word. Anyone who can
reach the Raft port could so stall a replica's tick thread (and with it its elections)
without knowing the secret. These bounds apply before anything is decrypted or unpickled.

Runs on the Raft tick thread only.
"""

from __future__ import annotations

import logging
import struct
import time
from typing import Any, cast

from pysyncobj.tcp_connection import CONNECTION_STATE, TcpConnection

log = logging.getLogger(__name__)

HANDSHAKE_MESSAGE_BYTES = 64 * 1024
"""Largest message a connection may announce before it has said which peer it is (the
encryption key exchange and the peer's address are a few hundred bytes)."""
PEER_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest message a known peer may announce: append batches are at most 8 MiB of entries
(node.APPEND_BATCH_BYTES), which pickle to well under twice that."""
HANDSHAKE_SECONDS = 5.0
"""An inbound connection that has not said which peer it is by then is closed."""
LOG_EVERY_SECONDS = 30.0

_HEADER = struct.Struct("i")  # pysyncobj's own framing: native-endian signed int


class BoundedConnection(TcpConnection):
    """pysyncobj's connection with a cap on the announced message length.

    An inbound connection is turned into one (`admit`) as it is accepted; the cap is the
    handshake's until the transport knows the peer (`identified`)."""

    raftorch_limit: int = HANDSHAKE_MESSAGE_BYTES
    raftorch_accepted_at: float = 0.0
    raftorch_peer: str = "?"
    raftorch_drops: DropLog | None = None

    def _TcpConnection__processRead(self) -> bool:
        # pysyncobj reads until the socket is empty before it parses anything: a fast
        # sender would fill the buffer first, so the header is checked after every read.
        return bool(TcpConnection._TcpConnection__processRead(self)) and self._within_limit()

    def _TcpConnection__processParseMessage(self) -> Any:
        if not self._within_limit():
            return None
        message = TcpConnection._TcpConnection__processParseMessage(self)
        if message is None and self.state == CONNECTION_STATE.DISCONNECTED:
            self._drop("sent a message that failed authentication or decoding")
        return message

    def _within_limit(self) -> bool:
        """False (and the connection dropped) when the next message announced is too big."""
        buffer: bytes = self._TcpConnection__readBuffer
        if len(buffer) < _HEADER.size:
            return True
        (announced,) = _HEADER.unpack_from(buffer)
        if 0 <= announced <= self.raftorch_limit:
            return True
        self._drop(f"announced a {announced}-byte message (limit {self.raftorch_limit})")
        return False

    def _drop(self, why: str) -> None:
        if self.state != CONNECTION_STATE.DISCONNECTED:
            self.disconnect()
        if self.raftorch_drops is not None:
            self.raftorch_drops.note(self.raftorch_peer, why)


class DropLog:
    """Counts dropped inbound connections and logs them at most every LOG_EVERY_SECONDS."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.count = 0
        self._clock = clock
        self._logged_at: float | None = None
        self._since_log = 0

    def note(self, peer: str, why: str) -> None:
        self.count += 1
        self._since_log += 1
        now = self._clock()
        if self._logged_at is None or now - self._logged_at >= LOG_EVERY_SECONDS:
            log.warning(
                "raft: dropped an inbound connection peer=%s: %s (%d dropped since the last "
                "such line)",
                peer,
                why,
                self._since_log,
            )
            self._logged_at = now
            self._since_log = 0


def admit(conn: TcpConnection, drops: DropLog, now: float) -> None:
    """Bound a freshly accepted connection (before any of its bytes are parsed)."""
    conn.__class__ = BoundedConnection  # same layout, pure Python: only methods change
    bounded = cast(BoundedConnection, conn)
    bounded.raftorch_accepted_at = now
    bounded.raftorch_drops = drops
    try:
        host, port = bounded._TcpConnection__socket.getpeername()[:2]
        bounded.raftorch_peer = f"{host}:{port}"
    except OSError:
        bounded.raftorch_peer = "?"


def identified(conn: TcpConnection) -> None:
    """The transport knows the peer now: it may send entries up to the peer limit."""
    if isinstance(conn, BoundedConnection):
        conn.raftorch_limit = PEER_MESSAGE_BYTES


def overdue(conn: TcpConnection, now: float) -> bool:
    """True when an unidentified connection has had its handshake time."""
    accepted = getattr(conn, "raftorch_accepted_at", 0.0)
    return bool(accepted) and now - accepted > HANDSHAKE_SECONDS
