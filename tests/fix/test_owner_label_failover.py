"""The owner label follows a FIX acceptor across real pods: 3 replicas, 2 `raftorch-adapter`
processes, real PostgreSQL, QuickFIX as the venue's initiator, and the Kubernetes API
stand-in (tests/fix/kubernetes_api.py, in a thread of the test) that both pods label
through. kill -9 of the owner while the API is down: the standby logs on anyway, keeps
its lease, counts the failures; once the API answers the label has moved."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest

from adapter.connectors.fix.ownerlabel import (
    ACCEPTORS_ENV,
    OWNER_VALUE,
    POD_NAME_ENV,
    POD_NAMESPACE_ENV,
    owner_label_key,
)
from devtools.postgres import free_ports
from tests.fix.harness import fix_config
from tests.fix.kubernetes_api import NAMESPACE, FakeKubernetes
from tests.fix.venue import Venue
from tests.integration.processes import (
    PodProcess,
    adapter_state,
    call,
    running_cluster,
    start_pod,
    stop_pod,
    wait_until,
)

T = TypeVar("T")
KEY = owner_label_key("venue-a")


class ApiThread:
    """The API stand-in on an event loop of its own thread; `run` calls into it."""

    def __init__(self, root: Path) -> None:
        self.api = FakeKubernetes(root)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, function: Callable[[], T]) -> T:
        async def inside() -> T:
            return function()

        return asyncio.run_coroutine_threadsafe(inside(), self.loop).result(10)

    def __enter__(self) -> ApiThread:
        self._thread.start()
        started: Future[dict[str, str]] = asyncio.run_coroutine_threadsafe(
            self.api.start(), self.loop
        )
        self.environ = started.result(10)
        return self

    def __exit__(self, *_exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.api.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


def metric(pod: PodProcess, line: str) -> float:
    """The value of the sample `line` (name{labels}) on the pod's /metrics, 0 if absent."""
    reply = call("GET", f"http://127.0.0.1:{pod.metrics_port}/metrics", token=None)
    page = reply.body.decode() if isinstance(reply.body, bytes) else ""
    for text in page.splitlines():
        if text.startswith(line + " "):
            return float(text.split()[-1])
    return 0.0


@contextmanager
def acceptor_system(tmp_path: Path, dsn: str) -> Iterator[tuple[Any, ...]]:
    [port] = free_ports(1)
    with ApiThread(tmp_path / "kube") as kube, running_cluster(tmp_path, dsn) as cluster:
        pods: list[PodProcess] = []
        venue = Venue(tmp_path / "venue", "initiator", "FIX.4.4", port)
        try:
            acceptors = json.dumps([{"name": "venue-a", "adapter": "venue", "port": port}])
            for i in range(2):
                kube.run(partial(kube.api.add_pod, f"pod-{i}"))
                environ = {
                    **kube.environ,
                    ACCEPTORS_ENV: acceptors,
                    POD_NAME_ENV: f"pod-{i}",
                    POD_NAMESPACE_ENV: NAMESPACE,
                }
                pods.append(start_pod(cluster, f"pod-{i}", tmp_path, environ=environ))
            wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "replicas")
            api = cluster.replicas[0].api_url
            body = {
                "name": "venue",
                "connector": "fix",
                "mode": "active_passive",
                "config": fix_config("acceptor", "FIX.4.4", port),
            }
            created = call("POST", f"{api}/api/v1/adapters", body)
            assert created.status == 201, created.body
            adapter_id = created.body["id"]
            assert call("POST", f"{api}/api/v1/adapters/{adapter_id}/enable").status == 202
            venue.start()
            yield kube, cluster, pods, venue, adapter_id
        except BaseException:
            for pod in pods:
                if pod.log_path.exists():
                    sys.stderr.write(f"--- {pod.pod_id}\n{pod.log_path.read_text()[-4000:]}\n")
            raise
        finally:
            venue.stop()
            for pod in pods:
                if pod.alive():
                    stop_pod(pod, signal.SIGKILL)


def owner_of(kube: ApiThread) -> dict[str, str]:
    """Pod -> epoch annotation, of every Pod carrying the owner label."""

    def read() -> dict[str, str]:
        return {
            name: kube.api.annotations(name).get(KEY, "")
            for name in kube.api.pods
            if kube.api.labels(name).get(KEY) == OWNER_VALUE
        }

    return kube.run(read)


@pytest.mark.timeout(240)
def test_the_owner_label_follows_a_kill_9_failover_even_when_the_api_was_down(
    tmp_path: Path, pg_dsn: str
) -> None:
    with acceptor_system(tmp_path, pg_dsn) as (kube, cluster, pods, venue, adapter_id):

        def active(not_on: str = "", *, standby: bool = False) -> dict[str, Any] | None:
            state = adapter_state(cluster, adapter_id)
            if state is None or state["status"] != "ACTIVE" or state["owner_pod"] == not_on:
                return None
            return state if state["standby_pods"] or not standby else None

        first = wait_until(lambda: active(standby=True), 60.0, "ACTIVE with a standby")
        wait_until(
            lambda: owner_of(kube) == {first["owner_pod"]: str(first["epoch"])},
            20.0,
            "the owner's Pod labelled, and only it",
        )
        victim = next(p for p in pods if p.pod_id == first["owner_pod"])
        standby = next(p for p in pods if p is not victim)
        kube.run(lambda: kube.api.set_mode("down"))
        stop_pod(victim, signal.SIGKILL)  # its Pod object (and label) stays, as in a node loss

        second = wait_until(lambda: active(victim.pod_id), 30.0, "the standby logged on")
        assert second["owner_pod"] == standby.pod_id and second["epoch"] > first["epoch"]

        def failures() -> float:  # whichever call it was at (the pod read its Pod at start)
            return sum(
                metric(standby, f'raftorch_fix_pod_label_requests_total{{operation="{op}",'
                                'result="error"}')
                for op in ("read", "list", "label", "unlabel")
            )  # fmt: skip

        wait_until(lambda: failures() >= 2, 30.0, "failed calls retried, counted")
        # The label could not move, the session runs anyway and the lease was kept.
        assert owner_of(kube) == {victim.pod_id: str(first["epoch"])}
        assert metric(standby, "raftorch_pod_self_fencing_total") == 0
        assert len(venue.find(dir="out", type="A")) >= 2  # QuickFIX logged on again

        kube.run(lambda: kube.api.set_mode("up"))
        wait_until(
            lambda: owner_of(kube) == {standby.pod_id: str(second["epoch"])},
            30.0,
            "the label moved to the new owner, the killed pod's removed",
        )
        assert (active() or {}).get("owner_pod") == standby.pod_id
        assert metric(standby, "raftorch_pod_self_fencing_total") == 0


@pytest.mark.timeout(180)
def test_a_restarted_pod_that_owns_nothing_drops_its_stale_owner_label(
    tmp_path: Path, pg_dsn: str
) -> None:
    # A container restart keeps its Pod object's labels. No acceptor runs anywhere here, so
    # only the pod's own start (adapter/cli.py) can take the stale label off.
    acceptors = json.dumps([{"name": "venue-a", "adapter": "venue", "port": 9}])
    with ApiThread(tmp_path / "kube") as kube, running_cluster(tmp_path, pg_dsn) as cluster:
        stale = {KEY: OWNER_VALUE}
        kube.run(partial(kube.api.add_pod, "pod-0", stale, {KEY: "7"}))
        kube.run(partial(kube.api.add_pod, "pod-1", stale, {KEY: "8"}))  # not started here
        environ = {
            **kube.environ,
            ACCEPTORS_ENV: acceptors,
            POD_NAME_ENV: "pod-0",
            POD_NAMESPACE_ENV: NAMESPACE,
        }
        pod = start_pod(cluster, "pod-0", tmp_path, environ=environ)
        try:
            wait_until(
                lambda: KEY not in kube.run(partial(kube.api.labels, "pod-0")),
                30.0,
                "the restarted pod's stale owner label removed",
            )
            other = kube.run(partial(kube.api.labels, "pod-1"))
            assert other.get(KEY) == OWNER_VALUE  # not its own label to clear
            assert pod.alive()
        finally:
            stop_pod(pod, signal.SIGKILL)
