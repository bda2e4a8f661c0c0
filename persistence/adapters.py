"""Adapter configurations: the durable record of what should run, and how."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from persistence.db import Connection, Database
from protocol.errors import ConflictError, NotFoundError, ValidationError
from protocol.values import NAME_RE, AdminState, DeploymentMode, canonical_id


@dataclass(frozen=True, slots=True)
class AdapterRecord:
    id: str
    name: str
    connector: str
    mode: DeploymentMode
    instances: int
    config: dict[str, Any]
    artifacts: tuple[str, ...]
    admin_state: AdminState
    revision: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AdapterChanges:
    """A partial update; None means "leave as is"."""

    connector: str | None = None
    mode: DeploymentMode | None = None
    instances: int | None = None
    config: Mapping[str, Any] | None = None
    artifacts: Sequence[str] | None = None


_COLUMNS = (
    "id::text AS id, name, connector, mode, instances, config, artifacts, admin_state, "
    "revision, created_at, updated_at"
)


def _record(row: asyncpg.Record) -> AdapterRecord:
    return AdapterRecord(
        id=row["id"],
        name=row["name"],
        connector=row["connector"],
        mode=DeploymentMode(row["mode"]),
        instances=row["instances"],
        config=dict(row["config"]),
        artifacts=tuple(row["artifacts"]),
        admin_state=AdminState(row["admin_state"]),
        revision=row["revision"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _check_instances(mode: DeploymentMode, instances: int) -> None:
    if mode is not DeploymentMode.SCALE_OUT and instances != 1:
        raise ValidationError(f"instances must be 1 for mode {mode.value}, got {instances}")


def check_name(name: str, what: str = "adapter name") -> None:
    """Names are 1-128 characters of letters, digits, '.', '_' and '-'."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValidationError(
            f"{what} {name!r} is invalid: use 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def _check_uuid(adapter_id: str) -> str:
    """The id in canonical form; NotFoundError when it is not an adapter id at all."""
    found = canonical_id(adapter_id)
    if found is None:
        raise NotFoundError(f"adapter {adapter_id!r} does not exist") from None
    return found


class AdapterRepository:
    """CRUD over `adapters`; every change bumps `revision` and notifies the change feed."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(
        self,
        name: str,
        connector: str,
        mode: DeploymentMode,
        config: Mapping[str, Any],
        *,
        instances: int = 1,
        artifacts: Sequence[str] = (),
    ) -> AdapterRecord:
        """A new adapter, always DISABLED. A taken name raises ConflictError."""
        check_name(name)
        _check_instances(mode, instances)
        try:
            row = await self._db.fetchrow(
                f"""INSERT INTO adapters (name, connector, mode, instances, config, artifacts)
                    VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_COLUMNS}""",
                name,
                connector,
                mode.value,
                instances,
                dict(config),
                list(artifacts),
            )
        except ConflictError:
            raise ConflictError(f"an adapter named {name!r} already exists") from None
        assert row is not None  # INSERT ... RETURNING always yields the row
        return _record(row)

    async def get(self, adapter_id: str) -> AdapterRecord:
        _check_uuid(adapter_id)
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM adapters WHERE id = $1", adapter_id)
        if row is None:
            raise NotFoundError(f"adapter {adapter_id!r} does not exist")
        return _record(row)

    async def get_many(self, adapter_ids: list[str]) -> list[AdapterRecord]:
        """The adapters of `adapter_ids` that exist (in no particular order), one query."""
        wanted = [found for i in adapter_ids if (found := canonical_id(i)) is not None]
        if not wanted:
            return []
        rows = await self._db.fetch(
            f"SELECT {_COLUMNS} FROM adapters WHERE id = ANY($1::uuid[])", wanted
        )
        return [_record(r) for r in rows]

    async def get_by_name(self, name: str) -> AdapterRecord:
        row = await self._db.fetchrow(f"SELECT {_COLUMNS} FROM adapters WHERE name = $1", name)
        if row is None:
            raise NotFoundError(f"adapter named {name!r} does not exist")
        return _record(row)

    async def list_all(self) -> list[AdapterRecord]:
        """Every adapter by name; this is also the change feed's full resync call."""
        rows = await self._db.fetch(f"SELECT {_COLUMNS} FROM adapters ORDER BY name")
        return [_record(r) for r in rows]

    async def update(
        self, adapter_id: str, changes: AdapterChanges, *, expected_revision: int | None = None
    ) -> AdapterRecord:
        """Apply a partial update atomically; a revision mismatch raises ConflictError."""
        async with self._db.transaction() as conn:
            current = await self._locked(conn, adapter_id)
            if expected_revision is not None and current.revision != expected_revision:
                raise ConflictError(
                    f"adapter {adapter_id} is at revision {current.revision}, "
                    f"not {expected_revision}"
                )
            mode = changes.mode or current.mode
            instances = changes.instances if changes.instances is not None else current.instances
            _check_instances(mode, instances)
            row = await conn.fetchrow(
                f"""UPDATE adapters SET connector = $2, mode = $3, instances = $4, config = $5,
                        artifacts = $6, revision = revision + 1, updated_at = now()
                    WHERE id = $1 RETURNING {_COLUMNS}""",
                adapter_id,
                changes.connector or current.connector,
                mode.value,
                instances,
                dict(changes.config) if changes.config is not None else current.config,
                list(changes.artifacts) if changes.artifacts is not None else current.artifacts,
            )
        assert row is not None
        return _record(row)

    async def set_admin_state(
        self, adapter_ids: Sequence[str] | None, state: AdminState
    ) -> list[AdapterRecord]:
        """Set the state of the named adapters (None = all) in one transaction.

        An unknown id raises NotFoundError and changes nothing. Adapters already in
        `state` are returned unchanged (no revision bump).
        """
        if adapter_ids is not None:  # compare in PostgreSQL's canonical text form
            adapter_ids = [_check_uuid(a) for a in adapter_ids]
        async with self._db.transaction() as conn:
            if adapter_ids is not None:
                found = await conn.fetch(
                    "SELECT id::text AS id FROM adapters WHERE id = ANY($1::uuid[]) FOR UPDATE",
                    list(adapter_ids),
                )
                missing = set(adapter_ids) - {r["id"] for r in found}
                if missing:
                    raise NotFoundError(f"adapters do not exist: {', '.join(sorted(missing))}")
            await conn.execute(
                """UPDATE adapters SET admin_state = $2, revision = revision + 1, updated_at = now()
                   WHERE ($1::uuid[] IS NULL OR id = ANY($1::uuid[])) AND admin_state <> $2""",
                None if adapter_ids is None else list(adapter_ids),
                state.value,
            )
            rows = await conn.fetch(
                f"""SELECT {_COLUMNS} FROM adapters
                    WHERE $1::uuid[] IS NULL OR id = ANY($1::uuid[]) ORDER BY name""",
                None if adapter_ids is None else list(adapter_ids),
            )
        return [_record(r) for r in rows]

    async def delete(self, adapter_id: str) -> None:
        """Delete a DISABLED adapter; an ENABLED one raises ConflictError."""
        async with self._db.transaction() as conn:
            current = await self._locked(conn, adapter_id)
            if current.admin_state is not AdminState.DISABLED:
                raise ConflictError(f"adapter {current.name!r} must be disabled before deletion")
            await conn.execute("DELETE FROM adapters WHERE id = $1", adapter_id)

    async def _locked(self, conn: Connection, adapter_id: str) -> AdapterRecord:
        _check_uuid(adapter_id)
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM adapters WHERE id = $1 FOR UPDATE", adapter_id
        )
        if row is None:
            raise NotFoundError(f"adapter {adapter_id!r} does not exist")
        return _record(row)
