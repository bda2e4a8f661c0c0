"""The pod API against a real replica: credentials, msgpack, and bad input that changes nothing."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.integration.processes import (
    POD_TOKEN,
    ProcessCluster,
    call,
    running_cluster,
    wait_until,
)

MSGPACK = "application/msgpack"


@pytest.fixture(scope="module")
def replica(
    tmp_path_factory: pytest.TempPathFactory, pg_server: Any, pg_template: str
) -> Iterator[ProcessCluster]:
    name = "podapi_module"
    pg_server.create_database(name, template=pg_template)
    root: Path = tmp_path_factory.mktemp("podapi")
    with running_cluster(root, pg_server.dsn(name), size=1) as cluster:
        wait_until(lambda: cluster.ready(cluster.replicas[0]), 60.0, "a ready replica")
        yield cluster
    pg_server.drop_database(name)


def _url(cluster: ProcessCluster, path: str) -> str:
    return cluster.replicas[0].api_url + path


def _register(cluster: ProcessCluster, pod_id: str) -> str:
    reply = call("POST", _url(cluster, "/pod/v1/register"), {"pod_id": pod_id, "capacity": 5},
                 token=POD_TOKEN)  # fmt: skip
    assert reply.status == 201, reply.body
    return str(reply.body["credential"])


def _pods(cluster: ProcessCluster) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = call("GET", _url(cluster, "/api/v1/pods")).body["items"]
    return sorted(items, key=lambda p: p["id"])


def test_msgpack_register_and_heartbeat(replica: ProcessCluster) -> None:
    body = msgpack.packb({"pod_id": "mp-1", "connectors": [{"type": "tcp-client"}]})
    reply = call("POST", _url(replica, "/pod/v1/register"), raw=body, content_type=MSGPACK,
                 token=POD_TOKEN)  # fmt: skip
    assert reply.status == 201
    answer = msgpack.unpackb(reply.body)
    assert answer["pod_id"] == "mp-1" and answer["lease_ttl_seconds"] == replica.ttl
    beat = call("POST", _url(replica, "/pod/v1/heartbeat"),
                raw=msgpack.packb({"pod_id": "mp-1", "sessions": []}), content_type=MSGPACK,
                token=answer["credential"])  # fmt: skip
    assert beat.status == 200 and msgpack.unpackb(beat.body)["stop"] == []
    assert "mp-1" in [p["id"] for p in _pods(replica)]


def test_a_pod_cannot_act_as_another(replica: ProcessCluster) -> None:
    credential_a = _register(replica, "pod-a")
    _register(replica, "pod-b")
    for path, body in (
        ("/pod/v1/heartbeat", {"pod_id": "pod-b", "sessions": []}),
        ("/pod/v1/release", {"pod_id": "pod-b", "leave": True}),
    ):
        reply = call("POST", _url(replica, path), body, token=credential_a)
        assert reply.status == 403, reply.body
        assert reply.body["error"]["code"] == "forbidden"
    reply = call("GET", _url(replica, "/pod/v1/assignments?pod_id=pod-b"), token=credential_a)
    assert reply.status == 403
    assert "pod-b" in [p["id"] for p in _pods(replica)]


def test_a_live_pod_id_cannot_be_registered_twice(replica: ProcessCluster) -> None:
    _register(replica, "twin")
    reply = call("POST", _url(replica, "/pod/v1/register"), {"pod_id": "twin"}, token=POD_TOKEN)
    assert reply.status == 409 and "held by a live registration" in reply.body["error"]["message"]


def test_register_needs_the_bootstrap_token(replica: ProcessCluster) -> None:
    for token in (None, "wrong"):
        reply = call("POST", _url(replica, "/pod/v1/register"), {"pod_id": "intruder"},
                     token=token)  # fmt: skip
        assert reply.status == 401 and reply.body["error"]["code"] == "unauthorized"
    assert "intruder" not in [p["id"] for p in _pods(replica)]


BAD_BODIES = [
    pytest.param(b"{not json", "application/json", id="malformed-json"),
    pytest.param(b"\xc1\xc1", MSGPACK, id="malformed-msgpack"),
    pytest.param(b"[1, 2]", "application/json", id="not-an-object"),
    pytest.param(b'{"pod_id": "x", "surprise": 1}', "application/json", id="unknown-field"),
    pytest.param(b'{"pod_id": 7}', "application/json", id="wrong-type"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "application/json", id="deeply-nested"),
    pytest.param(b'{"pod_id": "' + b"x" * 2_000_000 + b'"}', "application/json", id="oversized"),
]


@pytest.mark.parametrize("path", ["/pod/v1/register", "/pod/v1/heartbeat", "/pod/v1/release"])
@pytest.mark.parametrize(("raw", "content_type"), BAD_BODIES)
def test_bad_bodies_get_a_4xx_json_error_and_change_nothing(
    replica: ProcessCluster, path: str, raw: bytes, content_type: str
) -> None:
    credential = _register(replica, f"steady-{uuid.uuid4().hex[:8]}")
    before = _pods(replica)
    token = POD_TOKEN if path.endswith("register") else credential
    reply = call("POST", _url(replica, path), raw=raw, content_type=content_type, token=token)
    assert 400 <= reply.status < 500, reply.body
    assert set(reply.body["error"]) == {"code", "message"}, reply.body
    assert _pods(replica) == before


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/pod/v1/heartbeat", {"pod_id": "ghost", "sessions": []}),
        ("/pod/v1/release", {"pod_id": "ghost", "sessions": []}),
    ],
)
def test_unknown_pod_is_told_to_register_again(
    replica: ProcessCluster, path: str, body: dict[str, Any]
) -> None:
    before = _pods(replica)
    reply = call("POST", _url(replica, path), body, token="whatever")
    assert reply.status == 410, reply.body
    assert reply.body["error"]["code"] == "registration_expired"
    assert _pods(replica) == before


def test_assignments_query_is_validated(replica: ProcessCluster) -> None:
    credential = _register(replica, "poller")
    for query, status in (("", 400), ("?pod_id=poller&wait_seconds=soon", 400),
                          ("?pod_id=ghost", 403)):  # fmt: skip
        reply = call("GET", _url(replica, "/pod/v1/assignments" + query), token=credential)
        assert reply.status == status, (query, reply.body)
        assert "error" in reply.body
    reply = call("GET", _url(replica, "/pod/v1/assignments?pod_id=poller"), token=credential)
    assert reply.status == 200 and reply.body["assignments"] == []


def test_openapi_lists_the_pod_routes(replica: ProcessCluster) -> None:
    document = call("GET", _url(replica, "/api/openapi.json"), token=None).body
    for path in ("/pod/v1/register", "/pod/v1/heartbeat", "/pod/v1/assignments",
                 "/pod/v1/release", "/healthz", "/readyz", "/metrics"):  # fmt: skip
        assert path in document["paths"], path
    json.dumps(document)


def test_long_poll_answers_when_an_assignment_arrives(replica: ProcessCluster) -> None:
    reply = call("POST", _url(replica, "/pod/v1/register"),
                 {"pod_id": "lp", "connectors": [{"type": "lp-conn", "version": "1.2"}]},
                 token=POD_TOKEN)  # fmt: skip
    credential = reply.body["credential"]
    first = call("GET", _url(replica, "/pod/v1/assignments?pod_id=lp"), token=credential).body
    assert first["assignments"] == []
    url = _url(replica, f"/pod/v1/assignments?pod_id=lp&version={first['version']}&wait_seconds=25")
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(call, "GET", url, token=credential, timeout=30.0)
        adapter = call("POST", _url(replica, "/api/v1/adapters"),
                       {"name": "lp-adapter", "connector": "lp-conn", "mode": "single",
                        "config": {"k": "v"}}).body  # fmt: skip
        started = time.monotonic()
        assert call("POST", _url(replica, f"/api/v1/adapters/{adapter['id']}/enable")).status == 202
        answer = waiting.result(timeout=30.0)
        took = time.monotonic() - started
    assert answer.status == 200
    [assignment] = answer.body["assignments"]
    assert assignment["slot"] == f"{adapter['id']}/0" and assignment["role"] == "ACTIVE"
    assert assignment["config"] == {"k": "v"} and assignment["epoch"] >= 1
    assert took < 20.0, "the long-poll waited for its timeout instead of the change"

    def advertised() -> bool:
        plugins = call("GET", _url(replica, "/api/v1/plugins")).body["items"]
        return any((p["connector"], p["version"]) == ("lp-conn", "1.2") for p in plugins)

    wait_until(advertised, 10.0, "the advertised connector in the plugin list")


def test_long_poll_answers_when_its_adapter_is_reconfigured(replica: ProcessCluster) -> None:
    """A configuration change wakes the long-polls of the pods serving the adapter (only
    those: `ConfigChanges`), and the answer carries the new configuration."""
    reply = call("POST", _url(replica, "/pod/v1/register"),
                 {"pod_id": "lp-cfg", "connectors": [{"type": "cfg-conn"}]},
                 token=POD_TOKEN)  # fmt: skip
    credential = reply.body["credential"]
    with ThreadPoolExecutor(2) as pool:
        stop = threading.Event()

        def keep_alive() -> None:  # the pod must outlive placement and the change
            while not stop.wait(replica.ttl / 6):
                call("POST", _url(replica, "/pod/v1/heartbeat"),
                     {"pod_id": "lp-cfg", "sessions": []}, token=credential)  # fmt: skip

        alive = pool.submit(keep_alive)
        try:
            _reconfigure_while_polling(replica, credential, pool)
        finally:
            stop.set()
        alive.result(timeout=30.0)


def _reconfigure_while_polling(
    replica: ProcessCluster, credential: str, pool: ThreadPoolExecutor
) -> None:
    adapter = call("POST", _url(replica, "/api/v1/adapters"),
                   {"name": "cfg-adapter", "connector": "cfg-conn", "mode": "single",
                    "config": {"k": "old"}}).body  # fmt: skip
    assert call("POST", _url(replica, f"/api/v1/adapters/{adapter['id']}/enable")).status == 202
    poll = _url(replica, "/pod/v1/assignments?pod_id=lp-cfg")

    def assigned() -> bool:
        return bool(call("GET", poll, token=credential).body["assignments"])

    wait_until(assigned, 20.0, "the adapter assigned to the pod")
    first = call("GET", poll, token=credential).body
    waiting = pool.submit(call, "GET", f"{poll}&version={first['version']}&wait_seconds=25",
                          token=credential, timeout=30.0)  # fmt: skip
    changed = call("PATCH", _url(replica, f"/api/v1/adapters/{adapter['id']}"),
                   {"config": {"k": "new"}})  # fmt: skip
    assert changed.status == 200, changed.body
    started = time.monotonic()
    answer = waiting.result(timeout=30.0)
    took = time.monotonic() - started
    assert answer.status == 200
    assert answer.body["version"] != first["version"]
    [assignment] = answer.body["assignments"]
    assert assignment["config"] == {"k": "new"}
    assert took < 20.0, "the long-poll waited for its timeout instead of the change"
