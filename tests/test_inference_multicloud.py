"""The multicloud topology (seed 000): NVIDIA, AMD and TPU pools on three clouds, each behind its
cluster's gateway, with premium traffic to NVIDIA 90/10, standard to AMD 80/20, overflow to TPU.

Uses the shipped ``multicloud`` stack set (``fleets/multicloud.yaml``) when there is one, else the seed-000 spec in
tests/inference_render.py, through the whole program where the cloud cluster components exist."""

from __future__ import annotations

import yaml

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
    # The router carries the tiers (the gateways route per pool only: tests/test_routes.py).
    plan = multicloud_plan()
    [config] = [r["inputs"]["data"]["config.yaml"] for r in plan.resources
                if r["type"] == "kubernetes:core/v1:ConfigMap"
                and r["inputs"]["metadata"]["name"] == "fleet-router-config"]
    tiers = yaml.safe_load(config)["tiers"]
    for header, (value, want) in SEED_000.items():
        [tier] = [t for t in tiers if t["match"].get(header) == value]
        weights: dict[str, int] = {}
        for b in tier["backends"]:
            weights[_vendor_of(plan, b["pool"])] = weights.get(_vendor_of(plan, b["pool"]), 0) + b["weight"]
        assert weights == want
        assert {_vendor_of(plan, p) for p in tier["overflow"]} == {"google"}


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
