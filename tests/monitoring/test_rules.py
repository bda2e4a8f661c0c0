"""The chart's rule file passes `promtool check rules` and `promtool test rules` (Debian's
prometheus), and every alert has a unit test showing it firing and one showing it quiet.

The per-alert proof is mechanical: the firing cases of an alert, run alone, pass with the real
rules and fail when the alert can never fire; its quiet cases pass with the real rules and
fail when the alert always fires.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.kubernetes.chart import ROOT, RULES_FILE
from tests.monitoring.queries import alerts, dashboard_queries, metric_names, recorded

UNIT_TESTS = Path(__file__).with_name("rules_test.yaml")
PROMTOOL = shutil.which("promtool") or "promtool"
NEVER = "vector(1) < 0"
# Fires at every evaluation with the labels the unit tests use.
ALWAYS = 'label_replace(vector(1), "namespace", "trading", "", "")'


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_check_rules_passes() -> None:
    result = _promtool("check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    total = sum(len(g["rules"]) for g in yaml.safe_load(RULES_FILE.read_text())["groups"])
    assert f"SUCCESS: {total} rules found" in result.stdout, result.stdout


def test_promtool_unit_tests_pass() -> None:
    result = _promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def _cases(alert: str, firing: bool) -> list[dict[str, Any]]:
    """The unit-test groups reduced to this alert's firing (or quiet) checks."""
    chosen = []
    for group in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        checks = [
            c
            for c in group.get("alert_rule_test", [])
            if c["alertname"] == alert and bool(c["exp_alerts"]) == firing
        ]
        if checks:
            chosen.append(
                {**copy.deepcopy(group), "alert_rule_test": checks, "promql_expr_test": []}
            )
    return chosen


def _run_cases(tmp_path: Path, cases: list[dict[str, Any]], expr: str | None, alert: str) -> bool:
    """promtool on `cases` with the alert's expression replaced by `expr` (None: as shipped)."""
    rules = yaml.safe_load(RULES_FILE.read_text())
    if expr is not None:
        for group in rules["groups"]:
            for rule in group["rules"]:
                if rule.get("alert") == alert:
                    rule["expr"] = expr
    rules_file, tests_file = tmp_path / "rules.yaml", tmp_path / "tests.yaml"
    rules_file.write_text(yaml.safe_dump(rules))
    tests_file.write_text(
        yaml.safe_dump(
            {"rule_files": [str(rules_file)], "evaluation_interval": "15s", "tests": cases}
        )
    )
    return _promtool("test", "rules", str(tests_file)).returncode == 0


@pytest.mark.parametrize("alert", [a["alert"] for a in alerts()])
def test_every_alert_is_shown_firing_and_quiet(alert: str, tmp_path: Path) -> None:
    firing, quiet = _cases(alert, firing=True), _cases(alert, firing=False)
    assert firing, f"{alert} has no unit test where it fires"
    assert quiet, f"{alert} has no unit test where it stays quiet"
    assert _run_cases(tmp_path, firing, None, alert)
    assert not _run_cases(tmp_path, firing, NEVER, alert), (
        "the firing cases pass when it never fires"
    )
    assert _run_cases(tmp_path, quiet, None, alert)
    assert not _run_cases(tmp_path, quiet, ALWAYS, alert), (
        "the quiet cases pass when it always fires"
    )


def test_the_dashboard_reads_recorded_series_that_the_rule_file_records() -> None:
    used = {name for _, expr in dashboard_queries() for name in metric_names(expr)}
    recorded_used = {name for name in used if ":" in name}
    assert recorded_used, "the dashboard reads no recording rule"
    assert recorded_used <= recorded(), recorded_used - recorded()


def test_every_alert_has_a_row_with_its_severity_in_the_docs_alert_table() -> None:
    """docs/kubernetes.md lists each alert the chart ships, with the severity it pages with."""
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    rows = {m[1]: m[2] for m in re.finditer(r"^\| `(Raftorch\w+)` \|.*\| (\w+) \|$", docs, re.M)}
    shipped = {a["alert"]: a["labels"]["severity"] for a in alerts()}
    assert rows == shipped, {
        "missing": sorted(shipped.keys() - rows.keys()),
        "not shipped": sorted(rows.keys() - shipped.keys()),
        "severity": sorted(a for a in rows.keys() & shipped.keys() if rows[a] != shipped[a]),
    }
