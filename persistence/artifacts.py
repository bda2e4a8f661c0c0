"""Artifacts: versioned blobs (FIX data dictionaries, schemas) referenced by name."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from persistence.adapters import check_name
from persistence.db import Database
from protocol.errors import ConflictError, NotFoundError, ValidationError

MAX_ARTIFACT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    """An artifact version without its content."""

    name: str
    version: int
    sha256: str
    media_type: str
    size: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Artifact:
    info: ArtifactInfo
    content: bytes


_INFO = "name, version, sha256, media_type, octet_length(content) AS size, created_at"


def _info(row: asyncpg.Record) -> ArtifactInfo:
    return ArtifactInfo(
        name=row["name"],
        version=row["version"],
        sha256=row["sha256"],
        media_type=row["media_type"],
        size=row["size"],
        created_at=row["created_at"],
    )


class ArtifactRepository:
    """Upload new versions, read them back, delete when nothing references them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def put(self, name: str, content: bytes, media_type: str) -> ArtifactInfo:
        """Store `content` as the next version of `name` (version 1 for a new name)."""
        check_name(name, "artifact name")
        if len(content) > MAX_ARTIFACT_BYTES:
            raise ValidationError(
                f"artifact {name!r} is {len(content)} bytes; the limit is {MAX_ARTIFACT_BYTES}"
            )
        if not media_type or len(media_type) > 255:
            raise ValidationError("media_type must be 1-255 characters")
        digest = hashlib.sha256(content).hexdigest()
        async with self._db.transaction() as conn:
            # Serialise uploads of one name so two never pick the same version.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('artifact:' || $1))", name)
            row = await conn.fetchrow(
                f"""INSERT INTO artifacts (name, version, content, sha256, media_type)
                    SELECT $1, COALESCE(max(version), 0) + 1, $2, $3, $4
                    FROM artifacts WHERE name = $1
                    RETURNING {_INFO}""",
                name,
                content,
                digest,
                media_type,
            )
        assert row is not None
        return _info(row)

    async def get(self, name: str, version: int | None = None) -> Artifact:
        """One version, the latest when `version` is None."""
        row = await self._db.fetchrow(
            f"""SELECT {_INFO}, content FROM artifacts
                WHERE name = $1 AND ($2::int IS NULL OR version = $2)
                ORDER BY version DESC LIMIT 1""",
            name,
            version,
        )
        if row is None:
            what = f"version {version} of artifact {name!r}" if version else f"artifact {name!r}"
            raise NotFoundError(f"{what} does not exist")
        return Artifact(_info(row), bytes(row["content"]))

    async def list_all(self) -> list[ArtifactInfo]:
        """Every version of every artifact, by name then version."""
        rows = await self._db.fetch(f"SELECT {_INFO} FROM artifacts ORDER BY name, version")
        return [_info(r) for r in rows]

    async def delete(self, name: str) -> int:
        """Delete every version; refused with ConflictError while an adapter references it."""
        async with self._db.transaction() as conn:
            users = await conn.fetch(
                "SELECT name FROM adapters WHERE artifacts @> ARRAY[$1]::text[] ORDER BY name "
                "FOR SHARE",
                name,
            )
            if users:
                names = ", ".join(r["name"] for r in users)
                raise ConflictError(f"artifact {name!r} is used by adapters: {names}")
            result = await conn.execute("DELETE FROM artifacts WHERE name = $1", name)
        deleted = int(result.split()[-1])
        if deleted == 0:
            raise NotFoundError(f"artifact {name!r} does not exist")
        return deleted
