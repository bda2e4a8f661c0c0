"""A real cluster for the browser tests: 3 `raftorch serve` replicas, 3 pods, a TCP venue.

The adapters use the `tcp-client` connector against a loopback server that holds each
connection open, so sessions are ACTIVE at almost no CPU cost. The replicas and pods run
the test harness's settings (`tests.integration.processes`), with the demo's 3 s lease.
"""

from __future__ import annotations

import os
import signal
import socketserver
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.processes import (
    ADMIN_TOKEN,
    PodProcess,
    ProcessCluster,
    ReplicaProcess,
    call,
    start_pod,
    stop_pod,
    wait_until,
)

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium dials out at start and, on a closed
# network, its own connections are refused; --no-sandbox because CI runs as root.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS_ENV = "RAFTORCH_PORTAL_SCREENSHOTS"
BASELINE = [
    {"name": "orders-fix", "mode": "single", "artifacts": ["FIX44"]},
    {"name": "prices-feed", "mode": "active_passive"},
    {"name": "risk-stream", "mode": "scale_out", "instances": 2},
]


class _Hold(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while self.request.recv(4096):
            pass


class Venue(socketserver.ThreadingTCPServer):
    """The far end of every tcp-client session: accepts and keeps connections open."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Hold)
        self.thread = threading.Thread(target=self.serve_forever, name="venue", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@dataclass
class System:
    cluster: ProcessCluster
    root: Path
    venue: Venue
    pods: list[PodProcess] = field(default_factory=list)
    adapters: dict[str, str] = field(default_factory=dict)  # name -> id
    _next_pod: int = 0

    # --- API helpers ------------------------------------------------------------------

    def api(self, method: str, path: str, body: Any = None, *, token: str = ADMIN_TOKEN) -> Any:
        """One admin call through any live replica; asserts success."""
        last = None
        for replica in self.live_replicas():
            reply = call(method, replica.api_url + path, body, token=token)
            if reply.status != 503:
                assert reply.status < 300, (method, path, reply.status, reply.body)
                return reply.body
            last = reply
        raise AssertionError(f"no replica answered {method} {path}: {last}")

    def live_replicas(self) -> list[ReplicaProcess]:
        return [r for r in self.cluster.replicas if r.alive()]

    def adapters_by_name(self) -> dict[str, dict[str, Any]]:
        return {a["name"]: a for a in self.api("GET", "/api/v1/adapters")["items"]}

    def follower(self) -> ReplicaProcess:
        """A replica that is not the leader: the Portal must be live through followers."""
        leader = wait_until(self.cluster.leader, 30.0, "an agreed leader")
        return next(r for r in self.live_replicas() if r is not leader)

    def tcp_adapter(self, name: str, mode: str, **extra: Any) -> dict[str, Any]:
        body = {"name": name, "connector": "tcp-client", "mode": mode,
                "config": {"host": "127.0.0.1", "port": self.venue.port}, **extra}  # fmt: skip
        created: dict[str, Any] = self.api("POST", "/api/v1/adapters", body)
        return created

    def remove_adapter(self, adapter_id: str) -> None:
        self.api("POST", f"/api/v1/adapters/{adapter_id}/disable")
        self.api("DELETE", f"/api/v1/adapters/{adapter_id}")

    def token(self, role: str) -> dict[str, str]:
        """A new stored token: {"id", "name", "role", "token", "created_at"}."""
        made: dict[str, str] = self.api(
            "POST", "/api/v1/tokens", {"name": f"{role}-{uuid.uuid4().hex[:8]}", "role": role}
        )
        return made

    # --- pods and readiness -----------------------------------------------------------

    def start_pod(self) -> PodProcess:
        pod = start_pod(self.cluster, f"pod-{self._next_pod}", self.root)
        self._next_pod += 1
        self.pods.append(pod)
        return pod

    def kill_pod(self, pod_id: str) -> None:
        pod = next(p for p in self.pods if p.pod_id == pod_id)
        stop_pod(pod, signal.SIGKILL)
        self.pods.remove(pod)

    def wait_baseline(self, timeout: float = 60.0) -> None:
        """Every baseline adapter ACTIVE, every other adapter gone, three live pods."""
        while len([p for p in self.pods if p.alive()]) < 3:
            self.start_pod()
        names = {b["name"] for b in BASELINE}

        def settled() -> bool:
            found = self.adapters_by_name()
            return set(found) == names and all(a["status"] == "ACTIVE" for a in found.values())

        wait_until(settled, timeout, "the baseline adapters ACTIVE")

    def close(self) -> None:
        for pod in self.pods:
            if pod.alive():
                stop_pod(pod, signal.SIGKILL)


def start_system(cluster: ProcessCluster, root: Path) -> System:
    venue = Venue()
    venue.thread.start()
    system = System(cluster, root, venue)
    wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "replicas ready")
    for _ in range(3):
        system.start_pod()
    content = b"<fix major='4' minor='4'><header/><trailer/><messages/></fix>"
    for artifact in ("FIX44", "venue-map"):
        reply = call("POST", f"{cluster.replicas[0].api_url}/api/v1/artifacts/{artifact}",
                     raw=content, content_type="text/xml")  # fmt: skip
        assert reply.status == 201, reply.body
    for spec in BASELINE:
        extra = {k: v for k, v in spec.items() if k not in ("name", "mode")}
        adapter = system.tcp_adapter(str(spec["name"]), str(spec["mode"]), **extra)
        system.adapters[adapter["name"]] = adapter["id"]
        system.api("POST", f"/api/v1/adapters/{adapter['id']}/enable")
    system.wait_baseline(90.0)
    return system


def screenshot_dir(default: Path) -> Path:
    """Where the screenshots go: $RAFTORCH_PORTAL_SCREENSHOTS (e.g. docs/portal) or `default`."""
    chosen = os.environ.get(SCREENSHOTS_ENV)
    target = Path(chosen) if chosen else default
    target.mkdir(parents=True, exist_ok=True)
    return target


Shoot = Callable[[Any, str], Path]
