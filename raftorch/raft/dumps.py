"""pysyncobj's full dump (log compaction), written on a thread of its own.

Every `logCompactionMinTime` (300 s) each replica writes the whole state to its dump
file and drops the journal entries it covers. pysyncobj writes it either in a forked
child (unsafe in a threaded asyncio process, so the node does not) or on the Raft tick
thread, which then sends no append-entries until the file is written: about 0.3 s at
100,000 slots, longer than the shortest election timeout at TTL 3 s (0.17 s). A
compaction on the leader cost a leader change in a 5-minute hold of 100,000 sessions
(docs/performance.md, "Log compaction and the leader change in every long hold").

`ThreadedDumpWriter` replaces pysyncobj's serializer for writing. On the tick thread
it only captures the state: the replicated snapshot is immutable, so a capture is a
reference to it and a copy of the small table of applied request ids, consistent with
the log index pysyncobj records beside it. Encoding, compressing and writing happen on
the `raft-dump` thread; compression releases the GIL. Until the file is in place the
serializer reports "serializing", as pysyncobj's own does while a forked child writes:
the journal is kept and no dump is sent to a lagging follower. Reading a dump, and
receiving one from the leader, are pysyncobj's own; the file format is unchanged.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pysyncobj.pickle as raft_pickle
from pysyncobj.atomic_replace import atomicReplace
from pysyncobj.config import SERIALIZER_STATE
from pysyncobj.serializer import Serializer

from raftorch.core.ownership import OwnershipState

log = logging.getLogger(__name__)

DUMP_COMPRESSION_LEVEL = 1
"""gzip level of the full dump (pysyncobj's: 9, which took 1.25 s for the 16 MB of
100,000 slots; level 1 takes about 0.12 s for a file 10% larger). Any level reads."""
_WRITING = -3
"""pysyncobj's serializer keeps its state in a child pid: 0 idle, -1 written, -2 failed
(the in-process values); this one adds 'a thread is writing'."""

Capture = Callable[[Any], Any]


def capture_replicated(data: Any) -> Any:
    """pysyncobj's dump tuple with the replicated state fixed as it is now.

    `data[0]` is the dict of the node's replicated attributes; its `OwnershipState`
    keeps changing as entries apply, so it is replaced by a frozen copy. The rest (the
    last two log entries, the cluster's nodes) is not changed after the call."""
    attributes, *rest = data
    frozen = {
        name: value.frozen() if isinstance(value, OwnershipState) else value
        for name, value in attributes.items()
    }
    return (frozen, *rest)


class ThreadedDumpWriter(Serializer):
    """pysyncobj's `Serializer` that writes dumps on a thread (see the module doc)."""

    def __init__(
        self,
        file_name: str,
        transmission_batch_bytes: int,
        *,
        capture: Capture = capture_replicated,
        level: int = DUMP_COMPRESSION_LEVEL,
    ) -> None:
        super().__init__(file_name, transmission_batch_bytes, False, None, None, None)
        self._file_name = file_name
        self._capture = capture
        self._level = level
        self.written = 0
        """Dumps written since start."""
        self.idle = threading.Event()
        """Set while no dump is being written."""
        self.idle.set()

    # pysyncobj's name-mangled state, in one place
    @property
    def _state(self) -> int:
        return int(self._Serializer__pid)

    @_state.setter
    def _state(self, value: int) -> None:
        self._Serializer__pid = value

    def serialize(self, data: Any, id: Any) -> None:  # pysyncobj's signature
        if self._state != 0:
            return
        self._Serializer__currentID = id
        captured = self._capture(data)
        self._state = _WRITING
        self.idle.clear()
        threading.Thread(
            target=self._write, args=(captured,), name="raft-dump", daemon=True
        ).start()

    def _write(self, data: Any) -> None:
        temporary = self._file_name + ".tmp"
        try:
            with (
                open(temporary, "wb") as raw,
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=self._level) as packed,
            ):
                raft_pickle.dump(data, packed)
            atomicReplace(temporary, self._file_name)
        except Exception:  # pysyncobj logs the failure and tries again at the next turn
            log.exception("writing the full Raft dump failed file=%s", self._file_name)
            self._state = -2
        else:
            self.written += 1
            self._state = -1
        self.idle.set()

    def checkSerializing(self) -> tuple[Any, Any]:
        if self._state == _WRITING:
            return SERIALIZER_STATE.SERIALIZING, self._Serializer__currentID
        with self._closing_dropped():  # a new dump ends every transmission of the old one
            return super().checkSerializing()

    # pysyncobj 0.3.17 opens the dump for each follower it sends it to and drops the file
    # without closing it when the transmission ends or is cancelled; these close it.

    def getTransmissionData(self, transmissionID: Any) -> Any:
        with self._closing_dropped():
            return super().getTransmissionData(transmissionID)

    def cancelTransmisstion(self, id: Any) -> None:  # sic: pysyncobj's name
        with self._closing_dropped():
            super().cancelTransmisstion(id)

    @contextlib.contextmanager
    def _closing_dropped(self) -> Iterator[None]:
        before = dict(self._Serializer__transmissions)
        try:
            yield
        finally:
            after = self._Serializer__transmissions
            for key, transmission in before.items():
                if after.get(key) is not transmission and "file" in transmission:
                    transmission["file"].close()
