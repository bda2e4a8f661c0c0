"""The aiohttp application of a replica: admin API, Portal, pod API, OpenAPI, health probes."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from raftorch.api.admin import ADMIN_ROUTES, add_admin_routes
from raftorch.api.changes import CHANGE_ROUTES, CHANGE_STREAM, add_change_routes
from raftorch.api.cluster_health import CLUSTER_HEALTH_ROUTES, PeerLinks, add_cluster_health_route
from raftorch.api.context import Context
from raftorch.api.edge import error_middleware, install_edge, json_response
from raftorch.api.openapi import RouteSpec, add_openapi_route
from raftorch.api.pods import POD_ROUTES, PodApi
from raftorch.api.portal import PORTAL_ROUTES, add_portal_routes

Readiness = Callable[[], tuple[bool, str]]

PROBE_ROUTES = [
    RouteSpec("GET", "/healthz", "Process alive", role="none", tags=("probes",)),
    RouteSpec(
        "GET",
        "/readyz",
        "Member of a Raft cluster with a known leader and configuration loaded",
        role="none",
        tags=("probes",),
    ),
    RouteSpec("GET", "/metrics", "Prometheus metrics", role="none", tags=("probes",)),
]


def build_app(
    ctx: Context, pods: PodApi, *, ready: Readiness, links: PeerLinks | None = None
) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware], client_max_size=ctx.config.api.max_body_bytes
    )
    install_edge(app, ctx)
    add_admin_routes(app)
    add_change_routes(app, pods.signals.any)
    add_cluster_health_route(app, ready, links)
    add_portal_routes(app)
    pods.add_routes(app)

    async def healthz(_request: web.Request) -> web.Response:
        return json_response({"status": "alive"})

    async def readyz(_request: web.Request) -> web.Response:
        ok, why = ready()
        return json_response({"ready": ok, "reason": why}, status=200 if ok else 503)

    async def metrics(_request: web.Request) -> web.Response:
        body = generate_latest(ctx.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    documented = [*ADMIN_ROUTES, *CHANGE_ROUTES, *CLUSTER_HEALTH_ROUTES, *POD_ROUTES,
                  *PROBE_ROUTES, *PORTAL_ROUTES]  # fmt: skip
    add_openapi_route(app, documented)

    async def end_long_polls(app: web.Application) -> None:
        pods.signals.close()
        app[CHANGE_STREAM].close()

    app.on_shutdown.append(end_long_polls)
    return app
