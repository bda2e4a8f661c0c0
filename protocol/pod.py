"""Wire schemas and header names of the pod API (register, heartbeat, assignments, release).

Shared by the orchestrator (which validates requests with them) and the pod agent (which
reads the answers with them).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from protocol.codec import Strict

LEADER_HEADER = "X-Raftorch-Leader"
"""On pod API answers: the leader's API URL, so a pod can go straight to it."""
FORWARDED_HEADER = "X-Raftorch-Forwarded"
"""On a request a follower relays to the leader (a relayed request is never relayed again)."""

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Text = Annotated[str, msgspec.Meta(max_length=1000)]
Epoch = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
LabelValue = Annotated[str, msgspec.Meta(max_length=128)]


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
    connectors: list[ConnectorOffer] = msgspec.field(default_factory=list)
    capacity: Annotated[int, msgspec.Meta(ge=0, le=100_000)] = 100
    labels: dict[Name, LabelValue] = msgspec.field(default_factory=dict)
    sessions: list[SessionReport] = msgspec.field(default_factory=list)


class RegisterReply(msgspec.Struct, kw_only=True):
    pod_id: str
    credential: str
    lease_ttl_seconds: float
    heartbeat_interval_seconds: float
    term: int
    leader: str | None
    safety_margin_seconds: float = 0.5
    """The pod's own lease ends this long before the leader's view of it."""
    fence_stop_seconds: float = 0.3
    """A self-fencing pod gives its sessions this long to stop (all at once)."""
    retry_interval_seconds: float = 0.1
    """An unacknowledged heartbeat is retried this often, across replicas."""


class HeartbeatRequest(Strict):
    pod_id: Name
    sessions: list[SessionReport] = msgspec.field(default_factory=list)
    """The pod's owned sessions (all of them when `complete`, else only those whose status
    changed since its last acknowledged heartbeat), then the ones it stopped."""
    complete: bool = True
    version: Annotated[str, msgspec.Meta(max_length=64)] = ""
    """The assignments version the pod has applied; an unchanged reply omits them."""


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
    unchanged: bool = False
    """The pod's assignments are still `version`: `assignments` is left empty."""


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
    sessions: list[ReleasedSession] = msgspec.field(default_factory=list)
    drain: bool = False
    leave: bool = False


class ReleaseReply(msgspec.Struct, kw_only=True):
    released: list[str]
    term: int
