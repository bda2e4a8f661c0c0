"""The chart renders with real Helm, and every object is valid Kubernetes 1.30 (strict schemas).

ServiceMonitor and PrometheusRule are Prometheus Operator CRDs with no schema in
kubernetes-validate; they are checked structurally here (what they select, what they hold).
"""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.kubernetes.chart import (
    CHART,
    DASHBOARD_FILE,
    FULLNAME,
    NAMESPACE,
    PEERS,
    PROMETHEUS,
    RELEASE,
    REQUIRED,
    RULES_FILE,
    SCENARIOS,
    container,
    kinds,
    one,
    scenario,
)

KUBERNETES = "1.30.0"
CRDS = {"monitoring.coreos.com/v1"}
ALWAYS = {
    "StatefulSet",
    "Deployment",
    "Service",
    "ConfigMap",
    "Secret",
    "PodDisruptionBudget",
    "NetworkPolicy",
}
MONITORING = {"ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_standard_object_passes_strict_kubernetes_1_30_validation(name: str) -> None:
    objects = scenario(name)
    assert ALWAYS - {"Secret"} <= kinds(objects), kinds(objects)
    validated = 0
    for obj in objects:
        if obj["apiVersion"] in CRDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = "/".join(str(p) for p in err.path)
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {where}: {err.message}")
        validated += 1
    assert validated >= 12, validated


def test_monitoring_objects_are_off_by_default_and_on_when_switched_on() -> None:
    defaults = scenario("defaults")
    assert not MONITORING & kinds(defaults)
    assert not [o for o in defaults if "grafana_dashboard" in o["metadata"].get("labels", {})]
    monitoring = scenario("all-monitoring")
    assert kinds(monitoring) >= MONITORING
    one(monitoring, "ConfigMap", f"{FULLNAME}-dashboard")


def test_five_replicas_is_five_stable_members_everywhere() -> None:
    objects = scenario("five-replicas")
    assert one(objects, "StatefulSet")["spec"]["replicas"] == 5
    members = one(objects, "ConfigMap", f"{FULLNAME}-orchestrator")["data"]["RAFT_MEMBERS"]
    assert members.split(",") == [
        f"{FULLNAME}-{n}.{PEERS}.{NAMESPACE}.svc.cluster.local:4321" for n in range(5)
    ]
    urls = one(objects, "ConfigMap", f"{FULLNAME}-adapter")["data"][
        "RAFTORCH_ADAPTER_ORCHESTRATORS"
    ]
    assert len(urls.split(",")) == 5


def test_the_replicas_are_addressed_by_stable_names_published_before_ready() -> None:
    objects = scenario("defaults")
    statefulset = one(objects, "StatefulSet")
    peers = one(objects, "Service", PEERS)
    assert statefulset["spec"]["serviceName"] == PEERS
    assert peers["spec"]["clusterIP"] == "None" and peers["spec"]["publishNotReadyAddresses"]
    # Parallel: replicas cannot become ready one by one (readiness needs a quorum first).
    assert statefulset["spec"]["podManagementPolicy"] == "Parallel"
    api = one(objects, "Service", FULLNAME)
    assert [p["name"] for p in api["spec"]["ports"]] == ["http"]
    assert api["spec"]["selector"] == statefulset["spec"]["selector"]["matchLabels"]


def test_replicas_and_pods_run_locked_down_with_probes_and_a_drain_on_sigterm() -> None:
    objects = scenario("defaults")
    for workload in (one(objects, "StatefulSet"), one(objects, "Deployment")):
        pod = workload["spec"]["template"]["spec"]
        spec = container(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert spec["securityContext"]["readOnlyRootFilesystem"] is True
        assert spec["securityContext"]["allowPrivilegeEscalation"] is False
        assert spec["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert pod["automountServiceAccountToken"] is False
        assert spec["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert spec["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert spec["resources"]["requests"] and spec["resources"]["limits"]["memory"]
        # The one writable place besides data: /tmp, on an emptyDir.
        mounts = {m["mountPath"]: m["name"] for m in spec["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        # Replicas drain in 5 s (hand over leadership, finish requests), pods in 15 s.
        assert pod["terminationGracePeriodSeconds"] >= 20
    replica = container(one(objects, "StatefulSet"))
    assert replica["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    data_volume = {m["mountPath"]: m["name"] for m in replica["volumeMounts"]}["/var/lib/raftorch"]
    assert data_volume == "data"


def test_raft_data_is_on_a_claim_when_persistence_is_on() -> None:
    objects = scenario("every-option")
    statefulset = one(objects, "StatefulSet")
    [claim] = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "data"
    assert claim["spec"]["storageClassName"] == "fast"
    pod_volumes = [v["name"] for v in statefulset["spec"]["template"]["spec"]["volumes"]]
    assert "data" not in pod_volumes  # the claim, not an emptyDir


def test_disruption_budgets_spread_and_anti_affinity() -> None:
    objects = scenario("defaults")
    orchestrators = one(objects, "PodDisruptionBudget", f"{FULLNAME}-orchestrator")["spec"]
    assert orchestrators["maxUnavailable"] == 1
    assert one(objects, "PodDisruptionBudget", f"{FULLNAME}-adapter")["spec"]["maxUnavailable"] == 1
    replica_pod = one(objects, "StatefulSet")["spec"]["template"]["spec"]
    [rule] = replica_pod["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"
    ]
    assert rule["topologyKey"] == "kubernetes.io/hostname"
    assert rule["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "orchestrator"
    for workload in (one(objects, "StatefulSet"), one(objects, "Deployment")):
        spread = workload["spec"]["template"]["spec"]["topologySpreadConstraints"]
        assert {c["topologyKey"] for c in spread} == {
            "topology.kubernetes.io/zone",
            "kubernetes.io/hostname",
        }
    adapters = one(objects, "Deployment")["spec"]
    assert adapters["replicas"] == 3
    assert adapters["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_autoscaling_replaces_the_fixed_pod_count() -> None:
    objects = scenario("every-option")
    assert "replicas" not in one(objects, "Deployment")["spec"]
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == f"{FULLNAME}-adapter"
    assert hpa["minReplicas"] <= hpa["maxReplicas"]


def _rules_allowing(policy: dict[str, Any], port: str | int) -> list[dict[str, Any]]:
    return [
        r
        for r in policy["spec"].get("ingress", [])
        if any(p["port"] == port for p in r.get("ports", []))
    ]


def test_network_policies_keep_raft_to_replicas_and_the_api_to_pods_and_the_ingress() -> None:
    objects = scenario("every-option")
    policy = one(objects, "NetworkPolicy", f"{FULLNAME}-orchestrator")
    replicas = {
        "podSelector": {
            "matchLabels": one(objects, "StatefulSet")["spec"]["selector"]["matchLabels"]
        }
    }
    adapters = {
        "podSelector": {
            "matchLabels": one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
        }
    }
    raft_rules = _rules_allowing(policy, "raft")
    assert [r["from"] for r in raft_rules] == [[replicas]]
    api_sources = [peer for r in _rules_allowing(policy, "http") for peer in r["from"]]
    assert adapters in api_sources and replicas in api_sources
    assert SCENARIOS["every-option"]["networkPolicy"]["apiFrom"][0] in api_sources
    assert PROMETHEUS[0] in api_sources  # /metrics is on the API port
    egress = policy["spec"]["egress"]
    database = [r for r in egress if any(p["port"] == 5432 for p in r["ports"])]
    assert database and database[0]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    pods = one(objects, "NetworkPolicy", f"{FULLNAME}-adapter")
    assert [r["from"] for r in _rules_allowing(pods, "metrics")] == [PROMETHEUS]


def test_generated_secrets_are_kept_and_an_existing_secret_is_used_as_is() -> None:
    objects = scenario("defaults")
    auth = one(objects, "Secret", f"{FULLNAME}-auth")
    assert set(auth["data"]) == {"raft-secret", "admin-token", "pod-bootstrap-token"}
    assert auth["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert len(set(auth["data"].values())) == 3  # three independent random values
    own = scenario("every-option")
    assert not [o for o in own if o["kind"] == "Secret"]  # the user's Secrets, not ours
    refs = [
        e["valueFrom"]["secretKeyRef"]
        for w in (one(own, "StatefulSet"), one(own, "Deployment"))
        for e in container(w)["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    ]
    assert {r["name"] for r in refs} == {"raftorch-auth", "raftorch-db"}
    assert {r["key"] for r in refs if r["name"] == "raftorch-db"} == {"url"}


def test_the_ingress_serves_the_portal_from_the_api_service() -> None:
    ingress = one(scenario("every-option"), "Ingress")["spec"]
    [rule] = ingress["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "http"}}
    assert ingress["ingressClassName"] == "nginx" and ingress["tls"][0]["secretName"]


def test_the_service_monitor_scrapes_every_replica_and_every_pod_once() -> None:
    objects = scenario("all-monitoring")
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    wanted = spec["selector"]["matchLabels"]
    selected = [
        s
        for s in objects
        if s["kind"] == "Service" and wanted.items() <= s["metadata"]["labels"].items()
    ]
    # The headless Services: they list not-ready replicas and pods too (no leader = no ready).
    assert sorted(s["metadata"]["name"] for s in selected) == [f"{FULLNAME}-adapter", PEERS]
    assert all(s["spec"]["publishNotReadyAddresses"] for s in selected)
    workloads = {
        PEERS: one(objects, "StatefulSet"),
        f"{FULLNAME}-adapter": one(objects, "Deployment"),
    }
    for service in selected:
        ports = {p["name"] for p in service["spec"]["ports"]}
        scraped = [e for e in spec["endpoints"] if e["port"] in ports]
        assert len(scraped) == 1, (service["metadata"]["name"], scraped)
        assert scraped[0]["path"] == "/metrics"
        labels = workloads[service["metadata"]["name"]]["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        container_ports = {
            p["name"] for p in container(workloads[service["metadata"]["name"]])["ports"]
        }
        assert scraped[0]["port"] in container_ports


def test_the_prometheus_rule_is_the_rule_file_promtool_tests() -> None:
    rule = one(scenario("all-monitoring"), "PrometheusRule")
    assert rule["metadata"]["name"] == FULLNAME
    assert rule["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
    assert rule["spec"] == yaml.safe_load(RULES_FILE.read_text())
    for group in rule["spec"]["groups"]:
        for entry in group["rules"]:
            assert ("alert" in entry) != ("record" in entry) and entry["expr"]
            if "alert" in entry:
                assert entry["labels"]["severity"] in ("warning", "critical")
                assert entry["annotations"]["summary"] and entry["annotations"]["description"]


def test_the_dashboard_config_map_is_labelled_for_the_grafana_sidecar() -> None:
    config_map = one(scenario("all-monitoring"), "ConfigMap", f"{FULLNAME}-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"]["grafana_folder"] == "raftorch"
    [(name, text)] = config_map["data"].items()
    assert name.endswith(".json")
    dashboard = json.loads(text)
    assert dashboard == json.loads(DASHBOARD_FILE.read_text())
    assert dashboard["uid"] and dashboard["panels"]


def test_helm_lint_strict_for_kubernetes_1_30_finds_nothing_above_info() -> None:
    report = helm.lint(CHART, REQUIRED, strict=True, kube_version="v1.30.0", namespace=NAMESPACE)
    assert report["total_charts_linted"] == 1 and not report["errors"], report
    findings = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert not findings, findings
