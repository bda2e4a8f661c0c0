"""Wrong values fail at install with one clear message naming the value; the schema matches
raftorch's settings and the values reference in docs/kubernetes.md."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from raftorch.config import SETTINGS
from tests.kubernetes.chart import CHART, INGRESS_CONTROLLER, ROOT, assert_refused, render

WRONG: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    (
        "even replica count",
        {"orchestrator": {"replicas": 4}},
        ("/orchestrator/replicas", "1, 3, 5"),
    ),
    ("two replicas", {"orchestrator": {"replicas": 2}}, ("/orchestrator/replicas",)),
    ("unknown key", {"orchestrator": {"replica": 3}}, ("/orchestrator", "'replica' not allowed")),
    ("unknown top-level key", {"monitoring": {"enabled": True}}, ("'monitoring' not allowed",)),
    (
        "bad type",
        {"adapter": {"replicaCount": "three"}},
        ("/adapter/replicaCount", "got string, want integer"),
    ),
    (
        "bad boolean",
        {"serviceMonitor": {"enabled": "yes"}},
        ("/serviceMonitor/enabled", "want boolean"),
    ),
    (
        "unknown setting",
        {"orchestrator": {"settings": {"lease": {"ttl": 3}}}},
        ("/orchestrator/settings/lease", "'ttl' not allowed"),
    ),
    (
        "Raft timers are the server's",
        {"orchestrator": {"settings": {"raft": {"election_timeout_min_seconds": 0.2}}}},
        ("/orchestrator/settings/raft",),
    ),
    (
        "chart-managed setting",
        {"orchestrator": {"settings": {"api": {"port": 9000}}}},
        ("/orchestrator/settings/api", "'port' not allowed"),
    ),
    (
        "negative TTL",
        {"orchestrator": {"settings": {"lease": {"ttl_seconds": -1}}}},
        ("/orchestrator/settings/lease/ttl_seconds",),
    ),
    (
        "bad log level",
        {"orchestrator": {"settings": {"log": {"level": "LOUD"}}}},
        ("/orchestrator/settings/log/level",),
    ),
    ("not a PostgreSQL URL", {"database": {"dsn": "mysql://x@y/z"}}, ("/database/dsn",)),
    ("no database", {"database": {"dsn": ""}}, ("database.dsn", "database.existingSecret")),
    ("two databases", {"database": {"existingSecret": "db"}}, ("either database.dsn",)),
    ("port out of range", {"orchestrator": {"apiPort": 70000}}, ("/orchestrator/apiPort",)),
    (
        "bad anti-affinity",
        {"orchestrator": {"podAntiAffinity": "always"}},
        ("/orchestrator/podAntiAffinity",),
    ),
    ("scraping blocked", {"serviceMonitor": {"enabled": True}}, ("networkPolicy.metricsFrom",)),
    ("portal blocked", {"ingress": {"enabled": True}}, ("networkPolicy.apiFrom",)),
    (
        "autoscaling range",
        {"adapter": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}},
        ("minReplicas=5 is above maxReplicas=2",),
    ),
]


@pytest.mark.parametrize(
    ("values", "expected"), [(v, e) for _, v, e in WRONG], ids=[name for name, _, _ in WRONG]
)
def test_wrong_values_fail_with_a_clear_message(
    values: dict[str, Any], expected: tuple[str, ...]
) -> None:
    assert_refused(values, expected)


def test_the_same_values_made_right_render() -> None:
    """The failures above are about the wrong value, not about the rest of the values."""
    render({"orchestrator": {"replicas": 5, "settings": {"lease": {"ttl_seconds": 9}}}})
    render(
        {
            "serviceMonitor": {"enabled": True},
            "ingress": {"enabled": True},
            "networkPolicy": {"metricsFrom": INGRESS_CONTROLLER, "apiFrom": INGRESS_CONTROLLER},
        }
    )
    render({"networkPolicy": {"enabled": False}, "serviceMonitor": {"enabled": True}})


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


# Set by the chart for every replica (identity, addresses, secrets), never by the user.
CHART_MANAGED = {
    "node.id",
    "node.data_dir",
    "raft.bind",
    "raft.peers",
    "raft.secret",
    "api.host",
    "api.port",
    "api.advertise_url",
    "api.admin_token",
    "api.pod_bootstrap_token",
    "database.dsn",
}


def test_the_settings_the_schema_allows_are_raftorch_settings_and_not_the_charts() -> None:
    sections = _schema()["properties"]["orchestrator"]["properties"]["settings"]["properties"]
    allowed = {f"{s}.{k}" for s, spec in sections.items() for k in spec["properties"]}
    assert allowed <= set(SETTINGS), allowed - set(SETTINGS)
    assert not allowed & CHART_MANAGED
    assert not {k for k in allowed if "timeout" in k and k.startswith("raft.")}
    assert not {k for k in allowed if k.startswith("raft.") and "period" in k}


def _leaves(values: dict[str, Any], prefix: str = "") -> list[str]:
    paths = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and key not in ("resources", "labels", "requests"):
            paths.extend(_leaves(value, path + "."))
        else:
            paths.append(path)
    return paths


def test_every_value_has_a_default_a_schema_entry_and_a_line_in_the_docs() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    docs = (ROOT / "docs" / "kubernetes.md").read_text()
    schema = _schema()
    missing_docs, missing_schema = [], []
    for path in _leaves(defaults):
        if f"`{path}`" not in docs:
            missing_docs.append(path)
        node = schema
        for part in path.split("."):
            node = node.get("properties", {}).get(part, {})
        if not node:
            missing_schema.append(path)
    assert not missing_schema, missing_schema
    assert not missing_docs, f"docs/kubernetes.md does not describe {missing_docs}"
