"""`raftorch demo`: the whole system on one machine, in one command.

PostgreSQL (from the binaries on PATH), N orchestrator replicas, M adapter pods,
sample adapters in all three modes with a producer feeding them. Writes
``DIR/demo.json`` once everything is ACTIVE and rewrites it whenever it restarts a
process. Ctrl-C (or SIGTERM) stops everything. Running it again on the same data
directory resumes: same ports, tokens, database and Raft data.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from devtools.postgres import PostgresServer, free_ports
from protocol.errors import ConfigError, UnavailableError
from raftorch.config import Config, LeaseConfig

MODES = ("active_passive", "single", "scale_out")
POLL_SECONDS = 0.25
LOG_TAIL_LINES = 15


@dataclass
class DemoState:
    """What a resumed demo must reuse (saved as DIR/demo-state.json)."""

    pg_port: int
    tcp_port: int
    raft_ports: list[int]
    api_ports: list[int]
    pod_ports: list[int]
    admin_token: str
    pod_token: str
    raft_secret: str

    @classmethod
    def load_or_create(cls, path: Path, replicas: int, pods: int) -> DemoState:
        if path.exists():
            path.chmod(0o600)  # an older demo wrote it readable to all (issue 13)
            state = cls(**json.loads(path.read_text()))
            if len(state.api_ports) == replicas and len(state.pod_ports) == pods:
                return state
        ports = free_ports(2 + 2 * replicas + pods)
        state = cls(
            pg_port=ports[0],
            tcp_port=ports[1],
            raft_ports=ports[2 : 2 + replicas],
            api_ports=ports[2 + replicas : 2 + 2 * replicas],
            pod_ports=ports[2 + 2 * replicas :],
            admin_token="demo-admin-" + secrets.token_urlsafe(12),
            pod_token="demo-pod-" + secrets.token_urlsafe(12),
            raft_secret=secrets.token_urlsafe(24),
        )
        write_private(path, json.dumps(state.__dict__, indent=2))
        return state


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read: the demo's files hold its tokens and secret."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # an older file may have been created readable
        out.write(text)


class StartupFailedError(UnavailableError):
    """A process of the demo died while the demo was coming up."""

    code = "demo_startup_failed"
    retriable = False


@dataclass
class Child:
    """One supervised process (a replica or a pod)."""

    kind: str
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self) -> None:
        # In the data directory, and with -P in argv: nothing in the caller's working
        # directory (such as a checkout folder named raftorch) can shadow the package.
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.log.parent,
            )  # fmt: skip

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exited(self) -> int | None:
        """The exit code once the process has ended (None while it runs or never ran)."""
        return self.process.poll() if self.process is not None else None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Demo:
    data_dir: Path
    replicas: int = 3
    pods: int = 3
    adapters: int = 3
    ttl: float = 3.0
    say: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= 7:
            raise ConfigError(f"--replicas {self.replicas}: use 1 to 7")
        if not 1 <= self.pods <= 20:
            raise ConfigError(f"--pods {self.pods}: use 1 to 20")
        if not 0 <= self.adapters <= 100:
            raise ConfigError(f"--adapters {self.adapters}: use 0 to 100")
        if not 0 < self.ttl <= 60.0:
            raise ConfigError(f"--lease-ttl {self.ttl}: use at most 60 seconds")
        try:  # the replicas would refuse it; say so before anything starts
            Config(lease=LeaseConfig(ttl_seconds=self.ttl))
        except ConfigError as exc:
            raise ConfigError(f"--lease-ttl {self.ttl:g}: {exc.message}") from None
        self.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.state = DemoState.load_or_create(
            self.data_dir / "demo-state.json", self.replicas, self.pods
        )
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.state.pg_port}/raftorch"
        self.api_urls = [f"http://127.0.0.1:{p}" for p in self.state.api_ports]
        self.portal_url = self.api_urls[0] + "/"  # every replica serves the Portal
        self.pg = PostgresServer(base_dir=self.data_dir / "postgres", port=self.state.pg_port)

    # --- processes ----------------------------------------------------------------

    def _base_env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("RAFTORCH_")}

    def _replica(self, i: int) -> Child:
        env = self._base_env()
        raft = [f"127.0.0.1:{p}" for p in self.state.raft_ports]
        env.update({
            "RAFTORCH_NODE__ID": f"r{i}",
            "RAFTORCH_NODE__DATA_DIR": str(self.data_dir / f"replica-{i}"),
            "RAFTORCH_RAFT__BIND": raft[i],
            "RAFTORCH_RAFT__PEERS": ",".join(a for a in raft if a != raft[i]),
            "RAFTORCH_RAFT__SECRET": self.state.raft_secret,
            "RAFTORCH_LEASE__TTL_SECONDS": str(self.ttl),
            "RAFTORCH_API__PORT": str(self.state.api_ports[i]),
            "RAFTORCH_API__ADMIN_TOKEN": self.state.admin_token,
            "RAFTORCH_API__POD_BOOTSTRAP_TOKEN": self.state.pod_token,
            "RAFTORCH_DATABASE__DSN": self.dsn,
        })  # fmt: skip
        argv = [sys.executable, "-P", "-m", "raftorch", "serve"]
        return Child("replica", f"r{i}", argv, env, self.data_dir / f"replica-{i}.log")

    def _pod(self, i: int) -> Child:
        env = self._base_env()
        env.update({
            "RAFTORCH_ADAPTER_POD_ID": f"pod-{i}",
            "RAFTORCH_ADAPTER_ORCHESTRATORS": ",".join(self.api_urls),
            "RAFTORCH_ADAPTER_BOOTSTRAP_TOKEN": self.state.pod_token,
            "RAFTORCH_ADAPTER_DATABASE_DSN": self.dsn,
            "RAFTORCH_ADAPTER_METRICS_PORT": str(self.state.pod_ports[i]),
            "RAFTORCH_ADAPTER_LABELS": f"zone={'abc'[i % 3]}",
        })  # fmt: skip
        argv = [sys.executable, "-P", "-m", "adapter.cli", "run"]
        return Child("pod", f"pod-{i}", argv, env, self.data_dir / f"pod-{i}.log")

    # --- bring-up -----------------------------------------------------------------

    async def up(self) -> None:
        self.say(f"[demo] data directory {self.data_dir}")
        await asyncio.to_thread(self.pg.start)
        await self._prepare_database()
        self.say(f"[demo] PostgreSQL on 127.0.0.1:{self.state.pg_port}")
        self._tcp = await asyncio.start_server(_echo, "127.0.0.1", self.state.tcp_port)
        self.children = [self._replica(i) for i in range(self.replicas)]
        for child in self.children:
            child.start()
        async with aiohttp.ClientSession() as http:
            await self._until(lambda: self._all_ready(http), 90, "replicas ready")
            self.say(f"[demo] {self.replicas} replicas up: {', '.join(self.api_urls)}")
            pods = [self._pod(i) for i in range(self.pods)]
            for pod in pods:
                pod.start()
            self.children += pods
            self.say(f"[demo] {self.pods} adapter pods started")
            await self._sample_adapters(http)
            await self._until(lambda: self._all_active(http), 120, "adapters ACTIVE")
        self.write_demo_json()
        self.say(f"[demo] all adapters ACTIVE; wrote {self.data_dir / 'demo.json'}")
        self.say(f"[demo] admin token: {self.state.admin_token}")
        self.say(f"[demo] Portal: {self.portal_url}  (sign in with the admin token)")
        self.say(f"[demo] API: {self.api_urls[0]}/api/v1/adapters  (Ctrl-C stops everything)")

    async def _prepare_database(self) -> None:
        admin = await asyncpg.connect(self.dsn.rsplit("/", 1)[0] + "/postgres")
        try:
            exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = 'raftorch'")
            if not exists:
                await admin.execute("CREATE DATABASE raftorch")
        finally:
            await admin.close()
        conn = await asyncpg.connect(self.dsn)
        try:
            for i in self._queues():
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS demo_q_{i} (id bigint PRIMARY KEY, payload text)"
                )
        finally:
            await conn.close()

    def _adapter_body(self, i: int) -> dict[str, Any]:
        mode = MODES[i % 3]
        if mode == "scale_out":
            config: dict[str, Any] = {"host": "127.0.0.1", "port": self.state.tcp_port}
            return {"name": f"demo-feed-{i}", "connector": "tcp-client", "mode": mode,
                    "instances": 2, "config": config}  # fmt: skip
        config = {"queue_table": f"demo_q_{i}", "sink_table": f"demo_sink_{i}"}
        return {"name": f"demo-queue-{i}", "connector": "pg-queue-consumer", "mode": mode,
                "config": config}  # fmt: skip

    async def _sample_adapters(self, http: aiohttp.ClientSession) -> None:
        existing = {a["name"]: a for a in await self._get(http, "/api/v1/adapters")}
        for i in range(self.adapters):
            body = self._adapter_body(i)
            adapter = existing.get(body["name"])
            if adapter is None:
                adapter = await self._post(http, "/api/v1/adapters", body)
            if adapter["admin_state"] != "ENABLED":
                await self._post(http, f"/api/v1/adapters/{adapter['id']}/enable", None)
        self.say(f"[demo] {self.adapters} sample adapters enabled (all three modes)")

    # --- HTTP helpers ---------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.state.admin_token}"}

    async def _get(self, http: aiohttp.ClientSession, path: str) -> list[dict[str, Any]]:
        """Every item of the list at `path` (following `next_cursor`), from any replica."""
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = "" if cursor is None else "?" + urllib.parse.urlencode({"cursor": cursor})
            page = await self._get_page(http, path + query)
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if cursor is None:
                return items

    async def _get_page(self, http: aiohttp.ClientSession, path: str) -> dict[str, Any]:
        for url in self.api_urls:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(url + path, headers=self._headers(),
                                    timeout=aiohttp.ClientTimeout(total=3)) as answer:  # fmt: skip
                    if answer.status == 200:
                        page: dict[str, Any] = await answer.json()
                        return page
        raise UnavailableError(f"no replica answered GET {path}")

    async def _post(self, http: aiohttp.ClientSession, path: str, body: Any) -> dict[str, Any]:
        for url in self.api_urls:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.post(url + path, json=body, headers=self._headers(),
                                     timeout=aiohttp.ClientTimeout(total=5)) as answer:  # fmt: skip
                    if answer.status in (200, 201, 202):
                        result: dict[str, Any] = await answer.json()
                        return result
        raise UnavailableError(f"no replica accepted POST {path}")

    async def _all_ready(self, http: aiohttp.ClientSession) -> bool:
        for url in self.api_urls:
            try:
                async with http.get(url + "/readyz", timeout=aiohttp.ClientTimeout(total=1)) as a:
                    if a.status != 200:
                        return False
            except (aiohttp.ClientError, TimeoutError):
                return False
        return True

    async def _all_active(self, http: aiohttp.ClientSession) -> bool:
        try:
            items = await self._get(http, "/api/v1/adapters")
        except UnavailableError:
            return False
        demo = [a for a in items if a["name"].startswith("demo-")]
        return len(demo) >= self.adapters and all(a["status"] == "ACTIVE" for a in demo)

    def _check_children(self) -> None:
        """Stop the bring-up at once when a process died, naming it and showing its log."""
        for child in self.children:
            code = child.exited()
            if code is not None:
                raise StartupFailedError(
                    f"{child.kind} {child.name} exited during start-up with exit code {code}; "
                    f"its log is {child.log}; last lines:\n{child.log_tail()}"
                )

    async def _until(self, check: Callable[[], Any], seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        last_report = 0.0
        while not await check():
            self._check_children()
            now = time.monotonic()
            if now > deadline:
                logs = ", ".join(str(c.log) for c in self.children)
                raise UnavailableError(
                    f"timed out after {seconds:.0f}s waiting for {what}; see the logs: {logs}"
                )
            if now - last_report > 5:
                self.say(f"[demo] waiting for {what} ...")
                last_report = now
            await asyncio.sleep(POLL_SECONDS)

    # --- running ------------------------------------------------------------------

    def write_demo_json(self) -> None:
        replicas = [c for c in self.children if c.kind == "replica"]
        pods = [c for c in self.children if c.kind == "pod"]
        document = {
            "api_urls": self.api_urls,
            "portal_url": self.portal_url,
            "admin_token": self.state.admin_token,
            "lease_ttl_seconds": self.ttl,
            "replicas": [
                {"id": c.name, "pid": c.pid, "api_url": self.api_urls[i]}
                for i, c in enumerate(replicas)
            ],
            "pods": [{"id": c.name, "pid": c.pid} for c in pods],
            "postgres_dsn": self.dsn,
        }
        target = self.data_dir / "demo.json"
        temporary = target.with_suffix(".json.tmp")
        write_private(temporary, json.dumps(document, indent=2))
        temporary.replace(target)

    async def run(self, stop: asyncio.Event) -> None:
        """Feed the queues and restart any process that dies, until `stop`."""
        producer = asyncio.create_task(self._produce(stop))
        try:
            while not stop.is_set():
                for child in self.children:
                    if not child.alive():
                        child.restarts += 1
                        self.say(f"[demo] {child.name} exited; restarting it")
                        child.start()
                        self.write_demo_json()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await stop.wait()
        finally:
            producer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await producer

    def _queues(self) -> list[int]:
        return [i for i in range(self.adapters) if MODES[i % 3] != "scale_out"]

    async def _produce(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not stop.is_set():
                for i in self._queues():
                    await conn.execute(
                        f"INSERT INTO demo_q_{i} SELECT COALESCE(max(id), 0) + 1, "
                        f"'message ' || (COALESCE(max(id), 0) + 1) FROM demo_q_{i}"
                    )
                with contextlib.suppress(TimeoutError):  # one message per queue per 0.5 s
                    async with asyncio.timeout(0.5):
                        await stop.wait()
        finally:
            await conn.close()

    async def down(self) -> None:
        """SIGTERM the pods, then the replicas, waiting for each group and killing what is
        left of it; stop PostgreSQL. Pods go first: on SIGTERM each hands its sessions
        back, which needs the replicas up (stopped together, the releases of the pods
        that were slower than the replicas failed with "no commit within 2.0s")."""
        self.say("[demo] stopping ...")
        for kind in ("pod", "replica"):
            group = [c.process for c in self.children if c.kind == kind and c.process]
            for process in group:
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 20
            for process in group:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    await asyncio.to_thread(process.wait, max(0.1, deadline - time.monotonic()))
                if process.poll() is None:
                    process.kill()
                    await asyncio.to_thread(process.wait, 5)
        if getattr(self, "_tcp", None) is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
        await asyncio.to_thread(self.pg.stop)
        self.say("[demo] stopped")


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The demo's TCP venue: keeps connections open and echoes what it gets."""
    try:
        while data := await reader.read(4096):
            writer.write(data)
    except ConnectionError:
        pass
    finally:
        writer.close()


async def run_demo(demo: Demo) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        up = asyncio.create_task(demo.up())
        waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({up, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if up in done:
            up.result()
            waiter.cancel()
            await demo.run(stop)
        else:
            up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await up
    finally:
        await demo.down()
    return 0
