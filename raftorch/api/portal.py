"""The Portal: the web UI every replica serves at ``/``, from files shipped in the package.

The UI is plain HTML, CSS and ES modules in `portal_static/` (no build step, nothing
from a CDN). It talks only to this replica's admin API with the bearer token the user
signs in with, so any replica — follower or leader — serves the same Portal. Every
answer carries a strict Content-Security-Policy: scripts and styles from this origin
only, no inline script, no eval, and Trusted Types required, so a string can never be
turned into markup by assigning ``innerHTML``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import hdrs, web

from protocol.errors import NotFoundError
from raftorch.api.openapi import RouteSpec

STATIC_PACKAGE = "raftorch.api"
STATIC_FOLDER = "portal_static"
ASSET_PREFIX = "/portal/"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    hdrs.CACHE_CONTROL: "no-cache",
}
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every shipped Portal file by name (read once: they are a few dozen kilobytes)."""
    folder = resources.files(STATIC_PACKAGE).joinpath(STATIC_FOLDER)
    assets: dict[str, Asset] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if not entry.is_file() or suffix not in _MEDIA_TYPES:
            continue
        body = entry.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[entry.name] = Asset(body, _MEDIA_TYPES[suffix], etag)
    if "index.html" not in assets:
        raise RuntimeError(f"the Portal files are missing from {folder}")
    return assets


def _answer(request: web.Request, asset: Asset) -> web.Response:
    headers = {**SECURITY_HEADERS, hdrs.ETAG: asset.etag}
    if request.headers.get(hdrs.IF_NONE_MATCH) == asset.etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=asset.body, headers={**headers, hdrs.CONTENT_TYPE: asset.media_type})


PORTAL_ROUTES = [
    RouteSpec("GET", "/", "The Portal (web UI); sign in with an API token", role="none",
              response_content="text/html", tags=("portal",)),
    RouteSpec("GET", ASSET_PREFIX + "{asset}", "A file of the Portal (script, style, icon)",
              role="none", response_content="*/*", tags=("portal",)),
]  # fmt: skip


def add_portal_routes(app: web.Application, assets: dict[str, Asset] | None = None) -> None:
    """Serve the Portal at ``/`` and its files under ``/portal/``."""
    files = assets if assets is not None else load_assets()
    index = files["index.html"]

    async def portal(request: web.Request) -> web.Response:
        return _answer(request, index)

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["asset"]
        found = files.get(name)
        if found is None or name == "index.html":
            raise NotFoundError(f"the Portal has no file {name!r}")
        return _answer(request, found)

    app.router.add_get("/", portal)
    app.router.add_get(ASSET_PREFIX + "{asset}", asset)
