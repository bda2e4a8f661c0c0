"""The HTTP edge every API shares: error rendering, JSON replies, body limits, bearer auth.

Handlers raise `RaftorchError`s and `error_middleware` renders them (and aiohttp's own
404/405/413) as ``{"error": {"code", "message"}}``; anything else becomes a logged 500
that never shows a traceback. Admin callers authenticate with a bearer token: the
bootstrap admin token from the configuration, or a token stored (hashed) in PostgreSQL,
remembered for `TOKEN_CACHE_SECONDS` so reads keep working while PostgreSQL is down
(a revocation reaches the cache at once through the change feed).
"""

from __future__ import annotations

import collections
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
from aiohttp import hdrs, web

from persistence.events import NewEvent
from persistence.tokens import Role, hash_token
from protocol.codec import JSON, decode
from protocol.errors import RaftorchError, UnavailableError, ValidationError
from protocol.values import EventCategory, EventLevel
from raftorch.api.context import Context

log = logging.getLogger(__name__)

__all__ = [
    "CTX",
    "TOKEN_CACHE",
    "BodyTooLargeError",
    "ForbiddenError",
    "Principal",
    "Role",
    "TokenCache",
    "UnauthorizedError",
    "authenticate",
    "bearer_token",
    "check_query",
    "create_app",
    "ctx_of",
    "error_middleware",
    "error_response",
    "guarded",
    "install_auth",
    "install_edge",
    "iso_time",
    "json_response",
    "query_int",
    "query_str",
    "read_body",
    "read_json",
    "record_action",
    "require",
]

TOKEN_CACHE_SECONDS = 30.0
MAX_TOKEN_CHARS = 512

CTX = web.AppKey("ctx", Context)


def ctx_of(request: web.Request) -> Context:
    """The replica's `Context` (looked up through sub-applications too)."""
    # The app's own mapping first: `config_dict` builds a ChainMap proxy on every access,
    # on every request (about 2% of a leader's samples at 1,000 heartbeats a second).
    ctx = request.app.get(CTX)
    return ctx if ctx is not None else request.config_dict[CTX]


# --- errors -------------------------------------------------------------------------


class UnauthorizedError(RaftorchError):
    """No credential, a malformed one, or one nobody issued (answered with WWW-Authenticate)."""

    code = "unauthorized"
    http_status = 401


class ForbiddenError(RaftorchError):
    """The caller is known but its role does not allow this call."""

    code = "forbidden"
    http_status = 403


class BodyTooLargeError(ValidationError):
    """The request body is larger than ``api.max_body_bytes``."""

    code = "body_too_large"
    http_status = 413


_HTTP_CODES: Mapping[int, str] = {
    400: "invalid_input",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """`data` (builtins or msgspec structs) encoded as JSON."""
    return web.Response(
        body=msgspec.json.encode(data), status=status, content_type=JSON, headers=headers
    )


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def _render_error(request: web.Request, exc: RaftorchError) -> web.Response:
    headers: dict[str, str] = {}
    if exc.retriable:
        headers[hdrs.RETRY_AFTER] = "1"
    if isinstance(exc, UnauthorizedError):
        headers[hdrs.WWW_AUTHENTICATE] = "Bearer"
    if exc.http_status == 500:
        # Unexpected at this layer (e.g. an untranslated database error): its message may
        # carry internals, so it goes to the log and the caller gets the generic line.
        log.error("request failed method=%s path=%s", request.method, request.path, exc_info=exc)
        return error_response(500, exc.code, "internal error", headers)
    if exc.http_status >= 500:
        log.warning("request failed method=%s path=%s: %s", request.method, request.path, exc)
    return error_response(exc.http_status, exc.code, exc.message, headers)


def _render_http(request: web.Request, exc: web.HTTPException) -> web.Response:
    default_text = f"{exc.status}: {exc.reason}"
    if exc.text and exc.text != default_text:
        message = exc.text
    elif exc.status == 404:
        message = f"no such route: {request.method} {request.path}"
    elif exc.status == 405:
        allowed = exc.headers.get(hdrs.ALLOW, "")
        message = f"{request.method} is not allowed on {request.path} (allowed: {allowed})"
    else:
        message = exc.reason
    skip = {hdrs.CONTENT_TYPE, hdrs.CONTENT_LENGTH}
    headers = {k: v for k, v in exc.headers.items() if k not in skip}
    code = _HTTP_CODES.get(exc.status, f"http_{exc.status}")
    return error_response(exc.status, code, message, headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as ``{"error": {"code", "message"}}`` with a 4xx/5xx status."""
    try:
        return await handler(request)
    except RaftorchError as exc:
        return _render_error(request, exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _render_http(request, exc)
    except Exception:
        log.exception("unhandled error method=%s path=%s", request.method, request.path)
        return error_response(500, "internal", "internal error")


SERVER_NAME = "raftorch"
"""The `Server` header: no library or version an attacker could look vulnerabilities up by."""


async def _harden_headers(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers[hdrs.SERVER] = SERVER_NAME
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def install_edge(app: web.Application, ctx: Context) -> None:
    """What every application serving raftorch's APIs has: its context and safe headers."""
    app[CTX] = ctx
    app.on_response_prepare.append(_harden_headers)


# --- bodies and query strings -------------------------------------------------------


async def read_body(
    request: web.Request, limit: int | None = None, what: str = "api.max_body_bytes"
) -> bytes:
    """The whole body, refused with 413 beyond ``api.max_body_bytes`` (or a smaller `limit`,
    named by `what`) before more of it than that is read."""
    overall = ctx_of(request).config.api.max_body_bytes
    if limit is None or limit >= overall:
        limit, what = overall, "api.max_body_bytes"
    too_large = f"request body is larger than {limit} bytes ({what})"
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLargeError(too_large)
    try:
        if limit == overall:  # aiohttp enforces it (client_max_size) and keeps the body
            body = await request.read()
        else:
            body = await _read_at_most(request, limit + 1)
    except web.HTTPRequestEntityTooLarge:
        raise BodyTooLargeError(too_large) from None
    if len(body) > limit:
        raise BodyTooLargeError(too_large)
    return body


async def _read_at_most(request: web.Request, size: int) -> bytes:
    chunks: list[bytes] = []
    got = 0
    while got < size and (chunk := await request.content.read(size - got)):
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


T = TypeVar("T")


async def read_json(request: web.Request, kind: type[T]) -> T:
    """The JSON body validated as `kind` (whatever the Content-Type says)."""
    return decode(await read_body(request), JSON, kind)


def check_query(request: web.Request, allowed: Collection[str]) -> None:
    """Unknown or repeated query parameters are input errors, not silently ignored."""
    for name in request.query:
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise ValidationError(f"unknown query parameter {name!r} (known: {known})")
        if len(request.query.getall(name)) > 1:
            raise ValidationError(f"query parameter {name!r} is given more than once")


def query_int(request: web.Request, name: str, *, minimum: int, maximum: int) -> int | None:
    """The integer query parameter `name`, or None when absent; 400 when not in range."""
    text = request.query.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValidationError(
            f"query parameter {name!r} must be an integer, got {text!r}"
        ) from None
    if not minimum <= value <= maximum:
        raise ValidationError(
            f"query parameter {name!r} must be between {minimum} and {maximum}, got {value}"
        )
    return value


def query_str(request: web.Request, name: str, *, max_length: int) -> str | None:
    """The text query parameter `name`, or None when absent; 400 when longer than documented."""
    text = request.query.get(name)
    if text is not None and len(text) > max_length:
        raise ValidationError(f"query parameter {name!r} must be at most {max_length} characters")
    return text


def iso_time(value: datetime | float | None) -> str | None:
    """A timestamp (aware datetime or wall-clock seconds) as ISO-8601 in UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return datetime.fromtimestamp(value, UTC).isoformat()


# --- authentication -----------------------------------------------------------------

_RANK: Mapping[Role, int] = {Role.VIEWER: 0, Role.OPERATOR: 1, Role.ADMIN: 2}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a token's name and role (``bootstrap`` for the configured token)."""

    name: str
    role: Role
    token_id: str | None = None
    """The stored token's id (None for the bootstrap token)."""


class TokenCache:
    """Principals of recently verified tokens, keyed by the token's SHA-256.

    An entry is trusted for `ttl_seconds` without asking PostgreSQL, so a known token
    keeps working that long while PostgreSQL is down. A revocation does not wait for
    that: the change feed calls `forget` (and `clear` after every resync), and a
    verification that started before a `forget` or `clear` is not cached (`generation`).
    Bounded: the oldest entries go first. Runs on the event loop only.
    """

    def __init__(
        self,
        ttl_seconds: float = TOKEN_CACHE_SECONDS,
        *,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_seconds
        self._capacity = capacity
        self._clock = clock
        self._entries: collections.OrderedDict[str, tuple[float, Principal]] = (
            collections.OrderedDict()
        )
        self.generation = 0
        """Bumped by every `forget` and `clear`."""

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() >= entry[0]:
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: str, principal: Principal, generation: int | None = None) -> None:
        """Remember `principal`, unless `generation` (read before verifying) is outdated."""
        if generation is not None and generation != self.generation:
            return
        self._entries.pop(key, None)
        self._entries[key] = (self._clock() + self._ttl, principal)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def forget(self, token_id: str) -> None:
        """Drop the entries of stored token `token_id` (it was revoked)."""
        self.generation += 1
        stale = [k for k, (_, p) in self._entries.items() if p.token_id == token_id]
        for key in stale:
            del self._entries[key]

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


TOKEN_CACHE = web.AppKey("token_cache", TokenCache)


def install_auth(app: web.Application, cache: TokenCache | None = None) -> None:
    """Give `app` its token cache (once; call before the app starts)."""
    if TOKEN_CACHE not in app:
        app[TOKEN_CACHE] = cache or TokenCache()


def bearer_token(request: web.Request) -> str:
    """The token of ``Authorization: Bearer <token>``; 401 when missing or malformed."""
    header = request.headers.get(hdrs.AUTHORIZATION)
    if header is None:
        raise UnauthorizedError("authentication required: send 'Authorization: Bearer <token>'")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token or len(token) > MAX_TOKEN_CHARS:
        raise UnauthorizedError("malformed Authorization header: expected 'Bearer <token>'")
    return token


async def authenticate(request: web.Request, ctx: Context) -> Principal:
    """The caller behind the bearer token: 401 if unknown, 503 if it cannot be checked now."""
    token = bearer_token(request)
    bootstrap = ctx.config.api.admin_token
    if bootstrap is not None and hmac.compare_digest(
        token.encode("utf-8"), bootstrap.reveal().encode("utf-8")
    ):
        return Principal("bootstrap", Role.ADMIN)
    cache = request.config_dict.get(TOKEN_CACHE)
    if cache is None:
        raise RuntimeError("the application has no token cache: call install_auth(app)")
    key = hash_token(token)
    principal = cache.get(key)
    if principal is not None:
        return principal
    generation = cache.generation
    try:
        record = await ctx.repos.tokens.verify(token)
    except UnavailableError:
        raise UnavailableError("cannot check the token now: the database is unavailable") from None
    if record is None:
        raise UnauthorizedError("unknown or revoked token")
    principal = Principal(record.name, record.role, record.id)
    cache.put(key, principal, generation)
    return principal


def require(principal: Principal, role: Role) -> None:
    """403 unless `principal` has `role` or a higher one (admin > operator > viewer)."""
    if _RANK[principal.role] < _RANK[role]:
        raise ForbiddenError(
            f"{principal.name!r} has role {principal.role.value}; this call needs {role.value}"
        )


AuthedHandler = Callable[[web.Request, Context, Principal], Awaitable[web.StreamResponse]]


def guarded(role: Role, handler: AuthedHandler) -> Handler:
    """An aiohttp handler that authenticates, checks `role`, then calls `handler`."""

    async def run(request: web.Request) -> web.StreamResponse:
        ctx = ctx_of(request)
        principal = await authenticate(request, ctx)
        require(principal, role)
        return await handler(request, ctx, principal)

    run.__name__ = getattr(handler, "__name__", "handler")
    return run


def record_action(
    ctx: Context,
    adapter_id: str | None,
    description: str,
    principal: Principal,
    /,
    **details: Any,
) -> None:
    """Record a user's action in the event log (buffered: never waits for PostgreSQL)."""
    details = {"by": principal.name, **details}
    event = NewEvent(adapter_id, EventLevel.INFO, EventCategory.ACTION, description, details)
    ctx.events.add(event)


def create_app(ctx: Context, *, token_cache: TokenCache | None = None) -> web.Application:
    """An application with the error middleware, the body limit, the context and auth."""
    app = web.Application(
        middlewares=[error_middleware], client_max_size=ctx.config.api.max_body_bytes
    )
    install_edge(app, ctx)
    install_auth(app, token_cache)
    return app
