"""The ownership model: pods, session slots, the commands that change them, and plans.

Everything here is a frozen value. Commands travel through the Raft log encoded by
`raftorch.core.entry` (msgpack, tagged by type), so their shape is part of the
replicated format: add new command types rather than changing existing ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec

from protocol.values import DeploymentMode, PodState, SlotStatus

Labels = tuple[tuple[str, str], ...]


def slot_id(adapter_id: str, index: int) -> str:
    """The id of one exclusive session slot of an adapter."""
    return f"{adapter_id}/{index}"


def slot_adapter(slot: str) -> str:
    return slot.rsplit("/", 1)[0]


def slot_index(slot: str) -> int:
    return int(slot.rsplit("/", 1)[1])


# --- replicated records ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PodInfo:
    """A registered pod as the Raft state knows it."""

    pod_id: str
    incarnation: str
    address: str
    connectors: frozenset[str]
    capacity: int
    labels: Labels = ()
    state: PodState = PodState.ACTIVE
    registered_at: float = 0.0  # wall clock of the leader that registered it

    @property
    def zone(self) -> str | None:
        return dict(self.labels).get("zone")


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """An orchestrator replica as it announced itself (for forwarding and /cluster)."""

    node_id: str
    raft_address: str
    api_url: str


class SlotState(msgspec.Struct, frozen=True, gc=False):
    """One session slot: who owns it, under which epoch, and its warm standbys.

    Not tracked by Python's cyclic garbage collector (`gc=False`; it holds only strings,
    numbers, a tuple of strings and an enum, so it can never be part of a cycle). At
    100,000 sessions these are most of a replica's objects, and a full collection that
    walks them all holds the GIL long enough to stall the Raft thread past an election
    timeout (docs/performance.md). Changed with `msgspec.structs.replace`.
    """

    slot: str
    adapter_id: str
    owner: str | None = None
    epoch: int = 0  # epoch of the current (or last) grant; 0 = never granted
    standbys: tuple[str, ...] = ()
    status: SlotStatus = SlotStatus.UNASSIGNED
    detail: str = ""
    changed_at: float = 0.0  # wall clock of the last status change
    handoff_to: str | None = None  # where a slot being handed off goes once released


# --- commands (one Raft entry carries a batch of them) --------------------------------


class _Command(msgspec.Struct, frozen=True, array_like=True):
    """Base of the replicated commands: immutable, encoded by tag (see `raftorch.core.entry`).

    The tag is the class name and part of the replicated format: never rename a command
    or reorder its fields; add a new command type (with a new tag) instead.
    """


class RegisterPod(_Command, frozen=True, tag="RegisterPod"):
    pod_id: str
    incarnation: str
    address: str
    connectors: frozenset[str]
    capacity: int
    labels: Labels = ()


class DrainPod(_Command, frozen=True, tag="DrainPod"):
    """The pod is shutting down: place nothing new on it."""

    pod_id: str
    incarnation: str


class RemovePod(_Command, frozen=True, tag="RemovePod"):
    """Expire or deregister a pod: it loses every slot it owns or stands by for."""

    pod_id: str
    incarnation: str
    reason: str


class Grant(_Command, frozen=True, tag="Grant"):
    """Make `pod_id` the owner of an unowned slot with a fresh epoch.

    `expected_epoch` is the slot's epoch the planner saw: the grant is refused when
    the slot changed since (a stale plan never overrides a newer decision). When the
    pod is one of the slot's standbys this is a promotion.
    """

    slot: str
    adapter_id: str
    pod_id: str
    expected_epoch: int
    reason: str = "grant"


class AddStandby(_Command, frozen=True, tag="AddStandby"):
    slot: str
    pod_id: str


class DropStandby(_Command, frozen=True, tag="DropStandby"):
    slot: str
    pod_id: str


class Release(_Command, frozen=True, tag="Release"):
    """The owner stopped the session (drain, fencing, or revocation done)."""

    slot: str
    pod_id: str
    epoch: int
    reason: str


class Handoff(_Command, frozen=True, tag="Handoff"):
    """Move a slot by graceful handoff: the owner (at `epoch`) stops cleanly and releases,
    then the slot is granted to `to_pod` with a higher epoch (or `to_pod`, its standby,
    is promoted). `reason` is `rebalance` or `drain`."""

    slot: str
    pod_id: str
    epoch: int
    to_pod: str
    reason: str


class SetPodDrain(_Command, frozen=True, tag="SetPodDrain"):
    """An operator drains a pod (nothing new is placed on it and its sessions move off by
    handoff, while it keeps running) or undrains it."""

    pod_id: str
    draining: bool


class Revoke(_Command, frozen=True, tag="Revoke"):
    """The adapter is disabled or deleted (or the slot is beyond `instances`)."""

    slot: str
    reason: str


class ReportStatus(_Command, frozen=True, tag="ReportStatus"):
    """The owner's report of its session: CLAIMING, ACTIVE or ERROR (with a detail)."""

    slot: str
    pod_id: str
    epoch: int
    status: SlotStatus
    detail: str = ""


class AnnounceReplica(_Command, frozen=True, tag="AnnounceReplica"):
    """A replica tells the cluster its node id and API address (idempotent)."""

    node_id: str
    raft_address: str
    api_url: str


class RaiseEpochFloor(_Command, frozen=True, tag="RaiseEpochFloor"):
    """Every later epoch is above `floor` (a new leader's first act).

    `from_database`: the floor was read from PostgreSQL, so the state now knows
    every epoch ever issued; until then a leader may not rely on the Raft counter.
    """

    floor: int
    from_database: bool = False


class ClaimLeadership(_Command, frozen=True, tag="ClaimLeadership"):
    """A new leader's first entry of its term: later entries must carry its stamp."""

    leader: str
    term: int


class LeaderStamp(_Command, frozen=True, tag="LeaderStamp"):
    """First command of every entry a leader submits after its claim.

    An entry whose stamp is not the latest claim is refused whole: a deposed leader's
    plan (pysyncobj forwards a follower's commands to the new leader) can never
    commit over decisions the new leader has made.
    """

    leader: str
    term: int


Command = (
    RegisterPod
    | DrainPod
    | RemovePod
    | Grant
    | AddStandby
    | DropStandby
    | Release
    | Revoke
    | Handoff
    | SetPodDrain
    | ReportStatus
    | RaiseEpochFloor
    | AnnounceReplica
    | ClaimLeadership
    | LeaderStamp
)

MAX_EPOCH = 2**62  # far beyond any real count; keeps every epoch a PostgreSQL bigint


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What one Raft entry did: per command, accepted or the reason it was refused."""

    request_id: str
    rejected: tuple[tuple[int, str], ...] = ()  # (command index, reason)
    granted: tuple[tuple[str, str, int], ...] = ()  # (slot, pod, epoch)
    duplicate: bool = False  # the request id had been applied before: nothing changed now
    error: str = ""  # an applier bug, caught: the entry changed nothing
    touched: frozenset[str] = frozenset()  # pods whose assignments the entry changed

    @property
    def ok(self) -> bool:
        return not self.rejected and not self.error


# --- planning -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdapterSpec:
    """What the configuration says should run (from the PostgreSQL cache)."""

    adapter_id: str
    connector: str
    mode: DeploymentMode
    instances: int = 1
    enabled: bool = False


@dataclass(frozen=True, slots=True)
class Moves:
    """Budgets of one plan for moving sessions by graceful handoff (0: none)."""

    rebalance: int = 0
    """Toward an even spread (least loaded, an adapter's instances on distinct pods)."""
    drain: int = 0
    """Off pods an operator drained."""


@dataclass(frozen=True, slots=True)
class View:
    """A frozen snapshot the planner decides from.

    `adapters` is None while the leader does not know the configuration (PostgreSQL was
    never reachable since it started): then only expiry is planned, never a revocation.
    `may_grant` is False until the epoch floor from PostgreSQL is in the Raft state.
    """

    adapters: Mapping[str, AdapterSpec] | None
    pods: Mapping[str, PodInfo]
    slots: Mapping[str, SlotState]
    renewals: Mapping[str, float]  # pod id -> last renewal receipt (leader's monotonic clock)
    may_grant: bool = True
    dirty: frozenset[str] | None = None
    """Adapters whose configuration or slots changed since the last plan (None: all of
    them). Besides these the planner always looks at unassigned slots and at the slots of
    pods it expires, so a plan costs what changed, not the size of the cluster."""
    pod_slots: Mapping[str, Mapping[str, str]] | None = None
    """The state's indexes (`raftorch.core.snapshot`); None: built from `slots`."""
    adapter_slots: Mapping[str, Mapping[str, bool]] | None = None
    unassigned: Mapping[str, bool] | None = None
    place_new: bool = True
    """False while pods are still joining (the settle window): slots never granted wait;
    failovers do not."""
    moves: Moves = field(default_factory=Moves)
    """How many sessions this plan may move by graceful handoff."""


@dataclass(frozen=True, slots=True)
class Policy:
    ttl_seconds: float
    max_grants_per_tick: int = 5000
    """Grants (and standbys added) per plan: bounds one entry's size and apply time."""
    max_pods_per_tick: int = 500
    """Pods one plan gives work to: each answers with a few requests to the leader."""
    max_grants_per_pod: int = 2
    """Once a plan has given work to `max_pods_per_tick` pods, each of them gets up to this
    many grants in it (never past an even share): one wake-up carries more than one."""
    standbys_per_slot: int = 1

    def spent(self, count: int, pods: int) -> bool:
        """Whether a plan that made `count` grants (or added as many standbys) and gave
        work to `pods` pods must stop: the rest waits for the next plan (at once)."""
        return count >= self.max_grants_per_tick or pods >= self.max_pods_per_tick


@dataclass(frozen=True, slots=True)
class Plan:
    commands: tuple[Command, ...] = ()
    reasons: tuple[str, ...] = field(default=())  # one human line per decision group
    pending: frozenset[str] = frozenset()
    """Adapters with work left for the next plan (the grant budget was reached)."""

    def __bool__(self) -> bool:
        return bool(self.commands)


def wanted_count(spec: AdapterSpec) -> int:
    """How many slots the configuration wants running for `spec` (none while disabled)."""
    if not spec.enabled:
        return 0
    return spec.instances if spec.mode is DeploymentMode.SCALE_OUT else 1


def wanted_slots(spec: AdapterSpec) -> list[str]:
    """The slot ids the configuration wants running for `spec` (none while disabled)."""
    return [slot_id(spec.adapter_id, index) for index in range(wanted_count(spec))]


MAX_REASONS = 20  # Plan.reasons never has more lines than this
MAX_DETAIL_LINES = 6  # per group (expired pods, unplaceable slots) before summarising


def summarise(lines: list[str], more: str, unlisted: int = 0) -> list[str]:
    """The first few lines of a group, then one line counting the rest (and `unlisted`
    more members of the group that have no line of their own)."""
    if not unlisted and len(lines) <= MAX_DETAIL_LINES:
        return lines
    shown = lines[: MAX_DETAIL_LINES - 1]
    return [*shown, more.format(len(lines) - len(shown) + unlisted)]


def bounded_reasons(reasons: list[str]) -> tuple[str, ...]:
    if len(reasons) <= MAX_REASONS:
        return tuple(reasons)
    rest = len(reasons) - (MAX_REASONS - 1)
    return (*reasons[: MAX_REASONS - 1], f"... and {rest} more")
