"""What the HTTP handlers of a replica may use: one object, built by the service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CollectorRegistry

from persistence.adapters import AdapterRepository
from persistence.artifacts import ArtifactRepository
from persistence.db import Database
from persistence.events import EventRepository, NewEvent
from persistence.plugins import PluginRepository
from persistence.session_state import SessionStateStore
from persistence.tokens import TokenRepository
from persistence.writebehind import WriteBehind
from raftorch.config import Config
from raftorch.config.cache import ConfigCache
from raftorch.core.model import ApplyResult, Command
from raftorch.leader.loop import StateSource


@dataclass
class Repositories:
    adapters: AdapterRepository
    artifacts: ArtifactRepository
    plugins: PluginRepository
    tokens: TokenRepository
    events: EventRepository
    session_state: SessionStateStore

    @classmethod
    def on(cls, db: Database) -> Repositories:
        return cls(
            AdapterRepository(db),
            ArtifactRepository(db),
            PluginRepository(db),
            TokenRepository(db),
            EventRepository(db),
            SessionStateStore(db),
        )


def _nothing() -> None:
    return None


def _no_check_ins() -> Mapping[str, float]:
    return {}


@dataclass(frozen=True)
class LeaderActions:
    """What an admin call that changes the Raft state needs: on the leader, commit stamped
    commands (or ask the leader loop to rebalance); elsewhere, relay the call to it."""

    forward: Callable[[web.Request, bytes], Awaitable[web.StreamResponse | None]]
    """The leader's answer, or None when this replica is the leader."""
    commit: Callable[[Sequence[Command]], Awaitable[ApplyResult]]
    request_rebalance: Callable[[], None]


@dataclass
class Context:
    """Shared by every request of one replica.

    `node` gives the Raft snapshot and status (every replica has them, followers a
    few milliseconds behind). `last_check_in()` maps pod id -> wall-clock time of
    its last confirmed renewal; only the leader knows it (followers return {}).
    `wake_leader()` asks the leader loop to tick now (after enable/disable).
    """

    config: Config
    db: Database
    repos: Repositories
    cache: ConfigCache
    events: WriteBehind[NewEvent]
    node: StateSource
    registry: CollectorRegistry
    last_check_in: Callable[[], Mapping[str, float]] = field(default=_no_check_ins)
    wake_leader: Callable[[], None] = field(default=_nothing)
    leader: LeaderActions | None = None
