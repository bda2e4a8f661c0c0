"""The admin API's artifacts (versioned blobs, raw bodies) and plugins (connector types).

An upload is the raw request body; its Content-Type is kept as the artifact's media type
(metadata: `media_type`, and `X-Raftorch-Media-Type` on a fetch), and each upload of a
name is its next version. A fetch always answers `application/octet-stream` as an
attachment: whatever an uploader calls it, a browser never renders an artifact (an HTML
file with a script would otherwise run with the Portal's origin). Artifacts live in
PostgreSQL only, so these calls answer 503 while it is down.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import msgspec
from aiohttp import hdrs, web

from persistence.artifacts import ArtifactInfo
from protocol.admin import ArtifactList, ArtifactOut, PluginList
from protocol.errors import ValidationError
from protocol.values import NAME_RE
from raftorch.api.context import Context
from raftorch.api.edge import (
    AuthedHandler,
    Principal,
    check_query,
    iso_time,
    json_response,
    query_int,
    read_body,
    record_action,
)
from raftorch.api.openapi import QueryParam, RouteSpec

RouteTable = Sequence[tuple[RouteSpec, AuthedHandler]]
Time = Annotated[datetime, msgspec.Meta(tz=True)]
DEFAULT_MEDIA_TYPE = "application/octet-stream"
MEDIA_TYPE_HEADER = "X-Raftorch-Media-Type"
MAX_VERSION = 2**31 - 1
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}"
_MEDIA_TYPE = re.compile(f"{_TOKEN}/{_TOKEN}")


def _info(info: ArtifactInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "version": info.version,
        "sha256": info.sha256,
        "media_type": info.media_type,
        "size": info.size,
        "created_at": iso_time(info.created_at),
    }


async def list_artifacts(_r: web.Request, ctx: Context, _p: Principal) -> web.Response:
    infos = await ctx.repos.artifacts.list_all()
    return json_response({"items": [_info(i) for i in infos]})


async def upload_artifact(request: web.Request, ctx: Context, who: Principal) -> web.Response:
    name = request.match_info["name"]
    content = await read_body(request)
    if not content:
        raise ValidationError("artifact content must not be empty")
    media_type = request.headers.get(hdrs.CONTENT_TYPE, "").strip() or DEFAULT_MEDIA_TYPE
    if len(media_type) > 255 or not _MEDIA_TYPE.fullmatch(media_type.split(";")[0].strip()):
        raise ValidationError("Content-Type must be a media type such as application/xml")
    info = await ctx.repos.artifacts.put(name, content, media_type)
    record_action(
        ctx,
        None,
        f"artifact {name} version {info.version} uploaded by {who.name}",
        who,
        artifact=name,
        version=info.version,
        sha256=info.sha256,
    )
    location = {"Location": f"/api/v1/artifacts/{name}?version={info.version}"}
    return json_response(_info(info), 201, location)


async def fetch_artifact(request: web.Request, ctx: Context, _p: Principal) -> web.Response:
    check_query(request, ("version",))
    version = query_int(request, "version", minimum=1, maximum=MAX_VERSION)
    artifact = await ctx.repos.artifacts.get(request.match_info["name"], version)
    info = artifact.info
    headers = {
        hdrs.CONTENT_TYPE: DEFAULT_MEDIA_TYPE,
        hdrs.CONTENT_DISPOSITION: f'attachment; filename="{info.name}"',
        "X-Content-Type-Options": "nosniff",
        MEDIA_TYPE_HEADER: info.media_type,
        "X-Artifact-Version": str(info.version),
        hdrs.ETAG: f'"{info.sha256}"',
    }
    return web.Response(body=artifact.content, headers=headers)


async def delete_artifact(request: web.Request, ctx: Context, who: Principal) -> web.Response:
    name = request.match_info["name"]
    versions = await ctx.repos.artifacts.delete(name)
    description = f"artifact {name} deleted by {who.name}"
    record_action(ctx, None, description, who, artifact=name, versions=versions)
    return web.Response(status=204)


async def list_plugins(_r: web.Request, ctx: Context, _p: Principal) -> web.Response:
    plugins = await ctx.repos.plugins.list_all()
    items = [
        {
            "connector": p.connector,
            "version": p.version,
            "entry_point": p.entry_point,
            "first_seen": iso_time(p.first_seen),
            "last_seen": iso_time(p.last_seen),
        }
        for p in plugins
    ]
    return json_response({"items": items})


_T = ("artifacts",)
_ONE = "/api/v1/artifacts/{name}"
_NAME = (("name", NAME_RE.pattern),)
_VERSION = (QueryParam("version", "Version to fetch (default: the latest).", minimum=1,
                       maximum=MAX_VERSION),)  # fmt: skip

# fmt: off
ARTIFACT_TABLE: RouteTable = [
    (RouteSpec("GET", "/api/v1/artifacts", "List artifact versions (no content)", "viewer",
               response=ArtifactList, tags=_T), list_artifacts),
    (RouteSpec("POST", _ONE, "Upload a new version (raw body; Content-Type = media type)",
               "admin", response=ArtifactOut, request_content="*/*", success_status=201,
               tags=_T, path_patterns=_NAME), upload_artifact),
    (RouteSpec("GET", _ONE, "Fetch an artifact's content (always as an octet-stream "
               "attachment; the uploaded type is in X-Raftorch-Media-Type)", "viewer",
               response_content=DEFAULT_MEDIA_TYPE, tags=_T, query=_VERSION,
               path_patterns=_NAME), fetch_artifact),
    (RouteSpec("DELETE", _ONE, "Delete every version (409 while an adapter uses it)", "admin",
               success_status=204, tags=_T, path_patterns=_NAME), delete_artifact),
    (RouteSpec("GET", "/api/v1/plugins", "Connector types pods have advertised", "viewer",
               response=PluginList, tags=("plugins",)), list_plugins),
]
# fmt: on
