"""The `raftorch` command as a user runs it: real process, real database, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from persistence.migrate import latest_version
from tests.pgserver import PostgresServer


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTORCH_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "raftorch", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_migrate_brings_an_empty_database_to_the_latest_version(pg_server: PostgresServer) -> None:
    name = f"cli_{uuid.uuid4().hex}"
    pg_server.create_database(name)
    env = {"RAFTORCH_DATABASE__DSN": pg_server.dsn(name)}
    first = _run("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert f"schema at version {latest_version()} (" in first.stdout
    again = _run("migrate", env=env)
    assert again.returncode == 0 and "nothing to apply" in again.stdout


def test_unreachable_database_is_one_line_without_traceback(pg_dedicated: PostgresServer) -> None:
    pg_dedicated.stop()
    result = _run(
        "migrate",
        env={
            "RAFTORCH_DATABASE__DSN": pg_dedicated.dsn(),
            "RAFTORCH_DATABASE__CONNECT_ATTEMPTS": "2",
            "RAFTORCH_LOG__LEVEL": "ERROR",
        },
    )
    assert result.returncode == 1
    assert result.stderr.startswith("raftorch: error: cannot reach the database after 2 attempts")
    assert "Traceback" not in result.stderr


def test_config_check_masks_secrets_and_rejects_bad_values() -> None:
    ok = _run("config", "check", env={"RAFTORCH_RAFT__SECRET": "hunter2-very-secret"})
    assert ok.returncode == 0, ok.stderr
    assert "hunter2" not in ok.stdout and '"secret": "***"' in ok.stdout
    bad = _run("config", "check", env={"RAFTORCH_LEASE__HEARTBEAT_INTERVAL_SECONDS": "5"})
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "lease.heartbeat_interval_seconds" in lines[0]


def test_json_log_format_writes_one_json_object_per_line(pg_server: PostgresServer) -> None:
    name = f"cli_{uuid.uuid4().hex}"
    pg_server.create_database(name)
    result = _run(
        "migrate",
        env={
            "RAFTORCH_DATABASE__DSN": pg_server.dsn(name),
            "RAFTORCH_LOG__FORMAT": "json",
            "RAFTORCH_LOG__LEVEL": "INFO",
        },
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert any("migration applied version=1" in entry["message"] for entry in lines)
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in lines)


def test_serve_refuses_to_start_without_a_cluster_secret(tmp_path: Path) -> None:
    result = _run("serve", env={"RAFTORCH_NODE__DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("raftorch: error: raft.secret is not set")
    assert not any(tmp_path.iterdir())  # nothing was started or written


def test_config_check_refuses_a_leader_change_that_outlasts_the_lease() -> None:
    # The demo's TTL with pysyncobj's default election timeout: one split vote (2 x 1.4 s)
    # is longer than every pod's lease.
    env = {"RAFTORCH_LEASE__TTL_SECONDS": "3", "RAFTORCH_RAFT__ELECTION_TIMEOUT_MAX_SECONDS": "1.4"}
    result = _run("config", "check", env=env)
    assert result.returncode == 2, result.stdout
    assert result.stderr.startswith("raftorch: error: timing budget 4.7s"), result.stderr
    assert "raft.election_timeout_max_seconds=1.4" in result.stderr
    assert "lease.ttl_seconds=3.0" in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no traceback


def test_config_check_prints_the_derived_timers_and_the_budget() -> None:
    result = _run("config", "check", env={"RAFTORCH_LEASE__TTL_SECONDS": "3"})
    assert result.returncode == 0, result.stderr
    tree = json.loads(result.stdout)
    assert tree["raft"]["election_timeout_max_seconds"] == pytest.approx(0.52)
    assert tree["timing_budget"]["fits"] is True
    assert tree["timing_budget"]["total_seconds"] <= 3.0
