"""The operator CLI against real replicas, pods and PostgreSQL, run as the `raftorch` command.

One cluster with two pods: create adapters, enable all and wait for ACTIVE, disable all and
wait for INACTIVE, time out on a connector no pod offers, refuse to delete an enabled adapter,
export. Then a second, fresh cluster on another database (empty Raft data, as after a
disaster): import recreates every adapter and artifact, a second import changes nothing, and a
bad manifest changes nothing and names the problem.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.integration.processes import (
    ADMIN_TOKEN,
    ProcessCluster,
    call,
    running_cluster,
    start_pod,
    stop_pod,
    wait_until,
)
from tests.integration.test_adapter_pods import sql
from tests.pgserver import PostgresServer

QUEUES = """
CREATE TABLE q_a (id bigint PRIMARY KEY, payload text);
CREATE TABLE q_b (id bigint PRIMARY KEY, payload text);
CREATE TABLE q_c (id bigint PRIMARY KEY, payload text);
"""
ARTIFACTS = [("FIX44", b"<fix major='4' minor='4'/>"), ("FIX44", b"<fix v2/>"), ("schema", b"{}")]


def cli(
    cluster: ProcessCluster, *args: str, token: str = ADMIN_TOKEN
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTORCH_")}
    env["RAFTORCH_CLI_API"] = ",".join(r.api_url for r in cluster.replicas)
    env["RAFTORCH_CLI_TOKEN"] = token
    done = subprocess.run(
        [sys.executable, "-m", "raftorch", *args],
        env=env, capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    return done


def ok(cluster: ProcessCluster, *args: str) -> str:
    done = cli(cluster, *args)
    assert done.returncode == 0, f"{args}: {done.returncode} {done.stdout} {done.stderr}"
    return done.stdout


def adapters(cluster: ProcessCluster) -> dict[str, dict[str, Any]]:
    reply = call("GET", cluster.replicas[0].api_url + "/api/v1/adapters")
    assert reply.status == 200, reply.body
    return {a["name"]: a for a in reply.body["items"]}


def artifacts(cluster: ProcessCluster) -> list[tuple[str, str, str]]:
    reply = call("GET", cluster.replicas[0].api_url + "/api/v1/artifacts")
    assert reply.status == 200, reply.body
    return [(a["name"], a["sha256"], a["media_type"]) for a in reply.body["items"]]


def _dead_url() -> str:
    """A loopback URL nobody listens on: the CLI must go on to the next replica."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _pods(cluster: ProcessCluster) -> list[Any]:
    items: list[Any] = call("GET", cluster.replicas[0].api_url + "/api/v1/pods").body["items"]
    return items


@contextmanager
def ready_cluster(root: Path, dsn: str, pods: int) -> Iterator[ProcessCluster]:
    root.mkdir()
    with running_cluster(root, dsn, size=3, ttl=3.0) as cluster:
        wait_until(lambda: all(cluster.ready(r) for r in cluster.replicas), 60.0, "replicas")
        started = [start_pod(cluster, f"pod-{i}", root) for i in range(pods)]
        try:
            wait_until(lambda: len(_pods(cluster)) == pods, 30.0, "pods registered")
            yield cluster
        except BaseException:
            for pod in started:
                sys.stderr.write(f"--- {pod.pod_id}\n{pod.log_path.read_text()[-3000:]}\n")
            raise
        finally:
            for pod in started:
                stop_pod(pod, signal.SIGKILL)


def create_three(cluster: ProcessCluster, tmp_path: Path) -> None:
    api = cluster.replicas[0].api_url
    for name, content in ARTIFACTS:
        reply = call("POST", f"{api}/api/v1/artifacts/{name}", raw=content, content_type="text/xml")
        assert reply.status == 201, reply.body
    ok(
        cluster,
        "adapters",
        "create",
        "--name",
        "orders-a",
        "--connector",
        "pg-queue-consumer",
        "--mode",
        "single",
        "--config",
        '{"queue_table": "q_a", "sink_table": "sink_a"}',
    )
    config_file = tmp_path / "b.json"
    config_file.write_text(json.dumps({"queue_table": "q_b", "sink_table": "sink_b"}))
    ok(
        cluster,
        "adapters",
        "create",
        "--name",
        "orders-b",
        "--connector",
        "pg-queue-consumer",
        "--mode",
        "active_passive",
        "--config-file",
        str(config_file),
    )
    created = json.loads(ok(
        cluster, "adapters", "create", "--json", "--name", "orders-c", "--connector",
        "pg-queue-consumer", "--mode", "single", "--artifact", "FIX44",
        "--config", '{"queue_table": "q_c", "sink_table": "sink_c", "batch_size": 10}',
    ))  # fmt: skip
    assert (created["admin_state"], created["artifacts"]) == ("DISABLED", ["FIX44"])


def enable_and_disable_all(cluster: ProcessCluster) -> None:
    done = cli(cluster, "adapters", "enable", "--all", "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    assert "enabled 3: orders-a, orders-b, orders-c; all ACTIVE" in done.stdout
    assert {a["status"] for a in adapters(cluster).values()} == {"ACTIVE"}
    done = cli(cluster, "adapters", "disable", "--all", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    assert {a["status"] for a in json.loads(done.stdout)["adapters"]} == {"INACTIVE"}
    now = adapters(cluster)  # right after, from the API
    assert {(a["admin_state"], a["status"]) for a in now.values()} == {("DISABLED", "INACTIVE")}
    assert all(a["owner_pod"] is None for a in now.values())


def refusals(cluster: ProcessCluster) -> None:
    ok(cluster, "adapters", "create", "--name", "nowhere", "--connector", "no-such-connector",
       "--mode", "single")  # fmt: skip
    done = cli(cluster, "adapters", "enable", "nowhere", "--wait", "--timeout", "1")
    assert done.returncode == 1
    [line] = done.stderr.splitlines()[-1:]
    assert line.startswith("raftorch: error: timed out after 1s; not ACTIVE yet: nowhere (")
    assert "no live pod offers connector no-such-connector" in line
    done = cli(cluster, "adapters", "delete", "nowhere")
    assert done.returncode == 1
    assert "409 conflict" in done.stderr and "nowhere" in done.stderr
    assert "nowhere" in adapters(cluster)
    ok(cluster, "adapters", "disable", "nowhere")
    ok(cluster, "adapters", "create", "--name", "scratch", "--connector", "x", "--mode", "single")
    assert "deleted 1: scratch" in ok(cluster, "adapters", "delete", "scratch")
    assert "scratch" not in adapters(cluster)
    ok(cluster, "status", "--api", _dead_url(), "--api", cluster.replicas[1].api_url)
    denied = cli(cluster, "status", token="not-a-token")
    assert denied.returncode == 1 and "token was refused (401)" in denied.stderr
    assert len(denied.stderr.splitlines()) == 1


def look_and_export(cluster: ProcessCluster, manifest: Path) -> dict[str, Any]:
    ok(cluster, "adapters", "enable", "orders-a", "orders-b")
    status = json.loads(ok(cluster, "status", "--json"))
    assert status["leader"] in {r.node_id for r in cluster.replicas}
    assert [p["id"] for p in status["pods"]] == ["pod-0", "pod-1"]
    assert status["adapters"]["total"] == 4
    table = ok(cluster, "adapters", "list")
    assert table.splitlines()[0].split()[:3] == ["NAME", "ID", "CONNECTOR"]
    assert "orders-c" in table
    assert "exported 4 adapters, 3 artifact versions" in ok(cluster, "export", "-o", str(manifest))
    data: dict[str, Any] = json.loads(manifest.read_text())
    states = {a["name"]: a["admin_state"] for a in data["adapters"]}
    assert states == {"nowhere": "DISABLED", "orders-a": "ENABLED", "orders-b": "ENABLED",
                      "orders-c": "DISABLED"}  # fmt: skip
    return data


def import_twice_then_a_bad_one(
    cluster: ProcessCluster, exported: dict[str, Any], path: Path
) -> None:
    first = ok(cluster, "import", str(path))
    assert "adapters: 4 created, 0 unchanged, 0 differ" in first
    assert "artifacts: 3 uploaded, 0 skipped" in first
    now = adapters(cluster)
    keys = ("connector", "mode", "instances", "config", "artifacts", "admin_state")
    for adapter in exported["adapters"]:
        assert {k: now[adapter["name"]][k] for k in keys} == {k: adapter[k] for k in keys}
    expected = [(a["name"], a["sha256"], a["media_type"]) for a in exported["artifacts"]]
    assert artifacts(cluster) == expected
    second = ok(cluster, "import", str(path))
    assert "adapters: 0 created, 4 unchanged, 0 differ" in second
    assert "artifacts: 0 uploaded, 3 skipped" in second
    assert _revisions(adapters(cluster)) == _revisions(now)
    assert artifacts(cluster) == expected
    bad = json.loads(json.dumps(exported))
    bad["adapters"].append({**bad["adapters"][0], "name": "extra"})
    bad["adapters"][1]["mode"] = "hot"
    path.write_text(json.dumps(bad))
    done = cli(cluster, "import", str(path))
    assert done.returncode == 2
    assert done.stderr == (
        "raftorch: error: manifest: adapters[1].mode: 'hot' is not one of single, "
        "active_passive, scale_out\n"
    )
    assert "extra" not in adapters(cluster) and artifacts(cluster) == expected


def _revisions(items: dict[str, dict[str, Any]]) -> dict[str, int]:
    return {name: adapter["revision"] for name, adapter in items.items()}


def test_operator_cli_maintenance_and_disaster_recovery(
    tmp_path: Path, pg_dsn: str, pg_server: PostgresServer, pg_template: str
) -> None:
    sql(pg_dsn, QUEUES)
    manifest = tmp_path / "manifest.json"
    with ready_cluster(tmp_path / "first", pg_dsn, pods=2) as cluster:
        create_three(cluster, tmp_path)
        enable_and_disable_all(cluster)
        refusals(cluster)
        exported = look_and_export(cluster, manifest)
    fresh = f"t_{uuid.uuid4().hex}"
    pg_server.create_database(fresh, template=pg_template)
    try:
        with ready_cluster(tmp_path / "second", pg_server.dsn(fresh), pods=0) as cluster:
            import_twice_then_a_bad_one(cluster, exported, manifest)
    finally:
        pg_server.drop_database(fresh)
