"""A real Prometheus (Debian's `prometheus` binary) on 127.0.0.1, for the monitoring tests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from devtools.postgres import free_ports
from tests.integration.processes import call, wait_until

SCRAPE_SECONDS = 1  # short, so a test sees a change within seconds


class QueryError(AssertionError):
    """Prometheus answered a query with an error (bad PromQL, unknown function...)."""


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        reply = call("GET", f"{self.url}/api/v1/{path}?{query}", token=None, timeout=5.0)
        body = reply.body if isinstance(reply.body, dict) else {}
        if reply.status != 200 or body.get("status") != "success":
            raise QueryError(f"{path} {params}: HTTP {reply.status} {reply.body!r}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The single value `expr` evaluates to now, or None when it has no sample."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def firing(self) -> set[str]:
        return {
            a["labels"]["alertname"] for a in self.api("alerts")["alerts"] if a["state"] == "firing"
        }

    def targets_up(self) -> int:
        active = self.api("targets", state="active")["activeTargets"]
        return sum(1 for t in active if t["health"] == "up")


def write_config(root: Path, jobs: dict[str, Sequence[str]], rule_files: Sequence[Path]) -> Path:
    config = {
        "global": {
            "scrape_interval": f"{SCRAPE_SECONDS}s",
            "scrape_timeout": f"{SCRAPE_SECONDS}s",
            "evaluation_interval": f"{SCRAPE_SECONDS}s",
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]}
            for job, targets in jobs.items()
        ],
    }
    path = root / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@contextmanager
def running_prometheus(
    root: Path, jobs: dict[str, Sequence[str]], rule_files: Sequence[Path]
) -> Iterator[Prometheus]:
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus is not installed (apt-get install prometheus)"
    root.mkdir(parents=True, exist_ok=True)
    config = write_config(root, jobs, rule_files)
    check = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    [port] = free_ports(1)
    log = root / "prometheus.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:
        wait_until(
            lambda: call("GET", prometheus.url + "/-/ready", token=None, timeout=1.0).status == 200,
            30.0,
            "Prometheus to be ready",
        )
        yield prometheus
    except BaseException:
        sys.stderr.write(f"--- prometheus\n{log.read_text(errors='replace')[-3000:]}\n")
        raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def exposed_names(urls: Sequence[str]) -> set[str]:
    """Every sample name the processes at `urls` expose on /metrics (as scraped)."""
    names: set[str] = set()
    for url in urls:
        reply = call("GET", url, token=None, timeout=5.0)
        assert reply.status == 200, (url, reply.status)
        text = reply.body.decode() if isinstance(reply.body, bytes) else json.dumps(reply.body)
        for family in text_string_to_metric_families(text):
            names.update(sample.name for sample in family.samples)
    return names
