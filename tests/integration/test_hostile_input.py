"""Bad input changes nothing and leaks nothing (issue 13, findings 4-9), against a real replica.

Each test sends what a probe sent, the way it sent it (HTTP from outside, msgpack where
pods use it), and checks the answer is the project's own 4xx and that nothing changed.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from raftorch.ops.demo import DemoState, write_private
from tests.integration.processes import (
    POD_TOKEN,
    ProcessCluster,
    Reply,
    call,
    running_cluster,
    wait_until,
)

MSGPACK = "application/msgpack"
# Words of PostgreSQL's and asyncpg's own messages: none may reach a client.
POSTGRES_WORDS = ("Failing row", "invalid input", "query argument", "DETAIL", "syntax for type",
                  "$1", "violates", "asyncpg")  # fmt: skip


@pytest.fixture(scope="module")
def replica(
    tmp_path_factory: pytest.TempPathFactory, pg_server: Any, pg_template: str
) -> Iterator[ProcessCluster]:
    name = "hostile_input"
    pg_server.create_database(name, template=pg_template)
    root: Path = tmp_path_factory.mktemp("hostile-input")
    with running_cluster(root, pg_server.dsn(name), size=1) as cluster:
        wait_until(lambda: cluster.ready(cluster.replicas[0]), 60.0, "a ready replica")
        yield cluster
    pg_server.drop_database(name)


def _url(cluster: ProcessCluster, path: str) -> str:
    return cluster.replicas[0].api_url + path


def _adapters(cluster: ProcessCluster) -> list[str]:
    return sorted(a["name"] for a in call("GET", _url(cluster, "/api/v1/adapters")).body["items"])


def _refused(reply: Reply, status: int = 400) -> str:
    assert reply.status == status, reply.body
    message: str = reply.body["error"]["message"]
    for word in POSTGRES_WORDS:
        assert word not in message, message
    assert "\n" not in message
    return message


def _register(cluster: ProcessCluster, body: dict[str, Any]) -> Reply:
    return call("POST", _url(cluster, "/pod/v1/register"), raw=msgpack.packb(body),
                content_type=MSGPACK, token=POD_TOKEN)  # fmt: skip


def _pods(cluster: ProcessCluster) -> list[str]:
    return [p["id"] for p in call("GET", _url(cluster, "/api/v1/pods")).body["items"]]


# --- 4: unbounded lists -----------------------------------------------------------------


def test_registration_labels_and_connectors_are_bounded(replica: ProcessCluster) -> None:
    before = _pods(replica)
    # As found: 884 KB of labels in one registration.
    huge = {"pod_id": "big", "labels": {f"k{i}": "v" * 120 for i in range(7000)}}
    assert len(msgpack.packb(huge)) > 800_000
    _refused(_register(replica, huge), 413)
    many = {"pod_id": "big", "labels": {f"k{i}": "v" for i in range(65)}}
    assert "length <= 64" in _refused(_register(replica, many))
    offers = {"pod_id": "big", "connectors": [{"type": f"c{i}"} for i in range(65)]}
    _refused(_register(replica, offers))
    assert _pods(replica) == before
    fits = {"pod_id": "big", "labels": {f"k{i}": "v" * 128 for i in range(64)}}
    assert _register(replica, fits).status == 201


def test_the_adapter_list_pages_and_configs_are_bounded(replica: ProcessCluster) -> None:
    before = _adapters(replica)
    # As found: a 1 MB config (listed in full on every call). Now refused: the limit is
    # 64 KiB, and a larger body than api.max_body_bytes is refused before it is read.
    big = {"name": "big-config", "connector": "tcp-client", "mode": "single",
           "config": {"blob": "x" * 100_000}}  # fmt: skip
    refused = _refused(call("POST", _url(replica, "/api/v1/adapters"), big))
    assert "put large files in artifacts" in refused
    assert _adapters(replica) == before
    for i in range(3):
        body = {"name": f"paged-{i}", "connector": "tcp-client", "mode": "single",
                "config": {"host": "127.0.0.1", "port": 9}}  # fmt: skip
        assert call("POST", _url(replica, "/api/v1/adapters"), body).status == 201
    page = call("GET", _url(replica, "/api/v1/adapters?limit=2&configs=false")).body
    assert len(page["items"]) == 2 and page["next_cursor"] is not None
    assert all(a["config"] is None for a in page["items"])
    rest = call("GET", _url(replica, f"/api/v1/adapters?cursor={page['next_cursor']}")).body
    names = [a["name"] for a in page["items"] + rest["items"]]
    assert names == sorted(before + [f"paged-{i}" for i in range(3)])
    assert rest["next_cursor"] is None


# --- 5: names ---------------------------------------------------------------------------


def test_names_must_match_whole_and_hold_no_control_characters(replica: ProcessCluster) -> None:
    before, pods = _adapters(replica), _pods(replica)
    for name in ("x\n", "x\r", "\nx", "x\x00"):
        body = {"name": name, "connector": "tcp-client", "mode": "single", "config": {}}
        assert "letters, digits" in _refused(call("POST", _url(replica, "/api/v1/adapters"), body))
    ansi = {"name": "ansi", "connector": "tcp-client\x1b[31m", "mode": "single", "config": {}}
    assert "control characters" in _refused(call("POST", _url(replica, "/api/v1/adapters"), ansi))
    for body in ({"pod_id": "x\n"}, {"pod_id": "p", "labels": {"zone": "a\x1b[2J"}},
                 {"pod_id": "p", "labels": {"zo\nne": "a"}},
                 {"pod_id": "p", "connectors": [{"type": "fix\n"}]}):  # fmt: skip
        _refused(_register(replica, body))
    assert (_adapters(replica), _pods(replica)) == (before, pods)


# --- 6: database internals --------------------------------------------------------------


def test_bad_values_and_ids_are_answered_in_our_words(replica: ProcessCluster) -> None:
    before = _adapters(replica)
    for raw in (b'{"name": "nan", "connector": "tcp-client", "mode": "single", '
                b'"config": {"x": NaN}}',
                b'{"name": "inf", "connector": "tcp-client", "mode": "single", '
                b'"config": {"x": [1e999]}}'):  # fmt: skip
        _refused(call("POST", _url(replica, "/api/v1/adapters"), raw=raw))
    packed = msgpack.packb({"name": "nan", "connector": "tcp-client", "mode": "single",
                            "config": {"x": float("nan")}})  # fmt: skip
    reply = call("POST", _url(replica, "/api/v1/adapters"), raw=packed, content_type=MSGPACK)
    assert reply.status in (400, 415), reply.body
    real = call("GET", _url(replica, "/api/v1/adapters")).body["items"][0]["id"]
    for odd in (f"urn:uuid:{real}", f"{{{real}}}", real.replace("-", "")):
        message = _refused(call("GET", _url(replica, f"/api/v1/adapters/{odd}")), 404)
        assert "does not exist" in message
        _refused(call("GET", _url(replica, f"/api/v1/adapters/{odd}/events")), 404)
    bulk = {"action": "disable", "ids": [f"urn:uuid:{real}"]}
    _refused(call("POST", _url(replica, "/api/v1/adapters/bulk"), bulk), 404)
    assert _adapters(replica) == before


# --- 7: artifacts -----------------------------------------------------------------------


def test_artifacts_are_served_as_downloads_only(replica: ProcessCluster) -> None:
    page = b"<html><script>alert(document.cookie)</script></html>"
    stored = call("POST", _url(replica, "/api/v1/artifacts/page"), raw=page,
                  content_type="text/html")  # fmt: skip
    assert stored.status == 201 and stored.body["media_type"] == "text/html"
    fetched = call("GET", _url(replica, "/api/v1/artifacts/page"))
    assert fetched.status == 200 and fetched.body == page
    assert fetched.headers["Content-Type"] == "application/octet-stream"
    assert fetched.headers["Content-Disposition"] == 'attachment; filename="page"'
    assert fetched.headers["X-Content-Type-Options"] == "nosniff"
    assert fetched.headers["X-Raftorch-Media-Type"] == "text/html"
    odd = call("POST", _url(replica, "/api/v1/artifacts/odd"), raw=b"x", content_type="<b>")
    _refused(odd)


# --- 8: hardening -----------------------------------------------------------------------


def _config_check(**env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAFTORCH_")}
    return subprocess.run([sys.executable, "-m", "raftorch", "config", "check"],
                          env={**environ, **env}, capture_output=True, text=True, check=False,
                          timeout=60)  # fmt: skip


def test_config_check_refuses_a_short_secret_and_a_bad_dsn() -> None:
    short = _config_check(RAFTORCH_RAFT__SECRET="x")
    assert short.returncode == 2 and "raft.secret: must be at least 16" in short.stderr
    assert "Traceback" not in short.stderr
    dsn = "postgresql://u:hunter2@db.example:notaport/raftorch"
    bad = _config_check(RAFTORCH_RAFT__SECRET="s" * 16, RAFTORCH_DATABASE__DSN=dsn)
    assert bad.returncode == 2 and "port 'notaport'" in bad.stderr, bad.stderr
    assert "hunter2" not in bad.stderr and "Traceback" not in bad.stderr
    ssl = _config_check(RAFTORCH_RAFT__SECRET="s" * 16,
                        RAFTORCH_DATABASE__DSN="postgresql://db/r?sslmode=sometimes")  # fmt: skip
    assert ssl.returncode == 2 and "sslmode" in ssl.stderr


def test_insecure_dev_mode_stays_on_loopback_and_says_so(
    tmp_path: Path, pg_server: Any, pg_template: str
) -> None:
    # As found: in --insecure-dev-mode an unencrypted message from outside was answered and
    # nothing was logged. Such a replica must listen on loopback and warn when it starts.
    outside = _config_check(RAFTORCH_RAFT__INSECURE_DEV_MODE="true",
                            RAFTORCH_RAFT__BIND="0.0.0.0:4321")  # fmt: skip
    assert outside.returncode == 2 and "bind a loopback address" in outside.stderr
    assert "Traceback" not in outside.stderr
    secret = _config_check(RAFTORCH_RAFT__INSECURE_DEV_MODE="true", RAFTORCH_RAFT__SECRET="s" * 16,
                           RAFTORCH_RAFT__BIND="0.0.0.0:4321")  # fmt: skip
    assert secret.returncode == 0, secret.stderr  # encrypted: any address will do
    name = "hostile_insecure"
    pg_server.create_database(name, template=pg_template)
    cluster = ProcessCluster(tmp_path, pg_server.dsn(name), size=1)
    [replica] = cluster.replicas
    env = {k: v for k, v in cluster.env(replica).items() if k != "RAFTORCH_RAFT__SECRET"}
    with replica.log_path.open("ab") as log:
        replica.process = subprocess.Popen(
            [sys.executable, "-m", "raftorch", "serve", "--insecure-dev-mode"], env=env,
            stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until(lambda: cluster.ready(replica), 60.0, "the insecure replica ready")
        text = replica.log_path.read_text()
        assert "WARNING" in text and "Raft runs unencrypted" in text, text[-2000:]
    finally:
        cluster.stop_all()
        pg_server.drop_database(name)


def test_demo_files_holding_tokens_are_private(tmp_path: Path) -> None:
    # As found: demo-state.json (tokens, Raft secret) readable by everyone (0644).
    fresh = tmp_path / "fresh" / "demo-state.json"
    fresh.parent.mkdir()
    state = DemoState.load_or_create(fresh, replicas=3, pods=3)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o600
    old = tmp_path / "demo-state.json"  # left readable by an older version, then resumed
    old.write_text(fresh.read_text())
    old.chmod(0o644)
    assert DemoState.load_or_create(old, replicas=3, pods=3) == state
    assert stat.S_IMODE(old.stat().st_mode) == 0o600
    info = tmp_path / "demo.json"  # rewritten in place while the demo runs
    info.write_text("{}")
    info.chmod(0o644)
    write_private(info, json.dumps({"admin_token": state.admin_token}))
    assert stat.S_IMODE(info.stat().st_mode) == 0o600


# --- 9: the spec and the order of checks ------------------------------------------------


def test_pod_routes_authenticate_before_they_parse(replica: ProcessCluster) -> None:
    for path in ("/pod/v1/heartbeat", "/pod/v1/release"):
        reply = call("POST", _url(replica, path), raw=b"\x00garbage", token=None)
        assert _refused(reply, 401).startswith("authentication required")
        wrong = call("POST", _url(replica, path), raw=b"\x00garbage", token="not-a-credential")
        _refused(wrong, 410)
    _refused(call("GET", _url(replica, "/pod/v1/assignments?wait_seconds=nan"), token=None), 401)
    _refused(call("POST", _url(replica, "/pod/v1/register"), raw=b"\x00", token=None), 401)


def test_the_served_document_matches_what_the_routes_do(replica: ProcessCluster) -> None:
    reply = call("PUT", _url(replica, "/api/v1/adapters/bulk"), {"action": "enable"})
    assert reply.status == 405 and reply.headers["Allow"] == "POST", reply.headers
    document = call("GET", _url(replica, "/api/openapi.json"), token=None)
    assert document.headers["Server"] == "raftorch"
    paths = document.body["paths"]
    [version] = [p for p in paths["/api/v1/artifacts/{name}"]["get"]["parameters"]
                 if p["name"] == "version"]  # fmt: skip
    assert version["schema"]["maximum"] == 2**31 - 1
    [name] = [p for p in paths["/api/v1/artifacts/{name}"]["post"]["parameters"]
              if p["name"] == "name"]  # fmt: skip
    assert name["schema"]["pattern"].endswith("{0,127}$")  # what the handler holds it to
    [pod_id] = [p for p in paths["/pod/v1/assignments"]["get"]["parameters"]
                if p["name"] == "pod_id"]  # fmt: skip
    assert pod_id["required"] is True
    assert MSGPACK in paths["/pod/v1/register"]["post"]["responses"]["201"]["content"]
    schemas = json.dumps(document.body["components"])
    assert "\\\\Z" not in schemas  # Python's end anchor is $ in JSON Schema
