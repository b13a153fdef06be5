"""fleet verify, flows: the connections the system needs, through the NetworkPolicies under the
cluster's CNI (Cilium: ipBlock selects no pod or node; EKS: enforced only with the VPC CNI's
network policy on) and the GKE private control plane's firewall (443 and 10250 only by default)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import SHIPPED_STACKS
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


def _without_keda_tunnel_allows(d: Path, cluster: str) -> None:
    """Leave keda's webhooks open to the API server only by the ipBlock of allow-controllers."""
    (d / "manifests" / cluster / "CiliumNetworkPolicy_keda_allow-controllers-api-server.yaml").unlink()

    def drop(doc):
        for rule in doc["spec"]["ingress"]:
            rule["from"] = [p for p in rule.get("from") or [] if "ipBlock" in p] or rule.get("from")
    edit(d, cluster, "NetworkPolicy", "keda", "allow-controllers", drop)


@needs_charts
def test_ipblock_rules_select_no_pod_under_cilium(tmp_path):
    d = plan_copy("azure", tmp_path)
    cl = "azure-east-k8s"
    # Webhooks admitted from the API server only by ipBlock: fine on a standard CNI ...
    _without_keda_tunnel_allows(d, cl)
    edit_plan(d, "azure-east-aks", lambda i: i["networkProfile"].update(networkPolicy="calico",
                                                                         networkDataplane="azure"))
    what = "API server to ValidatingWebhookConfiguration keda-admission"
    assert not _flows(d, what)
    # ... but under Cilium the tunnel's pod is not selected by any ipBlock.
    edit_plan(d, "azure-east-aks", lambda i: i["networkProfile"].update(networkPolicy="cilium",
                                                                         networkDataplane="cilium"))
    got = _flows(d, what)
    assert got and "under Cilium selects no pod or node" in got[0].problem


# AKS with Azure CNI powered by Cilium (Cilium >= 1.18.6 on Kubernetes 1.35: learn.microsoft.com/azure/
# aks/azure-cni-powered-by-cilium): a NetworkPolicy's ipBlock selects no pod or node there, and the
# public API server is neither. Pods reach the API server when a CiliumNetworkPolicy allows the
# kube-apiserver entity (docs.cilium.io/en/v1.18/security/policy/language, "Access to/from
# kube-apiserver"); the API server's webhook calls come through konnectivity-agent pods, seen by
# Cilium as the agent's node (remote-node, cilium/cilium#31711), which fromEntities: kube-apiserver does
# not match on AKS (same page, the note under "Entities based").
@needs_charts
def test_aks_controllers_reach_the_public_api_server_by_its_cilium_entity(tmp_path):
    d = plan_copy("azure", tmp_path)
    cl, what = "azure-east-k8s", "API client to the API server"
    assert not _flows(d, what)
    # The kube-apiserver entity is what admits them: the internet's ("world") does not.
    edit(d, cl, "CiliumNetworkPolicy", "keda", "allow-controllers-api-server",
         lambda doc: doc["spec"]["egress"][0].update(toEntities=["world"]))
    got = _flows(d, what)
    assert {f.problem.split(": ")[1].split(" -> ")[0] for f in got} == {
        "keda/keda-operator", "keda/keda-admission-webhooks", "keda/keda-operator-metrics-apiserver"}
    assert all("AKS API server (public):443/TCP is denied by the egress policies" in f.problem for f in got)
    # Without the CiliumNetworkPolicies, the RFC 1918 ipBlock of allow-controllers admits nothing.
    for p in (d / "manifests" / cl).glob("CiliumNetworkPolicy_*.yaml"):
        p.unlink()
    got = _flows(d, what)
    for who in ("istio-system/istiod", "keda/keda-operator", "kserve/llmisvc-controller-manager",
                "monitoring/kube-prometheus-stack-operator", "cert-manager/cert-manager-webhook"):
        assert any(f"{who} -> AKS API server (public)" in f.problem for f in got), who
    assert any(f.object == "NetworkPolicy/fleet-inference/allow-epp-to-vllm-and-api" for f in got)


@needs_charts
def test_aks_api_server_reaches_every_webhook_through_the_tunnel(tmp_path):
    d = plan_copy("azure", tmp_path)
    cl, what = "azure-east-k8s", "API server to"
    assert not _flows(d, what)
    # The tunnel's pods: allowed by a plain NetworkPolicy peer (kube-system, app=konnectivity-agent).
    edit(d, cl, "NetworkPolicy", "istio-system", "allow-controllers",
         lambda doc: doc["spec"]["ingress"][0].update(**{"from": doc["spec"]["ingress"][0]["from"][:1]}))
    got = _flows(d, what)
    assert got and all("kube-system/konnectivity-agent -> istio-system/istiod:15017" in f.problem for f in got)
    # The tunnel's node (remote-node): only a CiliumNetworkPolicy names it. KMM's webhook (AMD
    # gpu-operator v1.4.0, containerPort 9443) is on the list too.
    edit(d, cl, "CiliumNetworkPolicy", "gpu-operators", "allow-controllers-api-server",
         lambda doc: doc["spec"].pop("ingress"))
    got = [f for f in _flows(d, what) if "gpu-operators" in f.problem]
    assert got and "konnectivity-agent's node (remote-node) -> gpu-operators/amd-gpu-operator-kmm-webhook-server" \
        ":9443/TCP is denied" in got[0].problem


def test_cilium_network_policy_where_nothing_serves_it_or_aks_cannot_enforce_it(tmp_path):
    policy = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
              "metadata": {"name": "test-api", "namespace": "keda"},
              "spec": {"endpointSelector": {}, "egress": [{"toEntities": ["kube-apiserver"]}]}}
    d = plan_copy("gcp", tmp_path, charts=False)
    add(d, "gcp-central-k8s", policy)
    got = findings_for(d, "flows", "CiliumNetworkPolicy/keda/test-api")
    assert got and "no CiliumNetworkPolicy CRD is served on this cluster" in got[0].problem
    d = plan_copy("azure", tmp_path / "az", charts=False)
    add(d, "azure-east-k8s", policy)
    assert not findings_for(d, "flows", "CiliumNetworkPolicy/keda/test-api")
    policy["spec"]["egress"] = [{"toEntities": ["apiserver"]}, {"toFQDNs": [{"matchName": "example.com"}]}]
    add(d, "azure-east-k8s", policy)
    got = [f.problem for f in findings_for(d, "flows", "CiliumNetworkPolicy/keda/test-api")]
    assert any(p.startswith("apiserver: not a Cilium entity") for p in got)
    assert any("need Advanced Container Networking Services" in p for p in got)


@needs_charts
@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_no_flow_is_cut_on_any_shipped_stack(stack, tmp_path):
    d = plan_copy(stack, tmp_path)
    assert [f"{f.object}: {f.problem}" for f in findings_for(d, "flows")] == []


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


def test_workload_identity_pods_need_entra_id_and_arm(tmp_path):
    # A pod the azure-workload-identity webhook serves (label azure.workload.identity/use: "true",
    # Azure/azure-workload-identity pkg/webhook/consts.go) exchanges its projected token at Entra ID
    # and calls ARM with the result: on AKS the AMD driver push refresher (its Job and its CronJob).
    d = plan_copy("azure", tmp_path, charts=False)
    what = "workload identity to"
    assert not _flows(d, what)
    (d / "manifests" / "azure-east-k8s" / "NetworkPolicy_gpu-operators_allow-driver-credentials-egress.yaml").unlink()
    got = _flows(d, what)
    assert {f.problem.split(": ")[1].split(" -> ")[0] for f in got} == {
        "gpu-operators/amdgpu-driver-credentials-first", "gpu-operators/amdgpu-driver-credentials"}
    assert {f.problem.split(" -> ")[1].split(":443")[0] for f in got} == {
        "Entra ID (login.microsoftonline.com)", "ARM (management.azure.com)"}
    assert all(f.object.startswith("NetworkPolicy/gpu-operators/") for f in got)
    assert all(":443/TCP is denied by the egress policies" in f.problem for f in got)
