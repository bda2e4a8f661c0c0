"""The admin API's tokens: create (the secret shown once), list, revoke; and who am I.

Tokens live in PostgreSQL (hashed, `persistence.tokens`). A revocation notifies the
change feed in its own transaction; `forget_revoked` turns that notification into a
`TokenCache.forget` on every replica, so a revoked token stops working everywhere at
once instead of when the cache entry runs out.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

import msgspec
from aiohttp import web

from persistence.changefeed import RESYNC, Change
from persistence.tokens import Role, TokenRecord
from protocol.codec import Strict
from protocol.values import NAME_RE
from raftorch.api.artifacts import RouteTable
from raftorch.api.context import Context
from raftorch.api.edge import (
    CTX,
    TOKEN_CACHE,
    Principal,
    TokenCache,
    iso_time,
    json_response,
    read_json,
    record_action,
)
from raftorch.api.openapi import RouteSpec

TOKENS_TABLE = "api_tokens"
Time = Annotated[datetime, msgspec.Meta(tz=True)]
TokenName = Annotated[str, msgspec.Meta(pattern=NAME_RE.pattern, max_length=128)]


class TokenCreate(Strict):
    """A new token for a person or a system; pick the lowest role that does the job."""

    name: TokenName
    role: Role


class TokenOut(msgspec.Struct, kw_only=True):
    """A token without its secret."""

    id: str
    name: str
    role: Role
    created_at: Time
    last_used_at: Time | None
    revoked_at: Time | None
    """Set once revoked; a revoked token is refused by every replica."""


class TokenCreated(msgspec.Struct, kw_only=True):
    id: str
    name: str
    role: Role
    token: str
    """The secret, shown this once: only its SHA-256 is stored."""
    created_at: Time


class TokenList(msgspec.Struct, kw_only=True):
    items: list[TokenOut]
    """By name, revoked ones included."""


class WhoAmI(msgspec.Struct, kw_only=True):
    name: str
    """The token's name (``bootstrap`` for ``api.admin_token``)."""
    role: Role


def _token(record: TokenRecord) -> dict[str, object]:
    return {
        "id": record.id,
        "name": record.name,
        "role": record.role.value,
        "created_at": iso_time(record.created_at),
        "last_used_at": iso_time(record.last_used_at),
        "revoked_at": iso_time(record.revoked_at),
    }


async def create_token(request: web.Request, ctx: Context, who: Principal) -> web.Response:
    body = await read_json(request, TokenCreate)
    secret, record = await ctx.repos.tokens.create(body.name, body.role)
    description = f"token {record.name} ({record.role.value}) created by {who.name}"
    record_action(ctx, None, description, who, token=record.name, role=record.role.value)
    answer = {
        "id": record.id,
        "name": record.name,
        "role": record.role.value,
        "token": secret,
        "created_at": iso_time(record.created_at),
    }
    return json_response(answer, 201, {"Cache-Control": "no-store"})


async def list_tokens(_r: web.Request, ctx: Context, _p: Principal) -> web.Response:
    return json_response({"items": [_token(r) for r in await ctx.repos.tokens.list_all()]})


async def revoke_token(request: web.Request, ctx: Context, who: Principal) -> web.Response:
    record = await ctx.repos.tokens.revoke_id(request.match_info["id"])
    request.config_dict[TOKEN_CACHE].forget(record.id)  # the feed tells the other replicas
    description = f"token {record.name} revoked by {who.name}"
    record_action(ctx, None, description, who, token=record.name, token_id=record.id)
    return web.Response(status=204)


async def whoami(_r: web.Request, _ctx: Context, who: Principal) -> web.Response:
    return json_response({"name": who.name, "role": who.role.value})


def forget_revoked(cache: TokenCache) -> Callable[[Change], None]:
    """A change-feed listener: a revoked token leaves `cache` at once; a resync (the feed
    reconnected, or its periodic full reload) clears it, in case a notification was lost."""

    def listen(change: Change) -> None:
        if change == RESYNC:
            cache.clear()
        elif change.table == TOKENS_TABLE:
            cache.forget(change.key)

    return listen


def follow_revocations(app: web.Application) -> None:
    """Keep `app`'s token cache in step with the replica's change feed."""
    app[CTX].cache.listeners.append(forget_revoked(app[TOKEN_CACHE]))


_T = ("tokens",)

# fmt: off
TOKEN_TABLE: RouteTable = [
    (RouteSpec("POST", "/api/v1/tokens", "Create a token (its secret is shown once)", "admin",
               request=TokenCreate, response=TokenCreated, success_status=201, tags=_T),
     create_token),
    (RouteSpec("GET", "/api/v1/tokens", "List tokens (no secrets)", "admin",
               response=TokenList, tags=_T), list_tokens),
    (RouteSpec("DELETE", "/api/v1/tokens/{id}", "Revoke a token (on every replica at once)",
               "admin", success_status=204, tags=_T), revoke_token),
    (RouteSpec("GET", "/api/v1/whoami", "The caller's token name and role", "viewer",
               response=WhoAmI, tags=_T), whoami),
]
# fmt: on
