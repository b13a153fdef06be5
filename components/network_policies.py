"""NetworkPolicies: default deny in every namespace the project owns, then only the needed flows.

Seed 003's security layer, generalised: ``default-deny-all`` (ingress and egress) and
``allow-dns`` in every owned namespace, then one named policy per flow the system needs —
``allow-gateway-to-vllm``, ``allow-vllm-egress`` (HTTPS to the internet for model downloads,
never to cluster-private ranges), the endpoint picker's paths, Prometheus scraping, the
controllers' API-server and webhook traffic. The flow table below is the whole truth; the flow
test (tests/test_network_policies.py) and ``fleet verify`` evaluate the rendered objects, not this
module.

On AKS (Azure CNI powered by Cilium, components/aks.py) a NetworkPolicy cannot name the two peers
the controllers need — the API server and the konnectivity tunnel's nodes — since Cilium's
``ipBlock`` selects no pod or node IP (learn.microsoft.com/azure/aks/azure-cni-powered-by-cilium,
"Limitations" and FAQ) and AKS's API server is not a pod. There the program adds
CiliumNetworkPolicies (cilium.io/v2, L3/L4 — supported by AKS beside NetworkPolicies, same FAQ) that
select them by Cilium entity; the other clouds keep plain NetworkPolicies only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import driver_credentials
from components.namespaces import Namespaces
from components.platform import vendor_charts
from fleet import layout
from fleet.clusterplan import ClusterPlan

PRIVATE_RANGES = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"]
INTERNET = [{"ipBlock": {"cidr": "0.0.0.0/0", "except": PRIVATE_RANGES}}]
ANYWHERE = [{"ipBlock": {"cidr": "0.0.0.0/0"}}]
"""API servers and webhook callers sit at addresses no selector names (control plane, nodes)."""


def ns_sel(ns: str, **pod_labels: str) -> dict[str, Any]:
    peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}}
    if pod_labels:
        peer["podSelector"] = {"matchLabels": pod_labels}
    return peer


def ports(*numbers: int, protocol: str = "TCP") -> list[dict[str, Any]]:
    return [{"port": n, "protocol": protocol} for n in numbers]


MODEL_SERVER = {layout.COMPONENT: layout.COMPONENT_MODEL_SERVER}
EPP = {layout.COMPONENT: layout.COMPONENT_EPP}
PROMETHEUS = ns_sel(layout.NS_MONITORING, **{layout.APP: layout.APP_PROMETHEUS})
PRIVATE = [{"ipBlock": {"cidr": c}} for c in PRIVATE_RANGES]
API_SERVER_PORTS = (443, 6443)
API_SERVER = {"to": PRIVATE, "ports": ports(*API_SERVER_PORTS)}
"""The control plane: the clusters use private endpoints (policy ``cluster-workload-identity``), so
API-server egress never opens the internet on 443."""

CILIUM_POLICY_CLOUDS = frozenset({"azure"})
"""Clouds whose clusters this program builds on a Cilium engine that serves CiliumNetworkPolicy: AKS
(components/aks.py, network_dataplane and network_policy "cilium"; Cilium >= 1.18.6 on Kubernetes
1.34/1.35 per the AKS page's version table). GKE Dataplane V2 is Cilium too but serves no namespaced
CiliumNetworkPolicy; ``fleet verify`` reports one declared where nothing serves it."""

# AKS's API server calls webhooks through konnectivity-agent pods in kube-system
# (learn.microsoft.com/azure/aks/tunnel-connectivity-issues), labelled app=konnectivity-agent
# (tigera/operator#5212, found on AKS 1.36). Under Cilium those calls arrive with the identity of
# the agent's node, remote-node (host when on the webhook's own node): Hubble shows AKS's webhook
# calls as remote-node (cilium/cilium#31711), and docs.cilium.io/en/v1.18/security/policy/language
# ("Entities based") warns that fromEntities kube-apiserver does not match them on AKS because the
# tunnel does not keep the source address.
AKS_TUNNEL = ns_sel("kube-system", app="konnectivity-agent")
CILIUM_TUNNEL_ENTITIES = ("remote-node", "host")
CILIUM_API_SERVER_ENTITY = "kube-apiserver"
"""docs.cilium.io/en/v1.18/security/policy/language, "Access to/from kube-apiserver": the entity
"represents both deployments of the kube-apiserver: within the cluster and outside of the cluster";
restricting egress with ``toEntities: kube-apiserver`` "is expected to work" on AKS."""


def cilium_ports(*numbers: int, protocol: str = "TCP") -> list[dict[str, Any]]:
    """A CiliumNetworkPolicy ``toPorts`` entry (cilium.io/v2 PortProtocol: ``port`` is a string)."""
    return [{"ports": [{"port": str(n), "protocol": protocol} for n in numbers]}]


CILIUM_API_SERVER = {"toEntities": [CILIUM_API_SERVER_ENTITY], "toPorts": cilium_ports(*API_SERVER_PORTS)}


@dataclass(frozen=True)
class Flow:
    """One NetworkPolicy: who it selects in ``namespace`` and what it lets in and out."""

    namespace: str
    name: str
    pods: dict[str, str]
    ingress: tuple[dict[str, Any], ...] = ()
    egress: tuple[dict[str, Any], ...] = ()
    kind: str = "NetworkPolicy"
    """``CiliumNetworkPolicy``: ``pods`` is its endpointSelector and the rules are Cilium's."""


def flows(plan: ClusterPlan, namespaces: list[str]) -> list[Flow]:
    """Every policy for one cluster: defaults in each owned namespace, then the system's flows."""
    cloud = plan.cloud
    charts = vendor_charts(cloud, plan.vendors)
    cilium = cloud in CILIUM_POLICY_CLOUDS
    out: list[Flow] = []
    for ns in namespaces:
        out.append(Flow(ns, "default-deny-all", {}))
        out.append(Flow(ns, "allow-dns", {}, egress=(
            {"to": [ns_sel("kube-system", **{"k8s-app": "kube-dns"})], "ports": ports(53, protocol="UDP") + ports(53)},)))
    owned = set(namespaces)
    hosts_router = plan.hosts_router

    def add(flow: Flow) -> None:
        if flow.namespace in owned:
            out.append(flow)

    inf, gw = layout.NS_INFERENCE, layout.NS_GATEWAY
    # --- inference: gateway -> model servers and endpoint pickers; picker -> model servers ----------
    vllm_clients = [ns_sel(gw), {"podSelector": {"matchLabels": EPP}}]
    if hosts_router:
        vllm_clients.append(ns_sel(layout.NS_ROUTER, **{layout.COMPONENT: layout.COMPONENT_ROUTER}))
    add(Flow(inf, "allow-gateway-to-vllm", MODEL_SERVER, ingress=(
        {"from": vllm_clients, "ports": ports(layout.VLLM_PORT)},
        {"from": [PROMETHEUS], "ports": ports(layout.VLLM_PORT)},
    )))
    add(Flow(inf, "allow-vllm-egress", MODEL_SERVER, egress=({"to": INTERNET, "ports": ports(443)},)))
    add(Flow(inf, "allow-gateway-to-epp", EPP, ingress=(
        {"from": [ns_sel(gw)], "ports": ports(layout.EPP_EXTPROC_PORT, layout.EPP_HEALTH_PORT)},
        {"from": [PROMETHEUS], "ports": ports(layout.EPP_METRICS_PORT)},
    )))
    add(Flow(inf, "allow-epp-to-vllm-and-api", EPP, egress=(
        {"to": [{"podSelector": {"matchLabels": MODEL_SERVER}}], "ports": ports(layout.VLLM_PORT)},
        API_SERVER,
    )))
    if cilium:
        add(Flow(inf, "allow-epp-to-api-server", EPP, egress=(CILIUM_API_SERVER,), kind="CiliumNetworkPolicy"))
    # --- gateway: clients in, out to pools, pickers, the router and istiod --------------------------
    gw_pods = {layout.GATEWAY_NAME_LABEL: layout.GATEWAY_NAME}
    add(Flow(gw, "allow-clients-to-gateway", gw_pods, ingress=(
        {"ports": ports(layout.GATEWAY_HTTP_PORT, layout.GATEWAY_HTTPS_PORT, 8080, 8443)},
        {"from": [PROMETHEUS], "ports": ports(15020, 15090)},
    )))
    gw_egress = [
        {"to": [ns_sel(inf, **MODEL_SERVER)], "ports": ports(layout.VLLM_PORT)},
        {"to": [ns_sel(inf, **EPP)], "ports": ports(layout.EPP_EXTPROC_PORT, layout.EPP_HEALTH_PORT)},
        {"to": [ns_sel(layout.NS_ISTIO, app="istiod")], "ports": ports(15012, 15017)},
    ]
    if hosts_router:
        gw_egress.append({"to": [ns_sel(layout.NS_ROUTER, **{layout.COMPONENT: layout.COMPONENT_ROUTER})],
                          "ports": ports(layout.ROUTER_PORT)})
    add(Flow(gw, "allow-gateway-to-backends", gw_pods, egress=tuple(gw_egress)))
    # --- router, on the cluster that hosts it: clients come through this cluster's gateway, Prometheus
    # scrapes its admin port; it calls this cluster's gateway (or, in dev, the simulated servers
    # directly), its limit store, and in a multicloud fleet the other clusters' gateways, which are
    # public load balancers (internet 443; the private ranges, cloud metadata included, stay shut).
    if hosts_router:
        router_pods = {layout.APP: layout.APP_ROUTER, layout.COMPONENT: layout.COMPONENT_ROUTER}
        store_pods = {layout.APP: layout.APP_REDIS, layout.COMPONENT: layout.COMPONENT_ROUTER_STORE}
        router_egress = [
            {"to": [ns_sel(gw)], "ports": ports(layout.GATEWAY_HTTP_PORT, layout.GATEWAY_HTTPS_PORT)},
            {"to": [ns_sel(inf, **MODEL_SERVER)], "ports": ports(layout.VLLM_PORT)},
            {"to": [{"podSelector": {"matchLabels": store_pods}}], "ports": ports(layout.ROUTER_STORE_PORT)},
        ]
        if plan.fleet_size > 1:
            router_egress.append({"to": INTERNET, "ports": ports(layout.GATEWAY_HTTPS_PORT)})
        add(Flow(layout.NS_ROUTER, "allow-router", router_pods, ingress=(
            {"from": [ns_sel(gw)], "ports": ports(layout.ROUTER_PORT)},
            {"from": [PROMETHEUS], "ports": ports(layout.ROUTER_ADMIN_PORT)},
        ), egress=tuple(router_egress)))
        add(Flow(layout.NS_ROUTER, "allow-router-to-store", store_pods, ingress=(
            {"from": [{"podSelector": {"matchLabels": router_pods}}], "ports": ports(layout.ROUTER_STORE_PORT)},)))
    # --- platform controllers: API server, webhooks, metrics --------------------------------------------
    # Ports the API server calls (webhooks, KEDA's external-metrics APIService): it is no pod, so an
    # ipBlock names it. Metrics ports are scraped by Prometheus, a pod: a podSelector names it, since
    # Cilium (AKS here, GKE Dataplane V2) never matches pods by ipBlock.
    controllers = {
        layout.NS_CERT_MANAGER: ((10250,), (9402,)),  # webhook; metrics
        layout.NS_ISTIO: ((15017,), (15014,)),  # istiod webhook; metrics (xDS below)
        layout.NS_KSERVE: ((9443,), (8080,)),
        layout.NS_KEDA: ((9443, 6443), (8080,)),  # admission webhook, metrics API server; metrics
        # DCGM / device metrics; the AMD operator's KMM admission webhook (gpu-operator-charts v1.4.0,
        # kmm subchart: Service amd-gpu-operator-kmm-webhook-service 443 -> containerPort 9443).
        layout.NS_GPU_OPERATORS: ((9443,) if "amd-gpu-operator" in charts else (), (9400, 8080)),
        layout.NS_MONITORING: ((10250,), (8080,)),  # operator webhook; metrics
    }
    api_callers = ANYWHERE + ([AKS_TUNNEL] if cloud == "azure" else [])
    for ns, (api_ports, metrics_ports) in controllers.items():
        ingress = ([{"from": api_callers, "ports": ports(*api_ports)}] if api_ports else []) + [
            {"from": [PROMETHEUS], "ports": ports(*metrics_ports)}]
        add(Flow(ns, "allow-controllers", {}, ingress=tuple(ingress), egress=(API_SERVER,)))
        if cilium:
            tunnel = ({"fromEntities": list(CILIUM_TUNNEL_ENTITIES), "toPorts": cilium_ports(*api_ports)},)
            add(Flow(ns, "allow-controllers-api-server", {}, ingress=tunnel if api_ports else (),
                     egress=(CILIUM_API_SERVER,), kind="CiliumNetworkPolicy"))
    # keda 2.18.0 chart: the metrics API server reaches the operator's gRPC metrics service on 9666
    # (templates/metrics-server/deployment.yaml --metrics-service-address=<operator>:9666; pods
    # labelled app=keda-operator / app=keda-operator-metrics-apiserver).
    keda_operator, keda_metrics = {"app": "keda-operator"}, {"app": "keda-operator-metrics-apiserver"}
    add(Flow(layout.NS_KEDA, "allow-metrics-apiserver-to-operator", keda_operator,
             ingress=({"from": [{"podSelector": {"matchLabels": keda_metrics}}], "ports": ports(9666)},)))
    add(Flow(layout.NS_KEDA, "allow-metrics-apiserver-egress", keda_metrics,
             egress=({"to": [{"podSelector": {"matchLabels": keda_operator}}], "ports": ports(9666)},)))
    # The AMD driver push credential's refresher on AKS (components/driver_credentials.py): the API
    # server (the Secret) through allow-controllers above, and Entra ID (login.microsoftonline.com) and
    # ARM (management.azure.com), public endpoints, on 443. The CNI cannot name hosts (Cilium's toFQDNs
    # needs its DNS proxy, which AKS's managed Cilium runs only with Advanced Container Networking):
    # public HTTPS, never the private ranges (cloud metadata included).
    if cloud == "azure" and "amd-gpu-operator" in charts:
        add(Flow(layout.NS_GPU_OPERATORS, "allow-driver-credentials-egress", dict(driver_credentials.POD_LABELS),
                 egress=({"to": INTERNET, "ports": ports(443)},)))
    add(Flow(layout.NS_CERT_MANAGER, "allow-acme-egress", {"app.kubernetes.io/name": "cert-manager"},
             egress=({"to": INTERNET, "ports": ports(443)},)))
    add(Flow(layout.NS_ISTIO, "allow-xds-from-gateways", {"app": "istiod"},
             ingress=({"from": [ns_sel(gw)], "ports": ports(15012)},)))
    add(Flow(layout.NS_KEDA, "allow-keda-to-prometheus", {},
             egress=({"to": [PROMETHEUS], "ports": ports(9090)},)))
    add(Flow(layout.NS_MONITORING, "allow-keda-to-prometheus", {layout.APP: layout.APP_PROMETHEUS},
             ingress=({"from": [ns_sel(layout.NS_KEDA)], "ports": ports(9090)},)))
    add(Flow(layout.NS_MONITORING, "allow-monitoring-internal", {},
             ingress=({"from": [{"podSelector": {}}]},), egress=({"to": [{"podSelector": {}}]},)))
    # Prometheus scrapes every metrics port in the cluster (targets are chosen by its monitors).
    add(Flow(layout.NS_MONITORING, "allow-prometheus-scrape", {layout.APP: layout.APP_PROMETHEUS},
             egress=({"to": [{"namespaceSelector": {}}]}, {"to": PRIVATE, "ports": ports(10250, 443, 6443)})))
    return out


def policy_object(flow: Flow) -> dict[str, Any]:
    """The object's ``spec``: a NetworkPolicy's, or a CiliumNetworkPolicy's (cilium.io/v2 Rule)."""
    if flow.kind == "CiliumNetworkPolicy":
        rule: dict[str, Any] = {"endpointSelector": {"matchLabels": dict(flow.pods)} if flow.pods else {}}
        if flow.ingress:
            rule["ingress"] = [dict(r) for r in flow.ingress]
        if flow.egress:
            rule["egress"] = [dict(r) for r in flow.egress]
        return rule
    types = ["Ingress", "Egress"] if flow.name == "default-deny-all" else (
        (["Ingress"] if flow.ingress else []) + (["Egress"] if flow.egress else []))
    spec: dict[str, Any] = {"podSelector": {"matchLabels": flow.pods} if flow.pods else {}, "policyTypes": types}
    if flow.ingress:
        spec["ingress"] = [dict(r) for r in flow.ingress]
    if flow.egress:
        spec["egress"] = [dict(r) for r in flow.egress]
    return spec


@dataclass
class NetworkPoliciesArgs:
    plan: ClusterPlan
    namespaces: Namespaces


class NetworkPolicies(pulumi.ComponentResource):
    """The cluster's NetworkPolicies, from :func:`flows`."""

    def __init__(self, name: str, args: NetworkPoliciesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:network:NetworkPolicies", name, None, opts)
        self.policies: list[k8s.networking.v1.NetworkPolicy] = []
        self.cilium_policies: list[k8s.apiextensions.CustomResource] = []
        for flow in flows(args.plan, args.namespaces.names):
            metadata = k8s.meta.v1.ObjectMetaArgs(name=flow.name, namespace=flow.namespace,
                                                  labels={**layout.COMMON_LABELS, layout.COMPONENT: "network-policy"})
            child = pulumi.ResourceOptions(parent=self, depends_on=[args.namespaces.resources[flow.namespace]])
            if flow.kind == "CiliumNetworkPolicy":
                # The cilium.io CRDs come with the cluster: AKS's managed Cilium installs them.
                self.cilium_policies.append(k8s.apiextensions.CustomResource(
                    f"{name}-{flow.namespace}-{flow.name}", api_version="cilium.io/v2", kind=flow.kind,
                    metadata=metadata, spec=policy_object(flow), opts=child))
                continue
            self.policies.append(k8s.networking.v1.NetworkPolicy(
                f"{name}-{flow.namespace}-{flow.name}", metadata=metadata, spec=policy_object(flow), opts=child))
        self.register_outputs({"count": len(self.policies) + len(self.cilium_policies)})
