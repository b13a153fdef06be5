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
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

INTERNET_IP = "203.0.113.7"


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


@dataclass
class Cluster:
    policies: list[dict[str, Any]]
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    cilium: bool = False

    @classmethod
    def from_objects(cls, objects: Iterable[Mapping[str, Any]], cilium: bool = False) -> "Cluster":
        objects = list(objects)
        ns_labels = {o["metadata"]["name"]: dict(o["metadata"].get("labels") or {})
                     for o in objects if o.get("kind") == "Namespace"}
        for ns in ("kube-system", "default"):
            ns_labels.setdefault(ns, {"kubernetes.io/metadata.name": ns})
        return cls([o for o in objects if o.get("kind") == "NetworkPolicy"], ns_labels, cilium)

    # --- matching ----------------------------------------------------------------------------

    @staticmethod
    def _selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
        if selector is None:
            return False
        for k, v in (selector.get("matchLabels") or {}).items():
            if labels.get(k) != v:
                return False
        for e in selector.get("matchExpressions") or []:
            present, value = e["key"] in labels, labels.get(e["key"])
            op = e["operator"]
            if (op == "In" and value not in e["values"]) or (op == "NotIn" and value in e.get("values", [])) \
                    or (op == "Exists" and not present) or (op == "DoesNotExist" and present):
                return False
        return True

    def _ns_labels(self, ns: str) -> dict[str, str]:
        return self.namespace_labels.get(ns, {"kubernetes.io/metadata.name": ns})

    def _peer_matches(self, peer: Mapping[str, Any], policy_ns: str, other: Pod | External) -> bool:
        if "ipBlock" in peer:
            if self.cilium and (isinstance(other, Pod) or other.in_cluster):
                return False
            ip = ipaddress.ip_address(other.ip)
            block = peer["ipBlock"]
            if ip not in ipaddress.ip_network(block["cidr"]):
                return False
            return not any(ip in ipaddress.ip_network(x) for x in block.get("except") or [])
        if isinstance(other, External):
            return False
        if "namespaceSelector" in peer:
            if not self._selects(peer["namespaceSelector"], self._ns_labels(other.namespace)):
                return False
        elif other.namespace != policy_ns:
            return False
        return "podSelector" not in peer or self._selects(peer["podSelector"], other.labels)

    @staticmethod
    def _port_matches(rule_ports, port: int, protocol: str) -> bool:
        if not rule_ports:
            return True
        return any(p.get("protocol", "TCP") == protocol and (p.get("port") in (None, port)) for p in rule_ports)

    def _allowed(self, direction: str, pod: Pod, other: Pod | External, port: int, protocol: str) -> bool:
        key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
        selecting = [p for p in self.policies if p["metadata"]["namespace"] == pod.namespace
                     and direction in (p["spec"].get("policyTypes") or ["Ingress"])
                     and self._selects(p["spec"].get("podSelector", {}), pod.labels)]
        if not selecting:
            return True
        for p in selecting:
            for rule in p["spec"].get(key) or []:
                peers = rule.get(peers_key)
                if not self._port_matches(rule.get("ports"), port, protocol):
                    continue
                if not peers or any(self._peer_matches(peer, pod.namespace, other) for peer in peers):
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
        return [p for p in self.policies if p["metadata"]["namespace"] == pod.namespace
                and direction in (p["spec"].get("policyTypes") or ["Ingress"])
                and self._selects(p["spec"].get("podSelector", {}), pod.labels)]


def workload_pods(objects: Iterable[Mapping[str, Any]]) -> list[Pod]:
    """Pods of every Deployment/StatefulSet/DaemonSet in the manifests, with their template labels."""
    pods = []
    for o in objects:
        if o.get("kind") in ("Deployment", "StatefulSet", "DaemonSet"):
            labels = ((o["spec"].get("template") or {}).get("metadata") or {}).get("labels") or {}
            pods.append(Pod(o["metadata"]["namespace"], dict(labels), o["metadata"]["name"]))
    return pods
