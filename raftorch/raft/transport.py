"""The Raft transport: pysyncobj's TCP transport with the vote and election guards, and peer routes.

Runs on the Raft tick thread only (pysyncobj is single-threaded).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pysyncobj.dns_resolver import globalDnsResolver
from pysyncobj.monotonic import monotonic as monotonicTime
from pysyncobj.tcp_connection import CONNECTION_STATE
from pysyncobj.transport import TCPTransport

from raftorch.raft import inbound
from raftorch.raft.election import PRE_VOTE, PRE_VOTE_RESPONSE, ElectionGuard, RaftInternals

Clock = Callable[[], float]


class VoteGuard:
    """Refuses vote requests until a full election timeout has passed since start.

    pysyncobj forgets term and vote when its journal is lost; a node restarted
    inside an election could vote twice in one term. Staying silent for one
    election timeout lets any election it took part in finish without it.
    """

    def __init__(self, hold_seconds: float, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._until = clock() + hold_seconds

    def allows(self, message: object) -> bool:
        if isinstance(message, dict) and message.get("type") == "request_vote":
            return self._clock() >= self._until
        return True


class GuardedTransport(TCPTransport):
    """pysyncobj's TCP transport with the vote guard and the election guard (pre-vote,
    leader stickiness: `raftorch.raft.election`) applied to incoming messages, and peers
    dialled at their route (`raft.peer_routes`) when they have one. Inbound connections
    are bounded (`raftorch.raft.inbound`): announced size, time to identify themselves."""

    def __init__(self, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:
        self.drops = inbound.DropLog()
        self.rewinds_kept = 0  # acknowledgements that would have rewound the next index
        super().__init__(syncObj, selfNode, otherNodes)

    def _onNewIncomingConnection(self, conn: Any) -> None:
        inbound.admit(conn, self.drops, monotonicTime())
        super()._onNewIncomingConnection(conn)

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:
        super()._onIncomingMessageReceived(conn, message)
        if conn not in self._unknownConnections:
            inbound.identified(conn)

    def _onTick(self) -> None:
        super()._onTick()
        now = monotonicTime()
        for conn in [c for c in self._unknownConnections if inbound.overdue(c, now)]:
            conn.disconnect()
            seconds = inbound.HANDSHAKE_SECONDS
            peer = getattr(conn, "raftorch_peer", "?")
            self.drops.note(peer, f"did not identify itself within {seconds:g} s")

    def _connectIfNecessarySingle(self, node: Any) -> bool:
        routes: dict[str, tuple[str, int]] = getattr(self._syncObj, "peer_routes", {})
        route = routes.get(node.address)
        if route is None:
            return super()._connectIfNecessarySingle(node)
        # pysyncobj's own steps, with the route in place of the node's address.
        connection = self._connections.get(node)
        if connection is not None and connection.state != CONNECTION_STATE.DISCONNECTED:
            return True
        if connection is None or not self._shouldConnect(node):
            return False
        last = self._lastConnectAttempt.get(node)
        now = monotonicTime()
        if last is not None and now - last < self._syncObj.conf.connectionRetryTime:
            return False
        self._lastConnectAttempt[node] = now
        host, port = route
        address = globalDnsResolver().resolve(host)  # pysyncobj dials IP addresses only
        if address is None:
            return False
        return bool(connection.connect(address, port))

    def send(self, node: Any, message: Any) -> bool:
        if getattr(self._syncObj, "retiring", False) and _is_vote_request(message):
            return True  # a stopping replica stands for nothing (see LeaseNode.retiring)
        election: ElectionGuard | None = getattr(self._syncObj, "election", None)
        if election is not None:
            message = election.outgoing(message)
        return bool(super().send(node, message))

    def _onMessageReceived(self, node: Any, message: Any) -> None:
        guard: VoteGuard | None = getattr(self._syncObj, "vote_guard", None)
        if guard is not None and not guard.allows(message):
            return
        election: ElectionGuard | None = getattr(self._syncObj, "election", None)
        if (
            election is not None
            and isinstance(message, dict)
            and not _elect(election, RaftInternals(self._syncObj), node, message)
        ):
            return
        if not _is_acknowledgement(message):
            super()._onMessageReceived(node, message)
            return
        raft = RaftInternals(self._syncObj)
        sent_up_to = raft.next_index(node)
        super()._onMessageReceived(node, message)
        now = raft.next_index(node)
        if sent_up_to is not None and now is not None and now < sent_up_to:
            # pysyncobj sets the next index to the acknowledged one, behind what it has
            # already sent: every acknowledgement rewound the pipeline, the entries in
            # flight were sent again, and the follower truncated and re-added them
            # ("truncating already-applied log entries"). A success never moves it back;
            # a follower that lacks entries answers with a reset, which still does.
            raft.set_next_index(node, sent_up_to)
            self.rewinds_kept += 1


def _elect(
    election: ElectionGuard, raft: RaftInternals, node: Any, message: dict[str, Any]
) -> bool:
    """Let the election guard see a message; False when pysyncobj must not."""
    kind = message.get("type")
    if kind == PRE_VOTE:
        election.queue_pre_vote(node, message)
        return False
    if kind == PRE_VOTE_RESPONSE:
        election.on_pre_vote_response(raft, node, message)
        return False
    if kind == "request_vote":
        return election.allows_vote_request(raft, message)
    if kind == "append_entries":
        if _term(message) >= raft.term:
            election.heard_from_leader()
        else:
            election.stale_leader(raft, node, _term(message))
    return True


def _term(message: dict[str, Any]) -> int:
    term = message.get("term")
    return term if isinstance(term, int) else -1


def _is_acknowledgement(message: object) -> bool:
    """A follower's answer that it appended what the leader sent (not a reset)."""
    return (
        isinstance(message, dict)
        and message.get("type") == "next_node_idx"
        and message.get("success") is True
        and not message.get("reset")
    )


def _is_vote_request(message: object) -> bool:
    return isinstance(message, dict) and message.get("type") == "request_vote"
