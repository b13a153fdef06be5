"""Flow test over the rendered NetworkPolicies and pod labels the plan writes: every flow the
system needs is allowed, and the ones it must never have are denied."""

from __future__ import annotations

import pytest

from fleet import layout
from netpol_flow import Cluster, External, Pod, workload_pods

from conftest import plan_of

DNS = Pod("kube-system", {"k8s-app": "kube-dns"}, "coredns", "10.0.0.10")
PROMETHEUS = Pod(layout.NS_MONITORING, {layout.APP: layout.APP_PROMETHEUS}, "prometheus")
GATEWAY = Pod(layout.NS_GATEWAY, {layout.GATEWAY_NAME_LABEL: layout.GATEWAY_NAME}, "gateway")
ISTIOD = Pod(layout.NS_ISTIO, {"app": "istiod"}, "istiod")
STORE = Pod(layout.NS_ROUTER, {layout.APP: layout.APP_REDIS, layout.COMPONENT: layout.COMPONENT_ROUTER_STORE}, "store")
INTERNET = External()


@pytest.fixture(scope="module")
def dev():
    plan = plan_of("dev")
    objects = plan.objects()
    cluster = Cluster.from_objects(objects)
    pods = workload_pods(objects)
    by = lambda component: [p for p in pods if p.labels.get(layout.COMPONENT) == component]  # noqa: E731
    servers, pickers, routers = by(layout.COMPONENT_MODEL_SERVER), by(layout.COMPONENT_EPP), by(layout.COMPONENT_ROUTER)
    assert len(servers) >= 2 and pickers and routers, "the dev stack renders model servers, pickers and the router"
    return cluster, servers, pickers, routers[0], plan


def test_every_owned_namespace_has_default_deny_and_dns(dev):
    cluster, *_, plan = dev
    owned = {o["metadata"]["name"] for o in plan.objects("Namespace")}
    deny = {p["metadata"]["namespace"] for p in cluster.policies if p["metadata"]["name"] == "default-deny-all"}
    assert owned and deny == owned
    for ns in owned:
        pod = Pod(ns, {"some": "pod"})
        assert cluster.allows(pod, DNS, 53, "UDP")
        assert not cluster.allows(pod, Pod("default", {"x": "y"}), 8080)


def test_required_flows_are_allowed(dev):
    cluster, servers, pickers, router, _ = dev
    for s in servers:
        assert cluster.allows(GATEWAY, s, layout.VLLM_PORT), f"gateway -> {s.name}"
        assert cluster.allows(pickers[0], s, layout.VLLM_PORT), f"endpoint picker -> {s.name} metrics"
        assert cluster.allows(PROMETHEUS, s, layout.VLLM_PORT), f"prometheus -> {s.name}"
        assert cluster.allows(s, INTERNET, 443), f"{s.name} -> model downloads"
        assert cluster.allows(s, DNS, 53, "UDP")
        assert cluster.allows(router, s, layout.VLLM_PORT), f"router -> simulated {s.name} (dev)"
    for p in pickers:
        assert cluster.allows(GATEWAY, p, layout.EPP_EXTPROC_PORT)
        assert cluster.allows(PROMETHEUS, p, layout.EPP_METRICS_PORT)
    assert cluster.allows(router, GATEWAY, 443)
    assert cluster.allows(INTERNET, GATEWAY, 443)
    assert cluster.allows(GATEWAY, router, layout.ROUTER_PORT)
    assert cluster.allows(PROMETHEUS, router, layout.ROUTER_ADMIN_PORT)
    assert cluster.allows(router, DNS, 53, "UDP")
    assert cluster.allows(router, STORE, layout.ROUTER_STORE_PORT), "router -> its shared limit store"
    assert cluster.allows(GATEWAY, ISTIOD, 15012)


def test_forbidden_flows_are_denied(dev):
    cluster, servers, pickers, router, _ = dev
    a, b = servers[0], next(s for s in servers if s.labels[layout.POOL_LABEL] != servers[0].labels[layout.POOL_LABEL])
    assert not cluster.allows(a, b, layout.VLLM_PORT), "model server -> model server on another pool"
    assert not cluster.allows(a, INTERNET, 80), "model servers reach the internet on 443 only"
    assert not cluster.allows(a, Pod("default", {}, ip="10.9.9.9"), 443), "443 egress excludes private ranges"
    assert not cluster.allows(a, pickers[0], layout.EPP_EXTPROC_PORT)
    for pod in (pickers[0], router, GATEWAY):
        assert not cluster.allows(pod, INTERNET, 443), f"{pod.name} -> internet"
    for pod in (a, pickers[0], GATEWAY, Pod(layout.NS_INFERENCE, {"app": "debug"})):
        assert not cluster.allows(pod, router, layout.ROUTER_ADMIN_PORT), f"{pod.name} -> router admin"
    assert not cluster.allows(INTERNET, a, layout.VLLM_PORT), "model servers are not reachable from outside"
    assert not cluster.allows(INTERNET, router, layout.ROUTER_ADMIN_PORT)
    # The limit store holds every key's spend: only the router's pods reach it, and it reaches nothing.
    for pod in (a, pickers[0], GATEWAY, Pod(layout.NS_ROUTER, {"app": "debug"})):
        assert not cluster.allows(pod, STORE, layout.ROUTER_STORE_PORT), f"{pod.name} -> router store"
    assert not cluster.allows(STORE, INTERNET, 443) and not cluster.allows(STORE, router, layout.ROUTER_PORT)
    # One cluster: the router has no remote gateway to call, so no internet egress at all.
    assert not cluster.allows(router, INTERNET, 443)


def test_a_multicloud_router_reaches_the_other_clusters_gateways_on_443_only():
    # The remote gateways are public load balancers (components/gateway.py): internet 443, and
    # nothing in the private ranges (cloud metadata at 169.254.169.254 hands out credentials).
    plan = plan_of("multicloud")
    host = plan.spec.router_cluster().name
    objects = [m for key, m in sorted(plan.manifests.items()) if key.startswith(f"{host}-k8s/")]
    cluster = Cluster.from_objects(objects)
    (router,) = [p for p in workload_pods(objects) if p.labels.get(layout.COMPONENT) == layout.COMPONENT_ROUTER]
    assert cluster.allows(router, INTERNET, 443), "router -> another cluster's gateway"
    assert not cluster.allows(router, INTERNET, 80)
    assert not cluster.allows(router, External("169.254.169.254", "metadata"), 443), "cloud metadata"
    assert not cluster.allows(router, Pod("default", {}, ip="10.9.9.9"), 443), "443 egress excludes private ranges"


def test_evaluator_reads_policies_as_kubernetes_does():
    deny = {"metadata": {"name": "d", "namespace": "a"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    allow = {"metadata": {"name": "x", "namespace": "a"},
             "spec": {"podSelector": {"matchLabels": {"app": "s"}}, "policyTypes": ["Ingress"],
                      "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "c"}}}], "ports": [{"port": 80}]}]}}
    server, client, other = Pod("a", {"app": "s"}), Pod("a", {"app": "c"}), Pod("b", {"app": "c"})
    assert Cluster([]).allows(client, server, 80)
    assert not Cluster([deny]).allows(client, server, 80)
    c = Cluster([deny, allow])
    assert c.allows(client, server, 80) and not c.allows(client, server, 81)
    assert not c.allows(other, server, 80), "podSelector alone means the policy's own namespace"


# Controller pods as their pinned charts label them (the platform's Helm releases are not rendered in
# the plan): keda 2.18.0 templates/manager|metrics-server/deployment.yaml (app=keda-operator,
# app=keda-operator-metrics-apiserver; operator metrics 8080, gRPC metrics service 9666);
# cert-manager v1.19.1 (app.kubernetes.io/name=cert-manager, metrics 9402); istiod 1.28.5
# (app=istiod, monitoring 15014); dcgm-exporter 4.6.0 (app.kubernetes.io/name=dcgm-exporter, 9400).
KEDA_OPERATOR = Pod(layout.NS_KEDA, {"app": "keda-operator", "app.kubernetes.io/name": "keda-operator"}, "keda-operator")
KEDA_METRICS = Pod(layout.NS_KEDA, {"app": "keda-operator-metrics-apiserver",
                                    "app.kubernetes.io/name": "keda-operator-metrics-apiserver"}, "keda-metrics-apiserver")
SCRAPED = [
    (KEDA_OPERATOR, 8080),
    (Pod(layout.NS_CERT_MANAGER, {"app.kubernetes.io/name": "cert-manager", "app": "cert-manager"}, "cert-manager"), 9402),
    (ISTIOD, 15014),
    (Pod(layout.NS_GPU_OPERATORS, {"app.kubernetes.io/name": "dcgm-exporter"}, "dcgm-exporter"), 9400),
]


@pytest.mark.parametrize("stack", ["dev", "azure"])
def test_controller_flows_hold_where_ipblocks_never_match_pods(stack):
    # Cilium (AKS's network policy engine here, GKE Dataplane V2): CIDR rules "do not apply to traffic
    # where both sides of the connection are either managed by Cilium or use an IP belonging to a node"
    # (docs.cilium.io v1.16, "IP/CIDR based"; the verifier's cilium=True), so a pod-to-pod flow that is
    # allowed only through `ipBlock: 0.0.0.0/0` is dropped there.
    objects = plan_of(stack).objects()
    cluster = Cluster.from_objects(objects, cilium=True)
    assert cluster.allows(KEDA_METRICS, KEDA_OPERATOR, 9666), "KEDA metrics API server -> operator gRPC"
    for pod, port in SCRAPED:
        assert cluster.allows(PROMETHEUS, pod, port), f"prometheus -> {pod.name}:{port}"
    # Still closed: nothing else reaches the operator's gRPC service.
    assert not cluster.allows(Pod(layout.NS_KEDA, {"app": "other"}), KEDA_OPERATOR, 9666)
    assert not cluster.allows(Pod(layout.NS_INFERENCE, {"app": "debug"}), KEDA_OPERATOR, 9666)


def _cnp(ns, selector, **sections):
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "c", "namespace": ns},
            "spec": {"endpointSelector": selector, **sections}}


def test_evaluator_reads_cilium_policies_as_cilium_does():
    # Cilium 1.18 (what AKS runs on Kubernetes 1.35), docs.cilium.io/en/v1.18/security/policy/language:
    # NetworkPolicies and CiliumNetworkPolicies are one allow-list; a rule's section puts the endpoints
    # it selects into default deny; entities name peers no selector can; fromEndpoints stays in the
    # policy's namespace unless it names io.kubernetes.pod.namespace (.../policy/kubernetes, "Namespaces").
    apiserver = External("20.0.0.10", "API server", entities=frozenset({"kube-apiserver"}))
    node = External("10.224.0.4", "node", in_cluster=True)
    deny = {"metadata": {"name": "d", "namespace": "a"},
            "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    pod, peer, other_ns = Pod("a", {"app": "s"}), Pod("a", {"app": "c"}), Pod("b", {"app": "c"})
    to_api = _cnp("a", {}, egress=[{"toEntities": ["kube-apiserver"],
                                    "toPorts": [{"ports": [{"port": "443", "protocol": "TCP"}]}]}])
    c = Cluster([deny], cilium=True, cilium_policies=[to_api])
    assert c.allows(pod, apiserver, 443) and not c.allows(pod, apiserver, 6443)
    assert not c.allows(pod, INTERNET, 443), "kube-apiserver is not the world"
    assert not Cluster([deny], cilium=False, cilium_policies=[to_api]).allows(pod, apiserver, 443), \
        "without Cilium nothing reads a CiliumNetworkPolicy"
    from_nodes = _cnp("a", {"matchLabels": {"k8s:app": "s"}},
                      ingress=[{"fromEntities": ["remote-node"], "toPorts": [{"ports": [{"port": "9443"}]}]}])
    c = Cluster([deny], cilium=True, cilium_policies=[from_nodes])
    assert c.allows(node, pod, 9443) and not c.allows(node, peer, 9443), "endpointSelector with the k8s: source"
    assert not c.allows(peer, pod, 9443), "a pod is not remote-node"
    same_ns = _cnp("a", {}, ingress=[{"fromEndpoints": [{"matchLabels": {"app": "c"}}]}])
    c = Cluster([deny], cilium=True, cilium_policies=[same_ns])
    assert c.allows(peer, pod, 80) is False, "the sender's egress is still denied"
    c = Cluster([], cilium=True, cilium_policies=[same_ns])
    assert c.allows(peer, pod, 80) and not c.allows(other_ns, pod, 80)
    any_ns = _cnp("a", {}, ingress=[{"fromEndpoints": [{"matchLabels": {"k8s:io.kubernetes.pod.namespace": "b"}}]}])
    assert Cluster([], cilium=True, cilium_policies=[any_ns]).allows(other_ns, pod, 80)
    # A section, even with nothing in it, means default deny for that direction only ...
    only_egress = _cnp("a", {}, egress=[])
    c = Cluster([], cilium=True, cilium_policies=[only_egress])
    assert not c.allows(pod, INTERNET, 443) and c.allows(INTERNET, pod, 80)
    # ... unless enableDefaultDeny says otherwise; deny rules win over every allow.
    no_default = _cnp("a", {}, egress=[], enableDefaultDeny={"egress": False})
    assert Cluster([], cilium=True, cilium_policies=[no_default]).allows(pod, INTERNET, 443)
    denied = _cnp("a", {}, egressDeny=[{"toEntities": ["world"]}])
    assert not Cluster([], cilium=True, cilium_policies=[to_api, denied]).allows(pod, INTERNET, 443)
    # A NetworkPolicy's ipBlock still selects no node under Cilium; the entity does.
    by_ip = {"metadata": {"name": "i", "namespace": "a"},
             "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                      "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}]}}
    assert not Cluster([by_ip], cilium=True).allows(node, pod, 9443)
    assert Cluster([by_ip], cilium=True, cilium_policies=[from_nodes]).allows(node, pod, 9443)


@pytest.mark.parametrize("stack", ["aws", "gcp", "dev"])
def test_no_cilium_network_policy_where_no_cilium_serves_it(stack):
    # GKE Dataplane V2 serves no namespaced CiliumNetworkPolicy; EKS and kind run no Cilium.
    assert not plan_of(stack).objects("CiliumNetworkPolicy")
