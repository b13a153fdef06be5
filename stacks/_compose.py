"""The layers every topology stacks on each cluster, in dependency order, and the router on top.

cluster (+ accelerator pools, registry) -> namespaces -> platform (cert-manager, CRDs, Istio,
KServe, device plugins, KEDA, monitoring) -> network policies -> inference (model servers,
InferencePools + endpoint pickers, Gateway, HTTPRoutes, autoscaling) -> router.

Each cluster's layers take that cluster's frozen plan (fleet.clusterplan: its pools, the models on
each, whether it hosts the router) and its typed handle (components.clusters.ClusterHandle: provider,
kubeconfig, registry); only the router reads the whole spec, since its config spans every cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from components.clouds import create_cluster
from components.clusters import ClusterHandle
from components.inference import InferenceLayer, InferenceLayerArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.namespaces import Namespaces, NamespacesArgs
from components.network_policies import NetworkPolicies, NetworkPoliciesArgs
from components.platform import Platform, PlatformArgs
from components.router import Router, RouterArgs
from components.router_image import REPOSITORY as ROUTER_REPOSITORY, RouterImage, RouterImageArgs
from fleet.clusterplan import ClusterPlan, plan_cluster
from fleet.spec import FleetSpec
from stacks.secrets import FleetSecrets


@dataclass
class ClusterStack:
    plan: ClusterPlan
    cluster: ClusterHandle
    namespaces: Namespaces
    platform: Platform
    network_policies: NetworkPolicies
    inference: InferenceLayer


def build_layers(plan: ClusterPlan, cluster: ClusterHandle, image: RouterImage,
                 secrets: FleetSecrets) -> ClusterStack:
    name = plan.name

    def on_cluster(*depends_on: pulumi.Resource) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(provider=cluster.provider, depends_on=list(depends_on))

    namespaces = Namespaces(f"{name}-namespaces", NamespacesArgs(plan), on_cluster())
    platform = Platform(f"{name}-platform", PlatformArgs(plan=plan, namespaces=namespaces, registry=cluster.registry,
                                                        tools_image=image.ref_for(name)),
                        on_cluster(namespaces))
    network_policies = NetworkPolicies(f"{name}-netpol", NetworkPoliciesArgs(plan=plan, namespaces=namespaces),
                                       on_cluster(namespaces))
    if plan.platform.monitoring:
        # Scrape targets, alerts and dashboards: prometheus-operator CRDs come with the platform.
        Monitoring(f"{name}-monitoring", MonitoringArgs(plan=plan, namespaces=namespaces), on_cluster(platform))
    inference = InferenceLayer(
        f"{name}-inference",
        InferenceLayerArgs(plan=plan, hf_token=secrets.hf_token, platform=platform, namespaces=namespaces,
                           image=image),
        on_cluster(platform),
    )
    return ClusterStack(plan, cluster, namespaces, platform, network_policies, inference)


def build_router(spec: FleetSpec, stacks: list[ClusterStack], image: RouterImage,
                 secrets: FleetSecrets) -> Router | None:
    if not spec.router.enabled:
        return None
    host = next(s for s in stacks if s.plan.hosts_router)
    pool_endpoints = {pool: url for s in stacks for pool, url in s.inference.pool_endpoints.items()}
    gateway_cas = {s.plan.name: s.inference.pool_ca for s in stacks if s.inference.pool_ca is not None}
    return Router(
        "router",
        RouterArgs(spec=spec, cluster=host.plan.cluster, pool_endpoints=pool_endpoints, gateway_cas=gateway_cas,
                   image=image,
                   api_keys=secrets.router_api_keys, namespaces=host.namespaces, platform=host.platform,
                   backend_keys=secrets.router_backend_keys),
        pulumi.ResourceOptions(provider=host.cluster.provider, depends_on=[host.platform]),
    )


def build_fleet(spec: FleetSpec, secrets: FleetSecrets) -> dict[str, Any]:
    """Every cluster, the router image (pushed to each cluster's registry), every cluster's
    layers, then the router; returns the stack outputs users need."""
    plans = [plan_cluster(spec, c.name) for c in spec.clusters]
    clusters = [create_cluster(p.cluster, list(p.pools), repositories=(ROUTER_REPOSITORY,)) for p in plans]
    # Built once from router/, pushed to every registry; dev's simulated pools run it too.
    image = RouterImage("router-image", RouterImageArgs(
        registries={c.spec.name: c.registry for c in clusters if c.registry is not None}))
    stacks = [build_layers(p, c, image, secrets) for p, c in zip(plans, clusters)]
    router = build_router(spec, stacks, image, secrets)
    outputs: dict[str, Any] = {
        "kubeconfigs": pulumi.Output.secret({s.plan.name: s.cluster.kubeconfig for s in stacks}),
        "gateways": {s.plan.name: s.inference.gateway_url for s in stacks},
    }
    if router is not None:
        outputs["router_url"] = router.url
        # The router's certificate is signed by its cluster's gateway CA: clients verify it with this
        # (public) certificate, e.g. `curl --cacert`, or OpenAI clients' SSL_CERT_FILE.
        host = next(s for s in stacks if s.plan.hosts_router)
        if host.inference.gateway.ca_cert_pem is not None:
            outputs["router_ca_certificate"] = host.inference.gateway.ca_cert_pem
    return outputs
