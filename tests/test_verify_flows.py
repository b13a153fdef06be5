"""fleet verify, flows: the connections the system needs, through the NetworkPolicies under the
cluster's CNI (Cilium: ipBlock selects no pod or node; EKS: enforced only with the VPC CNI's
network policy on) and the GKE private control plane's firewall (443 and 10250 only by default)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from verify_fixtures import add, edit, edit_plan, findings_for, needs_charts, plan_copy

pytestmark = pytest.mark.slow


def _flows(d, contains):
    return [f for f in findings_for(d, "flows") if contains in f.problem]


def test_changed_network_policy_port_cuts_gateway_from_the_picker(tmp_path):
    d = plan_copy("dev", tmp_path, charts=False)
    what = "gateway to endpoint picker"
    assert not _flows(d, what)

    def port(doc):
        for rule in doc["spec"]["ingress"]:
            for p in rule.get("ports") or []:
                if p.get("port") == 9002:
                    p["port"] = 9009
    edit(d, "local-k8s", "NetworkPolicy", "fleet-inference", "allow-gateway-to-epp", port)
    got = _flows(d, what)
    assert got and got[0].object == "NetworkPolicy/fleet-inference/allow-gateway-to-epp"
    assert ":9002/TCP is denied by the ingress policies" in got[0].problem


def _allow_keda_internal(d: Path, cluster: str) -> None:
    add(d, cluster, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                     "metadata": {"name": "test-keda-internal", "namespace": "keda"},
                     "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"],
                              "ingress": [{"from": [{"podSelector": {}}]}],
                              "egress": [{"to": [{"podSelector": {}}]}]}})


def _drop_keda_9666_rules(d: Path, cluster: str) -> None:
    for p in (d / "manifests" / cluster).glob("NetworkPolicy_keda_*.yaml"):
        doc = yaml.safe_load(p.read_text())
        if doc["metadata"]["name"] == "test-keda-internal" or "9666" in p.read_text():
            p.unlink()


@needs_charts
def test_keda_metrics_server_needs_the_operator_on_9666(tmp_path):
    # keda 2.18.0 templates/metrics-server/deployment.yaml: --metrics-service-address=<operator>:9666.
    d = plan_copy("dev", tmp_path)
    what = "KEDA metrics server to operator"
    _allow_keda_internal(d, "local-k8s")
    assert not _flows(d, what)
    _drop_keda_9666_rules(d, "local-k8s")
    got = _flows(d, what)
    assert got and ":9666/TCP is denied" in got[0].problem and got[0].object.startswith("NetworkPolicy/keda/")


@needs_charts
def test_ipblock_rules_select_no_pod_under_cilium(tmp_path):
    d = plan_copy("azure", tmp_path)
    cl = "azure-east-k8s"
    # An ingress rule that admits the API server's calls only by ipBlock: fine on a standard CNI ...
    add(d, cl, {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "test-webhooks-by-ipblock", "namespace": "keda"},
                "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                         "ingress": [{"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}],
                                      "ports": [{"port": 9443, "protocol": "TCP"}]}]}})
    edit_plan(d, "azure-east-aks", lambda i: i["networkProfile"].update(networkPolicy="calico",
                                                                         networkDataplane="azure"))
    what = "API server to ValidatingWebhookConfiguration keda-admission"
    assert not _flows(d, what)
    # ... but under Cilium the tunnel's pod is not selected by any ipBlock.
    edit_plan(d, "azure-east-aks", lambda i: i["networkProfile"].update(networkPolicy="cilium",
                                                                         networkDataplane="cilium"))
    got = _flows(d, what)
    assert got and "under Cilium selects no pod or node" in got[0].problem


def test_eks_without_the_vpc_cni_policy_agent_enforces_nothing(tmp_path):
    d = plan_copy("aws", tmp_path, charts=False)
    plan = json.loads((d / "plan.json").read_text())
    eks = next(r for r in plan["resources"] if r["type"] == "aws:eks/cluster:Cluster")
    for r in list(plan["resources"]):
        if r["type"] == "aws:eks/addon:Addon" and r["inputs"].get("addonName") == "vpc-cni":
            plan["resources"].remove(r)
    (d / "plan.json").write_text(json.dumps(plan))
    got = [f for f in findings_for(d, "flows") if "nothing enforces them" in f.problem]
    assert got and got[0].object == f"Cluster/aws/{eks['name']}"
    plan["resources"].append({
        "urn": eks["urn"].replace("aws:eks/cluster:Cluster::", "aws:eks/addon:Addon::") + "-vpc-cni",
        "type": "aws:eks/addon:Addon", "name": "test-vpc-cni", "parent": eks["parent"], "provider": "",
        "inputs": {"addonName": "vpc-cni", "configurationValues": json.dumps({"enableNetworkPolicy": "true"})}})
    (d / "plan.json").write_text(json.dumps(plan))
    assert not [f for f in findings_for(d, "flows") if "nothing enforces them" in f.problem]


@needs_charts
def test_gke_private_control_plane_needs_a_firewall_rule_for_webhook_ports(tmp_path):
    d = plan_copy("gcp", tmp_path)
    plan = json.loads((d / "plan.json").read_text())
    gke = next(r for r in plan["resources"] if r["type"] == "gcp:container/cluster:Cluster")
    master = gke["inputs"]["privateClusterConfig"]["masterIpv4CidrBlock"]
    plan["resources"] = [r for r in plan["resources"] if r["type"] != "gcp:compute/firewall:Firewall"]
    (d / "plan.json").write_text(json.dumps(plan))
    got = [f for f in findings_for(d, "flows") if "GKE private control plane cannot reach keda/" in f.problem]
    assert any(f.object == "APIService/-/v1beta1.external.metrics.k8s.io" and "6443" in f.problem for f in got)
    plan["resources"].append({
        "urn": gke["urn"].replace("gcp:container/cluster:Cluster::", "gcp:compute/firewall:Firewall::") + "-fw",
        "type": "gcp:compute/firewall:Firewall", "name": "test-master-webhooks", "parent": gke["parent"],
        "provider": "", "inputs": {"direction": "INGRESS", "sourceRanges": [master],
                                   "allows": [{"protocol": "tcp", "ports": ["6443", "9443", "15017"]}]}})
    (d / "plan.json").write_text(json.dumps(plan))
    assert not [f for f in findings_for(d, "flows") if "GKE private control plane cannot reach" in f.problem]


@needs_charts
def test_pod_monitor_that_selects_no_exporter_pod(tmp_path):
    # dcgm-exporter chart 4.6.0 labels its pods app.kubernetes.io/name: dcgm-exporter.
    d = plan_copy("aws", tmp_path)
    name = "PodMonitor/monitoring/dcgm-exporter"
    edit(d, "aws-east-k8s", "PodMonitor", "monitoring", "dcgm-exporter",
         lambda doc: doc["spec"].update(selector={"matchLabels": {"app.kubernetes.io/name": "dcgm-exporter"}}))
    assert not findings_for(d, "flows", name)
    edit(d, "aws-east-k8s", "PodMonitor", "monitoring", "dcgm-exporter",
         lambda doc: doc["spec"].update(selector={"matchLabels": {"app": "nvidia-dcgm-exporter"}}))
    got = findings_for(d, "flows", name)
    assert got and "scrapes nothing" in got[0].problem
