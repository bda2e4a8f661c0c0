"""The containers' rendered commands and environments pass the processes' own checks.

Each replica's environment is built the way the kubelet builds it (ConfigMap, then env in
order with `$(VAR)` references, the pod's name, the rendered Secrets), and the rendered
command runs with `config check` in place of `serve`: the same entry script then computes
raft.peers and raftorch validates and prints every setting. Pods run `raftorch-adapter check`,
which validates the pod settings the way `run` does.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.kubernetes.chart import (
    FULLNAME,
    NAMESPACE,
    PEERS,
    container,
    container_env,
    expand,
    member,
    one,
    pod_names,
    render,
    scenario,
)

BIN = str(Path(sys.executable).parent)  # where this environment's raftorch commands are


def _run(
    command: list[str], env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    # Nothing of the test's environment leaks in but PATH: the container has only its env.
    full = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(tmp_path), **env}
    return subprocess.run(
        command, env=full, capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )


def _checked(
    objects: list[dict[str, Any]], kind: str, pod: str, check: list[str], tmp_path: Path
) -> dict[str, Any]:
    """Run the workload's rendered command with `check` as its arguments in pod `pod`."""
    workload = one(objects, kind)
    spec = container(workload)
    env = container_env(objects, workload, pod, "10.1.2.3")
    command = [expand(part, env) for part in spec["command"] + check]
    result = _run(command, env, tmp_path)
    assert result.returncode == 0, result.stderr
    for secret in ("user-provided", "pw@db"):
        assert secret not in result.stdout  # printed settings hide secrets
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


@pytest.mark.parametrize("name", ["defaults", "five-replicas", "every-option"])
def test_every_replica_environment_passes_config_check_with_dns_peers(
    name: str, tmp_path: Path
) -> None:
    objects = scenario(name)
    assert container(one(objects, "StatefulSet"))["args"] == ["serve"]
    pods = list(pod_names(objects))
    for pod in pods:
        config = _checked(objects, "StatefulSet", pod, ["config", "check"], tmp_path)
        assert config["node"]["id"] == pod
        assert config["raft"]["bind"] == member(pod)
        assert config["raft"]["peers"] == [member(p) for p in pods if p != pod]
        assert config["api"]["host"] == "0.0.0.0"
        assert config["api"]["advertise_url"] == (
            f"http://{pod}.{PEERS}.{NAMESPACE}.svc.cluster.local:8080"
        )
        assert config["raft"]["secret"] == "***" and config["database"]["dsn"] == "***"
        assert config["api"]["admin_token"] == "***"
        assert config["node"]["data_dir"] == "/var/lib/raftorch"
    if name == "every-option":  # settings from the values reach the replicas
        assert config["lease"]["ttl_seconds"] == 9.0 and config["log"]["format"] == "json"


def test_a_replica_refuses_settings_that_break_the_timing_rules(tmp_path: Path) -> None:
    """The chart passes settings through; raftorch's own rules still judge them at start."""
    objects = render({"orchestrator": {"settings": {"lease": {"heartbeat_interval_seconds": 5}}}})
    workload = one(objects, "StatefulSet")
    env = container_env(objects, workload, f"{FULLNAME}-0", "10.1.2.3")
    command = [expand(p, env) for p in container(workload)["command"] + ["config", "check"]]
    result = _run(command, env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("raftorch: error: lease.heartbeat_interval_seconds=5.0")


@pytest.mark.parametrize("name", ["defaults", "five-replicas", "every-option"])
def test_every_pod_environment_passes_the_adapter_check(name: str, tmp_path: Path) -> None:
    objects = scenario(name)
    spec = container(one(objects, "Deployment"))
    assert spec["args"] == ["run"]
    pod = f"{FULLNAME}-adapter-7d9f8-x2x4q"
    config = _checked(objects, "Deployment", pod, ["check"], tmp_path)
    replicas = list(pod_names(objects))
    assert config["pod_id"] == pod and config["address"] == "10.1.2.3"
    assert config["orchestrators"] == [f"http://{member(r, 8080)}" for r in replicas]
    assert config["metrics_host"] == "0.0.0.0" and config["metrics_port"] == 9100
    assert config["bootstrap_token"] == "***" and config["database_dsn"] == "***"
    if name == "every-option":
        assert config["labels"] == {"zone": "a"}
        assert config["connectors"] == ["pg-queue-consumer", "tcp-client"]


def test_a_pod_check_fails_like_run_on_a_connector_that_is_not_installed(tmp_path: Path) -> None:
    objects = render({"adapter": {"connectors": ["fix-but-not-installed"]}})
    workload = one(objects, "Deployment")
    env = container_env(objects, workload, "pod-a", "10.1.2.3")
    result = _run(["raftorch-adapter", "check"], env, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "raftorch-adapter: error: connector types not installed: fix-but-not-installed"
    )


def test_the_metrics_address_is_a_flag_and_an_environment_variable(tmp_path: Path) -> None:
    env = {
        "RAFTORCH_ADAPTER_BOOTSTRAP_TOKEN": "t",
        "RAFTORCH_ADAPTER_DATABASE_DSN": "postgresql://x@y/z",
        "RAFTORCH_ADAPTER_ORCHESTRATORS": "http://127.0.0.1:8080",
    }
    default = json.loads(_run(["raftorch-adapter", "check"], env, tmp_path).stdout)
    assert default["metrics_host"] == "127.0.0.1"
    by_env = {**env, "RAFTORCH_ADAPTER_METRICS_HOST": "0.0.0.0"}
    assert (
        json.loads(_run(["raftorch-adapter", "check"], by_env, tmp_path).stdout)["metrics_host"]
        == "0.0.0.0"
    )
    flag = ["raftorch-adapter", "check", "--metrics-host", "::"]
    assert json.loads(_run(flag, by_env, tmp_path).stdout)["metrics_host"] == "::"


def test_serve_starts_once_the_replicas_own_name_resolves_to_its_pod_address(
    tmp_path: Path,
) -> None:
    """The entry command waits for the pod's own DNS record (a restarted pod's name may still
    point at its predecessor's address); here the name is one this machine resolves."""
    objects = scenario("defaults")
    workload = one(objects, "StatefulSet")
    env = container_env(objects, workload, f"{FULLNAME}-0", "127.0.0.1")
    assert env["POD_IP"] == "127.0.0.1"  # the kubelet's status.podIP
    env["RAFTORCH_RAFT__BIND"] = "localhost:4321"  # resolves to 127.0.0.1 without cluster DNS
    command = [expand(p, env) for p in container(workload)["command"] + ["serve", "--help"]]
    started = time.monotonic()
    result = _run(command, env, tmp_path)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: raftorch serve")  # exec'd raftorch serve
    assert "waiting for" not in result.stderr and took < 10, (took, result.stderr)
