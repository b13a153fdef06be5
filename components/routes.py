"""HTTPRoutes on the cluster Gateway, generated from the spec's tiers, pools and models.

For the pools that live on this cluster and serve at least one model:

* **tier routes** ``tier-<tier>`` — the tier's header match (seed 000: ``X-Priority: high``) with
  one weighted ``backendRef`` per InferencePool, weights exactly as the spec gives them; a second
  rule with the same match plus ``X-Fleet-Overflow: true`` sends to the tier's overflow pools. The
  tier without a match is the default route (path ``/v1`` only). A tier whose backends live on
  another cluster falls back to its local overflow pools here, and is skipped where it has neither.
* **default route** ``default`` — only when no default tier reaches a local pool: every local pool,
  evenly.
* **pool routes** ``pool-<pool>`` — ``/pools/<pool>/v1/...`` rewritten to ``/v1/...`` on exactly
  that pool: what the cross-cloud router targets (:attr:`InferenceLayer.pool_endpoints`).
* **model routes** ``model-<model>`` — ``X-Gateway-Model-Name: <model>`` (what the Inference
  Extension's body-based router sets from the request body) to the pools that serve that model, so
  no model is sent to a pool that lacks it.

Gateway API weights are relative, so a tier's local backends keep the spec's ratio on every cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import inference_data as data
from fleet import layout, naming
from fleet.spec import ClusterSpec, FleetSpec, TierSpec

MODEL_HEADER = "X-Gateway-Model-Name"
POOL_GROUP = "inference.networking.k8s.io"


def pool_ref(pool: str, weight: int) -> dict[str, Any]:
    return {"group": POOL_GROUP, "kind": "InferencePool", "name": pool, "weight": weight}


def _headers(match: dict[str, str]) -> list[dict[str, str]]:
    return [{"type": "Exact", "name": k, "value": v} for k, v in sorted(match.items())]


def _rule(headers: dict[str, str], backends: list[tuple[str, int]], timeout: str,
          path: str = data.API_PATH_PREFIX, rewrite: bool = False) -> dict[str, Any]:
    match: dict[str, Any] = {"path": {"type": "PathPrefix", "value": path}}
    if headers:
        match["headers"] = _headers(headers)
    rule: dict[str, Any] = {
        "matches": [match],
        "backendRefs": [pool_ref(p, w) for p, w in backends],
        "timeouts": {"request": timeout},
    }
    if rewrite:
        rule["filters"] = [{"type": "URLRewrite", "urlRewrite": {
            "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]
    return rule


def _tier_rules(tier: TierSpec, local: list[str], timeout: str) -> list[dict[str, Any]]:
    backends = [(b.pool, b.weight) for b in tier.backends if b.pool in local]
    overflow = [(p, 1) for p in tier.overflow if p in local]
    if sum(w for _, w in backends) == 0:
        # None of the tier's backends is here (or all weigh 0): its local overflow takes the tier.
        return [_rule(tier.match, overflow, timeout)] if overflow else []
    rules = [_rule(tier.match, backends, timeout)]
    if overflow:
        rules.append(_rule({**tier.match, data.OVERFLOW_HEADER: "true"}, overflow, timeout))
    return rules


def route_specs(spec: FleetSpec, cluster: ClusterSpec) -> dict[str, list[dict[str, Any]]]:
    """Route name -> rules, for this cluster (pure: tests read it as well as the plan)."""
    local = [p.name for p in spec.pools_in(cluster.name) if spec.models_on(p.name)]
    if not local:
        return {}
    timeout = data.route_timeout(spec.router.request_timeout_s)
    routes: dict[str, list[dict[str, Any]]] = {}
    for tier in spec.tiers:
        rules = _tier_rules(tier, local, timeout)
        if rules:
            routes[naming.k8s_name("tier", tier.name)] = rules
    if not any(rule["matches"][0].get("headers") is None for rules in routes.values() for rule in rules):
        # No default tier, or none of its pools (backends or overflow) here: every local pool, evenly,
        # so a request without tier headers is never a 404 on this gateway.
        routes["default"] = [_rule({}, [(p, 1) for p in local], timeout)]
    for pool in local:
        routes[naming.k8s_name("pool", pool)] = [
            _rule({}, [(pool, 1)], timeout, path=f"{data.POOL_PATH_PREFIX}/{pool}", rewrite=True)]
    for model in spec.models:
        pools = [p for p in model.pools if p in local]
        if pools:
            routes[naming.k8s_name("model", model.slug)] = [
                _rule({MODEL_HEADER: model.name}, [(p, 1) for p in pools], timeout)]
    return routes


@dataclass
class RoutesArgs:
    spec: FleetSpec
    cluster: ClusterSpec


class Routes(pulumi.ComponentResource):
    def __init__(self, name: str, args: RoutesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:inference:Routes", name, None, opts)
        parent_ref = {"group": "gateway.networking.k8s.io", "kind": "Gateway",
                      "name": layout.GATEWAY_NAME, "namespace": layout.NS_GATEWAY}
        self.names: list[str] = []
        for route, rules in route_specs(args.spec, args.cluster).items():
            body: dict[str, Any] = {"parentRefs": [parent_ref], "rules": rules}
            if args.cluster.gateway_hostname:
                body["hostnames"] = [args.cluster.gateway_hostname]
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
