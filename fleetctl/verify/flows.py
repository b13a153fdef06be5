"""Flows: the connections the system needs pass the NetworkPolicies, the CNI and the cloud firewall.

The flows, each between pods as rendered (ours, the charts', the controllers'):
client -> gateway; gateway -> model servers and Service backends; gateway -> picker (ext-proc);
gateway -> istiod (xDS); API clients (every pod whose ServiceAccount holds RBAC) -> API server;
API server -> every webhook and aggregated API Service; workload-identity pods -> Entra ID and ARM;
KEDA metrics server -> operator; KEDA -> Prometheus; Prometheus -> every port a PodMonitor/
ServiceMonitor scrapes; router -> each pool.

The cluster's CNI decides the semantics (netpol.py): Cilium (AKS ``networkPolicy: cilium``, GKE
``ADVANCED_DATAPATH`` = Dataplane V2, cloud.google.com/kubernetes-engine/docs/concepts/dataplane-v2)
never lets an ipBlock select pods or nodes. EKS enforces NetworkPolicies only when the VPC CNI
add-on runs with ``enableNetworkPolicy: "true"`` (docs.aws.amazon.com/eks/latest/userguide/
cni-network-policy-configure.html). GKE private clusters: the control plane reaches nodes and pods
only on TCP 443 and 10250 unless a firewall rule allows more (cloud.google.com/kubernetes-engine/
docs/how-to/private-clusters, "Adding firewall rules for specific use cases").
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

from fleetctl.verify.controllers import GATEWAY_NAME_LABEL, istio_gateway_templates
from fleetctl.verify.findings import Finding
from fleetctl.verify.netpol import CILIUM_ENTITIES, CILIUM_POLICY_KINDS, Cluster as Policies, External, Pod, cilium_rules
from fleetctl.verify.routing import gateway_for_host, router_config
from fleetctl.verify.topology import Cluster, Obj, PodTemplate, Topology, selects, workload_templates

INTERNET = External()
DNS = Pod("kube-system", {"k8s-app": "kube-dns"}, "kube-dns", "10.0.0.10")
GKE_DEFAULT_MASTER_PORTS = (443, 10250)

# AKS reaches webhooks and aggregated APIs from the API server through konnectivity-agent pods in
# kube-system (learn.microsoft.com/azure/aks/tunnel-connectivity-issues): inside the cluster. Their
# calls arrive with the agent pod's address under a standard CNI (tigera/operator#5212: AKS labels
# them app=konnectivity-agent), and under Cilium with a node's identity: Hubble shows the source of
# AKS's webhook calls as ``remote-node`` (cilium/cilium#31711, Cilium 1.15 on AKS), and Cilium's docs
# say ``fromEntities: kube-apiserver`` does not match them since the tunnel does not keep the source
# address (docs.cilium.io/en/v1.18/security/policy/language, "Entities based" note on AKS and GKE).
# Under Cilium the verifier wants both to pass.
AKS_TUNNEL = Pod("kube-system", {"app": "konnectivity-agent"}, "konnectivity-agent", "10.244.0.9")
AKS_TUNNEL_NODE = External("10.224.0.9", "konnectivity-agent's node (remote-node)", in_cluster=True)
APISERVER = frozenset({"kube-apiserver"})
WORKLOAD_IDENTITY_USE = "azure.workload.identity/use"
ENTRA_ID = External("20.190.160.1", "Entra ID (login.microsoftonline.com)")
ARM = External("4.150.240.10", "ARM (management.azure.com)")
# Prometheus pods are made by prometheus-operator from the Prometheus resource of
# kube-prometheus-stack, labelled app.kubernetes.io/name=prometheus (the label our policies use).
PROMETHEUS = Pod("monitoring", {"app.kubernetes.io/name": "prometheus", "prometheus": "prometheus"}, "prometheus")


@dataclass
class _Ctx:
    cluster: Cluster
    policies: Policies
    pods: list[tuple[PodTemplate, Pod]]
    apiserver: External | Pod
    from_apiserver: tuple[External | Pod, ...]
    """Where the API server's calls to webhooks come from (every one of them must pass)."""
    cni: str


def cni_of(cluster: Cluster) -> str:
    """'cilium', 'standard' or 'unenforced' (NetworkPolicies are accepted but nothing enforces them)."""
    if cluster.cloud == "azure":
        for r in cluster.cloud_resource("azure-native:containerservice:ManagedCluster"):
            np = r["inputs"].get("networkProfile") or {}
            if "cilium" in (np.get("networkPolicy"), np.get("networkDataplane")):
                return "cilium"
            return "standard" if np.get("networkPolicy") in ("azure", "calico") else "unenforced"
    if cluster.cloud == "gcp":
        for r in cluster.cloud_resource("gcp:container/cluster:Cluster"):
            if r["inputs"].get("datapathProvider") == "ADVANCED_DATAPATH":
                return "cilium"
            return "standard" if (r["inputs"].get("networkPolicy") or {}).get("enabled") else "unenforced"
    if cluster.cloud == "aws":
        for r in cluster.cloud_resource("aws:eks/addon:Addon"):
            if r["inputs"].get("addonName") == "vpc-cni":
                try:
                    conf = json.loads(r["inputs"].get("configurationValues") or "{}")
                except ValueError:
                    conf = {}
                if str(conf.get("enableNetworkPolicy", "")).lower() == "true":
                    return "standard"
        return "unenforced"
    return "standard"


def _apiserver(cluster: Cluster, cni: str) -> tuple[External | Pod, tuple[External | Pod, ...]]:
    """(where API clients connect, where the API server's calls to webhooks come from).

    The API server carries Cilium's ``kube-apiserver`` identity wherever it runs (docs.cilium.io/en/
    v1.18/security/policy/language, "Entities based": "both deployments of the kube-apiserver:
    within the cluster and outside of the cluster"); egress to it is matched by that entity.
    """
    if cluster.cloud == "gcp":
        for r in cluster.cloud_resource("gcp:container/cluster:Cluster"):
            cidr = (r["inputs"].get("privateClusterConfig") or {}).get("masterIpv4CidrBlock")
            if cidr:
                ip = str(ipaddress.ip_network(cidr)[2])
                return External(ip, "GKE control plane", entities=APISERVER), (External(ip, "GKE control plane"),)
        return External("34.0.0.1", "GKE control plane", entities=APISERVER), (External("34.0.0.1", "GKE control plane"),)
    if cluster.cloud == "azure":
        for r in cluster.cloud_resource("azure-native:containerservice:ManagedCluster"):
            prof = r["inputs"].get("apiServerAccessProfile") or {}
            if prof.get("enablePrivateCluster") or prof.get("enableVnetIntegration"):
                return (External("10.225.0.4", "AKS API server (private)", entities=APISERVER),
                        (External("10.225.0.4", "AKS API server"),))
        # A public AKS API server: clients dial its public address; its calls come through the tunnel.
        return (External("20.0.0.10", "AKS API server (public)", entities=APISERVER),
                (AKS_TUNNEL, AKS_TUNNEL_NODE) if cni == "cilium" else (AKS_TUNNEL,))
    if cluster.cloud == "aws":
        # endpointPrivateAccess: the API server's ENIs sit in the cluster's VPC subnets.
        return (External("10.0.0.20", "EKS API server ENI", entities=APISERVER),
                (External("10.0.0.20", "EKS API server ENI"),))
    return External("172.18.0.2", "API server node", in_cluster=True, entities=APISERVER | {"host", "remote-node"}), \
        (External("172.18.0.2", "API server node", in_cluster=True),)


def _pods(cluster: Cluster) -> list[tuple[PodTemplate, Pod]]:
    out = []
    for i, t in enumerate(workload_templates(cluster) + istio_gateway_templates(cluster)):
        out.append((t, Pod(t.namespace, dict(t.labels), t.owner.name, f"10.{(i // 250) % 250 + 1}.{i % 250 + 1}.7")))
    return out


def _ports_named(t: PodTemplate) -> dict[str, int]:
    return {str(p["name"]): int(p["containerPort"]) for c in t.spec.get("containers") or []
            for p in c.get("ports") or [] if p.get("name") and "containerPort" in p}


def _service_targets(ctx: _Ctx, ns: str, name: str, port: int | None) -> list[tuple[PodTemplate, Pod, int]]:
    """The pods behind Service ns/name and the container port ``port`` of the Service lands on."""
    svc = ctx.cluster.get("Service", ns, name)
    if svc is None:
        return []
    sel = svc.spec.get("selector") or {}
    if not sel:
        return []
    ports = svc.spec.get("ports") or []
    sp = next((p for p in ports if port is None or int(p.get("port", -1)) == int(port)), None)
    if sp is None:
        return []
    out = []
    for t, pod in ctx.pods:
        if t.namespace == ns and all(t.labels.get(k) == v for k, v in sel.items()):
            target = sp.get("targetPort", sp.get("port"))
            num = _ports_named(t).get(str(target)) if isinstance(target, str) and not str(target).isdigit() \
                else int(target)
            if num:
                out.append((t, pod, num))
    return out


def _blocking_policy(ctx: _Ctx, direction: str, selecting: list[Obj | Mapping]) -> Obj | None:
    objs = {(o.kind, o.namespace, o.name): o for o in ctx.cluster.of_kind("NetworkPolicy", *CILIUM_POLICY_KINDS)}
    key = "ingress" if direction == "Ingress" else "egress"

    def rank(p: Mapping) -> tuple:
        spec = p.get("spec") or {}
        return (p.get("kind") != "NetworkPolicy", not spec.get(key),
                not (spec.get("podSelector") or spec.get("endpointSelector")), p["metadata"]["name"])
    for p in sorted(selecting, key=rank):
        o = objs.get((p.get("kind", "NetworkPolicy"), p["metadata"]["namespace"], p["metadata"]["name"]))
        if o is not None:
            return o
    return None


def _ipblock_note(ctx: _Ctx, selecting: Iterable[Mapping], peer: Pod | External, port: int) -> str:
    if ctx.cni != "cilium" or not (isinstance(peer, Pod) or peer.in_cluster):
        return ""
    for p in selecting:
        if p.get("kind", "NetworkPolicy") != "NetworkPolicy":
            continue
        for rule in (p["spec"].get("ingress") or []) + (p["spec"].get("egress") or []):
            peers = rule.get("from") or rule.get("to") or []
            if any("ipBlock" in x for x in peers):
                return (f" ({p['metadata']['name']} allows it only by ipBlock, which under Cilium selects no pod "
                        "or node)")
    return ""


def _flow(ctx: _Ctx, what: str, src: Pod | External, dst: Pod | External, port: int, fix: str,
          fallback: Obj | None = None, protocol: str = "TCP") -> list[Finding]:
    if ctx.cni == "unenforced":
        return []
    denied = ctx.policies.denied_by(src, dst, port, protocol)
    if denied is None:
        return []
    direction, selecting = denied
    obj = _blocking_policy(ctx, direction, selecting) or fallback
    peer = dst if direction == "Egress" else src
    note = _ipblock_note(ctx, selecting, peer, port)
    side = src if direction == "Egress" else dst
    where = f"{side.namespace}/{side.name}" if isinstance(side, Pod) else side.name
    problem = (f"{what}: {_name(src)} -> {_name(dst)}:{port}/{protocol} is denied by the {direction.lower()} "
               f"policies of {where}{note}")
    if obj is None:
        return [Finding("flows", ctx.cluster.name, f"Namespace/-/{getattr(side, 'namespace', '-')}", "manifests",
                        problem, fix)]
    return [Finding("flows", ctx.cluster.name, obj.ref, obj.file, problem, fix)]


def _name(x: Pod | External) -> str:
    return f"{x.namespace}/{x.name}" if isinstance(x, Pod) else x.name


def _api_clients(ctx: _Ctx) -> list[tuple[PodTemplate, Pod]]:
    """Pods that talk to the API server: their ServiceAccount is bound to some (Cluster)Role."""
    bound: set[tuple[str, str]] = set()
    for b in ctx.cluster.of_kind("RoleBinding", "ClusterRoleBinding"):
        for s in b.doc.get("subjects") or []:
            if s.get("kind") == "ServiceAccount":
                bound.add((s.get("namespace") or b.namespace, s.get("name", "")))
    out = []
    for t, pod in ctx.pods:
        sa = t.spec.get("serviceAccountName") or t.spec.get("serviceAccount") or "default"
        if t.spec.get("automountServiceAccountToken") is False or t.owner.kind == "Gateway":
            continue
        if (t.namespace, sa) in bound:
            out.append((t, pod))
    return out


def _webhook_services(cluster: Cluster) -> list[tuple[Obj, str, str, int]]:
    """(object, namespace, service, port) of every webhook and aggregated API the API server calls."""
    out = []
    for o in cluster.of_kind("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        for w in o.doc.get("webhooks") or []:
            svc = (w.get("clientConfig") or {}).get("service")
            if svc:
                out.append((o, svc.get("namespace", "default"), svc.get("name", ""), int(svc.get("port", 443))))
    for o in cluster.of_kind("APIService"):
        svc = o.spec.get("service")
        if svc:
            out.append((o, svc.get("namespace", "default"), svc.get("name", ""), int(svc.get("port", 443))))
    return out


def _gke_firewall_allows(cluster: Cluster, port: int) -> bool:
    if port in GKE_DEFAULT_MASTER_PORTS:
        return True
    master = None
    for r in cluster.cloud_resource("gcp:container/cluster:Cluster"):
        master = (r["inputs"].get("privateClusterConfig") or {}).get("masterIpv4CidrBlock")
    if not master:
        return True  # not a private cluster: no such restriction
    net = ipaddress.ip_network(master)
    for r in cluster.cloud_resource("gcp:compute/firewall:Firewall"):
        i = r["inputs"]
        if i.get("direction", "INGRESS") != "INGRESS":
            continue
        if not any(net.subnet_of(ipaddress.ip_network(s)) for s in i.get("sourceRanges") or [] if "/" in s or "." in s):
            continue
        for a in i.get("allows") or []:
            if a.get("protocol") not in ("tcp", "all"):
                continue
            for p in a.get("ports") or ["0-65535"]:
                lo, _, hi = str(p).partition("-")
                if int(lo) <= port <= int(hi or lo):
                    return True
    return False


def _cilium_policy_findings(cluster: Cluster, cni: str) -> list[Finding]:
    """CiliumNetworkPolicies the cluster cannot take.

    AKS with Azure CNI powered by Cilium serves cilium.io/v2 CiliumNetworkPolicy, L3/L4 only unless
    Advanced Container Networking Services is on (FQDN filtering and L7 rules need it):
    learn.microsoft.com/azure/aks/azure-cni-powered-by-cilium, FAQ "Can I use CiliumNetworkPolicy
    custom resources ..." and the feature table. Elsewhere nothing serves the kind here (GKE
    Dataplane V2 offers only CiliumClusterwideNetworkPolicy, opt-in: cloud.google.com/
    kubernetes-engine/docs/how-to/configure-cilium-network-policy), so the apply fails.
    """
    cnps = cluster.of_kind(*CILIUM_POLICY_KINDS)
    if not cnps:
        return []
    out = []
    aks = next(iter(cluster.cloud_resource("azure-native:containerservice:ManagedCluster")), None)
    if cluster.cloud != "azure" or cni != "cilium" or aks is None:
        for o in cnps:
            out.append(Finding("flows", cluster.name, o.ref, o.file,
                               f"no CiliumNetworkPolicy CRD is served on this cluster (CNI: {cni}, cloud: "
                               f"{cluster.cloud}): the apply fails and the flows it allows stay closed",
                               "declare CiliumNetworkPolicies only on AKS clusters with Azure CNI powered by "
                               "Cilium; use NetworkPolicy elsewhere"))
        return out
    acns = ((((aks["inputs"].get("networkProfile") or {}).get("advancedNetworking") or {}).get("security") or {})
            .get("enabled"))
    for o in cnps:
        for r in cilium_rules(o.doc):
            for rule in (r.get("ingress") or []) + (r.get("egress") or []) + \
                    (r.get("ingressDeny") or []) + (r.get("egressDeny") or []):
                bad = sorted({str(e) for k in ("fromEntities", "toEntities") for e in rule.get(k) or []}
                             - CILIUM_ENTITIES)
                if bad:
                    out.append(Finding("flows", cluster.name, o.ref, o.file,
                                       f"{', '.join(bad)}: not a Cilium entity (cilium.io/v2 accepts "
                                       f"{', '.join(sorted(CILIUM_ENTITIES))}); the API server rejects the policy",
                                       "use one of Cilium's entities"))
                l7 = "toFQDNs" in rule or any(tp.get("rules") for tp in rule.get("toPorts") or [])
                if l7 and not acns:
                    out.append(Finding("flows", cluster.name, o.ref, o.file,
                                       "FQDN or L7 rules need Advanced Container Networking Services on AKS, "
                                       "which this cluster does not enable: the rule allows nothing",
                                       "use L3/L4 rules (entities, endpoints, CIDRs, ports) or enable ACNS "
                                       "security on the cluster"))
    return out


def _check_cluster(topo: Topology, cluster: Cluster) -> list[Finding]:
    cni = cni_of(cluster)
    policies = Policies.from_objects([o.doc for o in cluster.objects], cilium=cni == "cilium")
    api, from_api = _apiserver(cluster, cni)
    ctx = _Ctx(cluster, policies, _pods(cluster), api, from_api, cni)
    out: list[Finding] = _cilium_policy_findings(cluster, cni)
    if cni == "unenforced":
        if policies.policies:
            kinds = ("aws:eks/cluster:Cluster", "gcp:container/cluster:Cluster",
                     "azure-native:containerservice:ManagedCluster")
            where = next((r for r in cluster.cloud_resources if r["type"] in kinds), {"name": cluster.name})
            out.append(Finding("flows", cluster.name, f"Cluster/{cluster.cloud}/{where['name']}", "plan.json",
                               f"{len(policies.policies)} NetworkPolicies are declared but nothing enforces them "
                               "on this cluster: default-deny is not in effect",
                               "enable enforcement (EKS: the vpc-cni add-on with configurationValues "
                               '{"enableNetworkPolicy": "true"}; GKE: Dataplane V2)'))
        return out
    by_owner = {}
    for t, pod in ctx.pods:
        by_owner.setdefault(id(t.owner), []).append((t, pod))
    gateways = [(t, p) for t, p in ctx.pods if t.owner.kind == "Gateway"]

    # client -> gateway, gateway -> istiod
    istiod = [(t, p) for t, p in ctx.pods if t.labels.get("app") == "istiod"]
    for t, gw in gateways:
        for lst in t.owner.spec.get("listeners") or []:
            out += _flow(ctx, "client to gateway", INTERNET, gw, int(lst["port"]),
                         f"allow ingress from anywhere to the gateway pods on {lst['port']}")
        for _, ist in istiod[:1]:
            out += _flow(ctx, "gateway xDS", gw, ist, 15012, "allow the gateway pods to reach istiod on 15012")

    # gateway -> backends (InferencePool servers, Services), gateway -> picker
    for route in cluster.of_kind("HTTPRoute"):
        for rule in route.spec.get("rules") or []:
            for b in rule.get("backendRefs") or []:
                ns = b.get("namespace") or route.namespace
                if b.get("kind", "Service") == "InferencePool":
                    pool = cluster.get("InferencePool", ns, b.get("name", ""))
                    if pool is None:
                        continue
                    sel = (pool.spec.get("selector") or {}).get("matchLabels") or {}
                    servers = [(t, p) for t, p in ctx.pods if t.namespace == ns and sel
                               and all(t.labels.get(k) == v for k, v in sel.items())]
                    for port in [int(x.get("number", 0)) for x in pool.spec.get("targetPorts") or []]:
                        for _, s in servers[:1]:
                            for _, gw in gateways[:1]:
                                out += _flow(ctx, "gateway to model server", gw, s, port,
                                             f"allow the gateway pods to reach the model servers on {port}")
                    ref = pool.spec.get("endpointPickerRef") or {}
                    pport = int((ref.get("port") or {}).get("number", 9002))
                    for _, pk, num in _service_targets(ctx, ns, ref.get("name", ""), pport)[:1]:
                        for _, gw in gateways[:1]:
                            out += _flow(ctx, "gateway to endpoint picker (ext-proc)", gw, pk, num,
                                         f"allow the gateway pods to reach the picker on {num}")
                elif b.get("kind", "Service") == "Service":
                    for _, dst, num in _service_targets(ctx, ns, b.get("name", ""), b.get("port"))[:1]:
                        for _, gw in gateways[:1]:
                            out += _flow(ctx, "gateway to Service backend", gw, dst, num,
                                         f"allow the gateway pods to reach {ns}/{b.get('name')} on {num}")

    # API clients -> API server
    for t, pod in _api_clients(ctx):
        for port in (443,):
            out += _flow(ctx, "API client to the API server", pod, ctx.apiserver, port,
                         "allow egress to the API server by what selects it under this CNI (Cilium: "
                         "toEntities kube-apiserver / the API server's address outside the cluster)"
                         if cni == "cilium" else "allow egress to the API server's address on 443")

    # workload identity -> Entra ID and ARM: a pod the azure-workload-identity webhook serves (label
    # azure.workload.identity/use, Azure/azure-workload-identity pkg/webhook/consts.go) trades its
    # projected token at Entra ID and calls ARM with what it gets: both public HTTPS endpoints.
    for t, pod in ctx.pods:
        if t.labels.get(WORKLOAD_IDENTITY_USE) == "true":
            for dst in (ENTRA_ID, ARM):
                out += _flow(ctx, f"workload identity to {dst.name}", pod, dst, 443,
                             f"allow {t.namespace}/{t.owner.name} egress to public addresses on 443")

    # API server -> webhooks and aggregated APIs (+ GKE control-plane firewall)
    seen: set[tuple[str, str, int]] = set()
    for o, ns, name, port in _webhook_services(cluster):
        for t, dst, num in _service_targets(ctx, ns, name, port)[:1]:
            if (ns, name, num) in seen:
                continue
            seen.add((ns, name, num))
            for src in ctx.from_apiserver:
                out += _flow(ctx, f"API server to {o.kind} {o.name}", src, dst, num,
                             f"allow ingress to {ns}/{name}'s pods on {num} from the API server"
                             + (" (under Cilium not by ipBlock: select the tunnel's pods and, by a CiliumNetworkPolicy "
                                "fromEntities, the nodes it reaches them from)" if cni == "cilium" else ""), fallback=o)
            if cluster.cloud == "gcp" and not _gke_firewall_allows(cluster, num):
                out.append(Finding("flows", cluster.name, o.ref, o.file,
                                   f"the GKE private control plane cannot reach {ns}/{name} on {num}: its default "
                                   f"firewall allows only {', '.join(map(str, GKE_DEFAULT_MASTER_PORTS))}",
                                   f"add a gcp.compute.Firewall from the master CIDR to the nodes allowing tcp:{num}"))

    # KEDA metrics server -> operator (keda 2.18.0 templates/metrics-server/deployment.yaml:
    # --metrics-service-address=<operator>.<ns>.svc:9666)
    for t, pod in ctx.pods:
        for c in t.spec.get("containers") or []:
            for a in (c.get("args") or []):
                if str(a).startswith("--metrics-service-address="):
                    host, _, port = str(a).split("=", 1)[1].rpartition(":")
                    parts = host.split(".")
                    if len(parts) >= 2:
                        for _, dst, num in _service_targets(ctx, parts[1], parts[0], int(port))[:1]:
                            out += _flow(ctx, "KEDA metrics server to operator", pod, dst, num,
                                         f"allow {t.namespace}/{t.owner.name} to reach the operator on {num} "
                                         "(pod selectors, both directions)")

    # KEDA -> Prometheus (ScaledObject serverAddress), Prometheus -> metrics ports
    prom = _prometheus(ctx)
    keda_op = [(t, p) for t, p in ctx.pods if t.labels.get("app") == "keda-operator"]
    for so in cluster.of_kind("ScaledObject"):
        for trig in so.spec.get("triggers") or []:
            addr = urlsplit(str((trig.get("metadata") or {}).get("serverAddress", "")))
            if trig.get("type") == "prometheus" and addr.hostname and prom is not None:
                for _, op in keda_op[:1]:
                    out += _flow(ctx, f"KEDA to Prometheus for {so.name}", op, prom, addr.port or 9090,
                                 "allow the KEDA operator to reach Prometheus on 9090")
    if prom is not None:
        out += _scrapes(ctx, prom)

    # router -> each pool
    rc = router_config(cluster)
    if rc is not None:
        cm, cfg = rc
        routers = [(t, p) for t, p in ctx.pods if t.namespace == cm.namespace and t.owner.kind == "Deployment"
                   and any(v.get("configMap", {}).get("name") == cm.name for v in t.spec.get("volumes") or [])]
        for _, r in routers[:1]:
            for pool in cfg.get("pools") or []:
                url = urlsplit(str(pool.get("url", "")))
                port = url.port or (443 if url.scheme == "https" else 80)
                targets = gateway_for_host(topo, url.hostname or "")
                if targets:
                    c, gw, _ = targets[0]
                    if c is cluster:  # this cluster's own gateway, reached by its address: the gateway pod
                        dsts = [p for t, p in gateways if t.owner is gw]
                    else:
                        dsts = [External("198.51.100.20", f"gateway {url.hostname}")]
                else:
                    parts = (url.hostname or "").split(".")
                    dsts = [d for _, d, _ in _service_targets(ctx, parts[1], parts[0], port)[:1]] \
                        if len(parts) >= 2 else []
                    if dsts:
                        port = _service_targets(ctx, parts[1], parts[0], port)[0][2]
                for dst in dsts[:1]:
                    out += _flow(ctx, f"router to pool {pool.get('name')}", r, dst, port,
                                 f"allow the router to reach {url.hostname} on {port}")
    return out


def _prometheus(ctx: _Ctx) -> Pod | None:
    if ctx.cluster.release("kube-prometheus-stack") is None and not ctx.cluster.of_kind("Prometheus"):
        return None
    return PROMETHEUS


def _scrapes(ctx: _Ctx, prom: Pod) -> list[Finding]:
    out = []
    for mon in ctx.cluster.of_kind("PodMonitor", "ServiceMonitor"):
        sel = mon.spec.get("selector") or {}
        nss = (mon.spec.get("namespaceSelector") or {})
        allowed_ns = nss.get("matchNames") or ([mon.namespace] if not nss.get("any") else None)
        endpoints = mon.spec.get("podMetricsEndpoints") or mon.spec.get("endpoints") or []
        if mon.kind == "ServiceMonitor":
            svcs = [s for s in ctx.cluster.of_kind("Service") if (allowed_ns is None or s.namespace in allowed_ns)
                    and _match(sel, s.labels())]
            for s in svcs:
                for ep in endpoints:
                    sp = next((p for p in s.spec.get("ports") or [] if p.get("name") == ep.get("port")), None)
                    if sp is None:
                        continue
                    for t, dst, num in _service_targets(ctx, s.namespace, s.name, int(sp["port"]))[:1]:
                        out += _flow(ctx, f"Prometheus scrape ({mon.kind} {mon.name})", prom, dst, num,
                                     f"allow ingress from Prometheus to {t.owner.name} on {num}")
            continue
        selected = [(t, pod) for t, pod in ctx.pods
                    if (allowed_ns is None or t.namespace in allowed_ns) and _match(sel, t.labels)]
        for t, pod in selected:
            for ep in endpoints:
                num = _ports_named(t).get(str(ep.get("port"))) if ep.get("port") else ep.get("portNumber")
                if num is None and str(ep.get("targetPort", "")).isdigit():
                    num = int(ep["targetPort"])
                if num:
                    out += _flow(ctx, f"Prometheus scrape ({mon.kind} {mon.name})", prom, pod, num,
                                 f"allow ingress from Prometheus to {t.owner.name} on {num}")
            break  # one pod per monitor and template shape is enough to judge the policies
    return out


def _match(sel: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    if not sel:
        return False
    return selects(sel, labels)


def _monitors_without_targets(cluster: Cluster) -> list[Finding]:
    """A PodMonitor whose selector matches no pod: Prometheus has nothing to scrape for it."""
    out = []
    if cluster.release("kube-prometheus-stack") is None and not cluster.of_kind("Prometheus"):
        return out
    templates = workload_templates(cluster)
    for mon in cluster.of_kind("PodMonitor"):
        nss = mon.spec.get("namespaceSelector") or {}
        allowed = nss.get("matchNames") or ([mon.namespace] if not nss.get("any") else None)
        if not any((allowed is None or t.namespace in allowed) and _match(mon.spec.get("selector") or {}, t.labels)
                   for t in templates):
            out.append(Finding("flows", cluster.name, mon.ref, mon.file,
                               "Prometheus scrapes nothing for it: its selector matches no pod of the cluster",
                               "select the labels the exporter's pods carry (read them from its chart at the "
                               "pinned version)"))
    return out


def check(topo: Topology) -> list[Finding]:
    out: list[Finding] = []
    for cluster in topo.clusters.values():
        out += _check_cluster(topo, cluster) + _monitors_without_targets(cluster)
    return out
