"""The admin API under /api/v1: adapters and their actions, events, pods and the cluster.

Reads come from the configuration cache and the Raft snapshot, so they keep working
while PostgreSQL is down; writes go to PostgreSQL, then into this replica's cache at
once (the change feed brings them to the others). Every action is recorded in the
event log through the write-behind buffer: a handler never waits for that write.
Artifacts and plugins live in `raftorch.api.artifacts`.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from persistence.adapters import AdapterChanges, AdapterRecord
from persistence.tokens import Role
from protocol.admin import (
    AdapterCreate,
    AdapterList,
    AdapterOut,
    AdapterPage,
    AdapterPatch,
    BulkAction,
    ClusterOut,
    EventList,
    PodList,
)
from protocol.connectors import check_config, resets_by_request
from protocol.errors import ValidationError
from protocol.values import (
    AdminState,
)
from raftorch.api.artifacts import ARTIFACT_TABLE, RouteTable
from raftorch.api.context import Context
from raftorch.api.edge import (
    Principal,
    check_query,
    guarded,
    install_auth,
    iso_time,
    json_response,
    query_int,
    query_str,
    read_json,
    record_action,
)
from raftorch.api.openapi import QueryParam, RouteSpec
from raftorch.api.placement import PLACEMENT_TABLE
from raftorch.api.tokens import TOKEN_TABLE, follow_revocations
from raftorch.api.views import adapter_json, pod_json
from raftorch.core.adapter_status import able_pods
from raftorch.core.model import slot_id
from raftorch.core.ownership import Snapshot

# --- rendering ------------------------------------------------------------------------


def _adapter(
    record: AdapterRecord,
    snapshot: Snapshot,
    check_ins: Mapping[str, float],
    able: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    data = adapter_json(record, snapshot, check_ins, able)
    data["last_check_in"] = iso_time(data["last_check_in"])
    return data


def _adapters(ctx: Context, records: list[AdapterRecord]) -> list[dict[str, Any]]:
    snapshot, check_ins = ctx.node.snapshot(), ctx.last_check_in()
    able = able_pods(snapshot.pods)
    return [_adapter(r, snapshot, check_ins, able) for r in records]


def _render(ctx: Context, record: AdapterRecord) -> dict[str, Any]:
    return _adapter(record, ctx.node.snapshot(), ctx.last_check_in())


async def _load(ctx: Context, adapter_id: str) -> AdapterRecord:
    """From the cache, or from PostgreSQL when this replica has not seen it yet (404)."""
    return ctx.cache.get(adapter_id) or await ctx.repos.adapters.get(adapter_id)


async def _check_artifacts(ctx: Context, names: list[str] | None) -> None:
    if not names:
        return
    known = {info.name for info in await ctx.repos.artifacts.list_all()}
    missing = sorted(set(names) - known)
    if missing:
        raise ValidationError(f"artifacts do not exist: {', '.join(missing)}")


# --- handlers -------------------------------------------------------------------------


async def list_adapters(request: web.Request, ctx: Context, _p: Principal) -> web.Response:
    """A page of adapters by name: `limit` (default 500), after `cursor` (the previous page's
    `next_cursor`); `configs=false` leaves each `config` out (`null`)."""
    check_query(request, ("limit", "cursor", "configs"))
    limit = query_int(request, "limit", minimum=1, maximum=MAX_PAGE) or DEFAULT_PAGE
    cursor = query_str(request, "cursor", max_length=CURSOR_CHARS)
    configs = request.query.get("configs", "true")
    if configs not in ("true", "false"):
        raise ValidationError(f"configs must be true or false, not {configs!r}")
    records = ctx.cache.records()
    start = 0 if cursor is None else bisect.bisect_right([r.name for r in records], cursor)
    page = records[start : start + limit]
    items = _adapters(ctx, page)
    if configs == "false":
        for item in items:
            item["config"] = None
    more = start + limit < len(records)
    return json_response({"items": items, "next_cursor": page[-1].name if more else None})


async def create_adapter(request: web.Request, ctx: Context, who: Principal) -> web.Response:
    body = await read_json(request, AdapterCreate)
    check_config(body.connector, body.config, body.artifacts)
    await _check_artifacts(ctx, body.artifacts)
    record = await ctx.repos.adapters.create(
        body.name,
        body.connector,
        body.mode,
        body.config,
        instances=body.instances,
        artifacts=body.artifacts,
    )
    ctx.cache.put(record)
    record_action(ctx, record.id, f"created by {who.name}", who, revision=record.revision)
    location = {"Location": f"/api/v1/adapters/{record.id}"}
    return json_response(_render(ctx, record), 201, location)


async def get_adapter(request: web.Request, ctx: Context, _p: Principal) -> web.Response:
    return json_response(_render(ctx, await _load(ctx, request.match_info["id"])))


async def patch_adapter(request: web.Request, ctx: Context, who: Principal) -> web.Response:
    body = await read_json(request, AdapterPatch)
    current = await _load(ctx, request.match_info["id"])  # FIX hook (#16): check the result
    check_config(  # the configuration as it will be after the patch
        body.connector or current.connector,
        current.config if body.config is None else body.config,
        list(current.artifacts if body.artifacts is None else body.artifacts),
    )
    await _check_artifacts(ctx, body.artifacts)
    changes = AdapterChanges(
        connector=body.connector,
        mode=body.mode,
        instances=body.instances,
        config=body.config,
        artifacts=body.artifacts,
    )
    record = await ctx.repos.adapters.update(
        request.match_info["id"], changes, expected_revision=body.revision
    )
    ctx.cache.put(record)
    ctx.wake_leader()
    fields = body.changed_fields()
    record_action(
        ctx, record.id, f"updated by {who.name}", who, fields=fields, revision=record.revision
    )
    return json_response(_render(ctx, record))


async def delete_adapter(request: web.Request, ctx: Context, who: Principal) -> web.Response:
    record = await _load(ctx, request.match_info["id"])
    await ctx.repos.adapters.delete(record.id)
    ctx.cache.drop(record.id)
    ctx.wake_leader()
    # The adapter's own log goes with it, so the deletion is a cluster-wide event.
    record_action(
        ctx, None, f"adapter {record.name} deleted by {who.name}", who, adapter_id=record.id
    )
    return web.Response(status=204)


async def _set_state(
    request: web.Request, ctx: Context, who: Principal, state: AdminState
) -> web.Response:
    [record] = await ctx.repos.adapters.set_admin_state([request.match_info["id"]], state)
    ctx.cache.put(record)
    ctx.wake_leader()
    verb = "enabled" if state is AdminState.ENABLED else "disabled"
    record_action(ctx, record.id, f"{verb} by {who.name}", who, admin_state=state.value)
    return json_response(_render(ctx, record), 202)


async def enable_adapter(request: web.Request, ctx: Context, who: Principal) -> web.Response:
    return await _set_state(request, ctx, who, AdminState.ENABLED)


async def disable_adapter(request: web.Request, ctx: Context, who: Principal) -> web.Response:
    return await _set_state(request, ctx, who, AdminState.DISABLED)


async def reset_adapter(request: web.Request, ctx: Context, who: Principal) -> web.Response:
    """Reset every slot's session state: forgotten, or (a connector that resets by request,
    such as `fix`) reset by the owning session itself. Fences stay: epochs never go back."""
    record = await _load(ctx, request.match_info["id"])
    slots = [slot_id(record.id, i) for i in range(record.instances)]
    if resets_by_request(record.connector):  # the owner resets, fenced (FIX: its own way)
        for slot in slots:
            await ctx.repos.session_state.request_reset(slot, who.name)
        record_action(ctx, record.id, f"sequence reset requested by {who.name}", who, slots=slots)
        return json_response(_render(ctx, record), 202)
    for slot in slots:
        await ctx.repos.session_state.reset(slot)
    record_action(ctx, record.id, f"session state reset by {who.name}", who, slots=slots)
    return json_response(_render(ctx, record), 202)


async def bulk_action(request: web.Request, ctx: Context, who: Principal) -> web.Response:
    body = await read_json(request, BulkAction)
    state = AdminState.ENABLED if body.action == "enable" else AdminState.DISABLED
    records = await ctx.repos.adapters.set_admin_state(None if body.all else body.ids, state)
    verb = "enabled" if state is AdminState.ENABLED else "disabled"
    for record in records:
        ctx.cache.put(record)
        record_action(
            ctx, record.id, f"{verb} by {who.name}", who, admin_state=state.value, bulk=True
        )
    ctx.wake_leader()
    return json_response({"items": _adapters(ctx, records)}, 202)


async def list_events(request: web.Request, ctx: Context, _p: Principal) -> web.Response:
    check_query(request, ("limit", "before"))
    limit = query_int(request, "limit", minimum=1, maximum=1000)
    before = query_int(request, "before", minimum=1, maximum=2**63 - 1)
    record = await _load(ctx, request.match_info["id"])
    events = await ctx.repos.events.list_all(
        record.id, limit=100 if limit is None else limit, before_id=before
    )
    items = [
        {
            "id": e.id,
            "time": iso_time(e.time),
            "level": e.level.value,
            "category": e.category.value,
            "description": e.description,
            "details": e.details,
        }
        for e in events
    ]
    return json_response({"items": items})


async def list_pods(_r: web.Request, ctx: Context, _p: Principal) -> web.Response:
    snapshot, check_ins = ctx.node.snapshot(), ctx.last_check_in()
    items = []
    for pod in sorted(snapshot.pods.values(), key=lambda p: p.pod_id):
        data = pod_json(pod, snapshot, check_ins.get(pod.pod_id))
        data["last_heartbeat"] = iso_time(data["last_heartbeat"])
        items.append(data)
    return json_response({"items": items})


async def get_cluster(_r: web.Request, ctx: Context, _p: Principal) -> web.Response:
    """Leader and replicas by node id; ``leader_id`` of the Raft status is an address."""
    status, snapshot = ctx.node.status(), ctx.node.snapshot()
    leader = snapshot.replicas.get(status.leader_id) if status.leader_id else None
    replicas = [
        {
            "id": r.node_id,
            "api_url": r.api_url,
            "role": "leader" if r.raft_address == status.leader_id else "follower",
        }
        for r in sorted(snapshot.replicas.values(), key=lambda r: r.node_id)
    ]
    body = {"leader": leader.node_id if leader else None, "term": status.term, "replicas": replicas}
    return json_response(body)


# --- routes ---------------------------------------------------------------------------

_A = ("adapters",)
# Not "bulk": that path is its own resource, and a wrong method on it must say POST only.
_ONE = "/api/v1/adapters/{id:(?!bulk$)[^/]+}"
DEFAULT_PAGE = 500
MAX_PAGE = 1000
CURSOR_CHARS = 128  # a cursor is an adapter name (at most 128 characters)
_LIST_QUERY = (
    QueryParam(
        "limit",
        f"Adapters per page, 1-{MAX_PAGE} (default {DEFAULT_PAGE}).",
        minimum=1,
        maximum=MAX_PAGE,
    ),
    QueryParam(
        "cursor", "The `next_cursor` of the previous page.", kind="string", max_length=CURSOR_CHARS
    ),
    QueryParam("configs", "false: leave each adapter's `config` out (null).", kind="boolean"),
)
_EVENT_QUERY = (
    QueryParam("limit", "Events per page, 1-1000 (default 100).", minimum=1, maximum=1000),
    QueryParam("before", "Only events with a smaller id (the last id of the previous page).",
               minimum=1),
)  # fmt: skip

# fmt: off
ADAPTER_TABLE: RouteTable = [
    (RouteSpec("GET", "/api/v1/adapters", "List adapters with their status, by name, a page "
               "at a time", "viewer", response=AdapterPage, tags=_A, query=_LIST_QUERY),
     list_adapters),
    (RouteSpec("POST", "/api/v1/adapters", "Create an adapter (DISABLED)", "admin",
               request=AdapterCreate, response=AdapterOut, success_status=201, tags=_A),
     create_adapter),
    (RouteSpec("POST", "/api/v1/adapters/bulk", "Enable or disable many adapters", "operator",
               request=BulkAction, response=AdapterList, success_status=202, tags=_A),
     bulk_action),
    (RouteSpec("GET", _ONE, "One adapter", "viewer", response=AdapterOut, tags=_A), get_adapter),
    (RouteSpec("PATCH", _ONE, "Update an adapter's configuration", "admin",
               request=AdapterPatch, response=AdapterOut, tags=_A), patch_adapter),
    (RouteSpec("DELETE", _ONE, "Delete a DISABLED adapter", "admin", success_status=204,
               tags=_A), delete_adapter),
    (RouteSpec("POST", f"{_ONE}/enable", "Enable an adapter", "operator", response=AdapterOut,
               success_status=202, tags=_A), enable_adapter),
    (RouteSpec("POST", f"{_ONE}/disable", "Disable an adapter", "operator", response=AdapterOut,
               success_status=202, tags=_A), disable_adapter),
    (RouteSpec("POST", f"{_ONE}/reset", "Reset the adapter's session state", "operator",
               response=AdapterOut, success_status=202, tags=_A), reset_adapter),
    (RouteSpec("GET", f"{_ONE}/events", "The adapter's event log, newest first", "viewer",
               response=EventList, tags=_A, query=_EVENT_QUERY), list_events),
    (RouteSpec("GET", "/api/v1/pods", "Registered adapter pods and their sessions", "viewer",
               response=PodList, tags=("pods",)), list_pods),
    (RouteSpec("GET", "/api/v1/cluster", "Raft leader, term and replicas", "viewer",
               response=ClusterOut, tags=("cluster",)), get_cluster),
]
# fmt: on

_TABLES = (*ADAPTER_TABLE, *ARTIFACT_TABLE, *TOKEN_TABLE, *PLACEMENT_TABLE)
ADMIN_ROUTES: list[RouteSpec] = [spec for spec, _ in _TABLES]


def add_admin_routes(app: web.Application) -> None:
    """Register every admin route, each behind authentication and its spec's role."""
    install_auth(app)
    follow_revocations(app)
    for spec, handler in _TABLES:
        app.router.add_route(spec.method, spec.path, guarded(Role(spec.role), handler))
