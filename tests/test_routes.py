"""HTTPRoutes as rendered from the spec's tiers: weights equal the spec's, overflow and a default
route exist, every served model is reachable, and each pool has the route the cross-cloud router
targets."""

from __future__ import annotations

import copy

import pytest

from components.routes import MODEL_HEADER
from conftest import plan_of
from fleet import layout
from inference_render import MULTICLOUD_SPEC, inference_objects, seed_plan, render

OVERFLOW = "X-Fleet-Overflow"


def _routes(plan) -> dict[str, dict[str, dict]]:
    return {c: {o["metadata"]["name"]: o for o in objs} for c, objs in inference_objects(plan, "HTTPRoute").items()}


def _weights(rule) -> dict[str, int]:
    return {b["name"]: b["weight"] for b in rule["backendRefs"]}


def _headers(rule) -> dict[str, str]:
    [match] = rule["matches"]
    return {h["name"]: h["value"] for h in match.get("headers", [])}


def _local_pools(plan, cluster) -> set[str]:
    return {p.name for p in plan.spec.pools_in(cluster) if plan.spec.models_on(p.name)}


@pytest.mark.parametrize("which", ["dev", "multicloud"])
def test_tier_route_weights_equal_the_spec(which):
    plan = plan_of("dev") if which == "dev" else seed_plan()
    checked = 0
    for cluster, routes in _routes(plan).items():
        local = _local_pools(plan, cluster)
        for tier in plan.spec.tiers:
            want = {b.pool: b.weight for b in tier.backends if b.pool in local}
            route = routes.get(f"tier-{tier.name}")
            if not want:
                continue
            primary = next(r for r in route["spec"]["rules"] if OVERFLOW not in _headers(r))
            assert _weights(primary) == want, (cluster, tier.name)
            assert _headers(primary) == dict(tier.match)
            checked += 1
    assert checked >= len(plan.spec.tiers)


def test_dev_stack_routes_seed_000_tiers_exactly():
    routes = _routes(plan_of("dev"))["local"]
    premium = routes["tier-premium"]["spec"]["rules"]
    assert _headers(premium[0]) == {"X-Priority": "high"}
    assert _weights(premium[0]) == {"nvidia-h100": 90, "amd-mi300x": 10}
    standard = routes["tier-standard"]["spec"]["rules"]
    assert _headers(standard[0]) == {"X-Cost-Tier": "standard"}
    assert _weights(standard[0]) == {"amd-mi300x": 80, "nvidia-h100": 20}
    for rules in (premium, standard):
        overflow = rules[1]
        assert _headers(overflow)[OVERFLOW] == "true"
        assert set(_weights(overflow)) == {"tpu-v6e"}


def test_the_tier_without_a_match_is_the_default_route_on_every_cluster():
    for plan in (plan_of("dev"), seed_plan()):
        for cluster, routes in _routes(plan).items():
            defaults = [name for name, r in routes.items() if name.startswith(("tier-", "default"))
                        and any(not _headers(rule) for rule in r["spec"]["rules"])]
            assert defaults, cluster


def test_a_spec_without_a_default_tier_gets_a_generated_default_route(tmp_path):
    fleet = copy.deepcopy(MULTICLOUD_SPEC)
    fleet["tiers"] = [t for t in fleet["tiers"] if t.get("match")]
    routes = _routes(render(fleet, tmp_path, "nodefault"))
    for cluster, by_name in routes.items():
        [rule] = by_name["default"]["spec"]["rules"]
        assert not _headers(rule)


def test_tiers_whose_backends_are_elsewhere_fall_back_to_local_overflow():
    routes = _routes(seed_plan())["gcp-central"]
    for tier in ("premium", "standard"):
        [rule] = routes[f"tier-{tier}"]["spec"]["rules"]
        assert set(_weights(rule)) == {"tpu-v6e"}


def test_every_served_model_is_reachable_through_a_route_on_each_of_its_pools():
    for plan in (plan_of("dev"), seed_plan()):
        routes = _routes(plan)
        pools_of_route = {c: {name: {b["name"] for rule in r["spec"]["rules"] for b in rule["backendRefs"]}
                              for name, r in rs.items()} for c, rs in routes.items()}
        ipools = {c: {o["metadata"]["name"]: o for o in objs}
                  for c, objs in inference_objects(plan, "InferencePool").items()}
        for model in plan.spec.models:
            for pool_name in model.pools:
                cluster = plan.spec.pool(pool_name).cluster
                # The pool's InferencePool exists and selects this model's servers...
                pool = ipools[cluster][pool_name]
                selector = pool["spec"]["selector"]["matchLabels"]
                assert selector[layout.POOL_LABEL] == pool_name
                assert selector[layout.INFERENCE_SERVING] == "true"
                # ... the pool route and the model route both reach it ...
                assert pool_name in pools_of_route[cluster][f"pool-{pool_name}"]
                model_route = routes[cluster][f"model-{model.slug}"]
                [rule] = model_route["spec"]["rules"]
                assert _headers(rule) == {MODEL_HEADER: model.name}
                assert pool_name in _weights(rule)


def test_every_backend_ref_names_an_inference_pool_the_cluster_has():
    for plan in (plan_of("dev"), seed_plan()):
        ipools = {c: {o["metadata"]["name"] for o in objs}
                  for c, objs in inference_objects(plan, "InferencePool").items()}
        for cluster, routes in _routes(plan).items():
            for route in routes.values():
                assert route["spec"]["parentRefs"] == [{
                    "group": "gateway.networking.k8s.io", "kind": "Gateway",
                    "name": layout.GATEWAY_NAME, "namespace": layout.NS_GATEWAY}]
                for rule in route["spec"]["rules"]:
                    assert sum(b["weight"] for b in rule["backendRefs"]) > 0
                    for b in rule["backendRefs"]:
                        assert (b["group"], b["kind"]) == ("inference.networking.k8s.io", "InferencePool")
                        assert b["name"] in ipools[cluster]


def test_pool_routes_strip_their_prefix_for_the_cross_cloud_router():
    plan = seed_plan()
    for cluster, routes in _routes(plan).items():
        for pool in _local_pools(plan, cluster):
            [rule] = routes[f"pool-{pool}"]["spec"]["rules"]
            assert rule["matches"][0]["path"] == {"type": "PathPrefix", "value": f"/pools/{pool}"}
            assert rule["filters"] == [{"type": "URLRewrite", "urlRewrite": {
                "path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/"}}}]
            assert routes[f"pool-{pool}"]["spec"]["hostnames"] == [plan.spec.cluster(cluster).gateway_hostname]


def test_router_pool_endpoints_point_at_the_pool_routes_or_dev_sim_services():
    dev = plan_of("dev")
    config = [r for r in dev.resources if r["type"] == "kubernetes:core/v1:ConfigMap"
              and r["inputs"]["metadata"]["name"] == "fleet-router-config"]
    assert config
    body = config[0]["inputs"]["data"]["config.yaml"]
    services = {o["metadata"]["name"] for o in inference_objects(dev, "Service")["local"]}
    for pool in dev.spec.pools:
        url = f"http://{pool.name}-sim.{layout.NS_INFERENCE}.svc.cluster.local:{layout.VLLM_PORT}"
        assert url in body
        assert f"{pool.name}-sim" in services


def test_a_cluster_the_default_tier_does_not_reach_still_gets_a_default_route(tmp_path):
    fleet = copy.deepcopy(MULTICLOUD_SPEC)
    default = next(t for t in fleet["tiers"] if not t.get("match"))
    default["overflow"] = []  # the TPU cluster is no longer part of the default tier
    routes = _routes(render(fleet, tmp_path, "defaultelsewhere"))
    assert "tier-default" not in routes["gcp-central"]
    [rule] = routes["gcp-central"]["default"]["spec"]["rules"]
    assert not _headers(rule) and set(_weights(rule)) == {"tpu-v6e"}
    assert "default" not in routes["aws-east"]
