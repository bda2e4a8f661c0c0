"""Wire schemas of the admin API: request bodies (validated at the edge) and answers.

The OpenAPI document is generated from these types, so it cannot drift from the code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from protocol.codec import Strict, check_finite
from protocol.values import (
    NAME_RE,
    PRINTABLE_RE,
    AdapterStatus,
    AdminState,
    DeploymentMode,
    EventCategory,
    EventLevel,
    PodState,
    SlotStatus,
)

# --- request bodies -----------------------------------------------------------------

AdapterName = Annotated[str, msgspec.Meta(pattern=NAME_RE.pattern, max_length=128)]
Connector = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=PRINTABLE_RE.pattern)]
Instances = Annotated[int, msgspec.Meta(ge=1, le=1000)]
ArtifactRefs = Annotated[list[AdapterName], msgspec.Meta(max_length=100)]
Time = Annotated[datetime, msgspec.Meta(tz=True)]

MAX_CONFIG_BYTES = 64 * 1024
"""An adapter's `config`, as JSON, is at most this big: settings, not data (files such as
a FIX data dictionary go in artifacts). Every replica keeps every config in memory."""


def check_config_bounds(config: dict[str, Any]) -> None:
    """Finite numbers only, and at most `MAX_CONFIG_BYTES` of JSON (ValueError otherwise)."""
    check_finite(config, "config")
    size = len(msgspec.json.encode(config))
    if size > MAX_CONFIG_BYTES:
        raise ValueError(
            f"config is {size} bytes of JSON, more than the {MAX_CONFIG_BYTES} allowed: "
            "put large files in artifacts"
        )


class AdapterCreate(Strict):
    """A new adapter; it starts DISABLED."""

    name: AdapterName
    connector: Connector
    mode: DeploymentMode
    config: dict[str, Any]
    """Connector settings (any JSON object)."""
    instances: Instances = 1
    """Session slots; must be 1 unless mode is scale_out."""
    artifacts: ArtifactRefs = msgspec.field(default_factory=list)
    """Names of artifacts the connector needs; they must exist."""

    def __post_init__(self) -> None:
        check_config_bounds(self.config)


class AdapterPatch(Strict):
    """A partial update: absent (or null) fields stay as they are."""

    connector: Connector | None = None
    mode: DeploymentMode | None = None
    instances: Instances | None = None
    config: dict[str, Any] | None = None
    artifacts: ArtifactRefs | None = None
    revision: Annotated[int, msgspec.Meta(ge=1)] | None = None
    """When given, the update is refused (409) unless the adapter is at this revision."""

    def __post_init__(self) -> None:
        if not self.changed_fields():
            raise ValueError("the patch changes nothing: give at least one field to change")
        if self.config is not None:
            check_config_bounds(self.config)

    def changed_fields(self) -> list[str]:
        names = ("connector", "mode", "instances", "config", "artifacts")
        return [n for n in names if getattr(self, n) is not None]


class BulkAction(Strict):
    """Enable or disable the listed adapters, or all of them, in one transaction."""

    action: Literal["enable", "disable"]
    ids: Annotated[list[str], msgspec.Meta(max_length=10_000)] | None = None
    all: bool = False

    def __post_init__(self) -> None:
        if (self.ids is not None) == self.all:
            raise ValueError('give either "ids" or "all": true, not both')


# --- response bodies (documentation; the handlers build the same shapes) ------------


class SlotOut(msgspec.Struct, kw_only=True):
    slot: str
    owner_pod: str | None
    epoch: int | None
    standby_pods: list[str]
    status: SlotStatus
    detail: str


class AdapterOut(msgspec.Struct, kw_only=True):
    id: str
    name: str
    connector: str
    mode: DeploymentMode
    instances: int
    admin_state: AdminState
    status: AdapterStatus
    status_detail: str
    owner_pod: str | None
    epoch: int | None
    standby_pods: list[str]
    last_check_in: Time | None
    """Last renewal confirmed for the owner pod (known on the leader only)."""
    config: dict[str, Any] | None
    """null in a list asked for with `configs=false`."""
    artifacts: list[str]
    revision: int
    created_at: Time
    updated_at: Time
    slots: list[SlotOut]


class AdapterList(msgspec.Struct, kw_only=True):
    items: list[AdapterOut]


class AdapterPage(msgspec.Struct, kw_only=True):
    items: list[AdapterOut]
    next_cursor: str | None
    """Pass as `cursor` for the next page; null on the last one."""


class EventOut(msgspec.Struct, kw_only=True):
    id: int
    time: Time
    level: EventLevel
    category: EventCategory
    description: str
    details: dict[str, Any]


class EventList(msgspec.Struct, kw_only=True):
    items: list[EventOut]
    """Newest first; pass the last id as ``before`` for the next page."""


class PodSession(msgspec.Struct, kw_only=True):
    slot: str
    role: Literal["ACTIVE", "STANDBY"]
    epoch: int | None
    status: str


class PodOut(msgspec.Struct, kw_only=True):
    id: str
    state: PodState
    sessions: list[PodSession]
    last_heartbeat: Time | None
    """Last renewal confirmed (known on the leader only)."""
    address: str
    connectors: list[str]
    capacity: int
    labels: dict[str, str]


class PodList(msgspec.Struct, kw_only=True):
    items: list[PodOut]


class ReplicaOut(msgspec.Struct, kw_only=True):
    id: str
    api_url: str
    role: Literal["leader", "follower"]


class ClusterOut(msgspec.Struct, kw_only=True):
    leader: str | None
    """Node id of the Raft leader; null while there is none (or it has not announced itself)."""
    term: int
    replicas: list[ReplicaOut]


# --- artifacts and plugins ----------------------------------------------------------


class ArtifactOut(msgspec.Struct, kw_only=True):
    """One version of an artifact, without its content."""

    name: str
    version: int
    sha256: str
    media_type: str
    size: int
    created_at: Time


class ArtifactList(msgspec.Struct, kw_only=True):
    items: list[ArtifactOut]
    """Every version of every artifact, by name then version."""


class PluginOut(msgspec.Struct, kw_only=True):
    connector: str
    version: str
    entry_point: str
    first_seen: Time
    last_seen: Time


class PluginList(msgspec.Struct, kw_only=True):
    items: list[PluginOut]
