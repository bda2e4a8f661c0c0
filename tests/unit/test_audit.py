"""The lease audit trail: one parseable JSON line per fact, never an exception."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from persistence.audit import DISABLED, AuditTrail


def test_lines_carry_both_clocks_source_and_facts(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "pod.audit"
    ticks = iter([10.5, 11.25])
    trail = AuditTrail(path, "pod-1", clock=lambda: next(ticks), wall=lambda: 1700000000.0)
    trail.record("session_start", slot="a/0", epoch=3)
    trail.record("lease", deadline=None)
    trail.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [
        {"t": 10.5, "wall": 1700000000.0, "kind": "session_start", "source": "pod-1",
         "pid": os.getpid(), "slot": "a/0", "epoch": 3},
        {"t": 11.25, "wall": 1700000000.0, "kind": "lease", "source": "pod-1",
         "pid": os.getpid(), "deadline": None},
    ]  # fmt: skip


def test_appends_across_incarnations_and_threads(tmp_path: Path) -> None:
    path = tmp_path / "r0.audit"
    AuditTrail(path, "r0").record("leader", term=1)
    trail = AuditTrail(path, "r0")
    workers = [
        threading.Thread(target=lambda n=n: [trail.record("grant", n=n, i=i) for i in range(200)])
        for n in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    lines = path.read_text().splitlines()
    assert len(lines) == 801
    assert all(json.loads(line)["source"] == "r0" for line in lines)  # none torn or interleaved


def test_an_unwritable_path_disables_the_trail_without_raising(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    trail = AuditTrail(blocker / "trail.audit", "pod-1")
    trail.record("registered")
    trail.record("registered")
    assert trail.failures == 1 and not trail.enabled
    DISABLED.record("grant", slot="x")  # the default records nothing, anywhere
    assert not DISABLED.enabled
