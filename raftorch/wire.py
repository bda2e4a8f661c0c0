"""Wire schemas of the pod API and the admin API, shared with the adapter runtime.

Bodies are validated with msgspec at the edge: unknown fields, wrong types and
out-of-range values are rejected with a message naming the field, before anything
changes. Pod bodies are msgpack (unpacked with msgpack; JSON accepted); admin
bodies are JSON.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar

import msgpack
import msgspec

from persistence.errors import ValidationError

MSGPACK = "application/msgpack"
JSON = "application/json"

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Text = Annotated[str, msgspec.Meta(max_length=1000)]
Epoch = Annotated[int, msgspec.Meta(ge=0, le=2**62)]


class Strict(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every request body: unknown fields are errors."""


# --- pod API ------------------------------------------------------------------------


class ConnectorOffer(Strict):
    type: Name
    version: Annotated[str, msgspec.Meta(max_length=64)] = ""


class SessionReport(Strict):
    slot: Name
    epoch: Epoch
    status: Literal["CLAIMING", "ACTIVE", "ERROR", "STOPPED"] = "CLAIMING"
    detail: Text = ""


class RegisterRequest(Strict):
    pod_id: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")]
    address: Annotated[str, msgspec.Meta(max_length=255)] = ""
    connectors: list[ConnectorOffer] = []
    capacity: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 100
    labels: dict[Name, Annotated[str, msgspec.Meta(max_length=128)]] = {}
    sessions: list[SessionReport] = []


class RegisterReply(msgspec.Struct, kw_only=True):
    pod_id: str
    credential: str
    lease_ttl_seconds: float
    heartbeat_interval_seconds: float
    term: int
    leader: str | None


class HeartbeatRequest(Strict):
    pod_id: Name
    sessions: list[SessionReport] = []


class Assignment(msgspec.Struct, kw_only=True):
    slot: str
    adapter_id: str
    role: Literal["ACTIVE", "STANDBY"]
    epoch: int
    connector: str
    config: dict[str, Any]
    artifacts: list[str]


class StopOrder(msgspec.Struct, kw_only=True):
    slot: str
    epoch: int
    reason: str


class HeartbeatReply(msgspec.Struct, kw_only=True):
    term: int
    leader: str | None
    lease_ttl_seconds: float
    version: str
    revision: int  # entries applied to the state the assignments were read from
    assignments: list[Assignment]
    stop: list[StopOrder]


class AssignmentsReply(msgspec.Struct, kw_only=True):
    version: str
    revision: int  # entries applied to the state the assignments were read from
    term: int
    leader: str | None
    assignments: list[Assignment]


class ReleasedSession(Strict):
    slot: Name
    epoch: Epoch


class ReleaseRequest(Strict):
    pod_id: Name
    sessions: list[ReleasedSession] = []
    drain: bool = False
    leave: bool = False


class ReleaseReply(msgspec.Struct, kw_only=True):
    released: list[str]
    term: int


T = TypeVar("T")


def decode(body: bytes, content_type: str, kind: type[T]) -> T:
    """Parse and validate a request body; any problem is a ValidationError naming it."""
    try:
        if content_type == MSGPACK:
            raw: Any = msgpack.unpackb(body, raw=False) if body else {}
        else:
            raw = json.loads(body) if body else {}
    except RecursionError:  # the parsers' answer to very deep nesting
        raise ValidationError("request body is nested too deeply") from None
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as exc:
        kind_name = "msgpack" if content_type == MSGPACK else "JSON"
        raise ValidationError(f"request body is not valid {kind_name}: {exc}") from None
    if not isinstance(raw, dict):
        raise ValidationError("request body must be an object")
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as exc:
        raise ValidationError(f"invalid request body: {exc}") from None


def encode(value: Any, content_type: str) -> bytes:
    if content_type == MSGPACK:
        packed: bytes = msgpack.packb(msgspec.to_builtins(value))
        return packed
    return msgspec.json.encode(value)
