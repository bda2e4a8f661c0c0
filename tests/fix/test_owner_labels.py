"""An acceptor's owner labels its own Pod through a real HTTPS Kubernetes API stand-in.

The connector runs in the test process with a real PostgreSQL (`FixHarness`); the API
server (tests/fix/kubernetes_api.py) is reached exactly as in a pod: the kubelet's
KUBERNETES_SERVICE_HOST/PORT, a service-account token and CA file, TLS verified.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapter.connectors.fix.ownerlabel import (
    ACCEPTORS_ENV,
    OWNER_VALUE,
    POD_NAME_ENV,
    POD_NAMESPACE_ENV,
    OwnerLabels,
    owner_label_key,
)
from adapter.sdk import SessionStatus
from devtools.postgres import free_ports
from persistence.db import Database
from tests.fix.harness import FixHarness, create_adapter, fix_config, until
from tests.fix.kubernetes_api import NAMESPACE, FakeKubernetes
from tests.fix.venue import Venue

KEY = owner_label_key("lse")
STALE = owner_label_key("xetra")  # left on our Pod by the container before a restart
METRIC = "raftorch_fix_pod_label_requests_total"


@pytest.fixture
async def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeKubernetes]:
    """The API server, and this process configured as pod `pod-a` with acceptor `lse`."""
    fake = FakeKubernetes(tmp_path / "kube")
    for name, value in (await fake.start()).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(POD_NAME_ENV, "pod-a")
    monkeypatch.setenv(POD_NAMESPACE_ENV, NAMESPACE)
    try:
        yield fake
    finally:
        labels = OwnerLabels.for_pod(None)
        if labels is not None:
            await labels.close()
        await fake.stop()


def expose(monkeypatch: pytest.MonkeyPatch, port: int, adapter: str = "venue") -> None:
    acceptors = [{"name": "lse", "adapter": adapter, "port": port}]
    monkeypatch.setenv(ACCEPTORS_ENV, json.dumps(acceptors))


def owns(api: FakeKubernetes, pod: str, epoch: int) -> bool:
    return api.labels(pod).get(KEY) == OWNER_VALUE and api.annotations(pod).get(KEY) == str(epoch)


async def test_the_owner_takes_the_label_from_an_older_owner_and_drops_it_on_stop(
    api: FakeKubernetes, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    [port] = free_ports(1)
    expose(monkeypatch, port)
    api.add_pod("pod-a", {STALE: OWNER_VALUE}, {STALE: "2"})
    api.add_pod("pod-old", {KEY: OWNER_VALUE}, {KEY: "3"})  # killed, its object still there
    api.add_pod("pod-b")
    async with Database(pg_dsn) as db:
        config = fix_config("acceptor", "FIX.4.4", port)
        harness = FixHarness(db, await create_adapter(db, config), config)
        await harness.start(epoch=5, pod="pod-a")
        await until(lambda: owns(api, "pod-a", 5), "pod-a labelled as the owner")
        assert KEY not in api.labels("pod-old") and KEY not in api.annotations("pod-old")
        assert STALE not in api.labels("pod-a"), "a stale label of this Pod survived"
        assert all(KEY not in api.labels(p) for p in ("pod-b",))
        # The older owner lost the label (conditionally, at the version listed) before
        # this Pod got it.
        patches = api.patches()
        order = [pod for pod, body in patches if KEY in body["metadata"]["labels"]]
        assert order == ["pod-old", "pod-a"], patches
        assert patches[[p for p, _ in patches].index("pod-old")][1]["metadata"]["resourceVersion"]
        # The config listens on 127.0.0.1: the event says the Service cannot reach it.
        await until(lambda: harness.said("set config.host to 0.0.0.0"), "the host warning")

        await harness.stop()
        await until(lambda: KEY not in api.labels("pod-a"), "the label removed on stop")
        assert KEY not in api.annotations("pod-a")
        assert harness.metric(METRIC, operation="label", result="ok") == 1
        assert harness.metric(METRIC, operation="unlabel", result="ok") >= 3
        assert (
            sum(
                harness.metric(METRIC, operation=op, result="error")
                for op in ("read", "list", "label", "unlabel", "pass")
            )
            == 0
        )


async def test_a_paused_owner_does_not_take_the_label_from_its_successor(
    api: FakeKubernetes, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    [port] = free_ports(1)
    expose(monkeypatch, port)
    api.add_pod("pod-a")
    api.add_pod("pod-b", {KEY: OWNER_VALUE}, {KEY: "7"})  # the successor
    async with Database(pg_dsn) as db:
        config = fix_config("acceptor", "FIX.4.4", port)
        harness = FixHarness(db, await create_adapter(db, config), config)
        await harness.start(epoch=5, pod="pod-a")  # a late start under an old epoch
        labels = OwnerLabels.for_pod(None)
        assert labels is not None
        await labels.reconcile_once()  # one full pass, whatever the background task did
        assert owns(api, "pod-b", 7) and KEY not in api.labels("pod-a")
        assert not [p for p, _ in api.patches() if p == "pod-b"]
        await harness.stop()


async def test_an_api_that_hangs_or_fails_never_holds_up_the_session(
    api: FakeKubernetes, pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [port] = free_ports(1)
    expose(monkeypatch, port)
    api.add_pod("pod-a")
    api.set_mode("hang")
    venue = Venue(tmp_path / "venue", "initiator", "FIX.4.4", port)
    lag = LoopLag()
    async with Database(pg_dsn) as db, lag:
        config = fix_config("acceptor", "FIX.4.4", port)
        harness = FixHarness(db, await create_adapter(db, config), config)
        began = time.monotonic()
        await harness.start(epoch=5, pod="pod-a")
        started = time.monotonic() - began
        try:
            await asyncio.to_thread(venue.start)
            # QuickFIX logs on and the session runs while every API call hangs.
            await until(lambda: harness.status is SessionStatus.ACTIVE, "Logon answered")
            await until(lambda: len(venue.find(dir="in", type="0")) >= 2, "our heartbeats")
            await until(
                lambda: harness.metric(METRIC, operation="read", result="error") >= 1,
                "the hung call timed out and counted",
            )
            assert KEY not in api.labels("pod-a")
            api.set_mode("down")  # now refused at once: retried with back-off, counted
            await until(
                lambda: harness.metric(METRIC, operation="read", result="error") >= 3,
                "failures retried",
            )
            assert harness.status is SessionStatus.ACTIVE
            api.set_mode("up")
            await until(lambda: owns(api, "pod-a", 5), "labelled once the API answers")
            assert harness.status is SessionStatus.ACTIVE
            await harness.stop()
            await until(lambda: KEY not in api.labels("pod-a"), "unlabelled on stop")
        finally:
            await asyncio.to_thread(venue.stop)
    # start() did not wait for the API (a call times out after 3 s), and the event loop
    # that also runs the pod's lease keeping never stalled.
    print(f"\nstart() {started * 1000:.0f} ms, worst loop lag {lag.worst * 1000:.0f} ms")
    assert started < 2.0
    assert lag.worst < 1.0


class LoopLag:
    """The worst delay of a 50 ms ticker on the test's event loop while it runs."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            due = time.monotonic() + 0.05
            await asyncio.sleep(0.05)  # the ticker itself, not a synchronisation
            self.worst = max(self.worst, time.monotonic() - due)

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.wait({self._task})


async def test_a_restarted_pod_that_owns_nothing_drops_its_stale_labels_when_asked(
    api: FakeKubernetes, monkeypatch: pytest.MonkeyPatch
) -> None:
    expose(monkeypatch, 9001)
    api.add_pod("pod-a", {KEY: OWNER_VALUE, STALE: OWNER_VALUE, "app": "x"}, {KEY: "4"})
    labels = OwnerLabels.for_pod(None)
    assert labels is not None
    labels.clear_stale()
    await until(lambda: not labels.busy, "the pass done and the task ended")
    assert api.labels("pod-a") == {"app.kubernetes.io/component": "adapter", "app": "x"}
    assert KEY not in api.annotations("pod-a")
    assert labels.failures == 0


async def test_labelling_is_off_without_the_chart_s_variable(api: FakeKubernetes) -> None:
    api.add_pod("pod-a")
    assert OwnerLabels.for_pod(None) is None  # KUBERNETES_* and the pod name alone: off
