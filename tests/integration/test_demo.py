"""`raftorch demo` as a user runs it: one command, kill -9 a pod, Ctrl-C, nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from devtools.postgres import free_ports
from tests.integration.processes import call, wait_until


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by a dead parent) counts as gone.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"


def _adapters(info: dict[str, Any]) -> list[dict[str, Any]]:
    for url in info["api_urls"]:
        reply = call("GET", url + "/api/v1/adapters", token=info["admin_token"], timeout=2.0)
        if reply.status == 200:
            items: list[dict[str, Any]] = reply.body["items"]
            return items
    return []


def _start(data_dir: Path, log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """`raftorch demo` the way a user runs it: the installed command, from `cwd`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTORCH_")}
    command = str(Path(sys.executable).parent / "raftorch")
    with log.open("ab") as out:
        return subprocess.Popen(
            [command, "demo", "--data-dir", str(data_dir)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
        )  # fmt: skip


def _stop_and_check_nothing_left(demo: subprocess.Popen[bytes], info: dict[str, Any]) -> None:
    demo.send_signal(signal.SIGINT)
    assert demo.wait(timeout=60) == 0
    pids = [r["pid"] for r in info["replicas"]] + [p["pid"] for p in info["pods"]]
    wait_until(lambda: not any(_alive(p) for p in pids), 10.0, "every child to exit")
    host, port = info["postgres_dsn"].split("@")[1].split("/")[0].split(":")
    with socket.socket() as probe:
        assert probe.connect_ex((host, int(port))) != 0, "PostgreSQL is still running"


@pytest.mark.timeout(420)
def test_demo_comes_up_survives_a_pod_kill_and_stops_cleanly(tmp_path: Path) -> None:
    # Run from the folder that holds a checkout named `raftorch` (git clone, then
    # pip install -e ./raftorch): that folder must not shadow the installed package.
    (tmp_path / "raftorch" / "raftorch").mkdir(parents=True)
    (tmp_path / "raftorch" / "pyproject.toml").write_text("[project]\nname = 'raftorch'\n")
    data_dir, log = tmp_path / "demo", tmp_path / "demo.out"
    demo = _start(data_dir, log, cwd=tmp_path)
    try:
        info_path = data_dir / "demo.json"
        wait_until(info_path.exists, 150.0, "demo.json")
        info = json.loads(info_path.read_text())
        assert set(info) >= {"api_urls", "portal_url", "admin_token", "lease_ttl_seconds",
                             "replicas", "pods", "postgres_dsn"}  # fmt: skip
        wait_until(lambda: f"[demo] Portal: {info['portal_url']}" in log.read_text(), 10.0,
                   "the demo to print the Portal address")  # fmt: skip
        portal = call("GET", info["portal_url"], token=None)
        assert portal.status == 200 and b"raftorch Portal" in portal.body
        modes = {a["mode"] for a in _adapters(info)}
        assert modes == {"single", "active_passive", "scale_out"}
        assert all(a["status"] == "ACTIVE" for a in _adapters(info))

        victim = info["pods"][0]
        os.kill(victim["pid"], signal.SIGKILL)

        def recovered() -> bool:
            items = _adapters(info)
            return bool(items) and all(a["status"] == "ACTIVE" for a in items)

        wait_until(lambda: not _alive(victim["pid"]), 10.0, "the pod to die")
        wait_until(recovered, 60.0, "every adapter ACTIVE again after kill -9 of a pod")
        # The demo restarts the dead pod and records its new pid.
        wait_until(
            lambda: json.loads(info_path.read_text())["pods"][0]["pid"] != victim["pid"],
            30.0,
            "demo.json to show the restarted pod",
        )
        info = json.loads(info_path.read_text())
        _stop_and_check_nothing_left(demo, info)

        # Running it again on the same directory resumes: same adapters, no duplicates.
        info_path.unlink()
        demo = _start(data_dir, log, cwd=tmp_path)
        wait_until(info_path.exists, 150.0, "demo.json after resuming")
        resumed = json.loads(info_path.read_text())
        assert resumed["admin_token"] == info["admin_token"]
        names = sorted(a["name"] for a in _adapters(resumed))
        assert names == sorted({a["name"] for a in _adapters(resumed)}) and len(names) == 3
        _stop_and_check_nothing_left(demo, resumed)
    except BaseException:
        sys.stderr.write(log.read_text()[-5000:])
        raise
    finally:
        _cleanup(demo, data_dir)


def _cleanup(demo: subprocess.Popen[bytes], data_dir: Path) -> None:
    if demo.poll() is None:
        demo.kill()
        demo.wait(timeout=30)
    where = data_dir / "postgres" / "WHERE"  # run as root: the cluster lives elsewhere
    if where.exists():
        shutil.rmtree(where.read_text().rsplit(" ", 1)[-1].strip(), ignore_errors=True)


@pytest.mark.timeout(120)
def test_demo_stops_at_once_naming_a_replica_that_dies_at_start_up(tmp_path: Path) -> None:
    data_dir, log = tmp_path / "demo", tmp_path / "demo.out"
    data_dir.mkdir()
    pg, tcp, *rest = free_ports(2 + 3 + 3 + 3)
    raft, api, pods = rest[0:3], rest[3:6], rest[6:9]
    state = {"pg_port": pg, "tcp_port": tcp, "raft_ports": raft, "api_ports": api,
             "pod_ports": pods, "admin_token": "demo-admin-test", "pod_token": "demo-pod-test",
             "raft_secret": "demo-raft-secret-for-the-test"}  # fmt: skip
    (data_dir / "demo-state.json").write_text(json.dumps(state))
    # Something else holds replica r1's Raft port: r1 cannot start.
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("0.0.0.0", raft[1]))
        squatter.listen()
        started = time.monotonic()
        demo = _start(data_dir, log, cwd=tmp_path)
        try:
            code = demo.wait(timeout=90)
            took = time.monotonic() - started
            output = log.read_text()
            print(f"demo exited with {code} after {took:.1f}s")
            assert code != 0, output
            assert "replica r1 exited during start-up" in output, output
            assert str(data_dir / "replica-1.log") in output, output
            assert "raft.bind" in output, output  # the last lines of r1's log say why
            assert took < 30.0, f"the demo took {took:.1f}s to notice: {output}"
        finally:
            _cleanup(demo, data_dir)
