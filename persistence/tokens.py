"""API tokens with roles; only a SHA-256 of each token is stored, never the token."""

from __future__ import annotations

import enum
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from persistence.adapters import check_name
from persistence.db import Database
from protocol.errors import NotFoundError


class Role(enum.StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    name: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def hash_token(token: str) -> str:
    """Tokens are 256-bit random strings, so a plain SHA-256 is enough (no password KDF)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return "rt_" + secrets.token_urlsafe(32)


_COLUMNS = "id::text AS id, name, role, created_at, last_used_at, revoked_at"


def _record(row: asyncpg.Record) -> TokenRecord:
    return TokenRecord(
        id=row["id"],
        name=row["name"],
        role=Role(row["role"]),
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )


class TokenRepository:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, name: str, role: Role) -> tuple[str, TokenRecord]:
        """A new token; the plain text is returned once and never stored."""
        check_name(name, "token name")
        token = new_token()
        row = await self._db.fetchrow(
            f"INSERT INTO api_tokens (name, token_sha256, role) VALUES ($1, $2, $3) "
            f"RETURNING {_COLUMNS}",
            name,
            hash_token(token),
            role.value,
        )
        assert row is not None
        return token, _record(row)

    async def verify(self, token: str) -> TokenRecord | None:
        """The live token record matching `token`, or None; notes when it was used."""
        row = await self._db.fetchrow(
            f"""UPDATE api_tokens SET last_used_at = now()
                WHERE token_sha256 = $1 AND revoked_at IS NULL RETURNING {_COLUMNS}""",
            hash_token(token),
        )
        return _record(row) if row else None

    async def revoke(self, name: str) -> None:
        result = await self._db.execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE name = $1 AND revoked_at IS NULL",
            name,
        )
        if result.endswith(" 0"):
            raise NotFoundError(f"no live token named {name!r}")

    async def list_all(self) -> list[TokenRecord]:
        rows = await self._db.fetch(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY name")
        return [_record(r) for r in rows]
