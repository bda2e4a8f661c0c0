"""The Raft node: pysyncobj configured safely, holding the replicated ownership state.

Hardening over pysyncobj's defaults, each for a reason:

- the cluster secret (`password`) is mandatory: the Raft port carries pickled
  messages, and without encryption anyone reaching it runs code on the node;
- `leaderFallbackTimeout` is a few election timeouts (pysyncobj: 30 s), so a leader
  cut off from the majority steps down within seconds;
- a restarted node does not vote until a full election timeout has passed since its
  start, so it cannot help elect a second leader in a term it voted in before;
- elections go through a pre-vote, and followers that heard from a leader lately
  ignore vote requests (`raftorch.raft.election`): a replica whose heartbeats merely
  came late, or that was cut off, cannot depose a leader the majority still follows;
- `connectionRetryTime` is half the shortest election timeout (pysyncobj: 5 s): a
  link that dropped once (a peer restarted, a connection reset) is redialled before
  the next election needs it, instead of leaving two survivors deaf to each other
  for seconds after the leader dies;
- `appendEntriesUseBatch=False`: a lone command commits in about a millisecond
  instead of about 100 ms, which lease renewals depend on;
- `appendEntriesBatchSizeBytes` is 8 MiB and entries are at most 3 MiB: pysyncobj
  0.3.17 splits a larger entry and ends the transfer early (it compares against the
  unpickled length), so a follower would receive it truncated;
- the journal and full dump live on disk, so a restarted replica rejoins with its
  state; `useFork=False` because forking a threaded asyncio process is unsafe;
- so the full dump (log compaction, every 5 minutes) is written by
  `raftorch.raft.dumps.ThreadedDumpWriter` on a thread of its own, not on the tick
  thread (which would send nothing meanwhile), gzipped at level 1, and the replicas
  take turns (`logCompactionSplit`) so that at most one of them is busy with it;
- ticks run on a thread this module owns (`autoTick=False`), started by `start()`,
  so no entry is applied before the replicated state exists;
- peer names are resolved again every `PEER_DNS_CACHE_SECONDS` (pysyncobj caches them
  for ten minutes): a restarted Kubernetes pod keeps its name but not its IP address.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pysyncobj import SyncObj, SyncObjConf, SyncObjException, replicated
from pysyncobj.dns_resolver import globalDnsResolver
from pysyncobj.transport import TCPTransport

from persistence.audit import DISABLED, AuditTrail
from protocol.errors import ConfigError
from raftorch.config import RaftConfig
from raftorch.config.timing import RaftTimers
from raftorch.core.entry import UndecodableEntryError, decode_entry, encode_entry
from raftorch.core.model import ApplyResult, Command, LeaderStamp
from raftorch.core.ownership import OwnershipState, Snapshot
from raftorch.raft.dumps import ThreadedDumpWriter
from raftorch.raft.election import ElectionGuard, RaftInternals
from raftorch.raft.transport import GuardedTransport, VoteGuard

log = logging.getLogger(__name__)

Clock = Callable[[], float]
DoneCallback = Callable[[Any, int], None]
TICK_WAIT_SECONDS = 0.02
APPEND_BATCH_BYTES = 8 * 1024 * 1024
"""pysyncobj splits an entry larger than this and, in 0.3.17, ends the transfer by the
unpickled length: a binary entry arrives truncated. Entries (at most MAX_ENTRY_BYTES,
which pickle to under twice that) therefore always travel whole."""
GIL_SWITCH_SECONDS = 0.001
"""The interpreter's thread switch interval in a replica (see LeaseNode.start)."""
PEER_DNS_CACHE_SECONDS = 2.0
"""How long a resolved peer address is used before its name is looked up again."""


def build_conf(
    raft: RaftConfig,
    timers: RaftTimers,
    data_dir: Path,
    *,
    on_state_changed: Callable[[int, int], None] | None = None,
) -> SyncObjConf:
    """pysyncobj settings from raftorch's; refuses to run without a secret unless allowed."""
    secret = raft.require_secret()
    data_dir.mkdir(parents=True, exist_ok=True)
    # Process-wide in pysyncobj; a failed lookup keeps the last address and retries sooner.
    globalDnsResolver().setTimeouts(PEER_DNS_CACHE_SECONDS, PEER_DNS_CACHE_SECONDS / 2)
    return SyncObjConf(
        password=secret.reveal() if secret is not None else None,
        autoTick=False,
        raftMinTimeout=timers.election_timeout_min_seconds,
        raftMaxTimeout=timers.election_timeout_max_seconds,
        appendEntriesPeriod=timers.append_entries_period_seconds,
        leaderFallbackTimeout=timers.leader_fallback_timeout_seconds,
        connectionTimeout=max(3.5, timers.election_timeout_max_seconds),
        connectionRetryTime=timers.election_timeout_min_seconds / 2,
        appendEntriesUseBatch=False,
        appendEntriesBatchSizeBytes=APPEND_BATCH_BYTES,
        commandsWaitLeader=False,
        commandsQueueSize=max(1000, raft.max_commands_in_flight * 5),
        journalFile=str(data_dir / "raft.journal"),
        fullDumpFile=str(data_dir / "raft.dump"),
        useFork=False,
        logCompactionSplit=True,
        dynamicMembershipChange=False,
        bindRetryTime=0.2,
        maxBindRetries=10,
        onStateChanged=on_state_changed,
    )


@dataclass(frozen=True, slots=True)
class RaftStatus:
    self_id: str
    leader_id: str | None
    term: int
    is_leader: bool
    commit_index: int
    last_applied: int
    has_quorum: bool


class _Runtime:
    """Non-replicated parts of the node, created before pysyncobj snapshots __dict__."""

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.tick_errors = 0
        self.on_applied: Callable[[frozenset[str]], None] | None = None
        # Grants applied but not yet in the audit trail: (when, entry id, (slot, pod, epoch)).
        self.granted: collections.deque[tuple[float, str, tuple[str, str, int]]] = (
            collections.deque()
        )
        self.transfer_requested = threading.Event()
        # Set once this replica hands leadership on to stop: it must not win it back. (On
        # stepping down pysyncobj keeps the election deadline it had as leader, long past,
        # so it would stand again at once and, with the longest log, win.)
        self.retiring = False
        # Set when a committed entry could not be decoded (a newer replica wrote it): from
        # then on nothing is applied, and the stale state is never compacted into a dump.
        self.blocked: str | None = None


class LeaseNode(SyncObj):
    """One Raft replica of the ownership state.

    Thread contract: `apply_entry` (the applier) and every pysyncobj callback run on the
    tick thread; `snapshot()`, `status()` and `blocked` may be called from any thread.
    """

    def __init__(
        self,
        self_address: str,
        peers: Sequence[str],
        conf: SyncObjConf,
        *,
        vote_hold_seconds: float,
        clock: Clock = time.monotonic,
        transport_class: type[TCPTransport] = GuardedTransport,
        peer_routes: Mapping[str, tuple[str, int]] | None = None,
        audit: AuditTrail = DISABLED,
    ) -> None:
        # Attributes set before SyncObj.__init__ are not replicated (pysyncobj records
        # the keys present at that point and serialises only the ones added later).
        if conf.bindAddress is None:  # pysyncobj listens on every interface otherwise
            conf.bindAddress = self_address
        self.vote_guard = VoteGuard(vote_hold_seconds, clock)
        self.election = ElectionGuard(conf.raftMinTimeout, clock)
        self.peer_routes = dict(peer_routes or {})
        self.audit = audit
        self._runtime = _Runtime()
        try:
            super().__init__(self_address, list(peers), conf, transportClass=transport_class)
        except SyncObjException as exc:
            raise ConfigError(
                f"raft.bind {self_address}: cannot listen on the Raft port ({exc.errorCode})"
            ) from exc
        self._ownership = OwnershipState()  # the replicated state
        # Dumps are read as pysyncobj reads them (above, in its __init__) but written on
        # a thread (raftorch.raft.dumps).
        self._SyncObj__serializer = ThreadedDumpWriter(
            conf.fullDumpFile, conf.logCompactionBatchSize
        )

    def _onTick(self, timeToWait: float = 0.0) -> None:
        # Before pysyncobj looks at its election timer: a pre-vote first (see election.py).
        self.election.before_tick(RaftInternals(self), retiring=self._runtime.retiring)
        super()._onTick(timeToWait)

    @replicated
    def apply_entry(self, payload: bytes) -> ApplyResult:
        """Applier of one entry: deterministic, never raises (see OwnershipState.apply).

        The entry arrives as bytes (`raftorch.core.entry`) and is decoded here, so an
        entry this replica cannot read stops it applying instead of wedging pysyncobj.
        """
        runtime = self._runtime
        if runtime.blocked is not None:
            return ApplyResult("", error=f"replica blocked: {runtime.blocked}")
        try:
            entry = decode_entry(payload)
        except UndecodableEntryError as exc:
            self._block(str(exc))
            return ApplyResult("", error=f"replica blocked: {exc}")
        result = self._ownership.apply(entry.request_id, entry.at, entry.commands)
        if result.granted and not result.duplicate and self.audit.enabled:
            # Only noted here; the tick loop writes it down, so the applier does no I/O.
            seen = time.monotonic()
            runtime.granted.extend((seen, entry.request_id, g) for g in result.granted)
        listener = runtime.on_applied
        # Renewal barriers (a stamp at most) change nothing a long-poll waits for.
        if listener is not None and any(not isinstance(c, LeaderStamp) for c in entry.commands):
            try:
                listener(result.touched)
            except Exception:  # a listener must never wedge the applier
                log.exception("apply listener failed")
        return result

    def _block(self, reason: str) -> None:
        """Stop applying for good (until a restart with code that reads the entry)."""
        self._runtime.blocked = reason
        # pysyncobj would otherwise write this stale state as a full dump claiming the
        # skipped entries; the journal keeps them for the upgraded replica to replay.
        self.conf.logCompactionMinEntries = 2**62
        self.conf.logCompactionMinTime = 2**62
        log.critical("raft applier blocked node=%s: %s", self.selfNode.id, reason)

    @property
    def blocked(self) -> str | None:
        """Why this replica stopped applying committed entries (None while it applies)."""
        return self._runtime.blocked

    @property
    def tick_errors(self) -> int:
        return self._runtime.tick_errors

    def set_apply_listener(self, listener: Callable[[frozenset[str]], None] | None) -> None:
        """Called on the tick thread after every applied entry that carried commands, with
        the pods whose assignments it changed (keep it tiny)."""
        self._runtime.on_applied = listener

    def submit(
        self,
        request_id: str,
        at: float,
        commands: tuple[Command, ...],
        on_done: DoneCallback,
    ) -> None:
        """Queue an entry; `on_done(result, fail_reason)` runs on the tick thread."""
        payload = encode_entry(request_id, at, commands)
        self.apply_entry(payload, callback=on_done)  # type: ignore[call-arg]

    def snapshot(self) -> Snapshot:
        return self._ownership.snapshot()

    def status(self) -> RaftStatus:
        leader = self._getLeader()
        return RaftStatus(
            self_id=str(self.selfNode.id),
            leader_id=str(leader.id) if leader is not None else None,
            term=int(self.raftCurrentTerm),
            is_leader=bool(self._isLeader()),
            commit_index=int(self.raftCommitIndex),
            last_applied=int(self.raftLastApplied),
            # Not getStatus()["has_quorum"]: that builds pysyncobj's whole debug dump, and
            # status() runs several times per heartbeat (7% of a busy leader's samples).
            has_quorum=bool(self.hasQuorum),
        )

    def is_leader(self) -> bool:
        """Whether this node leads now (cheaper than `status()`; any thread)."""
        return bool(self._isLeader())

    def leader_id(self) -> str | None:
        """The leader this node knows of now (cheaper than `status()`; any thread)."""
        leader = self._getLeader()
        return str(leader.id) if leader is not None else None

    def peer_links(self) -> dict[str, bool]:
        """Raft address of each peer -> whether this node has a working link to it."""
        prefix = "partner_node_status_server_"
        status = self.getStatus()
        return {key[len(prefix) :]: value == 2 for key, value in status.items()
                if key.startswith(prefix)}  # fmt: skip

    def start(self) -> None:
        """Run ticks on a thread of our own until `stop()`."""
        if self._runtime.thread is not None:
            return
        # Process-wide: a thread waiting for the GIL asks the holder to let go after this
        # long (Python's default is 5 ms). The tick thread does many short socket steps,
        # each needing the GIL back, while the event loop encodes large answers in a
        # flood; at 5 ms a follower heard the leader up to 0.19 s late with two busy
        # threads (more than the 0.17 s minimum election timeout at TTL 3 s), at 1 ms at
        # most 0.10 s (bug 6 in docs/reliability.md).
        sys.setswitchinterval(min(sys.getswitchinterval(), GIL_SWITCH_SECONDS))
        thread = threading.Thread(target=self._tick_loop, name="raft-tick", daemon=True)
        self._runtime.thread = thread
        thread.start()

    def stop(self) -> None:
        """Stop ticking, then close sockets and the journal."""
        self._runtime.stopping.set()
        thread = self._runtime.thread
        if thread is not None:
            thread.join(timeout=5.0)
        self._write_audit()
        self.destroy()

    def request_leadership_transfer(self) -> None:
        """Ask the tick thread to hand leadership to a follower (pysyncobj is not thread-safe).

        For a replica that is stopping: from now on it asks nobody for votes."""
        self._runtime.retiring = True
        self._runtime.transfer_requested.set()

    @property
    def retiring(self) -> bool:
        return self._runtime.retiring

    def _write_audit(self) -> None:
        granted = self._runtime.granted
        while granted:
            seen, entry, (slot, pod, epoch) = granted.popleft()
            self.audit.record("grant", at=seen, slot=slot, pod=pod, epoch=epoch, entry=entry)

    def _tick_loop(self) -> None:
        while not self._runtime.stopping.is_set():
            try:
                if self._runtime.transfer_requested.is_set():
                    self._runtime.transfer_requested.clear()
                    self.transferLeadership()
                self.doTick(TICK_WAIT_SECONDS)
                self._write_audit()
            except Exception:  # a tick must never kill the thread; count and go on
                self._runtime.tick_errors += 1
                log.exception("raft tick failed errors=%d", self._runtime.tick_errors)
