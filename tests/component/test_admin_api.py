"""The admin API through the real aiohttp app, real PostgreSQL and a hand-driven Raft state.

`harness()` (also used by test_admin_auth and test_admin_bad_input) builds a replica's
`Context` from real parts: a `Database`, the repositories, a loaded `ConfigCache`, the
event write-behind buffer, and a `FakeNode` whose snapshot is a real `OwnershipState`
that tests change by applying commands, as Raft would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDictProxy
from prometheus_client import CollectorRegistry

from persistence.db import Database, PoolSettings
from persistence.writebehind import WriteBehind
from protocol.admin import (
    AdapterList,
    AdapterOut,
    AdapterPage,
    ArtifactList,
    ArtifactOut,
    ClusterOut,
    EventList,
    PluginList,
    PodList,
)
from protocol.values import SlotStatus
from raftorch.api.admin import ADMIN_ROUTES, add_admin_routes
from raftorch.api.context import Context, Repositories
from raftorch.api.edge import TokenCache, create_app
from raftorch.api.openapi import add_openapi_route, app_routes
from raftorch.config import config_from_mapping
from raftorch.config.cache import ConfigCache
from raftorch.core.model import (
    AnnounceReplica,
    ApplyResult,
    Command,
    Grant,
    RegisterPod,
    ReportStatus,
    slot_id,
)
from raftorch.core.ownership import OwnershipState, Snapshot
from raftorch.raft.node import RaftStatus

ADMIN = "rt_test-bootstrap-admin-token"
SELF = "127.0.0.1:4001"
FAST = PoolSettings(
    connect_timeout_seconds=1.0,
    connect_attempts=2,
    retry_backoff_initial_seconds=0.05,
    retry_backoff_max_seconds=0.1,
    command_timeout_seconds=2.0,
)


class FakeNode:
    """The Raft side of a replica: a real `OwnershipState`, changed by `apply`."""

    def __init__(self) -> None:
        self.state = OwnershipState()
        self.leader: str | None = SELF
        self.term = 1
        self._requests = 0

    def snapshot(self) -> Snapshot:
        return self.state.snapshot()

    def status(self) -> RaftStatus:
        applied = self.state.applied_entries
        is_leader = self.leader == SELF
        return RaftStatus(SELF, self.leader, self.term, is_leader, applied, applied, True)

    def apply(self, *commands: Command) -> ApplyResult:
        self._requests += 1
        result = self.state.apply(f"req-{self._requests}", 1000.0 + self._requests, commands)
        assert result.ok, result
        return result


@dataclass
class Reply:
    status: int
    body: Any
    headers: CIMultiDictProxy[str]


@dataclass
class Harness:
    client: TestClient[web.Request, web.Application]
    app: web.Application
    ctx: Context
    node: FakeNode
    check_ins: dict[str, float] = field(default_factory=dict)
    wakes: list[None] = field(default_factory=list)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = ADMIN,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """`body` is sent as JSON; `data` raw. JSON answers are decoded, others are bytes."""
        sent = dict(headers or {})
        if token is not None:
            sent.setdefault("Authorization", f"Bearer {token}")
        if body is not None:
            data = json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        async with self.client.request(method, path, data=data, headers=sent) as resp:
            raw = await resp.read()
            decoded = json.loads(raw) if resp.content_type == "application/json" else raw
            return Reply(resp.status, decoded, resp.headers)

    async def ok(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        reply = await self.call(method, path, body, **kw)
        assert reply.status < 300, (method, path, reply.status, reply.body)
        return reply.body


@asynccontextmanager
async def harness(
    dsn: str,
    *,
    api: Mapping[str, object] | None = None,
    token_cache: TokenCache | None = None,
    load_cache: bool = True,
    routes: Callable[[web.Application], None] | None = None,
) -> AsyncIterator[Harness]:
    """An admin app on a fresh replica context; `api` overrides settings of [api]."""
    config = config_from_mapping({"api": {"admin_token": ADMIN, **(api or {})}})
    async with Database(dsn, FAST) as db:
        repos = Repositories.on(db)
        cache = ConfigCache(db, dsn, FAST, resync_interval_seconds=30.0)
        if load_cache:
            await cache.resync()
        node = FakeNode()
        events = WriteBehind("events", repos.events.append)
        check_ins: dict[str, float] = {}
        wakes: list[None] = []
        ctx = Context(
            config, db, repos, cache, events, node, CollectorRegistry(),
            last_check_in=lambda: check_ins, wake_leader=lambda: wakes.append(None),
        )  # fmt: skip
        app = create_app(ctx, token_cache=token_cache)
        add_admin_routes(app)
        add_openapi_route(app, ADMIN_ROUTES)
        if routes is not None:
            routes(app)
        async with TestClient(TestServer(app)) as client:
            yield Harness(client, app, ctx, node, check_ins, wakes)


def conforms(value: Any, kind: type) -> None:
    """`value` has the documented shape: it converts to `kind`, with no extra fields."""
    msgspec.convert(value, kind)
    _no_extra_fields(value, kind)


def _no_extra_fields(value: Any, kind: Any) -> None:
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        fields = {f.name: f.type for f in msgspec.structs.fields(kind)}
        assert set(value) == set(fields), (kind.__name__, set(value) ^ set(fields))
        for name, sub in fields.items():
            _no_extra_fields(value[name], sub)
    elif getattr(kind, "__origin__", None) is list:
        for item in value:
            _no_extra_fields(item, kind.__args__[0])


# A `fix` config the orchestrator accepts (it checks them: protocol/fix.py).
FIX_CONFIG = {"role": "initiator", "begin_string": "FIX.4.4", "sender_comp_id": "US",
              "target_comp_id": "LSE", "host": "lse", "port": 9001,
              "heartbeat_interval_seconds": 30}  # fmt: skip
NEW = {"name": "fix-lse", "connector": "fix", "mode": "single", "config": FIX_CONFIG}
# An adapter whose connector deletes its state on `reset` (a `fix` adapter's owner resets
# through its own fenced writes instead: tests/component/test_fix_admin.py).
QUEUE = {"name": "orders", "connector": "pg-queue-consumer", "mode": "single",
         "config": {"queue_table": "q", "sink_table": "s"}}  # fmt: skip


@pytest.fixture
async def h(pg_dsn: str) -> AsyncIterator[Harness]:
    async with harness(pg_dsn) as running:
        yield running


async def test_create_gives_a_disabled_inactive_adapter_in_list_and_get(h: Harness) -> None:
    created = await h.call("POST", "/api/v1/adapters", NEW)
    assert created.status == 201
    adapter = created.body
    conforms(adapter, AdapterOut)
    assert created.headers["Location"] == f"/api/v1/adapters/{adapter['id']}"
    assert (adapter["admin_state"], adapter["status"]) == ("DISABLED", "INACTIVE")
    assert (adapter["name"], adapter["connector"], adapter["mode"]) == ("fix-lse", "fix", "single")
    assert (adapter["instances"], adapter["config"], adapter["revision"]) == (1, FIX_CONFIG, 1)
    assert adapter["owner_pod"] is None and adapter["epoch"] is None
    assert adapter["standby_pods"] == [] and adapter["last_check_in"] is None

    listed = await h.ok("GET", "/api/v1/adapters")
    conforms(listed, AdapterPage)
    assert listed["items"] == [adapter] and listed["next_cursor"] is None
    assert await h.ok("GET", f"/api/v1/adapters/{adapter['id']}") == adapter


async def test_patch_applies_changes_and_refuses_a_stale_revision(h: Harness) -> None:
    adapter = await h.ok("POST", "/api/v1/adapters", NEW)
    path = f"/api/v1/adapters/{adapter['id']}"
    moved = {**FIX_CONFIG, "host": "lse-2"}
    patched = await h.ok("PATCH", path, {"config": moved, "revision": 1})
    assert (patched["config"], patched["revision"]) == (moved, 2)
    assert len(h.wakes) == 1

    stale = await h.call("PATCH", path, {"connector": "other", "revision": 1})
    assert stale.status == 409 and stale.body["error"]["code"] == "conflict"
    assert (await h.ok("GET", path))["connector"] == "fix"

    scaled = await h.ok("PATCH", path, {"mode": "scale_out", "instances": 3})
    assert (scaled["mode"], scaled["instances"], scaled["revision"]) == ("scale_out", 3, 3)
    assert (await h.ok("GET", "/api/v1/adapters"))["items"] == [scaled]


async def test_enable_disable_and_delete_only_when_disabled(h: Harness) -> None:
    adapter = await h.ok("POST", "/api/v1/adapters", NEW)
    path = f"/api/v1/adapters/{adapter['id']}"

    enabled = await h.call("POST", f"{path}/enable")
    assert enabled.status == 202
    assert (enabled.body["admin_state"], enabled.body["status"]) == ("ENABLED", "CLAIMING")
    assert enabled.body["status_detail"] == "no live pod offers connector fix"
    assert len(h.wakes) == 1

    refused = await h.call("DELETE", path)
    assert refused.status == 409 and refused.body["error"]["code"] == "conflict"
    assert (await h.ok("GET", path))["admin_state"] == "ENABLED"

    disabled = await h.call("POST", f"{path}/disable")
    assert disabled.status == 202
    assert (disabled.body["admin_state"], disabled.body["status"]) == ("DISABLED", "INACTIVE")

    deleted = await h.call("DELETE", path)
    assert (deleted.status, deleted.body) == (204, b"")
    gone = await h.call("GET", path)
    assert gone.status == 404 and gone.body["error"]["code"] == "not_found"
    assert (await h.ok("GET", "/api/v1/adapters"))["items"] == []


async def test_status_owner_and_pods_follow_the_raft_state(h: Harness) -> None:
    adapter = await h.ok("POST", "/api/v1/adapters", {**NEW, "mode": "active_passive"})
    await h.ok("POST", f"/api/v1/adapters/{adapter['id']}/enable")
    slot = slot_id(adapter["id"], 0)
    h.node.apply(
        RegisterPod("pod-a", "inc-a", "10.0.0.1:9000", frozenset({"fix"}), 10, (("zone", "z1"),)),
        RegisterPod("pod-b", "inc-b", "10.0.0.2:9000", frozenset({"fix"}), 10),
    )
    [(_, _, epoch)] = h.node.apply(Grant(slot, adapter["id"], "pod-a", 0)).granted
    h.node.apply(ReportStatus(slot, "pod-a", epoch, SlotStatus.ACTIVE))
    h.check_ins["pod-a"] = 1_800_000_000.5

    shown = await h.ok("GET", f"/api/v1/adapters/{adapter['id']}")
    conforms(shown, AdapterOut)
    assert (shown["status"], shown["owner_pod"], shown["epoch"]) == ("ACTIVE", "pod-a", epoch)
    assert shown["last_check_in"] == "2027-01-15T08:00:00.500000+00:00"

    pods = await h.ok("GET", "/api/v1/pods")
    conforms(pods, PodList)
    assert [p["id"] for p in pods["items"]] == ["pod-a", "pod-b"]
    pod_a, pod_b = pods["items"]
    assert pod_a["state"] == "ACTIVE" and pod_a["labels"] == {"zone": "z1"}
    assert pod_a["sessions"] == [
        {"slot": slot, "role": "ACTIVE", "epoch": epoch, "status": "ACTIVE"}
    ]
    assert pod_a["last_heartbeat"] == "2027-01-15T08:00:00.500000+00:00"
    assert (pod_b["sessions"], pod_b["last_heartbeat"]) == ([], None)


async def test_the_list_pages_by_name_and_can_leave_configs_out(h: Harness) -> None:
    names = [f"page-{i:02d}" for i in range(7)]
    for name in reversed(names):
        await h.ok("POST", "/api/v1/adapters", {**NEW, "name": name})
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):  # 7 adapters, 3 a page: 3 pages, then the cursor runs out
        query = "limit=3&configs=false" + (f"&cursor={cursor}" if cursor else "")
        page = await h.ok("GET", f"/api/v1/adapters?{query}")
        conforms(page, AdapterPage)
        assert len(page["items"]) <= 3 and all(a["config"] is None for a in page["items"])
        seen += [a["name"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == names
    full = await h.ok("GET", "/api/v1/adapters?limit=1")
    assert full["items"][0]["config"] == NEW["config"] and full["next_cursor"] == names[0]
    for query in ("limit=0", "limit=1001", "configs=no", "limit=x", "page=2"):
        reply = await h.call("GET", f"/api/v1/adapters?{query}")
        assert reply.status == 400, (query, reply.body)


async def test_bulk_by_ids_and_all_and_unknown_id_changes_nothing(h: Harness) -> None:
    ids = [
        (await h.ok("POST", "/api/v1/adapters", {**NEW, "name": f"a{i}"}))["id"] for i in range(3)
    ]

    some = await h.call("POST", "/api/v1/adapters/bulk", {"action": "enable", "ids": ids[:2]})
    assert some.status == 202
    conforms(some.body, AdapterList)
    assert [a["admin_state"] for a in some.body["items"]] == ["ENABLED", "ENABLED"]
    states = {a["name"]: a["admin_state"] for a in (await h.ok("GET", "/api/v1/adapters"))["items"]}
    assert states == {"a0": "ENABLED", "a1": "ENABLED", "a2": "DISABLED"}

    missing = "00000000-0000-0000-0000-000000000000"
    unknown = await h.call(
        "POST", "/api/v1/adapters/bulk", {"action": "enable", "ids": [ids[2], missing]}
    )
    assert unknown.status == 404 and missing in unknown.body["error"]["message"]
    assert (await h.ok("GET", f"/api/v1/adapters/{ids[2]}"))["admin_state"] == "DISABLED"

    every = await h.ok("POST", "/api/v1/adapters/bulk", {"action": "disable", "all": True})
    assert [a["admin_state"] for a in every["items"]] == ["DISABLED"] * 3
    listed = await h.ok("GET", "/api/v1/adapters")
    assert {a["admin_state"] for a in listed["items"]} == {"DISABLED"}
    assert len(h.wakes) == 2


async def test_reset_clears_the_state_of_every_slot_and_keeps_the_fence(h: Harness) -> None:
    adapter = await h.ok("POST", "/api/v1/adapters", {**QUEUE, "mode": "scale_out", "instances": 2})
    other = await h.ok("POST", "/api/v1/adapters", {**QUEUE, "name": "other"})
    store = h.ctx.repos.session_state
    slots = [slot_id(adapter["id"], i) for i in range(2)] + [slot_id(other["id"], 0)]
    for slot in slots:
        await store.put(slot, "seq", 42, 7, "pod-a")

    reset = await h.call("POST", f"/api/v1/adapters/{adapter['id']}/reset")
    assert reset.status == 202 and reset.body["id"] == adapter["id"]
    assert [await store.get_all(s) for s in slots] == [{}, {}, {"seq": 42}]
    fence = await store.fence(slots[0])
    assert fence is not None and fence.epoch == 7


async def test_events_are_recorded_per_action_newest_first_and_paged(h: Harness) -> None:
    adapter = await h.ok("POST", "/api/v1/adapters", QUEUE)
    path = f"/api/v1/adapters/{adapter['id']}"
    await h.ok("POST", f"{path}/enable")
    await h.ok("POST", f"{path}/disable")
    await h.ok("POST", f"{path}/reset")
    assert await h.ctx.events.flush_once()

    events = await h.ok("GET", f"{path}/events")
    conforms(events, EventList)
    descriptions = [e["description"] for e in events["items"]]
    assert descriptions == [
        "session state reset by bootstrap",
        "disabled by bootstrap",
        "enabled by bootstrap",
        "created by bootstrap",
    ]
    newest = events["items"][0]
    assert (newest["level"], newest["category"]) == ("info", "action")
    assert newest["details"] == {"by": "bootstrap", "slots": [slot_id(adapter["id"], 0)]}
    assert newest["time"].endswith("+00:00")

    first = await h.ok("GET", f"{path}/events?limit=2")
    rest = await h.ok("GET", f"{path}/events?limit=2&before={first['items'][-1]['id']}")
    assert first["items"] + rest["items"] == events["items"]


async def test_cluster_names_the_leader_by_node_id(h: Harness) -> None:
    h.node.apply(
        AnnounceReplica("n1", SELF, "http://10.0.0.1:8080"),
        AnnounceReplica("n2", "127.0.0.1:4002", "http://10.0.0.2:8080"),
        AnnounceReplica("n3", "127.0.0.1:4003", "http://10.0.0.3:8080"),
    )
    h.node.leader, h.node.term = "127.0.0.1:4002", 7

    cluster = await h.ok("GET", "/api/v1/cluster")
    conforms(cluster, ClusterOut)
    assert (cluster["leader"], cluster["term"]) == ("n2", 7)
    assert cluster["replicas"] == [
        {"id": "n1", "api_url": "http://10.0.0.1:8080", "role": "follower"},
        {"id": "n2", "api_url": "http://10.0.0.2:8080", "role": "leader"},
        {"id": "n3", "api_url": "http://10.0.0.3:8080", "role": "follower"},
    ]

    h.node.leader = None
    assert (await h.ok("GET", "/api/v1/cluster"))["leader"] is None


async def test_artifacts_are_versioned_fetched_and_protected_while_referenced(h: Harness) -> None:
    xml = {"Content-Type": "text/xml; charset=utf-8"}
    first = await h.call("POST", "/api/v1/artifacts/FIX44", data=b"<fix v='1'/>", headers=xml)
    assert first.status == 201
    conforms(first.body, ArtifactOut)
    assert (first.body["version"], first.body["size"]) == (1, 12)
    assert first.body["media_type"] == "text/xml; charset=utf-8"
    second = await h.ok("POST", "/api/v1/artifacts/FIX44", data=b"<fix v='2'/>", headers=xml)
    assert second["version"] == 2

    listed = await h.ok("GET", "/api/v1/artifacts")
    conforms(listed, ArtifactList)
    assert [(a["name"], a["version"]) for a in listed["items"]] == [("FIX44", 1), ("FIX44", 2)]

    latest = await h.call("GET", "/api/v1/artifacts/FIX44")
    assert (latest.status, latest.body) == (200, b"<fix v='2'/>")
    # Served as a download whatever the uploader called it; the uploaded type is metadata.
    assert latest.headers["Content-Type"] == "application/octet-stream"
    assert latest.headers["Content-Disposition"] == 'attachment; filename="FIX44"'
    assert latest.headers["X-Content-Type-Options"] == "nosniff"
    assert latest.headers["X-Raftorch-Media-Type"] == "text/xml; charset=utf-8"
    assert latest.headers["X-Artifact-Version"] == "2"
    assert latest.headers["ETag"] == f'"{second["sha256"]}"'
    assert (await h.ok("GET", "/api/v1/artifacts/FIX44?version=1")) == b"<fix v='1'/>"

    adapter = await h.ok("POST", "/api/v1/adapters", {**NEW, "artifacts": ["FIX44"]})
    assert adapter["artifacts"] == ["FIX44"]
    in_use = await h.call("DELETE", "/api/v1/artifacts/FIX44")
    assert in_use.status == 409 and "fix-lse" in in_use.body["error"]["message"]

    await h.ok("DELETE", f"/api/v1/adapters/{adapter['id']}")
    assert (await h.call("DELETE", "/api/v1/artifacts/FIX44")).status == 204
    assert (await h.ok("GET", "/api/v1/artifacts"))["items"] == []
    assert (await h.call("GET", "/api/v1/artifacts/FIX44")).status == 404


async def test_plugins_list_the_recorded_connector_types(h: Harness) -> None:
    await h.ctx.repos.plugins.record("fix", "1.2.0", "raftorch_fix:Connector")
    plugins = await h.ok("GET", "/api/v1/plugins")
    conforms(plugins, PluginList)
    [plugin] = plugins["items"]
    assert (plugin["connector"], plugin["version"]) == ("fix", "1.2.0")
    assert plugin["entry_point"] == "raftorch_fix:Connector"


async def test_openapi_document_covers_exactly_the_app_routes(h: Harness) -> None:
    reply = await h.call("GET", "/api/openapi.json", token=None)
    assert reply.status == 200
    doc = reply.body
    assert doc["openapi"] == "3.1.0" and doc["info"]["version"]
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert documented == app_routes(h.app)

    schemas = doc["components"]["schemas"]
    refs = set(_refs(doc))
    assert refs and all(r.startswith("#/components/") for r in refs)
    for ref in refs:
        section, name = ref.split("/")[2:]
        assert name in doc["components"][section], ref
    assert {"AdapterCreate", "AdapterPatch", "BulkAction", "AdapterOut", "ErrorBody"} <= set(
        schemas
    )
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"] and op["summary"], (method, path)
            assert "4XX" in op["responses"]
            expected: list[Any] = [] if path == "/api/openapi.json" else [{"bearer": []}]
            assert op["security"] == expected, (method, path)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []
