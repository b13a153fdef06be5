"""The inference layer of one cluster, generated from the spec — nothing per model in ``stacks/``.

For every pool of this cluster that serves a model:

* a :class:`~components.model_server.ModelServer` per (model, pool): vLLM with the vendor's pinned
  image, or on a local cluster the router image's simulator with the vendor's latency profile;
* a :class:`~components.autoscaling.QueueAutoscaler` per Deployment (KEDA on vLLM's queue depth,
  to zero where the model allows) when the platform runs KEDA;
* an :class:`~components.inference_pool.InferencePool` with its endpoint picker;

then one :class:`~components.gateway.Gateway` (TLS from cert-manager) and one HTTPRoute per pool
(:mod:`components.routes`; tiers, weights and overflow are the cross-cloud router's).

Models that do not fit their pool never get here: the spec's model-fit preflight refuses them
before any resource is declared (seed 001's Mistral-7B on a T4).

``pool_endpoints`` is what the cross-cloud router targets: on a cloud cluster the pool's route on
this cluster's gateway (``<gateway>/pools/<pool>``); on a local cluster the in-cluster Service of the
pool's simulated servers. ``pool_ca`` is the CA the router verifies those HTTPS endpoints with (the
cluster's gateway CA, components/gateway.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.autoscaling import QueueAutoscaler, QueueAutoscalerArgs
from components.gateway import Gateway, GatewayArgs
from components import inference_data
from components.inference_pool import InferencePool, InferencePoolArgs
from components.model_server import HF_TOKEN_KEY, ModelServer, ModelServerArgs, server_name
from components.namespaces import Namespaces
from components.platform import Platform
from components.routes import Routes, RoutesArgs
from components.router_image import RouterImage
from fleet import drain, layout
from fleet.clusterplan import ClusterPlan

HF_SECRET = "hf-token"


def sim_service_name(pool: str) -> str:
    return f"{pool}-sim"


@dataclass
class InferenceLayerArgs:
    plan: ClusterPlan
    hf_token: pulumi.Output[str] | None
    platform: Platform
    namespaces: Namespaces
    image: RouterImage
    """The router image; simulated (local) pools run ``fleet_router.sim`` from it."""


class InferenceLayer(pulumi.ComponentResource):
    def __init__(self, name: str, args: InferenceLayerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:inference:InferenceLayer", name, None, opts)
        plan = args.plan
        cluster = plan.cluster
        simulated = cluster.cloud == "local"
        keda = plan.platform.keda
        served = plan.served_pools
        drain_s = drain.server_termination_grace_s(plan.request_timeout_s)

        # The token only reaches real vLLM servers (gated models); the simulator downloads nothing.
        hf_secret = None
        if args.hf_token is not None and not simulated and served:
            hf_secret = k8s.core.v1.Secret(
                f"{name}-hf-token",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=HF_SECRET, namespace=layout.NS_INFERENCE,
                                                    labels=dict(layout.COMMON_LABELS)),
                type="Opaque",
                string_data={HF_TOKEN_KEY: pulumi.Output.secret(args.hf_token)},
                opts=pulumi.ResourceOptions(parent=self),
            )

        image = args.image.ref_for(cluster.name)
        self.model_servers: dict[tuple[str, str], ModelServer] = {}
        self.inference_pools: dict[str, InferencePool] = {}
        for pool in served:
            ipool = InferencePool(f"{name}-{pool.name}",
                                  InferencePoolArgs(pool=pool, drain_s=drain_s, istio=plan.platform.istio),
                                  pulumi.ResourceOptions(parent=self))
            self.inference_pools[pool.name] = ipool
            for model in plan.models_on(pool.name):
                kserve = model.serving == "kserve"
                server = ModelServer(
                    f"{name}-{server_name(model, pool)}",
                    ModelServerArgs(
                        model=model, pool=pool, cluster=cluster, inference_pool=ipool.name, image=image,
                        hf_secret=HF_SECRET if hf_secret is not None else None,
                        autoscaled=keda and not kserve, drain_s=drain_s,
                        pool_models=tuple(m.name for m in plan.models_on(pool.name)),
                    ),
                    pulumi.ResourceOptions(parent=self, depends_on=[hf_secret] if hf_secret else []),
                )
                self.model_servers[(model.name, pool.name)] = server
                if keda and not kserve:
                    QueueAutoscaler(f"{name}-{server.name}-autoscaler",
                                    QueueAutoscalerArgs(model=model, pool=pool, target=server.name),
                                    pulumi.ResourceOptions(parent=self, depends_on=[server]))
            if simulated:
                # The router reaches simulated pools directly (no load balancer on kind).
                k8s.core.v1.Service(
                    f"{name}-{pool.name}-sim",
                    metadata=k8s.meta.v1.ObjectMetaArgs(
                        name=sim_service_name(pool.name), namespace=layout.NS_INFERENCE,
                        labels={**layout.COMMON_LABELS, layout.POOL_LABEL: pool.name}),
                    spec={"type": "ClusterIP",
                          "selector": {layout.COMPONENT: layout.COMPONENT_MODEL_SERVER,
                                       layout.POOL_LABEL: pool.name},
                          "ports": [{"name": "http", "port": layout.VLLM_PORT, "targetPort": "http",
                                     "protocol": "TCP"}]},
                    opts=pulumi.ResourceOptions(parent=self),
                )

        self.gateway = Gateway(f"{name}-gateway",
                               GatewayArgs(cluster=cluster, gateway_class_name=args.platform.gateway_class_name,
                                           router_hostname=plan.router_hostname),
                               pulumi.ResourceOptions(parent=self))
        self.routes = Routes(f"{name}-routes", RoutesArgs(plan=plan),
                             pulumi.ResourceOptions(parent=self, depends_on=[
                                 self.gateway, *(p.inference_pool for p in self.inference_pools.values())]))

        self.gateway_url: pulumi.Output[str] = self.gateway.url
        # pool name -> base URL the cross-cloud router sends that pool's traffic to (every pool of the
        # cluster; a pool that serves no model has no route or servers, and the router never picks it)
        self.pool_endpoints: dict[str, pulumi.Output[str]] = {}
        for pool in plan.pools:
            if simulated:
                url = (f"http://{sim_service_name(pool.name)}.{layout.NS_INFERENCE}.svc.cluster.local:"
                       f"{layout.VLLM_PORT}")
                self.pool_endpoints[pool.name] = pulumi.Output.from_input(url)
            else:
                self.pool_endpoints[pool.name] = self.gateway_url.apply(
                    lambda base, p=pool.name: f"{base}{inference_data.POOL_PATH_PREFIX}/{p}")
        # The CA the router must trust for this cluster's pool endpoints: the gateway's (HTTPS); none
        # where the router reaches the pools by plain HTTP in-cluster (simulated) or the gateway's
        # certificate is publicly trusted.
        self.pool_ca: pulumi.Output[str] | None = None if simulated else self.gateway.ca_cert_pem
        self.register_outputs({"gateway_url": self.gateway_url, "pool_endpoints": self.pool_endpoints})
