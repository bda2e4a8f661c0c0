"""The Dockerfile: hadolint-clean, shaped as required, and its wheel runs both entry commands.

No image can be built here (no registry), so the image's contents are checked the way its
build stage makes them: the project built as a wheel, installed into a prefix of its own,
and the image's command (`raftorch serve`) and the chart's pod command (`raftorch-adapter
run`) run from that install as plain processes against a real PostgreSQL.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.postgres import PostgresServer, free_ports
from tests.integration.processes import POD_TOKEN, SECRET, call, wait_until
from tests.kubernetes.chart import ROOT

DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or "hadolint"


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HADOLINT, "--format", "json", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_hadolint_passes_on_the_dockerfile() -> None:
    result = _hadolint(DOCKERFILE)
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout


def test_hadolint_does_fail_on_a_careless_dockerfile(tmp_path: Path) -> None:
    """The lint is real: an unpinned base and a cached, unpinned pip install are findings."""
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN pip install raftorch\nCMD raftorch serve\n")
    result = _hadolint(careless)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0 and {"DL3007", "DL3013", "DL3042"} <= codes, codes


def _stages() -> list[list[str]]:
    """The Dockerfile's instructions per stage (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[str]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_the_image_is_multi_stage_slim_pinned_non_root_and_without_build_tools() -> None:
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base[1])
    build, final = _stages()
    assert build[0].startswith("FROM ${PYTHON_IMAGE} AS build")
    assert final[0] == "FROM ${PYTHON_IMAGE}"
    assert any("pip wheel" in line for line in build)
    run_lines = " ".join(line for line in final if line.startswith("RUN"))
    assert "--find-links=/wheels" in run_lines and "--no-index" in run_lines
    for tool in ("gcc", "build-essential", "apt-get", "make ", "COPY . "):
        assert tool not in " ".join(final), tool
    users = [line for line in final if line.startswith("USER")]
    assert users and users[-1].split()[1].split(":")[0] not in ("0", "root")
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert f"raftorch=={version}" in run_lines  # the wheel the build stage made, no other
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored  # the build context holds only what the build stage copies


def _command() -> list[str]:
    [cmd] = [line for line in _stages()[-1] if line.startswith("CMD ")]
    parsed: list[str] = json.loads(cmd.removeprefix("CMD "))
    return parsed


def _build_context(destination: Path) -> Path:
    """The files the build stage COPYs, and only those (a forgotten package fails the test)."""
    source = destination / "src"
    for line in _stages()[0]:
        if not line.startswith("COPY "):
            continue
        *paths, _target = line.split()[1:]
        for path in paths:
            origin = ROOT / path
            if origin.is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
                shutil.copytree(origin, source / path, ignore=ignore)
            else:
                source.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, source / path)
    return source


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The project as the image's build stage makes it: a wheel, installed into a prefix."""
    root = tmp_path_factory.mktemp("image")
    source = _build_context(root)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(root / "wheels"),
         str(source)],
        check=True, timeout=300, cwd=root,
    )  # fmt: skip
    [wheel] = (root / "wheels").glob("raftorch-*.whl")
    prefix = root / "prefix"
    # --ignore-installed: leave this environment's own (editable) raftorch where it is.
    subprocess.run(
        [*pip, "install", "--no-deps", "--ignore-installed", "--prefix", str(prefix), str(wheel)],
        check=True, timeout=300, cwd=root,
    )  # fmt: skip
    [site] = prefix.glob("lib/python*/site-packages")
    # The wheel's packages first; its dependencies from this environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTORCH_")}
    env |= {"PATH": f"{prefix / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(site)}
    probe = "import raftorch, adapter; print(raftorch.__file__, adapter.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=root, capture_output=True, text=True,
        check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    assert all(path.startswith(str(site)) for path in where), where
    return env


@pytest.fixture
def blank_database(pg_server: PostgresServer) -> Iterator[str]:
    """A database with no schema: the installed replica must migrate it from its own wheel."""
    name = f"image_{uuid.uuid4().hex}"
    pg_server.create_database(name)
    yield pg_server.dsn(name)
    pg_server.drop_database(name)


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent
        )


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
        raise


def test_the_wheel_runs_a_replica_and_a_pod_from_the_image_commands(
    installed: dict[str, str], blank_database: str, tmp_path: Path
) -> None:
    assert _command() == ["raftorch", "serve"]
    api, raft, metrics = free_ports(3)
    # One replica (no peers), on loopback; everything else is the shipped default.
    replica_env = installed | {
        "RAFTORCH_NODE__ID": "r0",
        "RAFTORCH_NODE__DATA_DIR": str(tmp_path / "r0"),
        "RAFTORCH_RAFT__BIND": f"127.0.0.1:{raft}",
        "RAFTORCH_RAFT__SECRET": SECRET,
        "RAFTORCH_API__PORT": str(api),
        "RAFTORCH_API__ADMIN_TOKEN": "admin",
        "RAFTORCH_API__POD_BOOTSTRAP_TOKEN": POD_TOKEN,
        "RAFTORCH_DATABASE__DSN": blank_database,
    }
    pod_env = installed | {
        "RAFTORCH_ADAPTER_POD_ID": "pod-0",
        "RAFTORCH_ADAPTER_BOOTSTRAP_TOKEN": POD_TOKEN,
        "RAFTORCH_ADAPTER_ORCHESTRATORS": f"http://127.0.0.1:{api}",
        "RAFTORCH_ADAPTER_DATABASE_DSN": blank_database,
        "RAFTORCH_ADAPTER_METRICS_PORT": str(metrics),
    }
    replica = _start(_command(), replica_env, tmp_path / "replica.log")
    pod = None
    try:
        base = f"http://127.0.0.1:{api}"
        wait_until(
            lambda: call("GET", base + "/readyz", token=None, timeout=1).status == 200,
            60.0,
            "the replica to be ready (leader, schema migrated, config loaded)",
        )
        pod = _start(shlex.split("raftorch-adapter run"), pod_env, tmp_path / "pod.log")
        wait_until(
            lambda: (
                call("GET", f"http://127.0.0.1:{metrics}/readyz", token=None, timeout=1).status
                == 200
            ),
            60.0,
            "the pod to register",
        )
        pods = call("GET", base + "/api/v1/pods", token="admin").body["items"]
        assert [p["id"] for p in pods] == ["pod-0"]
        assert (
            b"raftorch_pod_lease_remaining_seconds"
            in call("GET", f"http://127.0.0.1:{metrics}/metrics", token=None).body
        )
        assert _stop(pod) == 0  # SIGTERM drains the pod and it exits cleanly
        assert _stop(replica) == 0
    except BaseException:
        for log in ("replica.log", "pod.log"):
            if (tmp_path / log).exists():
                sys.stderr.write(f"--- {log}\n{(tmp_path / log).read_text()[-3000:]}\n")
        raise
    finally:
        for process in (pod, replica):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=5)
