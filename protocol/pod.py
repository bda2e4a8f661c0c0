"""Wire schemas and header names of the pod API (register, heartbeat, assignments, release).

Shared by the orchestrator (which validates requests with them) and the pod agent (which
reads the answers with them).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from protocol.codec import Strict
from protocol.values import POD_ID_RE, PRINTABLE_RE, SLOT_RE

LEADER_HEADER = "X-Raftorch-Leader"
"""On pod API answers: the leader's API URL, so a pod can go straight to it."""
FORWARDED_HEADER = "X-Raftorch-Forwarded"
"""On a request a follower relays to the leader (a relayed request is never relayed again)."""
HEDGE_HEADER = "X-Raftorch-Hedge"
"""On a heartbeat a pod sent again to another replica while its first attempt is still
unanswered: a follower that still hears from the leader holds it a while before relaying
it (the first attempt is usually answered meanwhile, and the copy is then never sent)."""

PodId = Annotated[str, msgspec.Meta(pattern=POD_ID_RE.pattern, max_length=63)]
Slot = Annotated[str, msgspec.Meta(pattern=SLOT_RE.pattern, max_length=64)]
Word = Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=PRINTABLE_RE.pattern)]
"""A connector type or a label key: printable, 1-128 characters."""
Text = Annotated[str, msgspec.Meta(max_length=1000)]
Epoch = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
LabelValue = Annotated[str, msgspec.Meta(max_length=128, pattern=PRINTABLE_RE.pattern)]

MAX_CAPACITY = 100_000
MAX_LABELS = 64
MAX_CONNECTORS = 64
REPORT_SLACK = 16
"""A heartbeat may report up to twice the pod's capacity plus this: the sessions it holds
and the ones it has just stopped. More is refused (400) before any of it is looked at."""
MAX_REPORTS = 2 * MAX_CAPACITY + REPORT_SLACK


def report_limit(capacity: int) -> int:
    """How many sessions a heartbeat or release of a pod with `capacity` may carry."""
    return 2 * capacity + REPORT_SLACK


class ConnectorOffer(Strict):
    type: Word
    version: Annotated[str, msgspec.Meta(max_length=64, pattern=PRINTABLE_RE.pattern)] = ""


class SessionReport(Strict):
    slot: Slot
    epoch: Epoch
    status: Literal["CLAIMING", "ACTIVE", "ERROR", "STOPPED"] = "CLAIMING"
    detail: Text = ""


class RegisterRequest(Strict):
    pod_id: PodId
    address: Annotated[str, msgspec.Meta(max_length=255, pattern=PRINTABLE_RE.pattern)] = ""
    connectors: Annotated[list[ConnectorOffer], msgspec.Meta(max_length=MAX_CONNECTORS)] = (
        msgspec.field(default_factory=list)
    )
    capacity: Annotated[int, msgspec.Meta(ge=0, le=MAX_CAPACITY)] = 100
    labels: Annotated[dict[Word, LabelValue], msgspec.Meta(max_length=MAX_LABELS)] = msgspec.field(
        default_factory=dict
    )
    sessions: Annotated[list[SessionReport], msgspec.Meta(max_length=MAX_REPORTS)] = msgspec.field(
        default_factory=list
    )
    """Accepted for older pods and ignored: a new registration holds nothing, and what a pod
    says it ran never moves the Raft state (epochs come from the leader only)."""


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
    pod_id: PodId
    sessions: Annotated[list[SessionReport], msgspec.Meta(max_length=MAX_REPORTS)] = msgspec.field(
        default_factory=list
    )
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
    slot: Slot
    epoch: Epoch


class ReleaseRequest(Strict):
    pod_id: PodId
    sessions: Annotated[list[ReleasedSession], msgspec.Meta(max_length=MAX_REPORTS)] = (
        msgspec.field(default_factory=list)
    )
    drain: bool = False
    leave: bool = False


class ReleaseReply(msgspec.Struct, kw_only=True):
    released: list[str]
    term: int
