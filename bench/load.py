"""The load generator's processes, seen from the bench: start, follow, stop, read results."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.measure import latency_ms

ROOT = Path(__file__).resolve().parent.parent
"""The checkout the fleets import `bench` from."""


@dataclass
class Results:
    """What the fleet processes recorded, merged."""

    sent: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    hedges: list[int] = field(default_factory=list)
    registrations: int = 0
    expired: int = 0
    held: dict[str, int] = field(default_factory=dict)
    stalls: list[tuple[float, float]] = field(default_factory=list)
    lapses: list[tuple[float, float]] = field(default_factory=list)
    rss_mb: float = 0.0  # the largest load generator process's peak

    def merge(self, data: dict[str, Any]) -> None:
        self.sent += data["sent"]
        self.latency += data["latency"]
        self.status += data["status"]
        self.hedges += data.get("hedges") or [0] * len(data["status"])
        self.registrations += data["registrations"]
        self.expired += data["expired"]
        self.held.update(data["held"])
        self.stalls += [(float(s[0]), float(s[1])) for s in data.get("stalls", ())]
        self.lapses += [(float(s[0]), float(s[1])) for s in data.get("lapses", ())]
        self.rss_mb = max(self.rss_mb, round(float(data.get("rss_mb", 0.0))))

    @property
    def lapsed(self) -> dict[str, Any]:
        """Pod-side lease lapses over the whole run (see bench.fleet)."""
        return _lapses(late for _, late in self.lapses)

    def window(self, start: float, end: float) -> dict[str, Any]:
        """Heartbeat figures for attempts sent in [start, end) (wall clock)."""
        ok: list[float] = []
        statuses: Counter[int] = Counter()
        hedges = 0
        for sent, latency, status, hedged in zip(
            self.sent, self.latency, self.status, self.hedges, strict=True
        ):
            if start <= sent < end:
                statuses[status] += 1
                hedges += hedged
                if status == 200:
                    ok.append(latency)
        non_200 = sum(n for s, n in statuses.items() if s != 200)
        stalls = [lag for at, lag in self.stalls if start <= at < end]
        lapses = (late for at, late in self.lapses if start <= at < end)
        return {
            "load_generator_stalls": {
                "over_100ms": len(stalls),
                "max_ms": round(max(stalls, default=0) * 1000),
            },
            "heartbeats": sum(statuses.values()),
            "hedged_attempts": hedges,
            "latency": latency_ms(ok),
            "non_200": non_200,
            "non_200_by_status": {str(s): n for s, n in sorted(statuses.items()) if s != 200},
            "pod_lease_lapses": _lapses(lapses),
        }


def _lapses(late: Iterable[float]) -> dict[str, Any]:
    seconds = list(late)
    return {"count": len(seconds), "max_late_ms": round(max(seconds, default=0) * 1000)}


RUNNING: set[FleetProcess] = set()
"""Fleets started and not yet stopped: `kill_leftovers` ends them when a bench fails."""


class FleetProcess:
    """One `python -m bench.fleet` process running `count` synthetic pods."""

    def __init__(
        self, workdir: Path, name: str, spec: dict[str, Any], module: str = "bench.fleet"
    ) -> None:
        self.name = name
        self.module = module
        self.spec_path = workdir / f"fleet-{name}.json"
        self.results_path = workdir / f"fleet-{name}-results.json"
        self.spec = {**spec, "results": str(self.results_path)}
        self.spec_path.write_text(json.dumps(self.spec))
        self.registered = asyncio.Event()
        self.acks: dict[str, float] = {}  # pod -> send time of its last acknowledged heartbeat
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._done = asyncio.Event()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            self.module,
            str(self.spec_path),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2**20,
            cwd=ROOT,
        )
        RUNNING.add(self)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while line := await self.process.stdout.readline():
            word, *rest = line.decode().split()
            if word == "registered":
                self.registered.set()
            elif word == "ack":
                self.acks[rest[0]] = float(rest[1])
            elif word == "done":
                self._done.set()

    async def wait_registered(self, seconds: float) -> None:
        waiter = asyncio.ensure_future(self.registered.wait())
        assert self.process is not None
        exited = asyncio.ensure_future(self.process.wait())
        await asyncio.wait({waiter, exited}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        exited.cancel()
        if not self.registered.is_set():
            raise RuntimeError(f"fleet {self.name}: pods not registered after {seconds:g}s")

    async def stop(self) -> dict[str, Any]:
        """Ask the fleet to stop and return what it recorded."""
        assert self.process is not None and self.process.stdin is not None
        with contextlib.suppress(ConnectionError):
            self.process.stdin.write(b"stop\n")
            await self.process.stdin.drain()
        await asyncio.wait_for(self.process.wait(), 60)
        RUNNING.discard(self)
        if self._reader is not None:
            await self._reader
        data: dict[str, Any] = json.loads(self.results_path.read_text())
        return data

    async def kill(self) -> None:
        """kill -9: the pods vanish without a word (their recorded figures are lost)."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        RUNNING.discard(self)
        if self._reader is not None:
            self._reader.cancel()


async def kill_leftovers() -> None:
    """kill -9 every fleet still running (a bench failed or was interrupted)."""
    for fleet in list(RUNNING):
        await fleet.kill()


async def stop_all(fleets: Iterable[FleetProcess]) -> Results:
    results = Results()
    for data in await asyncio.gather(*(f.stop() for f in fleets)):
        results.merge(data)
    return results


def split(total: int, parts: int) -> list[int]:
    """`total` pods over `parts` processes as evenly as possible (no empty part)."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
