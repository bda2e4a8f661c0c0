"""API tokens with roles; only a SHA-256 of each token is stored, never the token."""

from __future__ import annotations

import enum
import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from persistence.adapters import check_name
from persistence.changefeed import CHANNEL
from persistence.db import Database
from protocol.errors import ConflictError, NotFoundError
from protocol.values import canonical_id


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
        try:
            row = await self._db.fetchrow(
                f"INSERT INTO api_tokens (name, token_sha256, role) VALUES ($1, $2, $3) "
                f"RETURNING {_COLUMNS}",
                name,
                hash_token(token),
                role.value,
            )
        except ConflictError:  # names stay taken after revocation: the log names them
            raise ConflictError(f"a token named {name!r} already exists") from None
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
        await self._revoke("name = $1", name, f"no live token named {name!r}")

    async def revoke_id(self, token_id: str) -> TokenRecord:
        """Revoke the token with id `token_id` (NotFoundError when none is live)."""
        missing = f"no live token with id {token_id!r}"
        canonical = canonical_id(token_id)
        if canonical is None:
            raise NotFoundError(missing)
        return await self._revoke("id = $1::uuid", canonical, missing)

    async def _revoke(self, where: str, value: str, missing: str) -> TokenRecord:
        """Revoke and notify the change feed in one transaction, so every replica drops the
        token from its cache at commit (there is no trigger on api_tokens)."""
        async with self._db.transaction() as conn:
            row = await conn.fetchrow(
                f"UPDATE api_tokens SET revoked_at = now() WHERE {where} AND revoked_at IS NULL "
                f"RETURNING {_COLUMNS}",
                value,
            )
            if row is None:
                raise NotFoundError(missing)
            payload = json.dumps({"table": "api_tokens", "op": "update", "key": row["id"]})
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        return _record(row)

    async def list_all(self) -> list[TokenRecord]:
        rows = await self._db.fetch(f"SELECT {_COLUMNS} FROM api_tokens ORDER BY name")
        return [_record(r) for r in rows]
