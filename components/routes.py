"""HTTPRoutes on the cluster Gateway: one per pool of this cluster that serves a model.

``pool-<pool>`` sends ``/pools/<pool>/v1/...``, rewritten to ``/v1/...``, to that pool's
InferencePool and nothing else: what the cross-cloud router targets
(:attr:`InferenceLayer.pool_endpoints`). The router, not the gateway, does everything between pools —
tiers and their weights, overflow, which pools serve a model (``fleet/routerconfig.py``) — because
the in-cluster gateway cannot:

* Istio 1.28.5 attaches one endpoint picker per route rule: ``buildHTTPDestination``
  (pilot/pkg/config/kube/gateway/conversion.go) keeps only the last backendRef's InferencePool
  config, so a rule weighting several InferencePools would send all of them through one picker,
  which picks pods of its own pool only.
* A tier's pools may serve different models (a gcp default tier over a ``qwen2.5-3b`` pool and a
  ``qwen2.5-3b-tpu`` pool), and the gateway does not read the body's ``model``: matching
  ``X-Gateway-Model-Name`` needs the Inference Extension's body-based router, which is not deployed.

Hence every rule names exactly one InferencePool, and no rule matches on a header nothing sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import inference_data as data
from fleet import drain, layout, naming
from fleet.clusterplan import ClusterPlan

POOL_GROUP = "inference.networking.k8s.io"


def pool_ref(pool: str, weight: int) -> dict[str, Any]:
    return {"group": POOL_GROUP, "kind": "InferencePool", "name": pool, "weight": weight}


def pool_rule(pool: str, timeout: str) -> dict[str, Any]:
    """``/pools/<pool>`` with the prefix stripped, to that pool's InferencePool alone."""
    return {
        "matches": [{"path": {"type": "PathPrefix", "value": f"{data.POOL_PATH_PREFIX}/{pool}"}}],
        "backendRefs": [pool_ref(pool, 1)],
        "timeouts": {"request": timeout},
        "filters": [{"type": "URLRewrite", "urlRewrite": {
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}],
    }


def route_specs(plan: ClusterPlan) -> dict[str, list[dict[str, Any]]]:
    """Route name -> rules, for this cluster (pure: tests read it as well as the plan)."""
    timeout = drain.pool_route_timeout(plan.request_timeout_s)
    return {naming.k8s_name("pool", p.name): [pool_rule(p.name, timeout)] for p in plan.served_pools}


@dataclass
class RoutesArgs:
    plan: ClusterPlan


class Routes(pulumi.ComponentResource):
    def __init__(self, name: str, args: RoutesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:inference:Routes", name, None, opts)
        parent_ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                      "name": layout.GATEWAY_NAME, "namespace": layout.NS_GATEWAY}
        self.names: list[str] = []
        for route, rules in route_specs(args.plan).items():
            body: dict[str, Any] = {"parentRefs": [parent_ref], "rules": rules}
            if args.plan.cluster.gateway_hostname:
                body["hostnames"] = [args.plan.cluster.gateway_hostname]
            k8s.apiextensions.CustomResource(
                f"{name}-{route}",
                api_version="gateway.networking.k8s.io/v1",
                kind="HTTPRoute",
                metadata=k8s.meta.v1.ObjectMetaArgs(
                    name=route, namespace=layout.NS_INFERENCE,
                    labels={**layout.COMMON_LABELS, layout.COMPONENT: "route"}),
                spec=body,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.names.append(route)
        self.register_outputs({"names": self.names})
