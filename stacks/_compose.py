"""The layers every topology stacks on each cluster, in dependency order, and the router on top.

cluster (+ accelerator pools, registry) -> namespaces -> platform (cert-manager, CRDs, Istio,
KServe, device plugins, KEDA, monitoring) -> network policies -> inference (model servers,
InferencePools + endpoint pickers, Gateway, HTTPRoutes, autoscaling) -> router.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from components.clouds import create_cluster
from components.inference import InferenceLayer, InferenceLayerArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.namespaces import Namespaces, NamespacesArgs
from components.network_policies import NetworkPolicies, NetworkPoliciesArgs
from components.platform import Platform, PlatformArgs
from components.router import Router, RouterArgs
from components.router_image import RouterImage, RouterImageArgs
from fleet.spec import ClusterSpec, FleetSpec
from stacks.secrets import FleetSecrets


@dataclass
class ClusterStack:
    spec: ClusterSpec
    cluster: Any
    namespaces: Namespaces
    platform: Platform
    network_policies: NetworkPolicies
    inference: InferenceLayer


def build_layers(spec: FleetSpec, cluster: Any, image: RouterImage, secrets: FleetSecrets) -> ClusterStack:
    cluster_spec: ClusterSpec = cluster.spec
    pools = spec.pools_in(cluster_spec.name)
    hosts_router = spec.router.enabled and spec.router_cluster().name == cluster_spec.name
    name = cluster_spec.name

    def on_cluster(*depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(provider=cluster.provider, depends_on=list(depends_on))

    namespaces = Namespaces(f"{name}-namespaces", NamespacesArgs(spec, hosts_router), on_cluster())
    platform = Platform(
        f"{name}-platform",
        PlatformArgs(spec=spec, cluster=cluster_spec, vendors=frozenset(p.vendor for p in pools),
                     namespaces=namespaces, registry=cluster.registry),
        on_cluster(namespaces),
    )
    network_policies = NetworkPolicies(
        f"{name}-netpol",
        NetworkPoliciesArgs(spec=spec, cluster=cluster_spec, namespaces=namespaces, hosts_router=hosts_router),
        on_cluster(namespaces),
    )
    if spec.platform.monitoring:
        # Scrape targets, alerts and dashboards: prometheus-operator CRDs come with the platform.
        Monitoring(
            f"{name}-monitoring",
            MonitoringArgs(spec=spec, cluster=cluster_spec, vendors=frozenset(p.vendor for p in pools),
                           namespaces=namespaces, hosts_router=hosts_router),
            on_cluster(platform),
        )
    inference = InferenceLayer(
        f"{name}-inference",
        InferenceLayerArgs(spec=spec, cluster=cluster_spec, pools=pools, hf_token=secrets.hf_token,
                           platform=platform, namespaces=namespaces, image=image),
        on_cluster(platform),
    )
    return ClusterStack(cluster_spec, cluster, namespaces, platform, network_policies, inference)


def build_router(spec: FleetSpec, stacks: list[ClusterStack], image: RouterImage,
                 secrets: FleetSecrets) -> Router | None:
    if not spec.router.enabled:
        return None
    host = next(s for s in stacks if s.spec.name == spec.router_cluster().name)
    pool_endpoints = {pool: url for s in stacks for pool, url in s.inference.pool_endpoints.items()}
    return Router(
        "router",
        RouterArgs(spec=spec, cluster=host.spec, pool_endpoints=pool_endpoints, image=image,
                   api_keys=secrets.router_api_keys, namespaces=host.namespaces, platform=host.platform,
                   backend_keys=secrets.router_backend_keys),
        pulumi.ResourceOptions(provider=host.cluster.provider, depends_on=[host.platform]),
    )


def build_fleet(spec: FleetSpec, secrets: FleetSecrets) -> dict[str, Any]:
    """Every cluster, the router image (pushed to each cluster's registry), every cluster's
    layers, then the router; returns the stack outputs users need."""
    clusters = [create_cluster(c, spec.pools_in(c.name)) for c in spec.clusters]
    # Built once from router/, pushed to every registry; dev's simulated pools run it too.
    image = RouterImage("router-image", RouterImageArgs(
        registries={c.spec.name: c.registry for c in clusters if c.registry is not None}))
    stacks = [build_layers(spec, c, image, secrets) for c in clusters]
    router = build_router(spec, stacks, image, secrets)
    outputs: dict[str, Any] = {
        "kubeconfigs": pulumi.Output.secret({s.spec.name: s.cluster.kubeconfig for s in stacks}),
        "gateways": {s.spec.name: s.inference.gateway_url for s in stacks},
    }
    if router is not None:
        outputs["router_url"] = router.url
    return outputs
