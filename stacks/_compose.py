"""The layers every topology stacks on each cluster, in dependency order, and the router on top.

cluster (+ accelerator pools, registry) -> namespaces -> platform (cert-manager, CRDs, Istio,
KServe, device plugins, KEDA, monitoring) -> network policies -> inference (model servers,
InferencePools + endpoint pickers, Gateway, HTTPRoutes, autoscaling) -> router.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from components.clusters import create_cluster
from components.inference import InferenceLayer, InferenceLayerArgs
from components.namespaces import Namespaces, NamespacesArgs
from components.network_policies import NetworkPolicies, NetworkPoliciesArgs
from components.platform import Platform, PlatformArgs
from components.router import Router, RouterArgs
from fleet.program import FleetSecrets
from fleet.spec import ClusterSpec, FleetSpec


@dataclass
class ClusterStack:
    spec: ClusterSpec
    cluster: Any
    namespaces: Namespaces
    platform: Platform
    network_policies: NetworkPolicies
    inference: InferenceLayer


def build_cluster(spec: FleetSpec, cluster_spec: ClusterSpec, secrets: FleetSecrets) -> ClusterStack:
    pools = spec.pools_in(cluster_spec.name)
    hosts_router = spec.router.enabled and spec.router_cluster().name == cluster_spec.name
    cluster = create_cluster(cluster_spec, pools)
    name = cluster_spec.name

    def on_cluster(*depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(provider=cluster.provider, depends_on=list(depends_on))

    namespaces = Namespaces(f"{name}-namespaces", NamespacesArgs(spec, hosts_router), on_cluster())
    platform = Platform(
        f"{name}-platform",
        PlatformArgs(spec=spec, cluster=cluster_spec, vendors=frozenset(p.vendor for p in pools),
                     namespaces=namespaces),
        on_cluster(namespaces),
    )
    network_policies = NetworkPolicies(
        f"{name}-netpol",
        NetworkPoliciesArgs(spec=spec, cluster=cluster_spec, namespaces=namespaces, hosts_router=hosts_router),
        on_cluster(namespaces),
    )
    inference = InferenceLayer(
        f"{name}-inference",
        InferenceLayerArgs(spec=spec, cluster=cluster_spec, pools=pools, hf_token=secrets.hf_token,
                           platform=platform, namespaces=namespaces),
        on_cluster(platform),
    )
    return ClusterStack(cluster_spec, cluster, namespaces, platform, network_policies, inference)


def build_router(spec: FleetSpec, stacks: list[ClusterStack], secrets: FleetSecrets) -> Router | None:
    if not spec.router.enabled:
        return None
    host = next(s for s in stacks if s.spec.name == spec.router_cluster().name)
    pool_endpoints = {pool: url for s in stacks for pool, url in s.inference.pool_endpoints.items()}
    registries = [s.cluster.registry for s in stacks if s.cluster.registry is not None]
    return Router(
        "router",
        RouterArgs(spec=spec, cluster=host.spec, pool_endpoints=pool_endpoints, registries=registries,
                   host_registry=host.cluster.registry, api_keys=secrets.router_api_keys,
                   namespaces=host.namespaces, platform=host.platform),
        pulumi.ResourceOptions(provider=host.cluster.provider, depends_on=[host.platform]),
    )


def build_fleet(spec: FleetSpec, secrets: FleetSecrets) -> dict[str, Any]:
    """Every cluster's layers, then the router; returns the stack outputs users need."""
    stacks = [build_cluster(spec, c, secrets) for c in spec.clusters]
    router = build_router(spec, stacks, secrets)
    outputs: dict[str, Any] = {
        "kubeconfigs": pulumi.Output.secret({s.spec.name: s.cluster.kubeconfig for s in stacks}),
        "gateways": {s.spec.name: s.inference.gateway_url for s in stacks},
    }
    if router is not None:
        outputs["router_url"] = router.url
    return outputs
