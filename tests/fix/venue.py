"""The test side of the QuickFIX counterparty: start it, give it orders, read what it recorded."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.processes import wait_until

VENUE, US = "VENUE", "RAFTORCH"
DICTIONARIES = Path(sys.prefix) / "share" / "quickfix"


def dictionary_file(begin_string: str) -> Path:
    """The QuickFIX application dictionary of a session's BeginString."""
    name = "FIX50SP2" if begin_string == "FIXT.1.1" else begin_string.replace(".", "")
    return DICTIONARIES / f"{name}.xml"


@dataclass
class Venue:
    """One QuickFIX process; `role` is QuickFIX's (the connector takes the other one)."""

    root: Path
    role: str
    begin_string: str
    port: int
    heartbeat: int = 1
    process: subprocess.Popen[str] | None = None
    _seen: int = 0
    _records: list[dict[str, Any]] = field(default_factory=list)

    def start(self) -> Venue:
        self.root.mkdir(parents=True, exist_ok=True)
        config = {
            "role": self.role,
            "begin_string": self.begin_string,
            "port": self.port,
            "sender": VENUE,
            "target": US,
            "heartbeat": self.heartbeat,
        }
        (self.root / "config.json").write_text(json.dumps(config))
        log = (self.root / "stdout.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.fix.counterparty", str(self.root / "config.json")],
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()
        wait_until(lambda: self.find(event="started"), 20.0, "QuickFIX to start")
        return self

    def order(self, **command: Any) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            if self.process.poll() is None:
                self.order(cmd="quit")
                self.process.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait(timeout=5)
        finally:
            if self.process.stdin is not None:
                self.process.stdin.close()

    def records(self) -> list[dict[str, Any]]:
        path = self.root / "record.jsonl"
        if path.exists():
            with path.open(encoding="utf-8") as stream:
                stream.seek(self._seen)
                chunk = stream.read()
            complete = chunk[: chunk.rfind("\n") + 1]
            self._seen += len(complete.encode("utf-8"))
            self._records += [json.loads(line) for line in complete.splitlines() if line]
        return self._records

    def find(self, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.records() if all(r.get(k) == v for k, v in match.items())]

    def received_orders(self) -> Counter[str]:
        """ClOrdID -> times QuickFIX's application got it (PossDup resends included)."""
        return Counter(r["clordid"] for r in self.find(dir="in", type="D"))

    def wait_for_orders(self, count: int, timeout: float) -> Counter[str]:
        return wait_until(
            lambda: (c := self.received_orders()).total() >= count and c,
            timeout,
            f"QuickFIX to receive {count} orders",
        )

    def problems(self) -> list[dict[str, Any]]:
        """Rejects QuickFIX sent, and Logouts of its that complain about sequence numbers."""
        return [
            r
            for r in self.records()
            if r.get("dir") == "out"
            and (
                r.get("type") == "3" or (r.get("type") == "5" and "MsgSeqNum" in r.get("text", ""))
            )
        ]

    def logs(self) -> str:
        out = []
        for path in [*sorted(self.root.glob("log/*.event.log")), self.root / "stdout.log"]:
            if path.exists():
                out.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(out)


def wait_quiet(venue: Venue, seconds: float, timeout: float) -> None:
    """Wait until QuickFIX has recorded nothing new for `seconds` (streams have drained)."""
    state = {"count": -1, "since": time.monotonic()}

    def quiet() -> bool:
        count = len(venue.records())
        if count != state["count"]:
            state["count"], state["since"] = count, time.monotonic()
        return time.monotonic() - state["since"] >= seconds

    wait_until(quiet, timeout, "QuickFIX to go quiet")
