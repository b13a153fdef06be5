"""The namespaces the project owns, created first so every layer and policy can rely on them."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from fleet import layout
from fleet.clusterplan import ClusterPlan


def owned_namespaces(plan: ClusterPlan) -> list[str]:
    """Every namespace this stack creates in a cluster (each gets default-deny policies)."""
    p = plan.platform
    wanted = [
        (layout.NS_CERT_MANAGER, p.cert_manager),
        (layout.NS_ISTIO, p.istio),
        (layout.NS_KSERVE, p.kserve),
        (layout.NS_KEDA, p.keda),
        (layout.NS_MONITORING, p.monitoring),
        (layout.NS_GPU_OPERATORS, True),
        (layout.NS_GATEWAY, True),
        (layout.NS_INFERENCE, True),
        (layout.NS_ROUTER, plan.hosts_router),
    ]
    return [ns for ns, on in wanted if on]


# Model servers and the router run without Istio sidecars (seed 003: NetworkPolicies isolate
# them and sidecars cost ~0.5 CPU + 200Mi per pod on accelerator nodes).
NO_SIDECAR = {layout.NS_INFERENCE, layout.NS_ROUTER, layout.NS_GATEWAY}
# Operators that need privileged pods (device plugins, node exporters) stay at `privileged`.
PRIVILEGED = {layout.NS_GPU_OPERATORS, layout.NS_MONITORING, layout.NS_ISTIO}


@dataclass
class NamespacesArgs:
    plan: ClusterPlan


class Namespaces(pulumi.ComponentResource):
    """One Namespace per owned name, labelled for Pod Security Admission and Istio injection."""

    def __init__(self, name: str, args: NamespacesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:namespaces:Namespaces", name, None, opts)
        self.names = owned_namespaces(args.plan)
        self.resources: dict[str, k8s.core.v1.Namespace] = {}
        for ns in self.names:
            labels = {
                **layout.COMMON_LABELS,
                "kubernetes.io/metadata.name": ns,
                "pod-security.kubernetes.io/enforce": "privileged" if ns in PRIVILEGED else "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }
            if ns in NO_SIDECAR:
                labels["istio-injection"] = "disabled"
            self.resources[ns] = k8s.core.v1.Namespace(
                f"{name}-{ns}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=ns, labels=labels),
                opts=pulumi.ResourceOptions(parent=self),
            )
        self.register_outputs({"names": self.names})
