"""The lease audit trail: an append-only JSON-lines file of ownership facts, per process.

Orchestrator replicas record every grant they apply; pods record their lease deadline,
each session they start and stop, and every write the fence rejected. Each line holds
`t` (the monotonic clock, CLOCK_MONOTONIC: comparable between processes of one host),
`wall` (unix time), `kind`, `source` (node or pod id) and `pid`, plus the facts of that
kind. The chaos campaign's checker reads these files; an operator can read them to
settle who owned a session when (see docs/reliability.md).

Contract: `record()` never raises and never blocks on anything but a local write. Each
line goes out in one `write(2)` on an O_APPEND descriptor, so a process killed with
SIGKILL leaves at most its last line torn, and lines written before it are in the page
cache (they survive a process crash, not a host crash: the trail is not fsynced). Facts
that begin an ownership (a session start) are written *before* they take effect, facts
that end one after, so the trail never understates what a process held.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class AuditTrail:
    """Appends one JSON object per `record()`; safe from any thread."""

    def __init__(
        self,
        path: Path | None,
        source: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._path = path
        self._source = source
        self._clock = clock
        self._wall = wall
        self._fd: int | None = None
        self._lock = threading.Lock()
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self._path is not None

    def open(self) -> None:
        """Open the file for appending (creating its directory); a failure disables the trail."""
        if self._path is None or self._fd is not None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        except OSError as exc:
            self.failures += 1
            log.warning("audit trail disabled path=%s error=%s", self._path, exc)
            self._path = None

    def record(self, kind: str, *, at: float | None = None, **facts: Any) -> None:
        """Write one line now (opening the file first if needed); `at` is when it
        happened on the monotonic clock, if that was earlier than now."""
        if self._path is None:
            return
        line = {
            "t": self._clock() if at is None else at,
            "wall": self._wall(),
            "kind": kind,
            "source": self._source,
            "pid": os.getpid(),
            **facts,
        }
        data = (json.dumps(line, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            if self._fd is None:
                self.open()
            if self._fd is None:
                return
            try:
                os.write(self._fd, data)
            except OSError as exc:
                self.failures += 1
                if self.failures == 1:
                    log.warning("audit trail write failed path=%s error=%s", self._path, exc)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


DISABLED = AuditTrail(None, "")
"""A trail that records nothing (the default everywhere)."""
