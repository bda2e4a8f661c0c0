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
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from devtools.postgres import free_ports
from tests.integration.processes import call, wait_until
from tests.integration.test_placement import spread_problems


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


def _pod_ids(info: dict[str, Any]) -> set[str]:
    reply = call("GET", info["api_urls"][0] + "/api/v1/pods", token=info["admin_token"])
    return {p["id"] for p in reply.body["items"]} if reply.status == 200 else set()


def _drops(info: dict[str, Any], slots: dict[str, tuple[str, int]], since: float) -> list[str]:
    """Events of a lost lease or a self-fencing of the pods that owned `slots` since `since`."""
    found = []
    for adapter in _adapters(info):
        owners = {slots[s["slot"]][0] for s in adapter["slots"] if s["slot"] in slots}
        if not owners:
            continue
        url = f"{info['api_urls'][0]}/api/v1/adapters/{adapter['id']}/events?limit=1000"
        for event in call("GET", url, token=info["admin_token"]).body["items"]:
            when = datetime.fromisoformat(event["time"]).timestamp()
            text = event["description"]
            lost = "expired" in text or "fenced itself" in text or "fenced off" in text
            if when >= since and lost and any(o in text for o in owners if o):
                found.append(text)
    return found


def _start(data_dir: Path, log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """`raftorch demo` the way a user runs it: the installed command, from `cwd`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTORCH_")}
    command = str(Path(sys.executable).parent / "raftorch")
    with log.open("ab") as out:
        return subprocess.Popen(
            [command, "demo", "--data-dir", str(data_dir)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
        )  # fmt: skip


def _stop_and_check_nothing_left(
    demo: subprocess.Popen[bytes], info: dict[str, Any], data_dir: Path
) -> None:
    demo.send_signal(signal.SIGINT)
    assert demo.wait(timeout=60) == 0
    pids = [r["pid"] for r in info["replicas"]] + [p["pid"] for p in info["pods"]]
    wait_until(lambda: not any(_alive(p) for p in pids), 10.0, "every child to exit")
    # The pods stop first and hand their sessions back while the replicas are still up
    # (stopped together, most releases failed: answer=None).
    answers = {}
    for pod in info["pods"]:
        lines = (data_dir / f"{pod['id']}.log").read_text().splitlines()
        last = max((i for i, line in enumerate(lines) if "registered pod=" in line), default=0)
        released = [line for line in lines[last:] if "released sessions=" in line]
        if released:
            answers[pod["id"]] = released[-1].rsplit("answer=", 1)[-1]
    assert answers and set(answers.values()) == {"200"}, answers
    host, port = info["postgres_dsn"].split("@")[1].split("/")[0].split(":")
    with socket.socket() as probe:
        assert probe.connect_ex((host, int(port))) != 0, "PostgreSQL is still running"


@pytest.mark.timeout(420)
def test_demo_comes_up_survives_a_pod_kill_and_stops_cleanly(tmp_path: Path) -> None:
    # Run from the folder that holds a checkout named `raftorch` (git clone, then
    # pip install -e ./raftorch): that folder must not shadow the installed package.
    (tmp_path / "raftorch" / "raftorch").mkdir(parents=True)
    (tmp_path / "raftorch" / "pyproject.toml").write_text("[project]\nname = 'raftorch'\n")
    # As a namespace package that folder no longer breaks today's imports, so the test
    # could not fail if a child let the working directory onto sys.path again: make the
    # folder a package that refuses to load (a child that imports it dies at start-up).
    (tmp_path / "raftorch" / "__init__.py").write_text(
        'raise ImportError("the working directory shadowed the installed raftorch")\n'
    )
    data_dir, log = tmp_path / "demo", tmp_path / "demo.out"
    demo = _start(data_dir, log, cwd=tmp_path)
    try:
        info_path = data_dir / "demo.json"
        wait_until(info_path.exists, 150.0, "demo.json")
        info = json.loads(info_path.read_text())
        assert set(info) >= {"api_urls", "portal_url", "admin_token", "lease_ttl_seconds",
                             "replicas", "pods", "postgres_dsn"}  # fmt: skip
        # The public contract (DESIGN.md): replicas {id, pid, api_url}, pods {id, pid}.
        assert [r["api_url"] for r in info["replicas"]] == info["api_urls"]
        assert len({r["id"] for r in info["replicas"]}) == len(info["replicas"]) == 3
        assert all(isinstance(r["pid"], int) and _alive(r["pid"]) for r in info["replicas"])
        assert all(isinstance(p["pid"], int) and _alive(p["pid"]) for p in info["pods"])
        pod_ids = {p["id"] for p in info["pods"]}
        wait_until(lambda: _pod_ids(info) == pod_ids, 30.0, "the pods of demo.json registered")
        wait_until(lambda: f"[demo] Portal: {info['portal_url']}" in log.read_text(), 10.0,
                   "the demo to print the Portal address")  # fmt: skip
        portal = call("GET", info["portal_url"], token=None)
        assert portal.status == 200 and b"raftorch Portal" in portal.body
        modes = {a["mode"] for a in _adapters(info)}
        assert modes == {"single", "active_passive", "scale_out"}
        assert all(a["status"] == "ACTIVE" for a in _adapters(info))

        # Issue #15: the demo's sessions are spread (and stay so after a pod fault).
        wait_until(lambda: not spread_problems(_adapters(info), len(info["pods"])), 30.0,
                   "the demo's sessions spread across its pods")  # fmt: skip
        items = _adapters(info)
        load = Counter(s["owner_pod"] for a in items for s in a["slots"] if s["owner_pod"])
        busiest = load.most_common(1)[0][0]
        index = next(i for i, p in enumerate(info["pods"]) if p["id"] == busiest)
        victim = info["pods"][index]
        others = {s["slot"]: (s["owner_pod"], s["epoch"]) for a in items for s in a["slots"]
                  if s["owner_pod"] != busiest}  # fmt: skip
        victim_log = data_dir / f"{busiest}.log"
        registrations = victim_log.read_text().count("registered pod=")
        killed_at = time.time()
        os.kill(victim["pid"], signal.SIGKILL)

        def recovered() -> bool:
            items = _adapters(info)
            return bool(items) and all(a["status"] == "ACTIVE" for a in items)

        wait_until(lambda: not _alive(victim["pid"]), 10.0, "the pod to die")
        wait_until(recovered, 60.0, "every adapter ACTIVE again after kill -9 of a pod")
        # The demo restarts the dead pod and records its new pid.
        wait_until(
            lambda: json.loads(info_path.read_text())["pods"][index]["pid"] != victim["pid"],
            30.0,
            "demo.json to show the restarted pod",
        )
        # The pod id alone stays registered until the killed process's lease runs out: the
        # restarted process must say it registered (it is refused until then).
        wait_until(lambda: victim_log.read_text().count("registered pod=") > registrations,
                   30.0, "the restarted pod registered")  # fmt: skip
        assert busiest in _pod_ids(info)
        back = time.monotonic()
        ttl = info["lease_ttl_seconds"]
        wait_until(lambda: recovered() and not spread_problems(_adapters(info), len(info["pods"])),
                   3 * ttl + 10.0, "the spread restored after the pod came back")  # fmt: skip
        print(f"\nspread restored {time.monotonic() - back:.1f}s after the pod re-registered")
        # Only the killed pod's sessions were dropped; others moved, if at all, by handoff.
        assert not _drops(info, others, since=killed_at), "a session of another pod was dropped"
        info = json.loads(info_path.read_text())
        _stop_and_check_nothing_left(demo, info, data_dir)

        # Running it again on the same directory resumes: same adapters, no duplicates.
        info_path.unlink()
        demo = _start(data_dir, log, cwd=tmp_path)
        wait_until(info_path.exists, 150.0, "demo.json after resuming")
        resumed = json.loads(info_path.read_text())
        assert resumed["admin_token"] == info["admin_token"]
        names = sorted(a["name"] for a in _adapters(resumed))
        assert names == sorted({a["name"] for a in _adapters(resumed)}) and len(names) == 3
        _stop_and_check_nothing_left(demo, resumed, data_dir)
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
