# Minimal type stubs for the parts of pysyncobj 0.3.x that raftorch uses.
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from pysyncobj.transport import Transport

_F = TypeVar("_F", bound=Callable[..., Any])

HAS_CRYPTO: bool

class FAIL_REASON:
    SUCCESS: int
    QUEUE_FULL: int
    MISSING_LEADER: int
    DISCARDED: int
    NOT_LEADER: int
    LEADER_CHANGED: int
    REQUEST_DENIED: int

class _RAFT_STATE:
    FOLLOWER: int
    CANDIDATE: int
    LEADER: int

class SyncObjException(Exception):
    errorCode: Any

class SyncObjConf:
    logCompactionMinEntries: int
    logCompactionMinTime: float
    bindAddress: str | None
    raftMinTimeout: float
    def __init__(self, **kwargs: Any) -> None: ...
    def __getattr__(self, name: str) -> Any: ...

class SyncObj:
    def __init__(
        self,
        selfNode: str,
        otherNodes: Iterable[str],
        conf: SyncObjConf | None = ...,
        consumers: Any = ...,
        nodeClass: Any = ...,
        transport: Transport | None = ...,
        transportClass: type[Transport] = ...,
    ) -> None: ...
    def destroy(self) -> None: ...
    def doTick(self, timeToWait: float = ...) -> None: ...
    def _onTick(self, timeToWait: float = ...) -> None: ...
    def isReady(self) -> bool: ...
    def _isLeader(self) -> bool: ...
    def _getLeader(self) -> Any: ...
    def _getTerm(self) -> int: ...
    @property
    def raftLastApplied(self) -> int: ...
    @property
    def raftCommitIndex(self) -> int: ...
    @property
    def raftCurrentTerm(self) -> int: ...
    @property
    def selfNode(self) -> Any: ...
    @property
    def otherNodes(self) -> set[Any]: ...
    @property
    def hasQuorum(self) -> bool: ...
    def getStatus(self) -> dict[str, Any]: ...
    def transferLeadership(self, node: Any = ..., callback: Any = ...) -> None: ...
    def forceLogCompaction(self) -> None: ...
    @property
    def conf(self) -> SyncObjConf: ...

def replicated(func: _F) -> _F: ...
