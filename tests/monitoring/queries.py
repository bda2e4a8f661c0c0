"""The PromQL of the chart's rule file and dashboard, and the metric names each one reads."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

import promql_parser
import yaml

from tests.kubernetes.chart import DASHBOARD_FILE, RULES_FILE

# Grafana fills these in; as Grafana would for "all namespaces" and a short scrape interval.
GRAFANA_VARIABLES = {"$namespace": ".*", "$__rate_interval": "30s"}
_LABEL_VALUES = re.compile(r"label_values\((\w+),\s*\w+\)")


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def recorded() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def rule_expressions() -> list[tuple[str, str]]:
    return [(rule.get("alert") or rule["record"], rule["expr"]) for rule in rules()]


def _panels(panels: Iterable[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())
    return parsed


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target, Grafana's variables filled in."""
    queries = []
    for panel in _panels(dashboard()["panels"]):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"{panel['title']}: unknown variable in {expr}"
            queries.append((f"{panel['title']} [{target['refId']}]", expr))
    return queries


def variable_metrics() -> list[str]:
    """The metrics the dashboard's template variables read (``label_values(metric, label)``)."""
    found = []
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            match = _LABEL_VALUES.fullmatch(variable["definition"])
            assert match, variable["definition"]
            found.append(match[1])
    return found


def metric_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects (parsed, not pattern-matched)."""
    names: set[str] = set()

    def visit(node: object) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr}"
            names.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names
