"""A small NetworkPolicy evaluator over rendered manifests: is this connection allowed?

Kubernetes semantics: a pod selected by no policy of a direction is open in that direction; once
selected, only what some rule allows passes; a connection needs the source's egress *and* the
destination's ingress. Pods get addresses in 10.0.0.0/8 so ipBlocks apply to them as the
conservative CNIs do; "the internet" is a public address.

``cilium=True`` applies Cilium's semantics (AKS with Cilium, GKE Dataplane V2): an ``ipBlock``
never selects a pod, a node or a host-network endpoint of the cluster — docs.cilium.io, "Layer 3
Examples / IP/CIDR based" (v1.16): CIDR rules "do not apply to traffic where both sides of the
connection are either managed by Cilium or use an IP belonging to a node in the cluster (including
host networking pods)". Endpoints inside the cluster are Pods, or External(in_cluster=True).

Under Cilium, CiliumNetworkPolicy (cilium.io/v2) counts too, read as Cilium 1.18 reads it (the
version AKS runs on Kubernetes 1.34/1.35: learn.microsoft.com/azure/aks/azure-cni-powered-by-cilium,
"Supported Kubernetes and Cilium versions", minimum 1.18.6; docs.cilium.io/en/v1.18/security/policy/
language, "Layer 3 Policies"): Kubernetes NetworkPolicies and CiliumNetworkPolicies selecting an
endpoint are one allow-list (AKS FAQ: L3/L4 CNPs "can be used alongside Kubernetes NetworkPolicy");
a rule puts the endpoints its ``endpointSelector`` selects into default deny for the direction whose
section (``ingress``/``egress``) it has, unless ``enableDefaultDeny`` turns that off; a rule
allows what its L3 peer (``from/toEndpoints``, ``from/toEntities``, ``from/toCIDR(Set)``; none =
every peer) and its ``toPorts`` (none = every port) both match; ``ingressDeny``/``egressDeny``
override allows. ``fromEndpoints`` selectors stay in the policy's namespace unless they name
``io.kubernetes.pod.namespace`` (docs.cilium.io/en/v1.18/security/policy/kubernetes, "Namespaces").
Entities (v1.18 pkg/policy/api/entity.go and "Entities based"): a pod is ``cluster``; a node is
``remote-node`` (``host`` on its own node, which Cilium always admits: ``allow-localhost``); the API
server is ``kube-apiserver``; the internet is ``world``; everything is ``all``. What the evaluator
cannot resolve offline (``toServices``, ``toFQDNs``, ``toNodes``, named ports) allows nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from fleetctl.verify.topology import selects

INTERNET_IP = "203.0.113.7"
CILIUM_POLICY_KINDS = ("CiliumNetworkPolicy",)
CILIUM_ENTITIES = frozenset({"all", "world", "cluster", "host", "init", "ingress", "unmanaged", "remote-node",
                             "health", "none", "kube-apiserver"})
"""The ``Entity`` enum of cilium.io/v2 at v1.18 (pkg/policy/api/entity.go, kubebuilder validation)."""
_NS_KEY = "io.kubernetes.pod.namespace"
_NS_LABEL_PREFIX = "io.cilium.k8s.namespace.labels."


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: Mapping[str, str]
    name: str = ""
    ip: str = "10.1.2.3"


@dataclass(frozen=True)
class External:
    ip: str = INTERNET_IP
    name: str = "internet"
    in_cluster: bool = False
    """A node or host-network endpoint of the cluster (Cilium's CIDR rules never select it)."""
    entities: frozenset[str] = frozenset()
    """Cilium's reserved identities of this peer, when not the default: ``world`` outside the
    cluster, ``remote-node`` for a node (e.g. ``{"kube-apiserver"}`` for the API server)."""

    def cilium_entities(self) -> frozenset[str]:
        base = self.entities or frozenset({"remote-node"} if self.in_cluster else {"world"})
        return base | {"all"} | ({"cluster"} if self.in_cluster else frozenset())


_POD_ENTITIES = frozenset({"cluster", "all"})


def _strip_source(key: str) -> str:
    """Cilium label keys carry a source (``k8s:``, ``any:``); a key without one matches any source."""
    for prefix in ("k8s:", "any:"):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def _cilium_selector(sel: Mapping[str, Any]) -> dict[str, Any]:
    return {"matchLabels": {_strip_source(k): v for k, v in (sel.get("matchLabels") or {}).items()},
            "matchExpressions": [{**e, "key": _strip_source(str(e.get("key", "")))}
                                 for e in sel.get("matchExpressions") or []]}


def _names_namespace(sel: Mapping[str, Any]) -> bool:
    return _NS_KEY in (sel.get("matchLabels") or {}) or any(e.get("key") == _NS_KEY
                                                             for e in sel.get("matchExpressions") or [])


def cilium_rules(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The rules of a CiliumNetworkPolicy: ``spec`` and/or ``specs`` (both are allowed)."""
    spec = policy.get("spec")
    return ([spec] if isinstance(spec, Mapping) else []) + [r for r in policy.get("specs") or []
                                                            if isinstance(r, Mapping)]


@dataclass
class Cluster:
    policies: list[dict[str, Any]]
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    cilium: bool = False
    cilium_policies: list[dict[str, Any]] = field(default_factory=list)
    """CiliumNetworkPolicies (counted only when ``cilium``: elsewhere no engine reads them)."""

    def __post_init__(self) -> None:
        self._np_by_ns: dict[str, list[dict[str, Any]]] = {}
        for p in self.policies:
            self._np_by_ns.setdefault(p["metadata"]["namespace"], []).append(p)
        self._cnp_by_ns: dict[str, list[dict[str, Any]]] = {}
        for p in self.cilium_policies if self.cilium else []:
            self._cnp_by_ns.setdefault((p.get("metadata") or {}).get("namespace") or "default", []).append(p)

    @classmethod
    def from_objects(cls, objects: Iterable[Mapping[str, Any]], cilium: bool = False) -> "Cluster":
        objects = list(objects)
        ns_labels = {o["metadata"]["name"]: dict(o["metadata"].get("labels") or {})
                     for o in objects if o.get("kind") == "Namespace"}
        for ns in ("kube-system", "default"):
            ns_labels.setdefault(ns, {"kubernetes.io/metadata.name": ns})
        return cls([o for o in objects if o.get("kind") == "NetworkPolicy"], ns_labels, cilium,
                   [o for o in objects if o.get("kind") in CILIUM_POLICY_KINDS])

    # --- matching ----------------------------------------------------------------------------

    @staticmethod
    def _selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
        return selects(selector, labels)

    def _ns_labels(self, ns: str) -> dict[str, str]:
        return self.namespace_labels.get(ns, {"kubernetes.io/metadata.name": ns})

    def _peer_matches(self, peer: Mapping[str, Any], policy_ns: str, other: Pod | External) -> bool:
        if "ipBlock" in peer:
            if self.cilium and (isinstance(other, Pod) or other.in_cluster):
                return False
            return self._in_cidr(other, peer["ipBlock"].get("cidr", ""), peer["ipBlock"].get("except"))
        if isinstance(other, External):
            return False
        if "namespaceSelector" in peer:
            if not self._selects(peer["namespaceSelector"], self._ns_labels(other.namespace)):
                return False
        elif other.namespace != policy_ns:
            return False
        return "podSelector" not in peer or self._selects(peer["podSelector"], other.labels)

    @staticmethod
    def _in_cidr(other: Pod | External, cidr: str, excepts: Iterable[str] | None) -> bool:
        try:
            ip, net = ipaddress.ip_address(other.ip), ipaddress.ip_network(cidr, strict=False)
            return ip in net and not any(ip in ipaddress.ip_network(x, strict=False) for x in excepts or [])
        except ValueError:
            return False

    @staticmethod
    def _port_matches(rule_ports, port: int, protocol: str) -> bool:
        if not rule_ports:
            return True
        return any(p.get("protocol", "TCP") == protocol and (p.get("port") in (None, port)) for p in rule_ports)

    # --- Cilium ----------------------------------------------------------------------------------

    def _cilium_labels(self, pod: Pod) -> dict[str, str]:
        out = {**pod.labels, _NS_KEY: pod.namespace}
        out.update({_NS_LABEL_PREFIX + k: v for k, v in self._ns_labels(pod.namespace).items()})
        return out

    def _cilium_endpoint(self, sel: Mapping[str, Any], policy_ns: str, other: Pod | External) -> bool:
        if not isinstance(other, Pod):
            return False
        sel = _cilium_selector(sel)
        if not _names_namespace(sel) and other.namespace != policy_ns:
            return False
        return self._selects(sel, self._cilium_labels(other))

    def _cilium_peer(self, rule: Mapping[str, Any], direction: str, policy_ns: str, other: Pod | External) -> bool:
        pre = "from" if direction == "Ingress" else "to"
        l3 = [k for k in ("Endpoints", "Entities", "CIDR", "CIDRSet", "Nodes", "Services", "FQDNs", "Groups")
              if pre + k in rule]
        if not l3:
            return True
        entities = _POD_ENTITIES if isinstance(other, Pod) else other.cilium_entities()
        outside = isinstance(other, External) and not other.in_cluster
        if any(self._cilium_endpoint(sel, policy_ns, other) for sel in rule.get(pre + "Endpoints") or []):
            return True
        if any(e in entities for e in rule.get(pre + "Entities") or []):
            return True
        if outside and any(self._in_cidr(other, c, None) for c in rule.get(pre + "CIDR") or []):
            return True
        return outside and any(self._in_cidr(other, c.get("cidr", ""), c.get("except"))
                               for c in rule.get(pre + "CIDRSet") or [] if isinstance(c, Mapping))

    @staticmethod
    def _cilium_ports(rule: Mapping[str, Any], port: int, protocol: str) -> bool:
        to_ports = rule.get("toPorts")
        if not to_ports:
            return True
        for tp in to_ports:
            pps = tp.get("ports")
            if not pps:
                return True
            for pp in pps:
                if str(pp.get("protocol") or "ANY") not in (protocol, "ANY"):
                    continue
                lo = str(pp.get("port", "0") or "0")
                if not lo.isdigit():
                    continue  # a named port: not resolved offline
                hi = int(pp.get("endPort") or lo)
                if int(lo) == 0 or int(lo) <= port <= max(hi, int(lo)):
                    return True
        return False

    def _cilium_selecting(self, pod: Pod) -> list[tuple[dict[str, Any], Mapping[str, Any]]]:
        """(policy, rule) of every CiliumNetworkPolicy rule that selects ``pod`` (any section)."""
        out = []
        for p in self._cnp_by_ns.get(pod.namespace, []):
            for r in cilium_rules(p):
                if self._selects(_cilium_selector(r.get("endpointSelector") or {}), self._cilium_labels(pod)):
                    out.append((p, r))
        return out

    @staticmethod
    def _default_deny(rule: Mapping[str, Any], direction: str) -> bool:
        key = direction.lower()
        if key not in rule and f"{key}Deny" not in rule:
            return False
        return (rule.get("enableDefaultDeny") or {}).get(key, True) is not False

    # --- evaluation --------------------------------------------------------------------------------

    def _np_selecting(self, direction: str, pod: Pod) -> list[dict[str, Any]]:
        return [p for p in self._np_by_ns.get(pod.namespace, [])
                if direction in (p["spec"].get("policyTypes") or ["Ingress"])
                and self._selects(p["spec"].get("podSelector", {}), pod.labels)]

    def _allowed(self, direction: str, pod: Pod, other: Pod | External, port: int, protocol: str) -> bool:
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        cilium = self._cilium_selecting(pod)
        for _, r in cilium:
            for rule in r.get(f"{key}Deny") or []:
                if self._cilium_ports(rule, port, protocol) and self._cilium_peer(rule, direction, pod.namespace, other):
                    return False
        selecting = self._np_selecting(direction, pod)
        deny_by_cilium = [(p, r) for p, r in cilium if self._default_deny(r, direction)]
        if not selecting and not deny_by_cilium:
            return True
        for p in selecting:
            for rule in p["spec"].get(key) or []:
                peers = rule.get(peers_key)
                if not self._port_matches(rule.get("ports"), port, protocol):
                    continue
                if not peers or any(self._peer_matches(peer, pod.namespace, other) for peer in peers):
                    return True
        for _, r in cilium:
            for rule in r.get(key) or []:
                if self._cilium_ports(rule, port, protocol) and self._cilium_peer(rule, direction, pod.namespace, other):
                    return True
        return False

    def allows(self, src: Pod | External, dst: Pod | External, port: int, protocol: str = "TCP") -> bool:
        return self.denied_by(src, dst, port, protocol) is None

    def denied_by(self, src: Pod | External, dst: Pod | External, port: int, protocol: str = "TCP"
                  ) -> tuple[str, list[dict[str, Any]]] | None:
        """None if allowed, else the direction that denies and the policies selecting that side."""
        if isinstance(src, Pod) and not self._allowed("Egress", src, dst, port, protocol):
            return "Egress", self.selecting("Egress", src)
        if isinstance(dst, Pod) and not self._allowed("Ingress", dst, src, port, protocol):
            return "Ingress", self.selecting("Ingress", dst)
        return None

    def selecting(self, direction: str, pod: Pod) -> list[dict[str, Any]]:
        """Every policy (NetworkPolicy, and CiliumNetworkPolicy under Cilium) that puts ``pod`` into
        default deny for ``direction``."""
        cnps: list[dict[str, Any]] = []
        for p, r in self._cilium_selecting(pod):
            if self._default_deny(r, direction) and not any(p is q for q in cnps):
                cnps.append(p)
        return self._np_selecting(direction, pod) + cnps


def workload_pods(objects: Iterable[Mapping[str, Any]]) -> list[Pod]:
    """Pods of every Deployment/StatefulSet/DaemonSet in the manifests, with their template labels."""
    pods = []
    for o in objects:
        if o.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
            labels = ((o["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
            pods.append(Pod(o["metadata"]["namespace"], dict(labels), o["metadata"]["name"]))
    return pods
