"""Render helm/raftorch with real Helm (helm-python-sdk embeds the Helm Go SDK) for the tests."""

from __future__ import annotations

import base64
import copy
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "raftorch"
RULES_FILE = CHART / "files" / "prometheus-rules.yaml"
DASHBOARD_FILE = CHART / "files" / "grafana-dashboard.json"
RELEASE, NAMESPACE = "prod", "trading"
FULLNAME = f"{RELEASE}-raftorch"
PEERS = f"{FULLNAME}-peers"
DSN = "postgresql://raftorch:pw@db.trading.svc.cluster.local:5432/raftorch"
PROMETHEUS = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
INGRESS_CONTROLLER = [
    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
]

# The values a user must give (a database); everything else is the chart's default.
REQUIRED: dict[str, Any] = {"database": {"dsn": DSN}}
# Two FIX acceptors a venue dials: one behind a cloud load balancer, one inside the cluster.
FIX_ACCEPTORS: list[dict[str, Any]] = [
    {
        "name": "lse",
        "adapter": "fix-lse",
        "port": 9001,
        "service": {
            "type": "LoadBalancer",
            "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"},
            "nodePort": 30901,
            "loadBalancerSourceRanges": ["203.0.113.0/24"],
        },
        "networkPolicyFrom": [{"ipBlock": {"cidr": "203.0.113.0/24"}}],
    },
    {"name": "xetra-t7", "adapter": "Xetra.T7_prod", "port": 9002},
]
SCENARIOS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "fix-acceptors": {"fixAcceptors": FIX_ACCEPTORS},
    "five-replicas": {"orchestrator": {"replicas": 5}},
    "all-monitoring": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True, "folder": "raftorch"},
        "networkPolicy": {"metricsFrom": PROMETHEUS},
    },
    "every-option": {
        "orchestrator": {
            "replicas": 5,
            "persistence": {"enabled": True, "storageClassName": "fast"},
            "podAntiAffinity": "soft",
            "settings": {"lease": {"ttl_seconds": 9}, "log": {"format": "json"}},
        },
        "adapter": {
            "autoscaling": {"enabled": True},
            "labels": {"zone": "a"},
            "connectors": ["pg-queue-consumer", "tcp-client"],
        },
        "auth": {"existingSecret": "raftorch-auth"},
        "database": {"dsn": "", "existingSecret": "raftorch-db", "existingSecretKey": "url"},
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "tls": [{"secretName": "raftorch-tls", "hosts": ["raftorch.example.com"]}],
        },
        "networkPolicy": {
            "apiFrom": INGRESS_CONTROLLER,
            "metricsFrom": PROMETHEUS,
            "databaseTo": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
        },
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    },
}


def merged(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """Deep merge of value layers, later ones winning (as `helm -f a -f b` does)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


@cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(values: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every object `helm install prod -n trading` would create with `values` over REQUIRED."""
    manifests = chart().render(
        merged(REQUIRED, values), name=RELEASE, namespace=NAMESPACE, is_install=True
    )
    objects: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def assert_refused(values: Mapping[str, Any], expected: tuple[str, ...]) -> None:
    """Rendering `values` fails, and Helm's message names every part of `expected` (and is
    a message, not a Go panic)."""
    try:
        render(values)
    except helm.HelmError as failure:
        message = str(failure)
    else:
        raise AssertionError(f"rendered although wrong: {values}")
    for part in expected:
        assert part in message, message
    assert "goroutine" not in message and "panic" not in message


def scenario(name: str) -> list[dict[str, Any]]:
    return render(SCENARIOS[name])


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(objects: list[dict[str, Any]]) -> set[str]:
    return {o["kind"] for o in objects}


def container(workload: dict[str, Any]) -> dict[str, Any]:
    [only] = workload["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion in env values, command and args (`$$` is a `$`)."""

    def one_reference(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return env.get(match[1], match[0])  # an unknown reference stays as written

    return _REFERENCE.sub(one_reference, text)


def container_env(
    objects: list[dict[str, Any]], workload: dict[str, Any], pod_name: str, pod_ip: str
) -> dict[str, str]:
    """The environment the kubelet gives the workload's container in pod `pod_name`.

    envFrom ConfigMaps first, then env entries in order (each may refer to earlier ones);
    fieldRefs from the pod, secretKeyRefs from the rendered Secrets, or a stand-in value
    for a Secret the user provides (existingSecret).
    """
    spec = container(workload)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        config_map = one(objects, "ConfigMap", source["configMapRef"]["name"])
        env.update(config_map["data"])
    fields = {"metadata.name": pod_name, "status.podIP": pod_ip, "metadata.namespace": NAMESPACE}
    for entry in spec.get("env", []):
        if "value" in entry:
            env[entry["name"]] = expand(entry["value"], env)
            continue
        ref = entry["valueFrom"]
        if "fieldRef" in ref:
            env[entry["name"]] = fields[ref["fieldRef"]["fieldPath"]]
        else:
            env[entry["name"]] = _secret_value(objects, ref["secretKeyRef"])
    return env


def _secret_value(objects: list[dict[str, Any]], ref: Mapping[str, str]) -> str:
    secrets = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == ref["name"]]
    if not secrets:  # the user's existingSecret: what an operator would have put there
        return DSN if "db" in ref["name"] else f"user-provided-{ref['key']}"
    return base64.b64decode(secrets[0]["data"][ref["key"]]).decode()


def pod_names(objects: list[dict[str, Any]]) -> Iterator[str]:
    statefulset = one(objects, "StatefulSet")
    for n in range(statefulset["spec"]["replicas"]):
        yield f"{statefulset['metadata']['name']}-{n}"


def member(pod: str, port: int = 4321) -> str:
    return f"{pod}.{PEERS}.{NAMESPACE}.svc.cluster.local:{port}"
