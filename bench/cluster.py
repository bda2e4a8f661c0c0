"""The system under test: a throwaway PostgreSQL and 3 `raftorch serve` replicas.

Started the way `raftorch demo` starts them (same environment, shipped defaults: the
Raft timers derived from the lease TTL), on loopback ports from the OS.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.load import ROOT
from devtools.postgres import PostgresServer, free_ports

READY_SECONDS = 90.0
POLL_SECONDS = 0.05
_GAUGE_RE = re.compile(
    r'^raftorch_(sessions|pods)\{(?:status|state)="(\w+)"\} ([0-9.e+]+)$', re.MULTILINE
)
_HEDGES_RE = re.compile(r'^raftorch_pod_hedges_total\{outcome="(\w+)"\} ([0-9.e+]+)$', re.MULTILINE)


class BenchError(RuntimeError):
    """The system under test did not do what the bench needs (with the reason)."""


@dataclass
class Replica:
    node_id: str
    raft_port: int
    api_port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class Cluster:
    """PostgreSQL plus `size` replicas under `root`; `async with` starts and stops them."""

    root: Path
    ttl: float = 3.0
    size: int = 3
    admin_token: str = field(default_factory=lambda: "bench-admin-" + secrets.token_urlsafe(12))
    pod_token: str = field(default_factory=lambda: "bench-pod-" + secrets.token_urlsafe(12))
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    replicas: list[Replica] = field(default_factory=list)
    settings: dict[str, str] = field(default_factory=dict)
    """RAFTORCH_* settings on top of the shipped defaults (a bench that sets any says why)."""

    async def __aenter__(self) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.pg = PostgresServer(base_dir=self.root / "postgres")
        await asyncio.to_thread(self.pg.start)
        await asyncio.to_thread(self.pg.create_database, "raftorch")
        self.dsn = self.pg.dsn("raftorch")
        ports = free_ports(2 * self.size)
        self.replicas = [
            Replica(f"r{i}", ports[2 * i], ports[2 * i + 1], self.root / f"r{i}.log")
            for i in range(self.size)
        ]
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        try:
            for replica in self.replicas:
                self.start(replica)
            await self.until(self._all_ready, READY_SECONDS, "replicas ready")
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *_exc: object) -> None:
        for replica in self.replicas:
            if replica.alive() and replica.process is not None:
                replica.process.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            if replica.process is None:
                continue
            try:
                await asyncio.to_thread(replica.process.wait, 20)
            except subprocess.TimeoutExpired:
                replica.process.kill()
                await asyncio.to_thread(replica.process.wait, 5)
        await self.http.close()
        await asyncio.to_thread(self.pg.cleanup)

    # --- processes ------------------------------------------------------------------

    def env(self, replica: Replica) -> dict[str, str]:
        """The demo's replica environment (raftorch.ops.demo): shipped defaults otherwise."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTORCH_")}
        raft = [f"127.0.0.1:{r.raft_port}" for r in self.replicas]
        me = f"127.0.0.1:{replica.raft_port}"
        env.update(
            {
                # The replicas run the tree the bench runs from, not whatever raftorch is
                # installed: a `git archive` export measures the code it holds.
                "PYTHONPATH": str(ROOT),
                "RAFTORCH_NODE__ID": replica.node_id,
                "RAFTORCH_NODE__DATA_DIR": str(self.root / replica.node_id),
                "RAFTORCH_RAFT__BIND": me,
                "RAFTORCH_RAFT__PEERS": ",".join(a for a in raft if a != me),
                "RAFTORCH_RAFT__SECRET": self.secret,
                "RAFTORCH_LEASE__TTL_SECONDS": str(self.ttl),
                "RAFTORCH_API__HOST": "127.0.0.1",
                "RAFTORCH_API__PORT": str(replica.api_port),
                "RAFTORCH_API__ADMIN_TOKEN": self.admin_token,
                "RAFTORCH_API__POD_BOOTSTRAP_TOKEN": self.pod_token,
                "RAFTORCH_DATABASE__DSN": self.dsn,
                **self.settings,
            }
        )
        return env

    def start(self, replica: Replica) -> None:
        with replica.log.open("ab") as out:
            replica.process = subprocess.Popen(
                [sys.executable, "-P", "-m", "raftorch", "serve"],
                env=self.env(replica),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.root,
            )

    def pids(self) -> list[int]:
        return [r.process.pid for r in self.replicas if r.process is not None]

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    def check_alive(self) -> None:
        for replica in self.replicas:
            if replica.process is not None and replica.process.poll() is not None:
                tail = replica.log.read_text(errors="replace").splitlines()[-15:]
                raise BenchError(
                    f"replica {replica.node_id} exited "
                    f"({replica.process.returncode}):\n" + "\n".join(tail)
                )

    async def until(self, check: Any, seconds: float, what: str) -> float:
        """Wait for `await check()` to be true; the time it took. Raises after `seconds`.
        A replica too busy to answer a check in time is "not yet", not a failure."""
        started = time.monotonic()
        while not await self._checked(check):
            if time.monotonic() - started > seconds:
                raise BenchError(f"timed out after {seconds:g}s waiting for {what}")
            await asyncio.sleep(POLL_SECONDS)
        return time.monotonic() - started

    @staticmethod
    async def _checked(check: Any) -> bool:
        try:
            return bool(await check())
        except (aiohttp.ClientError, TimeoutError):
            return False

    # --- admin API --------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    async def admin(self, method: str, url: str, body: Any = None, timeout: float = 10.0) -> Any:
        async with self.http.request(
            method,
            url,
            json=body,
            headers=self._headers(),
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as answer:
            if answer.status >= 300:
                raise BenchError(f"{method} {url}: {answer.status} {await answer.text()}")
            return await answer.json() if answer.content_length != 0 else None

    async def _all_ready(self) -> bool:
        self.check_alive()
        for url in self.urls:
            try:
                async with self.http.get(
                    url + "/readyz", timeout=aiohttp.ClientTimeout(total=1)
                ) as answer:
                    if answer.status != 200:
                        return False
            except (aiohttp.ClientError, TimeoutError):
                return False
        return await self.leader() is not None

    async def leader(self) -> Replica | None:
        """The replica every live one names as leader, or None."""
        seen = set()
        for replica in self.replicas:
            if not replica.alive():
                continue
            try:
                body = await self.admin("GET", replica.url + "/api/v1/cluster", timeout=1.0)
            except (aiohttp.ClientError, TimeoutError, BenchError):
                return None
            seen.add(body["leader"])
        if len(seen) != 1 or None in seen:
            return None
        [leader] = seen
        return next((r for r in self.replicas if r.node_id == leader and r.alive()), None)

    async def follower(self) -> Replica:
        leader = await self.leader()
        return next(r for r in self.replicas if r is not leader and r.alive())

    async def session_counts(self, replica: Replica) -> dict[str, int]:
        """Slots by status, and `pods` (registered), as `replica` sees them (its /metrics:
        cheap to poll)."""
        async with self.http.get(
            replica.url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)
        ) as answer:
            text = await answer.text()
        counts = {"pods": 0}
        for kind, label, value in _GAUGE_RE.findall(text):
            if kind == "pods":
                counts["pods"] += int(float(value))
            else:
                counts[label] = int(float(value))
        return counts

    async def hedges_held(self) -> dict[str, int]:
        """Hedged heartbeats the live replicas held, by outcome (dropped, relayed)."""
        held = {"dropped": 0, "relayed": 0}
        for replica in self.replicas:
            if not replica.alive():
                continue
            async with self.http.get(
                replica.url + "/metrics", timeout=aiohttp.ClientTimeout(total=5)
            ) as answer:
                text = await answer.text()
            for outcome, value in _HEDGES_RE.findall(text):
                held[outcome] = held.get(outcome, 0) + int(float(value))
        return held

    async def create_adapters(self, count: int, instances: int, port: int) -> list[str]:
        """`count` scale_out tcp-client adapters of `instances` slots each (DISABLED)."""
        url = self.replicas[0].url + "/api/v1/adapters"
        ids: list[str] = []
        for i in range(count):
            body = {
                "name": f"bench-{i:05d}",
                "connector": "tcp-client",
                "mode": "scale_out",
                "instances": instances,
                "config": {"host": "127.0.0.1", "port": port},
            }
            ids.append((await self.admin("POST", url, body))["id"])
        return ids

    async def enable(self, ids: list[str]) -> None:
        url = self.replicas[0].url + "/api/v1/adapters/bulk"
        for start in range(0, len(ids), 10_000):
            await self.admin(
                "POST", url, {"action": "enable", "ids": ids[start : start + 10_000]}, timeout=60
            )

    async def adapters(self, replica: Replica) -> list[dict[str, Any]]:
        """Every adapter with its slots, through the admin API (paged)."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = "?limit=1000&configs=false" + (f"&cursor={cursor}" if cursor else "")
            page = await self.admin("GET", replica.url + "/api/v1/adapters" + query, timeout=60)
            items += page["items"]
            cursor = page.get("next_cursor")
            if cursor is None:
                return items

    async def slots_by_owner(self, replica: Replica) -> dict[str, tuple[str | None, str, int]]:
        """slot -> (owner pod, status, epoch), from the admin API."""
        return {
            s["slot"]: (s["owner_pod"], s["status"], s["epoch"] or 0)
            for a in await self.adapters(replica)
            for s in a["slots"]
        }

    async def handed_off(self, replica: Replica, slots: Mapping[str, int]) -> set[str]:
        """Of `slots` (slot -> the epoch it had, 0 if it had no owner), those the leader
        moved by a planned handoff (rebalancing, draining), as their adapters' event logs
        say (the newest 1,000 events each). A handoff whose event the killed leader had not
        yet written is not found (counted as a drop)."""
        found: set[str] = set()
        for adapter in sorted({slot.rsplit("/", 1)[0] for slot in slots}):
            url = f"{replica.url}/api/v1/adapters/{adapter}/events?limit=1000"
            for event in (await self.admin("GET", url, timeout=30))["items"]:
                details = event.get("details") or {}
                slot = str(details.get("slot"))
                if slot not in slots or "to_pod" not in details:
                    continue
                # 0: unowned when first read (released by its handoff, not yet granted on).
                if slots[slot] in (0, details.get("epoch")):
                    found.add(slot)
        return found

    async def drain(self, pod_id: str, draining: bool) -> None:
        verb = "drain" if draining else "undrain"
        await self.admin("POST", f"{self.replicas[0].url}/api/v1/pods/{pod_id}/{verb}")

    def kill(self, replica: Replica) -> None:
        if replica.process is not None:
            with contextlib.suppress(ProcessLookupError):
                replica.process.send_signal(signal.SIGKILL)
            replica.process.wait(10)
