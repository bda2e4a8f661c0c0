"""The pod API: register, heartbeat, assignments long-poll, release (msgpack; JSON accepted).

Register, heartbeat and release change Raft state and run on the leader; a follower
forwards them there transparently (and names the leader in `X-Raftorch-Leader` so a
pod can go direct). The assignments long-poll is answered by any replica from its
own committed state. A pod proves who it is with the credential it got at
registration; the state keeps only its SHA-256 (the pod's incarnation).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from aiohttp import web

from protocol.codec import JSON, MSGPACK, convert, decode, encode, parse_body
from protocol.errors import (
    ConflictError,
    RaftorchError,
    RegistrationExpiredError,
    UnavailableError,
    ValidationError,
)
from protocol.pod import (
    AssignmentsReply,
    HeartbeatReply,
    HeartbeatRequest,
    RegisterReply,
    RegisterRequest,
    ReleaseReply,
    ReleaseRequest,
    SessionReport,
    StopOrder,
    report_limit,
)
from protocol.values import SlotStatus
from raftorch.api import assignments
from raftorch.api.assignments import PodSignals
from raftorch.api.edge import (
    ForbiddenError,
    UnauthorizedError,
    bearer_token,
    check_query,
    query_str,
    read_body,
)
from raftorch.api.forwarding import Forwarder, HedgeHold, Hold
from raftorch.api.openapi import QueryParam, RouteSpec
from raftorch.config import Config
from raftorch.config.cache import ConfigCache
from raftorch.core.model import (
    ApplyResult,
    Command,
    DrainPod,
    RegisterPod,
    Release,
    RemovePod,
    ReportStatus,
)
from raftorch.core.ownership import Snapshot
from raftorch.leader.leases import LeaseTracker, RenewalConfirmer
from raftorch.leader.metrics import ServiceMetrics
from raftorch.leader.reporting import Reporter
from raftorch.raft.bridge import NotLeaderError, RaftBridge
from raftorch.raft.node import LeaseNode

B = TypeVar("B")

MAX_WAIT_SECONDS = 30.0
REGISTER_BODY_BYTES = 128 * 1024
"""A registration is small (an id, an address, labels, connector offers)."""
REPORT_BYTES = 6 * 1024 + 256
"""The most one session report can take: a slot, an epoch, a status and up to 1000
characters of detail (6 bytes each in JSON's worst escaping)."""
BODY_BASE_BYTES = 16 * 1024
POD_ID_CHARS = 63  # as protocol.pod.PodId
VERSION_CHARS = 64  # an assignments version (a hex digest)

_BOTH = (JSON,)  # pod bodies are msgpack; JSON is accepted for debugging
POD_ROUTES = [
    RouteSpec("POST", "/pod/v1/register", "Register a pod; answers its credential",
              role="pod-bootstrap", request=RegisterRequest, response=RegisterReply,
              request_content=MSGPACK, response_content=MSGPACK, also_content=_BOTH,
              success_status=201, tags=("pod",)),
    RouteSpec("POST", "/pod/v1/heartbeat",
              "Renew the pod's lease (acknowledged after a Raft commit) and report sessions",
              role="pod", request=HeartbeatRequest, response=HeartbeatReply,
              request_content=MSGPACK, response_content=MSGPACK, also_content=_BOTH,
              tags=("pod",)),
    RouteSpec("GET", "/pod/v1/assignments",
              "Long-poll: answers when the pod's assignments differ from `version`",
              role="pod", response=AssignmentsReply, response_content=MSGPACK,
              also_content=_BOTH, tags=("pod",),
              query=(QueryParam("pod_id", "the pod", kind="string", required=True,
                                max_length=POD_ID_CHARS),
                     QueryParam("version", "the version the pod has", kind="string",
                                max_length=VERSION_CHARS),
                     QueryParam("wait_seconds", "how long to wait (at most 30)",
                                kind="number", minimum=0, maximum=30))),
    RouteSpec("POST", "/pod/v1/release", "Hand sessions back (drain, leave)", role="pod",
              request=ReleaseRequest, response=ReleaseReply, request_content=MSGPACK,
              response_content=MSGPACK, also_content=_BOTH, tags=("pod",)),
]  # fmt: skip


def body_limit(capacity: int) -> int:
    """The largest heartbeat or release body a pod of `capacity` may send."""
    return BODY_BASE_BYTES + report_limit(capacity) * REPORT_BYTES


def incarnation_of(credential: str) -> str:
    return hashlib.sha256(credential.encode("utf-8")).hexdigest()


class PodApi:
    """Handlers of the pod routes for one replica."""

    def __init__(
        self,
        *,
        config: Config,
        node: LeaseNode,
        bridge: RaftBridge,
        confirmer: RenewalConfirmer,
        tracker: LeaseTracker,
        cache: ConfigCache,
        forwarder: Forwarder,
        hedges: HedgeHold,
        reporter: Reporter,
        metrics: ServiceMetrics,
        wake_leader: Callable[[], None],
        stamped: Callable[[Sequence[Command]], tuple[Command, ...]],
        on_registered: Callable[[RegisterRequest], None] = lambda _request: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._node = node
        self._bridge = bridge
        self._confirmer = confirmer
        self._tracker = tracker
        self._cache = cache
        self._versions = assignments.Versions(cache)
        self._forwarder = forwarder
        self._hedges = hedges
        self._reporter = reporter
        self._metrics = metrics
        self._wake_leader = wake_leader
        self._stamped = stamped
        self._on_registered = on_registered
        self._clock = clock
        self.signals = PodSignals()
        # Bound once: `labels()` takes a lock and checks the names on every call.
        self._renewed = metrics.heartbeats.labels(outcome="renewed")
        self._refused = metrics.heartbeats.labels(outcome="refused")
        self._indexed: object = None  # the pods map `_by_incarnation` was built from
        self._by_incarnation: dict[str, str] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/pod/v1/register", self.register)
        app.router.add_post("/pod/v1/heartbeat", self.heartbeat)
        app.router.add_get("/pod/v1/assignments", self.assignments)
        app.router.add_post("/pod/v1/release", self.release)

    # --- helpers --------------------------------------------------------------------

    def _reply(self, request: web.Request, value: object, status: int = 200) -> web.Response:
        kind = MSGPACK if MSGPACK in request.headers.get("Accept", "") or (
            request.content_type == MSGPACK
        ) else JSON  # fmt: skip
        return web.Response(body=encode(value, kind), status=status, content_type=kind)

    def _pod_of(self, snapshot: Snapshot, credential: str) -> str | None:
        """The registered pod `credential` belongs to (None: none does).

        Looked up by the credential alone, before the body is read: what a stranger sends
        is never parsed. The index is rebuilt only when the registered pods changed.
        """
        return self._pod_with(snapshot, incarnation_of(credential))

    def _pod_with(self, snapshot: Snapshot, incarnation: str) -> str | None:
        """The registered pod of `incarnation` (a credential's digest), None: none."""
        for attempt in (1, 2):
            pod_id = self._by_incarnation.get(incarnation)
            if pod_id is not None:
                pod = snapshot.pods.get(pod_id)
                if pod is not None and hmac.compare_digest(pod.incarnation, incarnation):
                    return pod_id
            if attempt == 2 or snapshot.pods is self._indexed:
                return None
            self._indexed = snapshot.pods
            self._by_incarnation = {p.incarnation: p.pod_id for p in snapshot.pods.values()}
        return None

    def _authenticate(
        self, request: web.Request, snapshot: Snapshot, incarnation: str | None = None
    ) -> str:
        """The pod calling (by its credential, or its digest when already taken); 410 when
        no registered pod has it (expired, left, or registered again since): the pod must
        stop everything and register."""
        if incarnation is None:
            incarnation = incarnation_of(bearer_token(request))
        pod_id = self._pod_with(snapshot, incarnation)
        if pod_id is None:
            raise RegistrationExpiredError(
                "no registered pod holds this credential (the registration expired, left or "
                "was replaced): stop every session and register again"
            )
        return pod_id

    def _pod_known_here(self, request: web.Request, snapshot: Snapshot) -> str:
        """Like `_authenticate`, but a follower may simply be behind the leader: it answers
        "retry" (503) rather than "registration expired"."""
        if self._node.is_leader():
            return self._authenticate(request, snapshot)
        pod_id = self._pod_of(snapshot, bearer_token(request))
        if pod_id is None:
            raise UnavailableError("this replica has not seen the pod's registration yet")
        return pod_id

    @staticmethod
    def _claimed(pod_id: str, claimed: str) -> None:
        if claimed != pod_id:
            raise ForbiddenError(f"credential does not belong to pod {claimed}")

    async def _pod_body(
        self, request: web.Request, snapshot: Snapshot, pod_id: str, kind: type[B]
    ) -> B:
        """The authenticated pod's body: at most `body_limit` bytes and `report_limit`
        sessions for its capacity, both checked before anything is validated."""
        capacity = snapshot.pods[pod_id].capacity
        body = await read_body(request, body_limit(capacity),
                               f"the limit for a pod of capacity {capacity}")  # fmt: skip
        raw = parse_body(body, request.content_type)
        sessions = raw.get("sessions")
        if isinstance(sessions, list) and len(sessions) > report_limit(capacity):
            raise ValidationError(
                f"pod {pod_id} reports {len(sessions)} sessions; a pod of capacity {capacity} "
                f"may report at most {report_limit(capacity)}"
            )
        return convert(raw, kind)

    async def _leader_or_forward(
        self, request: web.Request, body: bytes, hold: Hold | None = None
    ) -> web.Response | None:
        return await self._forwarder.route(request, body, self._node, hold)

    def _leader_hint(self) -> str | None:
        leader_id = self._node.leader_id()
        if leader_id is None:
            return None
        replica = self._node.snapshot().replicas.get(leader_id)
        return replica.node_id if replica else leader_id

    # --- routes ---------------------------------------------------------------------

    async def register(self, request: web.Request) -> web.Response:
        self._check_bootstrap(request)
        body = await read_body(request, REGISTER_BODY_BYTES, "the limit for a registration")
        forwarded = await self._leader_or_forward(request, body)
        if forwarded is not None:
            return forwarded
        req = decode(body, request.content_type, RegisterRequest)
        credential = secrets.token_urlsafe(32)
        command = RegisterPod(
            pod_id=req.pod_id,
            incarnation=incarnation_of(credential),
            address=req.address,
            connectors=frozenset(c.type for c in req.connectors),
            capacity=req.capacity,
            labels=tuple(sorted(req.labels.items())),
        )
        term = self._node.status().term
        arrival = self._clock()
        self._refuse_live_duplicate(req.pod_id, incarnation_of(credential), arrival)
        result = await self._bridge.submit(self._stamped([command]))
        if not result.ok:
            raise UnavailableError(f"registration not applied: {result.rejected or result.error}")
        self._tracker.registered(req.pod_id, arrival, term)
        self._on_registered(req)
        self._wake_leader()
        lease = self._config.lease
        reply = RegisterReply(
            pod_id=req.pod_id,
            credential=credential,
            lease_ttl_seconds=lease.ttl_seconds,
            heartbeat_interval_seconds=lease.effective_heartbeat_interval_seconds,
            term=term,
            leader=self._leader_hint(),
            safety_margin_seconds=lease.safety_margin_seconds,
            fence_stop_seconds=lease.fence_stop_seconds,
            retry_interval_seconds=lease.retry_interval_seconds,
        )
        return self._reply(request, reply, status=201)

    def _refuse_live_duplicate(self, pod_id: str, incarnation: str, now: float) -> None:
        """A second process under a live pod id would free the first one's slots while
        its lease still runs: refuse until that lease has run out (or was released)."""
        current = self._node.snapshot().pods.get(pod_id)
        taken = current is not None and current.incarnation != incarnation
        if taken and self._tracker.live(pod_id, now):
            raise ConflictError(
                f"pod id {pod_id} is held by a live registration; register again after "
                f"its lease ({self._config.lease.ttl_seconds:g}s) runs out"
            )

    def _check_bootstrap(self, request: web.Request) -> None:
        expected = self._config.api.pod_bootstrap_token
        if expected is None:
            if self._config.raft.insecure_dev_mode:
                return
            raise ForbiddenError("pod registration is disabled: api.pod_bootstrap_token is not set")
        if not hmac.compare_digest(bearer_token(request).encode(), expected.reveal().encode()):
            raise UnauthorizedError("invalid pod bootstrap token")

    async def heartbeat(self, request: web.Request) -> web.Response:
        started = self._clock()
        credential = bearer_token(request)  # 401 without one, before anything else
        if not self._node.is_leader():
            body = await read_body(request)
            # A hedge may be held first (None back: the pod's first attempt won).
            forwarded = await self._leader_or_forward(request, body, self._hedges.relay)
            if forwarded is not None:
                return forwarded
        try:
            reply = await self._heartbeat(request, started, incarnation_of(credential))
        except RaftorchError:
            self._refused.inc()
            raise
        self._metrics.heartbeat_latency.observe(self._clock() - started)
        self._renewed.inc()
        return self._reply(request, reply)

    async def _heartbeat(
        self, request: web.Request, arrival: float, incarnation: str
    ) -> HeartbeatReply:
        snapshot = self._node.snapshot()
        pod_id = self._authenticate(request, snapshot, incarnation)
        req = await self._pod_body(request, snapshot, pod_id, HeartbeatRequest)
        self._claimed(pod_id, req.pod_id)
        # The pod's status changes ride in the next barrier entry (group commit): one
        # entry per batching window, however many pods report.
        commands = _report_commands(snapshot, req.pod_id, req.sessions)
        confirmed = await self._confirmer.confirm(commands)
        term = confirmed.term
        if self._tracker.term != term:
            raise NotLeaderError("the leader is still taking over; retry shortly")
        if not self._tracker.renew(req.pod_id, arrival, term):
            raise RegistrationExpiredError(
                f"the lease of pod {req.pod_id} ran out: stop every session and register again"
            )
        # Decisions committed while the barrier was pending count: look again.
        latest = self._node.snapshot()
        if self._pod_with(latest, incarnation) != pod_id:
            raise RegistrationExpiredError(f"pod {pod_id} was removed: register again")
        if commands:
            result = ApplyResult("", rejected=confirmed.rejected, error=confirmed.error)
            self._reporter.committed(snapshot, commands, result, self._tracker.received())
            if any(isinstance(c, Release) for c in commands):
                self._wake_leader()
        stop = _stop_orders(latest, req.pod_id, req.sessions)
        fenced = [o for o in stop if o.reason not in ("revoked", "handoff")]
        if fenced:
            self._reporter.fenced(latest, req.pod_id, fenced)
        current = self._versions.of(latest, req.pod_id)
        unchanged = req.version == current
        found = [] if unchanged else assignments.build(latest, req.pod_id, self._cache)
        return HeartbeatReply(term=term, leader=self._leader_hint(),
                              lease_ttl_seconds=self._config.lease.ttl_seconds,
                              version=current, revision=latest.applied_entries,
                              assignments=found, stop=stop, unchanged=unchanged)  # fmt: skip

    async def assignments(self, request: web.Request) -> web.Response:
        self._pod_known_here(request, self._node.snapshot())  # who asks, before what
        check_query(request, ("pod_id", "version", "wait_seconds"))
        claimed = query_str(request, "pod_id", max_length=POD_ID_CHARS) or ""
        if not claimed:
            raise ValidationError("query parameter pod_id is required")
        known = query_str(request, "version", max_length=VERSION_CHARS) or ""
        try:
            wait = float(request.query.get("wait_seconds", "0"))
        except ValueError:
            wait = math.nan
        if not 0 <= wait <= MAX_WAIT_SECONDS:
            raise ValidationError(f"wait_seconds must be a number from 0 to {MAX_WAIT_SECONDS:g}")
        if not self._cache.loaded:
            raise UnavailableError("this replica has not loaded the configuration yet")
        deadline = self._clock() + wait
        while True:
            snapshot = self._node.snapshot()
            pod_id = self._pod_known_here(request, snapshot)
            self._claimed(pod_id, claimed)
            current = self._versions.of(snapshot, pod_id)
            remaining = deadline - self._clock()
            if current != known or remaining <= 0 or self.signals.closed:
                found = assignments.build(snapshot, pod_id, self._cache)
                reply = AssignmentsReply(version=current, revision=snapshot.applied_entries,
                                         term=self._node.status().term,
                                         leader=self._leader_hint(), assignments=found)  # fmt: skip
                return self._reply(request, reply)
            await self.signals.wait(pod_id, remaining)

    async def release(self, request: web.Request) -> web.Response:
        bearer_token(request)  # 401 without one, before anything else
        if not self._node.is_leader():
            forwarded = await self._leader_or_forward(request, await read_body(request))
            if forwarded is not None:
                return forwarded
        snapshot = self._node.snapshot()
        pod_id = self._authenticate(request, snapshot)
        req = await self._pod_body(request, snapshot, pod_id, ReleaseRequest)
        self._claimed(pod_id, req.pod_id)
        incarnation = snapshot.pods[req.pod_id].incarnation
        commands: list[Command] = []
        if req.drain:
            commands.append(DrainPod(req.pod_id, incarnation))
        commands += [Release(s.slot, req.pod_id, s.epoch, "released") for s in req.sessions]
        if req.leave:
            commands.append(RemovePod(req.pod_id, incarnation, "left"))
        entry = self._stamped(commands)
        result = await self._bridge.submit(entry)
        if result.error:
            raise UnavailableError(f"release not applied: {result.error}")
        self._reporter.committed(snapshot, entry, result, self._tracker.received())
        self._wake_leader()
        rejected = {i for i, _ in result.rejected}
        released = [c.slot for i, c in enumerate(entry)
                    if isinstance(c, Release) and i not in rejected]  # fmt: skip
        return self._reply(request, ReleaseReply(released=released, term=self._node.status().term))


def _report_commands(
    snapshot: Snapshot, pod_id: str, sessions: list[SessionReport]
) -> list[Command]:
    """What to commit of the pod's report: status changes and releases of what it owns."""
    commands: list[Command] = []
    for report in sessions:
        slot = snapshot.slots.get(report.slot)
        if slot is None or slot.owner != pod_id or slot.epoch != report.epoch:
            continue
        if report.status == "STOPPED":
            commands.append(Release(report.slot, pod_id, report.epoch, "stopped by pod"))
        elif slot.status in (SlotStatus.REVOKING, SlotStatus.HANDING_OFF):
            continue
        elif slot.status.value != report.status or slot.detail != report.detail:
            status = SlotStatus(report.status)
            commands.append(ReportStatus(report.slot, pod_id, report.epoch, status, report.detail))
    return commands


def _stop_orders(snapshot: Snapshot, pod_id: str, sessions: list[SessionReport]) -> list[StopOrder]:
    """Sessions the pod runs that the (latest) state does not give it, or revokes.

    Besides what the heartbeat reports, every slot the pod owns that is being revoked or
    handed off: a delta heartbeat leaves unchanged sessions out, and the order must not
    wait for the next complete one (a drain would take ten heartbeats to start)."""
    stop: list[StopOrder] = []
    reported: set[str] = set()
    for report in sessions:
        reported.add(report.slot)
        if report.status == "STOPPED":
            continue
        slot = snapshot.slots.get(report.slot)
        if slot is None or slot.owner != pod_id or slot.epoch != report.epoch:
            why = "stale epoch" if slot is not None and slot.owner == pod_id else "not assigned"
            stop.append(StopOrder(slot=report.slot, epoch=report.epoch, reason=why))
        elif (reason := _STOP_REASONS.get(slot.status)) is not None:
            stop.append(StopOrder(slot=report.slot, epoch=report.epoch, reason=reason))
    counts = snapshot.status_counts
    if counts.get(SlotStatus.REVOKING) or counts.get(SlotStatus.HANDING_OFF):
        for key, role in snapshot.slots_of_pod(pod_id).items():
            slot = snapshot.slots[key]
            reason = _STOP_REASONS.get(slot.status)
            if role == "ACTIVE" and reason is not None and key not in reported:
                stop.append(StopOrder(slot=key, epoch=slot.epoch, reason=reason))
    return stop


_STOP_REASONS = {SlotStatus.REVOKING: "revoked", SlotStatus.HANDING_OFF: "handoff"}
