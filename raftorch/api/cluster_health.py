"""How the cluster looks from one replica: its readiness, quorum and Raft links to peers.

A browser may only call the replica that served the Portal, so the Cluster page asks
that one: is it ready, does it see a quorum, and which peers can it reach over Raft.
A peer it cannot reach is down or cut off from it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec
from aiohttp import web

from persistence.tokens import Role
from raftorch.api.context import Context
from raftorch.api.edge import Principal, guarded, json_response
from raftorch.api.openapi import RouteSpec

Readiness = Callable[[], tuple[bool, str]]
PeerLinks = Callable[[], Mapping[str, bool]]


class PeerOut(msgspec.Struct, kw_only=True):
    id: str | None
    """Node id, once the peer has announced itself."""
    raft_address: str
    connected: bool | None
    """Whether this replica has a working Raft link to the peer (null: not known here)."""


class ClusterHealthOut(msgspec.Struct, kw_only=True):
    replica: str
    """This replica's node id (``node.id``)."""
    ready: bool
    reason: str
    """Why it is not ready (``ready`` when it is), as ``/readyz`` says."""
    has_quorum: bool
    term: int
    commit_index: int
    last_applied: int
    peers: list[PeerOut]


CLUSTER_HEALTH_ROUTES = [
    RouteSpec("GET", "/api/v1/cluster/health",
              "This replica's readiness, quorum and Raft links to its peers", "viewer",
              response=ClusterHealthOut, tags=("cluster",)),
]  # fmt: skip


def add_cluster_health_route(
    app: web.Application, ready: Readiness, links: PeerLinks | None = None
) -> None:
    async def health(_r: web.Request, ctx: Context, _p: Principal) -> web.Response:
        status, snapshot = ctx.node.status(), ctx.node.snapshot()
        ok, reason = ready()
        connected = links() if links is not None else {}
        addresses = sorted(set(connected) | (set(snapshot.replicas) - {status.self_id}))
        peers = [
            {"id": known.node_id if (known := snapshot.replicas.get(a)) else None,
             "raft_address": a, "connected": connected.get(a)}
            for a in addresses
        ]  # fmt: skip
        return json_response({
            "replica": ctx.config.node.id, "ready": ok, "reason": reason,
            "has_quorum": status.has_quorum, "term": status.term,
            "commit_index": status.commit_index, "last_applied": status.last_applied,
            "peers": peers,
        })  # fmt: skip

    app.router.add_get("/api/v1/cluster/health", guarded(Role.VIEWER, health))
