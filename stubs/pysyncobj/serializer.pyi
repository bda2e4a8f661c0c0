# The part of pysyncobj's serializer module raftorch touches: the class that writes and
# reads full dumps (raftorch.raft.dumps.ThreadedDumpWriter writes them on a thread).
from typing import Any

class Serializer:
    # its private state, which raftorch.raft.dumps extends (name-mangled in pysyncobj)
    _Serializer__pid: int
    _Serializer__currentID: Any
    _Serializer__transmissions: dict[Any, dict[str, Any]]
    def __init__(
        self,
        fileName: str | None,
        transmissionBatchSize: int,
        tryUseFork: bool,
        serializer: Any,
        deserializer: Any,
        serializeChecker: Any,
    ) -> None: ...
    def checkSerializing(self) -> tuple[Any, Any]: ...
    def serialize(self, data: Any, id: Any) -> None: ...
    def deserialize(self) -> Any: ...
    def getTransmissionData(self, transmissionID: Any) -> Any: ...
    def setTransmissionData(self, data: Any) -> bool: ...
    def cancelTransmisstion(self, id: Any) -> None: ...
