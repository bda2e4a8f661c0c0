"""Real `raftorch serve` processes for integration tests, on loopback ports from the OS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from devtools.postgres import free_ports

T = TypeVar("T")
POLL_SECONDS = 0.05  # how often a deadline wait looks again

ADMIN_TOKEN = "admin-token-for-tests"
POD_TOKEN = "pod-bootstrap-token-for-tests"
SECRET = "raft-secret-for-tests"


def wait_until(condition: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (OSError, ValueError, KeyError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} ({last_error})")
        time.sleep(POLL_SECONDS)


@dataclass
class Reply:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


def call(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = ADMIN_TOKEN,
    timeout: float = 5.0,
    raw: bytes | None = None,
    content_type: str = "application/json",
) -> Reply:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            payload = answer.read()
            status, headers = answer.status, dict(answer.headers)
    except urllib.error.HTTPError as err:
        payload, status, headers = err.read(), err.code, dict(err.headers)
    try:
        parsed: Any = json.loads(payload) if payload else None
    except ValueError:
        parsed = payload
    return Reply(status, parsed, headers)


def replica_env(
    node_id: str,
    data_dir: Path,
    *,
    raft_bind: str,
    peers: list[str],
    api_port: int,
    dsn: str,
    ttl: float,
    **extra: str,
) -> dict[str, str]:
    """The environment of a test replica: the shipped Raft timers (derived from `ttl`), the
    test tokens, `extra` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTORCH_")}
    env.update(
        {
            "RAFTORCH_NODE__ID": node_id,
            "RAFTORCH_NODE__DATA_DIR": str(data_dir),
            "RAFTORCH_RAFT__BIND": raft_bind,
            "RAFTORCH_RAFT__PEERS": ",".join(peers),
            "RAFTORCH_RAFT__SECRET": SECRET,
            "RAFTORCH_LEASE__TTL_SECONDS": str(ttl),
            "RAFTORCH_API__HOST": "127.0.0.1",
            "RAFTORCH_API__PORT": str(api_port),
            "RAFTORCH_API__ADMIN_TOKEN": ADMIN_TOKEN,
            "RAFTORCH_API__POD_BOOTSTRAP_TOKEN": POD_TOKEN,
            "RAFTORCH_DATABASE__DSN": dsn,
            "RAFTORCH_DATABASE__CONNECT_ATTEMPTS": "3",
            "RAFTORCH_DATABASE__CONNECT_TIMEOUT_SECONDS": "1",
            "RAFTORCH_DATABASE__COMMAND_TIMEOUT_SECONDS": "2",
            "RAFTORCH_LOG__LEVEL": "INFO",
            **extra,
        }
    )
    return env


def pod_env(
    pod_id: str, orchestrators: list[str], dsn: str, metrics_port: int, **extra: str
) -> dict[str, str]:
    """The environment of a test pod; `extra` keys are RAFTORCH_ADAPTER_<KEY> settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTORCH_")}
    env.update(
        {
            "RAFTORCH_ADAPTER_POD_ID": pod_id,
            "RAFTORCH_ADAPTER_ORCHESTRATORS": ",".join(orchestrators),
            "RAFTORCH_ADAPTER_BOOTSTRAP_TOKEN": POD_TOKEN,
            "RAFTORCH_ADAPTER_DATABASE_DSN": dsn,
            "RAFTORCH_ADAPTER_METRICS_PORT": str(metrics_port),
            "RAFTORCH_ADAPTER_CAPACITY": "50",
            **{f"RAFTORCH_ADAPTER_{k.upper()}": v for k, v in extra.items()},
        }
    )
    return env


@dataclass
class ReplicaProcess:
    node_id: str
    raft_port: int
    api_port: int
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def raft_address(self) -> str:
        return f"127.0.0.1:{self.raft_port}"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


class ProcessCluster:
    """N replicas sharing one PostgreSQL database."""

    def __init__(self, root: Path, dsn: str, size: int = 3, ttl: float = 3.0) -> None:
        root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(size * 2)
        self.dsn = dsn
        self.ttl = ttl
        self.replicas = [
            ReplicaProcess(f"r{i}", ports[2 * i], ports[2 * i + 1], root / f"r{i}",
                           root / f"r{i}.log")
            for i in range(size)
        ]  # fmt: skip

    def env(self, replica: ReplicaProcess) -> dict[str, str]:
        peers = [r.raft_address for r in self.replicas if r is not replica]
        return replica_env(replica.node_id, replica.data_dir, raft_bind=replica.raft_address,
                           peers=peers, api_port=replica.api_port, dsn=self.dsn,
                           ttl=self.ttl)  # fmt: skip

    def start(self, replica: ReplicaProcess) -> None:
        log = replica.log_path.open("ab")
        replica.process = subprocess.Popen(
            [sys.executable, "-m", "raftorch", "serve"],
            env=self.env(replica),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def start_all(self) -> None:
        for replica in self.replicas:
            self.start(replica)

    def kill(self, replica: ReplicaProcess, sig: int = signal.SIGKILL) -> None:
        assert replica.process is not None
        replica.process.send_signal(sig)
        replica.process.wait(timeout=15)

    def stop_all(self) -> None:
        for replica in self.replicas:
            if replica.alive():
                assert replica.process is not None
                replica.process.send_signal(signal.SIGTERM)
        for replica in self.replicas:
            if replica.process is not None:
                try:
                    replica.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    replica.process.kill()
                    replica.process.wait(timeout=5)

    def logs(self) -> str:
        return "\n".join(
            f"--- {r.node_id}\n{r.log_path.read_text(errors='replace')[-4000:]}"
            for r in self.replicas
            if r.log_path.exists()
        )

    def ready(self, replica: ReplicaProcess) -> bool:
        return call("GET", replica.api_url + "/readyz", token=None, timeout=1.0).status == 200

    def leader(self, among: list[ReplicaProcess] | None = None) -> ReplicaProcess | None:
        """The leader every live replica (of `among`) agrees on, or None."""
        live = [r for r in (among or self.replicas) if r.alive()]
        seen = set()
        for replica in live:
            reply = call("GET", replica.api_url + "/api/v1/cluster", timeout=1.0)
            if reply.status != 200 or reply.body["leader"] is None:
                return None
            seen.add(reply.body["leader"])
        if len(seen) != 1:
            return None
        [leader_id] = seen
        return next((r for r in live if r.node_id == leader_id), None)


@contextmanager
def running_cluster(
    root: Path, dsn: str, size: int = 3, ttl: float = 3.0
) -> Iterator[ProcessCluster]:
    cluster = ProcessCluster(root, dsn, size, ttl)
    cluster.start_all()
    try:
        yield cluster
    except BaseException:
        sys.stderr.write(cluster.logs())
        raise
    finally:
        cluster.stop_all()


@dataclass
class PodProcess:
    pod_id: str
    metrics_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def start_pod(
    cluster: ProcessCluster,
    pod_id: str,
    root: Path,
    *,
    environ: Mapping[str, str] | None = None,
    **extra: str,
) -> PodProcess:
    """A `raftorch-adapter run` process talking to every replica of `cluster`; `extra` are
    RAFTORCH_ADAPTER_<KEY> settings, `environ` other variables (PYTHONPATH for plugins)."""
    [port] = free_ports(1)
    pod = PodProcess(pod_id, port, root / f"{pod_id}.log")
    env = pod_env(pod_id, [r.api_url for r in cluster.replicas], cluster.dsn, port, **extra)
    env.update(environ or {})
    log = pod.log_path.open("ab")
    pod.process = subprocess.Popen(
        [sys.executable, "-m", "adapter.cli", "run"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    log.close()
    return pod


def stop_pod(pod: PodProcess, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
    assert pod.process is not None
    if pod.process.poll() is None:
        pod.process.send_signal(sig)
    try:
        return pod.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pod.process.kill()
        pod.process.wait(timeout=5)
        raise


def adapter_state(cluster: ProcessCluster, adapter_id: str) -> dict[str, Any] | None:
    for replica in cluster.replicas:
        if not replica.alive():
            continue
        reply = call("GET", f"{replica.api_url}/api/v1/adapters/{adapter_id}", timeout=2.0)
        if reply.status == 200:
            body: dict[str, Any] = reply.body
            return body
    return None
