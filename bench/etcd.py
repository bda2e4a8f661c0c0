"""The peer to beat: a 3-member etcd cluster (Debian's `etcd-server`) and its lease load.

`EtcdCluster` starts `etcd` 3 times on loopback ports from the OS with etcd's default
timers. The load (`python -m bench.etcd SPEC.json`, one process, like `bench.fleet`)
grants N leases with the raftorch lease TTL and keeps each alive once per second through
aetcd (a maintained asyncio etcd v3 client): its gRPC `Lease` stub, one long-lived
`LeaseKeepAlive` stream per member with the leases spread over the members, as etcd's
own Go client multiplexes keep-alives on one stream. (aetcd's `refresh_lease` opens a
new stream for every keep-alive, which no real client does at 1 Hz.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.control import stop_on_stdin
from devtools.postgres import free_ports

READY_SECONDS = 30.0


def available() -> bool:
    return shutil.which("etcd") is not None


@dataclass
class EtcdCluster:
    root: Path
    size: int = 3
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    client_ports: list[int] = field(default_factory=list)

    def start(self) -> None:
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError("etcd is not on PATH: install Debian's etcd-server")
        ports = free_ports(2 * self.size)
        self.client_ports = ports[: self.size]
        peers = ports[self.size :]
        initial = ",".join(f"m{i}=http://127.0.0.1:{peers[i]}" for i in range(self.size))
        for i in range(self.size):
            client, peer = (
                f"http://127.0.0.1:{self.client_ports[i]}",
                f"http://127.0.0.1:{peers[i]}",
            )
            argv = [
                binary,
                "--name",
                f"m{i}",
                "--data-dir",
                str(self.root / f"etcd-m{i}"),
                "--listen-client-urls",
                client,
                "--advertise-client-urls",
                client,
                "--listen-peer-urls",
                peer,
                "--initial-advertise-peer-urls",
                peer,
                "--initial-cluster",
                initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "bench",
                "--log-level",
                "warn",
                "--logger",
                "zap",
            ]
            with (self.root / f"etcd-m{i}.log").open("ab") as out:
                self.processes.append(subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT))

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    async def wait_ready(self) -> None:
        """Until a lease can be granted through every member."""
        import aetcd  # type: ignore[import-untyped]  # noqa: PLC0415 (only etcd benches need it)

        deadline = time.monotonic() + READY_SECONDS
        for port in self.client_ports:
            while True:
                client = aetcd.Client("127.0.0.1", port, timeout=2)
                try:
                    lease = await client.lease(5)
                    await client.revoke_lease(lease.id)
                    break
                except Exception:  # aetcd raises its own and grpc's errors while electing
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
                finally:
                    await client.close()

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


class LeaseKeeper:
    """`count` leases through the member at `port`, one keep-alive each per `interval`,
    all on one LeaseKeepAlive stream; results go into `out` (the fleet's format)."""

    def __init__(self, port: int, count: int, ttl: int, interval: float,
                 out: dict[str, Any]) -> None:  # fmt: skip
        self.port, self.count, self.ttl, self.interval, self.out = port, count, ttl, interval, out
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.pending: dict[int, tuple[float, float]] = {}  # lease -> (wall send, perf send)
        self.lapsed: set[int] = set()  # leases etcd answered TTL 0 for: expired
        self.granted = 0
        self.all_granted = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        import aetcd  # noqa: PLC0415

        self.client = aetcd.Client("127.0.0.1", self.port)
        try:
            await self.client.connect()
            stream = self.client.leasestub.LeaseKeepAlive(
                self._requests(), metadata=self.client.metadata
            )
            tasks = [asyncio.create_task(self._read(stream))]
            tasks += [asyncio.create_task(self._lease()) for _ in range(self.count)]
            await self.all_granted.wait()
            self.out["granted"] += 1
            if self.out["granted"] == self.out["members"]:
                print("registered", flush=True)
            await stop.wait()
            for task in tasks:
                task.cancel()
            stream.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await self.client.close()

    async def _requests(self) -> Any:
        while True:
            yield await self.queue.get()

    async def _read(self, stream: Any) -> None:
        out = self.out
        async for reply in stream:
            sent = self.pending.pop(reply.ID, None)
            if sent is not None:
                out["sent"].append(sent[0])
                out["latency"].append(time.perf_counter() - sent[1])
                out["status"].append(200 if reply.TTL > 0 else 410)
                if reply.TTL <= 0:
                    self.lapsed.add(reply.ID)

    async def _lease(self) -> None:
        """Granted here and kept alive from here: granting every lease first would let the
        first ones lapse before their first keep-alive (a pod heartbeats once registered)."""
        from aetcd.rpc import LeaseKeepAliveRequest  # type: ignore[import-untyped]  # noqa: PLC0415

        out = self.out
        lease_id = (await self.client.lease(self.ttl)).id
        self.granted += 1
        if self.granted == self.count:
            self.all_granted.set()
        await asyncio.sleep(random.uniform(0, self.interval))
        next_beat = time.monotonic()
        while True:
            if lease_id in self.pending:  # the last keep-alive was never answered
                out["sent"].append(self.pending.pop(lease_id)[0])
                out["latency"].append(self.interval)
                out["status"].append(0)
            if lease_id in self.lapsed:  # as a pod registers again: a new lease
                self.lapsed.discard(lease_id)
                out["expired"] += 1
                lease_id = (await self.client.lease(self.ttl)).id
                out["registrations"] += 1
            self.pending[lease_id] = (time.time(), time.perf_counter())
            self.queue.put_nowait(LeaseKeepAliveRequest(ID=lease_id))
            next_beat += self.interval
            await asyncio.sleep(max(0.0, next_beat - time.monotonic()))


async def _main(spec: dict[str, Any]) -> dict[str, Any]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    out: dict[str, Any] = {
        "sent": [],
        "latency": [],
        "status": [],
        "registrations": 0,
        "expired": 0,
        "held": {},
        "granted": 0,
    }
    ports: list[int] = spec["ports"]
    counts = [
        spec["count"] // len(ports) + (1 if i < spec["count"] % len(ports) else 0)
        for i in range(len(ports))
    ]
    out["members"] = sum(1 for n in counts if n)
    control_task = await stop_on_stdin(stop)
    await asyncio.gather(
        *(
            LeaseKeeper(port, n, spec["ttl"], spec["interval"], out).run(stop)
            for port, n in zip(ports, counts, strict=True)
            if n
        )
    )
    control_task.cancel()
    out["registrations"] += spec["count"]
    del out["granted"], out["members"]
    return out


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    out = asyncio.run(_main(spec))
    Path(spec["results"]).write_text(json.dumps(out))
    print("done", flush=True)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main(sys.argv[1])
