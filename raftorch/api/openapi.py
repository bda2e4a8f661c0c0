"""The OpenAPI 3.1 document of the HTTP API, generated from route specs and msgspec types.

Every module that adds routes also exports a list of `RouteSpec`s; the application
passes all of them to `add_openapi_route`, which serves the document at
``GET /api/openapi.json``. Request and response schemas come from the very msgspec
structs the handlers validate with, so the document cannot drift from the code;
`app_routes` lets a test check that every registered route is documented.
"""

from __future__ import annotations

import http
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from aiohttp import web

from protocol import __version__
from protocol.codec import JSON, ErrorBody

RouteRole = Literal["admin", "operator", "viewer", "pod-bootstrap", "pod", "none"]

OPENAPI_PATH = "/api/openapi.json"
_REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[^}]*)?}")


@dataclass(frozen=True, slots=True)
class QueryParam:
    """One query-string parameter of a route."""

    name: str
    description: str
    kind: Literal["integer", "number", "string", "boolean"] = "integer"
    minimum: int | None = None
    maximum: int | None = None
    required: bool = False
    max_length: int | None = None


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One documented route: what it takes, what it answers, and who may call it.

    `request` and `response` are msgspec types (None: no JSON body). A raw body
    (an artifact) has `request=None` and a `request_content` other than JSON; a raw
    answer likewise has `response=None` and a `response_content` other than JSON.
    """

    method: str
    path: str
    summary: str
    role: RouteRole
    request: type | None = None
    response: type | None = None
    request_content: str = JSON
    success_status: int = 200
    tags: tuple[str, ...] = ()
    response_content: str = JSON
    query: tuple[QueryParam, ...] = ()
    also_content: tuple[str, ...] = ()
    """Other media types the body and the answer may come in (the pod routes: msgpack, and
    JSON for debugging; the answer is in the request's format)."""
    path_patterns: tuple[tuple[str, str], ...] = ()
    """(path parameter, the regex the handler holds it to) for parameters it checks."""


OPENAPI_ROUTE = RouteSpec("GET", OPENAPI_PATH, "This OpenAPI document", role="none", tags=("meta",))


def document_path(path: str) -> str:
    """The path as OpenAPI shows it: `{id:regex}` (aiohttp's constrained parameter) as `{id}`."""
    return _PATH_PARAM.sub(lambda m: "{" + m[1] + "}", path)


def _operation_id(route: RouteSpec) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", _PATH_PARAM.sub(r"\1", route.path)).strip("_")
    return f"{route.method.lower()}_{words}"


def _parameters(route: RouteSpec) -> list[dict[str, Any]]:
    patterns = dict(route.path_patterns)
    params: list[dict[str, Any]] = []
    for name in _PATH_PARAM.findall(route.path):
        schema: dict[str, Any] = {"type": "string"}
        if name in patterns:
            schema["pattern"] = patterns[name].replace("\\Z", "$")  # as in the components
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    for q in route.query:
        schema = {"type": q.kind}
        if q.minimum is not None:
            schema["minimum"] = q.minimum
        if q.maximum is not None:
            schema["maximum"] = q.maximum
        if q.max_length is not None:
            schema["maxLength"] = q.max_length
        params.append(
            {"name": q.name, "in": "query", "required": q.required, "description": q.description,
             "schema": schema}
        )  # fmt: skip
    return params


def _content(
    kind: type | None, media_type: str, refs: dict[type, Any], also: Sequence[str] = ()
) -> dict[str, Any] | None:
    if kind is not None:
        return {m: {"schema": refs[kind]} for m in (media_type, *also)}
    if media_type != JSON:
        return {media_type: {}}
    return None


def _operation(route: RouteSpec, refs: dict[type, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": _operation_id(route),
        "summary": route.summary,
        "description": f"Role: {route.role}.",
        "tags": list(route.tags),
        "x-raftorch-role": route.role,
        "security": [] if route.role == "none" else [{"bearer": []}],
    }
    if params := _parameters(route):
        op["parameters"] = params
    if body := _content(route.request, route.request_content, refs, route.also_content):
        op["requestBody"] = {"required": True, "content": body}
    success: dict[str, Any] = {"description": http.HTTPStatus(route.success_status).phrase}
    if answer := _content(route.response, route.response_content, refs, route.also_content):
        success["content"] = answer
    op["responses"] = {
        str(route.success_status): success,
        "4XX": {"$ref": "#/components/responses/Error"},
        "5XX": {"$ref": "#/components/responses/Error"},
    }
    return op


def openapi_document(
    routes: Sequence[RouteSpec], version: str, *, title: str = "raftorch API"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`; a route listed twice raises ValueError."""
    kinds: list[type] = [ErrorBody]
    for route in routes:
        kinds.extend(k for k in (route.request, route.response) if k and k not in kinds)
    schemas, components = msgspec.json.schema_components(kinds, ref_template=_REF)
    components = _json_schema_patterns(components)
    refs = dict(zip(kinds, schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operations = paths.setdefault(document_path(route.path), {})
        method = route.method.lower()
        if method in operations:
            raise ValueError(f"route {route.method} {route.path} is listed twice")
        operations[method] = _operation(route, refs)
    error = {"description": "Error", "content": {JSON: {"schema": refs[ErrorBody]}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "responses": {"Error": error},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _json_schema_patterns(value: Any) -> Any:
    """Patterns as JSON Schema reads them: Python's end anchor \\Z is $ there (JSON Schema's
    $ never matches before a trailing newline, Python's does; see `protocol.values`)."""
    if isinstance(value, dict):
        return {
            k: v.replace("\\Z", "$") if k == "pattern" and isinstance(v, str)
            else _json_schema_patterns(v)
            for k, v in value.items()
        }  # fmt: skip
    if isinstance(value, list):
        return [_json_schema_patterns(v) for v in value]
    return value


def add_openapi_route(
    app: web.Application, routes: Sequence[RouteSpec], *, version: str = __version__
) -> None:
    """Serve the document of `routes` (plus this route) at ``GET /api/openapi.json``."""
    documented = [*routes] if OPENAPI_ROUTE in routes else [*routes, OPENAPI_ROUTE]
    body = msgspec.json.encode(openapi_document(documented, version))

    async def openapi_json(_request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=JSON)

    app.router.add_route("GET", OPENAPI_PATH, openapi_json)


def app_routes(app: web.Application) -> set[tuple[str, str]]:
    """(METHOD, path template) of every route registered on `app`, HEAD excepted."""
    found: set[tuple[str, str]] = set()
    for route in app.router.routes():
        if route.method != "HEAD" and route.resource is not None:
            found.add((route.method, route.resource.canonical))
    return found
