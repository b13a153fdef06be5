"""The multicloud topology (seed 000): NVIDIA, AMD and TPU pools on three clouds, each behind its
cluster's gateway, with premium traffic to NVIDIA 90/10, standard to AMD 80/20, overflow to TPU.

Uses the shipped ``Pulumi.multicloud.yaml`` when there is one, else the seed-000 spec in
tests/inference_render.py, through the whole program where the cloud cluster components exist."""

from __future__ import annotations

from fleet import layout
from inference_render import inference_objects, multicloud_plan

SEED_000 = {
    "X-Priority": ("high", {"nvidia": 90, "amd": 10}),
    "X-Cost-Tier": ("standard", {"amd": 80, "nvidia": 20}),
}


def _vendor_of(plan, pool: str) -> str:
    return plan.spec.pool(pool).vendor


def test_three_vendors_each_serve_on_their_own_cluster():
    plan = multicloud_plan()
    servers = inference_objects(plan)
    vendors_by_cluster = {}
    for cluster, objs in servers.items():
        vendors_by_cluster[cluster] = {o["metadata"]["labels"][layout.VENDOR_LABEL] for o in objs
                                       if o["kind"] in ("Deployment", "LLMInferenceService")
                                       and o["metadata"]["labels"].get(layout.COMPONENT) == layout.COMPONENT_MODEL_SERVER}
    assert set().union(*vendors_by_cluster.values()) == {"nvidia", "amd", "google"}
    assert len(plan.spec.clusters) >= 2


def test_seed_000_tiers_route_by_vendor_weights_across_the_fleet():
    plan = multicloud_plan()
    for header, (value, want) in SEED_000.items():
        tier = next(t for t in plan.spec.tiers if t.match.get(header) == value)
        weights: dict[str, int] = {}
        overflow_vendors: set[str] = set()
        for cluster, routes in inference_objects(plan, "HTTPRoute").items():
            route = next((r for r in routes if r["metadata"]["name"] == f"tier-{tier.name}"), None)
            if route is None:
                continue
            for rule in route["spec"]["rules"]:
                headers = {h["name"]: h["value"] for h in rule["matches"][0].get("headers", [])}
                assert headers[header] == value
                pools = {b["name"]: b["weight"] for b in rule["backendRefs"]}
                if "X-Fleet-Overflow" in headers or set(pools) <= set(tier.overflow):
                    overflow_vendors |= {_vendor_of(plan, p) for p in pools}
                else:
                    for p, w in pools.items():
                        weights[_vendor_of(plan, p)] = weights.get(_vendor_of(plan, p), 0) + w
        assert weights == want
        assert overflow_vendors == {"google"}


def test_every_cluster_has_its_gateway_and_a_route_per_pool_for_the_router():
    plan = multicloud_plan()
    routes = inference_objects(plan, "HTTPRoute")
    gateways = inference_objects(plan, "Gateway")
    for cluster in plan.spec.clusters:
        assert len(gateways[cluster.name]) == 1
        names = {r["metadata"]["name"] for r in routes[cluster.name]}
        for pool in plan.spec.pools_in(cluster.name):
            if plan.spec.models_on(pool.name):
                assert f"pool-{pool.name}" in names
