"""The full dump written on a thread: off the caller's thread, the state as it was when
compaction began, failures reported, and the file pysyncobj reads."""

from __future__ import annotations

import gzip
import pickle
import threading
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.config import SERIALIZER_STATE

from raftorch.core.model import RegisterPod
from raftorch.core.ownership import OwnershipState
from raftorch.raft.dumps import ThreadedDumpWriter, capture_replicated


class Gate:
    """Pickles only once opened: proof of which thread pickles, and when."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.pickled_on: str | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        self.pickled_on = threading.current_thread().name
        assert self.open.wait(10), "the gate was never opened"
        return (int, (7,))


class Broken:
    def __reduce__(self) -> tuple[Any, ...]:
        raise OSError("disk full")


def _until(writer: ThreadedDumpWriter, state: int, timeout: float = 10.0) -> Any:
    """The dump id once the write has ended in `state` (what pysyncobj's tick sees)."""
    assert writer.idle.wait(timeout), "the dump was never finished"
    found, entry = writer.checkSerializing()
    assert found == state, f"the write ended in state {found}, not {state}"
    return entry


def _writer(tmp_path: Path, **kwargs: Any) -> ThreadedDumpWriter:
    return ThreadedDumpWriter(str(tmp_path / "raft.dump"), 2**20, **kwargs)


def test_the_dump_is_written_on_its_own_thread(tmp_path: Path) -> None:
    writer = _writer(tmp_path, capture=lambda data: data)
    gate = Gate()
    writer.serialize(({"state": gate}, ("e1", 2, 1), ("e0", 1, 1), {"n1"}), 2)
    # serialize returned while the writer waits on the gate: the caller was not held
    assert writer.checkSerializing() == (SERIALIZER_STATE.SERIALIZING, 2)
    assert writer.getTransmissionData("follower") is None  # no half-written file is sent
    writer.serialize(({"other": 1},), 3)  # one at a time: ignored while writing
    gate.open.set()
    assert _until(writer, SERIALIZER_STATE.SUCCESS) == 2
    assert gate.pickled_on == "raft-dump"
    assert writer.deserialize() == ({"state": 7}, ("e1", 2, 1), ("e0", 1, 1), {"n1"})
    assert (tmp_path / "raft.dump").read_bytes()[8] == 4  # gzip XFL 4: fastest level
    assert not (tmp_path / "raft.dump.tmp").exists()
    assert writer.checkSerializing() == (SERIALIZER_STATE.NOT_SERIALIZING, None)


def test_a_failed_write_is_reported_and_the_next_one_runs(tmp_path: Path) -> None:
    writer = _writer(tmp_path, capture=lambda data: data)
    writer.serialize(({"state": Broken()},), 5)
    assert _until(writer, SERIALIZER_STATE.FAILED) == 5
    assert not (tmp_path / "raft.dump").exists()
    writer.serialize(({"state": 1},), 6)
    assert _until(writer, SERIALIZER_STATE.SUCCESS) == 6
    assert writer.deserialize() == ({"state": 1},)


def test_the_dump_holds_the_state_of_when_compaction_began(tmp_path: Path) -> None:
    state = OwnershipState()
    state.apply("r1", 1.0, [RegisterPod("p1", "i1", "127.0.0.1:1", frozenset({"fix"}), 10)])
    captured = capture_replicated(({"_ownership": state}, ("e", 1, 1), ("e", 0, 1), set()))
    state.apply("r2", 2.0, [RegisterPod("p2", "i2", "127.0.0.1:2", frozenset({"fix"}), 10)])
    restored = pickle.loads(pickle.dumps(captured[0]["_ownership"]))
    assert set(restored.pods) == {"p1"} and set(restored.applied) == {"r1"}
    assert set(state.pods) == {"p1", "p2"} and set(state.applied) == {"r1", "r2"}


@pytest.mark.parametrize("level", [1, 9], ids=["ours", "pysyncobj-default"])
def test_dumps_of_either_level_read_back(tmp_path: Path, level: int) -> None:
    """Dumps written before this writer (pysyncobj's level 9) still load."""
    data = ({"dump": bytes(range(256)) * 4096}, ("e", 1, 1))
    (tmp_path / "raft.dump").write_bytes(gzip.compress(pickle.dumps(data), compresslevel=level))
    assert _writer(tmp_path).deserialize() == data
