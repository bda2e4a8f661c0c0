"""`fixAcceptors`: a Service per FIX acceptor that selects the Pod its owner labels.

The label key and the pods' reading of their environment come from the product
(`adapter.connectors.fix.ownerlabel`), so the chart and the pod code cannot drift apart.
Strict Kubernetes 1.30 validation of every object is in test_chart_render.py (scenario
`fix-acceptors`).
"""

from __future__ import annotations

from typing import Any

import pytest

from adapter.connectors.fix.ownerlabel import (
    OWNER_VALUE,
    Acceptor,
    LabelSettings,
    owner_label_key,
)
from tests.kubernetes.chart import (
    FIX_ACCEPTORS,
    FULLNAME,
    NAMESPACE,
    assert_refused,
    container,
    container_env,
    kinds,
    one,
    render,
    scenario,
)

RBAC = {"ServiceAccount", "Role", "RoleBinding"}


def _adapter_pod_labels(objects: list[dict[str, Any]]) -> dict[str, str]:
    labels: dict[str, str] = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_each_acceptor_service_selects_only_the_adapter_pod_its_owner_labels() -> None:
    objects = scenario("fix-acceptors")
    pod = _adapter_pod_labels(objects)
    deployment = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    for item in FIX_ACCEPTORS:
        service = one(objects, "Service", f"{FULLNAME}-fix-{item['name']}")["spec"]
        key = owner_label_key(item["name"])
        assert service["selector"] == {**deployment, key: OWNER_VALUE}
        assert _selects(service["selector"], {**pod, key: OWNER_VALUE}), "misses the owner"
        assert not _selects(service["selector"], pod), "selects a pod that does not own it"
        others = {owner_label_key(o["name"]): OWNER_VALUE for o in FIX_ACCEPTORS if o != item}
        assert not _selects(service["selector"], {**pod, **others}), "selects another's owner"
        [port] = service["ports"]
        assert port["port"] == port["targetPort"] == item["port"] and port["protocol"] == "TCP"
    lse = one(objects, "Service", f"{FULLNAME}-fix-lse")
    assert lse["spec"]["type"] == "LoadBalancer"
    assert lse["spec"]["ports"][0]["nodePort"] == 30901
    assert lse["spec"]["loadBalancerSourceRanges"] == ["203.0.113.0/24"]
    assert lse["metadata"]["annotations"] == FIX_ACCEPTORS[0]["service"]["annotations"]
    assert one(objects, "Service", f"{FULLNAME}-fix-xetra-t7")["spec"]["type"] == "ClusterIP"


def test_the_pods_read_their_acceptors_name_and_namespace_as_the_product_parses_them() -> None:
    objects = scenario("fix-acceptors")
    deployment = one(objects, "Deployment")
    env = container_env(objects, deployment, "prod-raftorch-adapter-7d9f-abcde", "10.1.2.3")
    settings = LabelSettings.from_env(env)
    assert settings is not None
    assert settings.pod == "prod-raftorch-adapter-7d9f-abcde" and settings.namespace == NAMESPACE
    assert dict(settings.acceptors) == {
        i["adapter"]: Acceptor(i["name"], i["adapter"], i["port"]) for i in FIX_ACCEPTORS
    }
    ports = {p["containerPort"] for p in container(deployment)["ports"]}
    assert {i["port"] for i in FIX_ACCEPTORS} <= ports


def test_the_pods_may_read_list_and_patch_pods_of_their_namespace_and_nothing_else() -> None:
    objects = scenario("fix-acceptors")
    assert kinds(objects) >= RBAC and "ClusterRole" not in kinds(objects)
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    assert spec["serviceAccountName"] == account and spec["automountServiceAccountToken"] is True
    role = one(objects, "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"],
                              "verbs": ["get", "list", "patch"]}]  # fmt: skip
    binding = one(objects, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]


def test_the_network_policy_lets_the_venue_reach_the_acceptor_ports() -> None:
    objects = scenario("fix-acceptors")
    policy = one(objects, "NetworkPolicy", f"{FULLNAME}-adapter")["spec"]
    assert _selects(policy["podSelector"]["matchLabels"], _adapter_pod_labels(objects))
    rules = {
        r["ports"][0]["port"]: r for r in policy["ingress"] if r["ports"][0]["port"] != "metrics"
    }
    assert rules[9001]["from"] == [{"ipBlock": {"cidr": "203.0.113.0/24"}}]
    assert "from" not in rules[9002]  # any source
    assert set(rules) == {9001, 9002}


def test_without_acceptors_the_pods_get_no_token_no_role_and_no_acceptor_service() -> None:
    objects = scenario("defaults")
    assert not RBAC & kinds(objects)
    assert not [o for o in objects if "-fix-" in o["metadata"]["name"]]
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False and "serviceAccountName" not in spec
    assert not [e for e in container(one(objects, "Deployment"))["env"] if "FIX" in e["name"]]


def _with(**changes: Any) -> dict[str, Any]:
    return {"fixAcceptors": [{"name": "lse", "adapter": "fix-lse", "port": 9001, **changes}]}


LSE = {"name": "lse", "adapter": "fix-lse", "port": 9001}
WRONG: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("upper-case name", _with(name="LSE"), ("/fixAcceptors/0/name", "does not match")),
    ("name starting with a digit", _with(name="7lse"), ("/fixAcceptors/0/name",)),
    ("name too long", _with(name="a" * 64), ("/fixAcceptors/0/name",)),
    ("port out of range", _with(port=70000), ("/fixAcceptors/0/port",)),
    ("port zero", _with(port=0), ("/fixAcceptors/0/port",)),
    ("port as text", _with(port="9001"), ("/fixAcceptors/0/port", "want integer")),
    ("unknown key", _with(hostPort=9001), ("/fixAcceptors/0", "'hostPort' not allowed")),
    ("unknown service key", _with(service={"ports": []}), ("/fixAcceptors/0/service",)),
    ("no adapter", {"fixAcceptors": [{"name": "lse", "port": 9001}]}, ("adapter",)),
    ("bad adapter name", _with(adapter="fix lse"), ("/fixAcceptors/0/adapter",)),
    (
        "bad service type",
        _with(service={"type": "ExternalName"}),
        ("/fixAcceptors/0/service/type",),
    ),
    (
        "name used twice",
        {"fixAcceptors": [LSE, {**LSE, "adapter": "other", "port": 9002}]},
        ("fixAcceptors[1] (lse): name lse is already used by fixAcceptors[0]",),
    ),
    (
        "port used twice",
        {"fixAcceptors": [LSE, {**LSE, "name": "other", "adapter": "other"}]},
        ("fixAcceptors[1] (other): port 9001 is already used",),
    ),
    (
        "adapter used twice",
        {"fixAcceptors": [LSE, {**LSE, "name": "other", "port": 9002}]},
        ("fixAcceptors[1] (other): adapter fix-lse is already used",),
    ),
    ("the metrics port", _with(port=9100), ("port 9100 is adapter.metricsPort",)),
    (
        "Service name too long",
        _with(name="a" * 50),
        (f"its Service name {FULLNAME}-fix-{'a' * 50} has 68 characters, at most 63",),
    ),
    (
        "node port on a ClusterIP",
        _with(service={"nodePort": 30901}),
        ("service.nodePort needs service.type NodePort or LoadBalancer",),
    ),
    (
        "source ranges without a load balancer",
        _with(service={"type": "NodePort", "loadBalancerSourceRanges": ["10.0.0.0/8"]}),
        ("service.loadBalancerSourceRanges needs service.type LoadBalancer",),
    ),
]


@pytest.mark.parametrize(
    ("values", "expected"), [(v, e) for _, v, e in WRONG], ids=[n for n, _, _ in WRONG]
)
def test_wrong_acceptor_values_fail_with_a_clear_message(
    values: dict[str, Any], expected: tuple[str, ...]
) -> None:
    assert_refused(values, expected)


def test_the_same_acceptor_values_made_right_render() -> None:
    objects = render(_with(name="a" * 45, service={"type": "NodePort", "nodePort": 30901}))
    assert one(objects, "Service", f"{FULLNAME}-fix-{'a' * 45}")["spec"]["type"] == "NodePort"
    render({"fixAcceptors": [LSE, {"name": "b", "adapter": "b", "port": 9002}]})
