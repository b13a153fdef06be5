"""HTTPRoutes on each cluster's Gateway: one per served pool, each rule to exactly one InferencePool,
no match on a header nothing sets, and every served model reachable through its pools' routes —
tiers, weights and overflow are the cross-cloud router's (tests/test_routerconfig.py)."""

from __future__ import annotations

from conftest import plan_of
from fleet import layout
from inference_render import inference_objects, seed_plan


def _routes(plan) -> dict[str, dict[str, dict]]:
    return {c: {o["metadata"]["name"]: o for o in objs} for c, objs in inference_objects(plan, "HTTPRoute").items()}


def _local_pools(plan, cluster) -> set[str]:
    return {p.name for p in plan.spec.pools_in(cluster) if plan.spec.models_on(p.name)}


def _plans():
    return [plan_of(s) for s in ("dev", "gcp", "aws", "azure", "multicloud")] + [seed_plan()]


def test_every_rule_sends_to_exactly_one_inference_pool():
    # Istio 1.28.5 pilot/pkg/config/kube/gateway/conversion.go, buildHTTPDestination: the loop over a
    # rule's backendRefs overwrites the InferencePool config each time, so only the last pool's
    # endpoint picker is attached to the rule; a second InferencePool in the same rule would be
    # picked for by a picker that knows none of its pods.
    for plan in _plans():
        for cluster, routes in _routes(plan).items():
            for name, route in routes.items():
                for rule in route["spec"]["rules"]:
                    pools = [b for b in rule["backendRefs"] if b["kind"] == "InferencePool"]
                    assert len(pools) <= 1, f"{cluster}/{name}: {[b['name'] for b in pools]} in one rule"


def test_no_rule_matches_a_header_nothing_sets():
    # X-Gateway-Model-Name is set from the body's `model` only by the Inference Extension's
    # body-based router (config/charts/body-based-routing v1.5.0), which no stack deploys; the
    # router sends its pool choice in the path (/pools/<pool>), never in headers the gateway routes on.
    for plan in _plans():
        assert not [r for r in plan.resources if "body-based-routing" in str(r["inputs"].get("chart", ""))]
        for cluster, routes in _routes(plan).items():
            for name, route in routes.items():
                for rule in route["spec"]["rules"]:
                    for match in rule["matches"]:
                        assert not match.get("headers"), f"{cluster}/{name} matches {match['headers']}"


def test_every_served_model_is_reachable_through_the_route_of_each_of_its_pools():
    for plan in _plans():
        routes = _routes(plan)
        ipools = {c: {o["metadata"]["name"]: o for o in objs}
                  for c, objs in inference_objects(plan, "InferencePool").items()}
        for model in plan.spec.models:
            for pool_name in model.pools:
                cluster = plan.spec.pool(pool_name).cluster
                pool = ipools[cluster][pool_name]
                selector = pool["spec"]["selector"]["matchLabels"]
                assert selector[layout.POOL_LABEL] == pool_name
                assert selector[layout.INFERENCE_SERVING] == "true"
                [rule] = routes[cluster][f"pool-{pool_name}"]["spec"]["rules"]
                assert [b["name"] for b in rule["backendRefs"]] == [pool_name]


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


def test_pool_routes_outlast_the_router_so_the_router_answers_a_slow_backend():
    # The router gives up on a backend after router.request_timeout_s and fails over or answers
    # with its own error; if a pool's HTTPRoute timed out first, Istio would cut the request with a
    # bare 504 the router cannot tell from a dead backend (Gateway API v1.4 HTTPRouteTimeouts:
    # `request` bounds the whole request at the gateway). So every pool route's timeout must be
    # longer than the router's, in every shipped stack.
    for plan in _plans():
        limit = plan.spec.router.request_timeout_s
        for cluster, routes in _routes(plan).items():
            for name, route in routes.items():
                for rule in route["spec"]["rules"]:
                    timeout = rule["timeouts"]["request"]
                    assert timeout.endswith("s") and float(timeout[:-1]) > limit, (cluster, name, timeout, limit)
