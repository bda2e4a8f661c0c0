"""Operator actions on placement: drain and undrain a pod, a one-shot rebalance.

Draining a pod moves every session off it by graceful handoff (nothing new is placed on
it) while it keeps running, which is what `kubectl drain` needs before the pod goes;
undrain makes it a placement target again. A rebalance restores the spread now, within
`placement.rebalance_window_seconds`. These change the Raft state, so any replica relays
them to the leader; each is recorded in the event log.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from aiohttp import web

from protocol.admin import PodOut
from protocol.errors import NotFoundError, UnavailableError
from protocol.values import POD_ID_RE
from raftorch.api.context import Context, LeaderActions
from raftorch.api.edge import Principal, iso_time, json_response, read_body, record_action
from raftorch.api.openapi import RouteSpec
from raftorch.api.views import pod_json
from raftorch.core.model import SetPodDrain


class RebalanceOut(msgspec.Struct, kw_only=True):
    rebalancing: Literal[True]
    policy: str
    """The configured `placement.rebalance` (this request rebalances whatever it is)."""
    window_seconds: float


def _leader(ctx: Context) -> LeaderActions:
    if ctx.leader is None:
        raise UnavailableError("this replica cannot reach the Raft leader's actions")
    return ctx.leader


async def _set_drain(
    request: web.Request, ctx: Context, who: Principal, draining: bool
) -> web.Response:
    leader = _leader(ctx)
    forwarded = await leader.forward(request, await read_body(request))
    if forwarded is not None:
        return forwarded  # type: ignore[return-value]
    pod_id = request.match_info["id"]
    if pod_id not in ctx.node.snapshot().pods:
        raise NotFoundError(f"no registered pod {pod_id}")
    result = await leader.commit([SetPodDrain(pod_id, draining)])
    if result.error or result.rejected:
        if pod_id not in ctx.node.snapshot().pods:  # it left (or expired) meanwhile
            raise NotFoundError(f"no registered pod {pod_id}")
        why = result.error or result.rejected[0][1]
        raise UnavailableError(f"pod {pod_id} not {'drained' if draining else 'undrained'}: {why}")
    ctx.wake_leader()
    verb = "drained" if draining else "undrained"
    record_action(ctx, None, f"pod {pod_id} {verb} by {who.name}", who, pod=pod_id)
    snapshot = ctx.node.snapshot()
    data = pod_json(snapshot.pods[pod_id], snapshot, ctx.last_check_in().get(pod_id))
    data["last_heartbeat"] = iso_time(data["last_heartbeat"])
    return json_response(data, 202)


async def drain_pod(request: web.Request, ctx: Context, who: Principal) -> web.Response:
    return await _set_drain(request, ctx, who, draining=True)


async def undrain_pod(request: web.Request, ctx: Context, who: Principal) -> web.Response:
    return await _set_drain(request, ctx, who, draining=False)


async def rebalance(request: web.Request, ctx: Context, who: Principal) -> web.Response:
    leader = _leader(ctx)
    forwarded = await leader.forward(request, await read_body(request))
    if forwarded is not None:
        return forwarded  # type: ignore[return-value]
    leader.request_rebalance()
    record_action(ctx, None, f"rebalance requested by {who.name}", who)
    placement = ctx.config.placement
    body = RebalanceOut(rebalancing=True, policy=placement.rebalance,
                        window_seconds=placement.rebalance_window_seconds)  # fmt: skip
    return json_response(body, 202)


_POD = "/api/v1/pods/{id}"
_POD_ID = (("id", POD_ID_RE.pattern),)
PLACEMENT_TABLE = [
    (RouteSpec("POST", f"{_POD}/drain", "Move every session off a pod by handoff; place "
               "nothing new on it (it keeps running)", "operator", response=PodOut,
               success_status=202, tags=("pods",), path_patterns=_POD_ID), drain_pod),
    (RouteSpec("POST", f"{_POD}/undrain", "Make a drained pod a placement target again",
               "operator", response=PodOut, success_status=202, tags=("pods",),
               path_patterns=_POD_ID), undrain_pod),
    (RouteSpec("POST", "/api/v1/cluster/rebalance", "Restore the spread now, by handoff",
               "operator", response=RebalanceOut, success_status=202, tags=("cluster",)),
     rebalance),
]  # fmt: skip
