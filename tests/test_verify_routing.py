"""fleet verify, routing: routes attach to a listener, backends exist, pickers answer in the
transport they serve, and every model in the router's config is served behind its route."""

from __future__ import annotations

import pytest
import yaml

from verify_fixtures import add, edit, findings_for, manifest, plan_copy

pytestmark = pytest.mark.slow

GCP = "gcp-central-k8s"


def test_renamed_route_hostname_attaches_to_no_listener(tmp_path):
    d = plan_copy("gcp", tmp_path, charts=False)
    name = "HTTPRoute/fleet-inference/pool-nvidia-t4"
    assert not findings_for(d, "routing", name)
    edit(d, GCP, "HTTPRoute", "fleet-inference", "pool-nvidia-t4",
         lambda doc: doc["spec"].update(hostnames=["renamed.example.com"]))
    got = findings_for(d, "routing", name)
    assert got and "attaches to no listener" in got[0].problem and "renamed.example.com" in got[0].problem
    # ... and the router, which reaches that pool through this route, now reaches nothing there.
    router = findings_for(d, "routing", "ConfigMap/fleet-router/fleet-router-config")
    assert any("nvidia-t4" in f.problem and "no HTTPRoute" in f.problem for f in router)


def test_wildcard_listener_takes_a_route_below_it():
    from fleetctl.verify.routing import hostnames_intersect

    assert hostnames_intersect("*.gw.example.com", ["a.gw.example.com"])
    assert not hostnames_intersect("*.gw.example.com", ["gw.example.com"])
    assert not hostnames_intersect("a.gw.example.com", ["router.example.com"])
    assert hostnames_intersect(None, ["anything.example.com"])


def test_backend_ref_pointing_at_nothing(tmp_path):
    d = plan_copy("gcp", tmp_path, charts=False)
    name = "HTTPRoute/fleet-inference/pool-nvidia-l4"

    def nothing(doc):
        doc["spec"]["rules"][0]["backendRefs"][0]["name"] = "no-such-pool"
    edit(d, GCP, "HTTPRoute", "fleet-inference", "pool-nvidia-l4", nothing)
    got = findings_for(d, "routing", name)
    assert got and "InferencePool fleet-inference/no-such-pool does not exist" in got[0].problem


def test_service_backend_on_a_port_it_does_not_have(tmp_path):
    d = plan_copy("dev", tmp_path, charts=False)

    def port(doc):
        doc["spec"]["rules"][0]["backendRefs"][0]["port"] = 8181
    edit(d, "local-k8s", "HTTPRoute", "fleet-router", "fleet-router", port)
    got = findings_for(d, "routing", "HTTPRoute/fleet-router/fleet-router")
    assert got and "has no port 8181" in got[0].problem


def _dr(name: str) -> dict:
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": name, "namespace": "fleet-inference"},
            "spec": {"host": f"{name}.fleet-inference.svc.cluster.local",
                     "trafficPolicy": {"tls": {"mode": "SIMPLE", "insecureSkipVerify": True}}}}


def test_picker_serving_tls_needs_a_destination_rule(tmp_path):
    # GAIE v1.5.0: the picker serves ext-proc over TLS unless --secure-serving=false; upstream's
    # inferencepool chart v1.5.0 renders a DestinationRule tls SIMPLE for Istio (templates/istio.yaml).
    d = plan_copy("gcp", tmp_path, charts=False)
    pool = "InferencePool/fleet-inference/nvidia-t4"
    for p in (d / "manifests" / GCP).glob("DestinationRule_*nvidia-t4-epp*.yaml"):
        p.unlink()
    add(d, GCP, _dr("nvidia-t4-epp"))
    assert not findings_for(d, "routing", pool)
    manifest(d, GCP, "DestinationRule", "fleet-inference", "nvidia-t4-epp").unlink()
    got = findings_for(d, "routing", pool)
    assert got and "no DestinationRule" in got[0].problem and "trafficPolicy.tls.mode SIMPLE" in got[0].fix

    def plaintext(doc):
        for c in doc["spec"]["template"]["spec"]["containers"]:
            c["args"].append("--secure-serving=false")
    edit(d, GCP, "Deployment", "fleet-inference", "nvidia-t4-epp", plaintext)
    assert not findings_for(d, "routing", pool)  # both sides plaintext now
    add(d, GCP, _dr("nvidia-t4-epp"))
    got = findings_for(d, "routing", "DestinationRule/fleet-inference/nvidia-t4-epp")
    assert got and "--secure-serving=false" in got[0].problem


def test_picker_service_port_that_does_not_exist(tmp_path):
    d = plan_copy("gcp", tmp_path, charts=False)
    edit(d, GCP, "InferencePool", "fleet-inference", "tpu-v6e",
         lambda doc: doc["spec"]["endpointPickerRef"]["port"].update(number=9999))
    got = findings_for(d, "routing", "InferencePool/fleet-inference/tpu-v6e")
    assert got and "has no port 9999" in got[0].problem


def test_router_pool_listing_a_model_its_servers_do_not_serve(tmp_path):
    d = plan_copy("gcp", tmp_path, charts=False)
    name = "ConfigMap/fleet-router/fleet-router-config"
    before = findings_for(d, "routing", name)

    def ghost(doc):
        cfg = yaml.safe_load(doc["data"]["config.yaml"])
        cfg["pools"][0]["models"].append("ghost-model-7b")
        doc["data"]["config.yaml"] = yaml.safe_dump(cfg)
    edit(d, GCP, "ConfigMap", "fleet-router", "fleet-router-config", ghost)
    new = [f for f in findings_for(d, "routing", name) if f not in before]
    assert len(new) == 1 and "lists model ghost-model-7b" in new[0].problem


def test_model_header_route_needs_a_body_based_router(tmp_path):
    d = plan_copy("gcp", tmp_path, charts=False)
    name = "HTTPRoute/fleet-inference/model-llama-3-1-8b"
    # The shipped stacks no longer route on the header (issue 17 item 15): add such a route.
    add(d, GCP, {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "model-llama-3-1-8b", "namespace": "fleet-inference"}, "spec": {"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "inference-gateway", "namespace": "fleet-gateway"}], "hostnames": ["gcp.gw.fleet.example.com"], "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}, "headers": [{"type": "Exact", "name": "X-Gateway-Model-Name", "value": "llama-3.1-8b"}]}], "backendRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "nvidia-l4", "weight": 1}]}]}})
    got = [f for f in findings_for(d, "routing", name) if "body-based router" in f.problem]
    assert got and "never matches" in got[0].problem
    add(d, GCP, {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "bbr", "namespace": "fleet-gateway"},
                 "spec": {"selector": {"matchLabels": {"app": "bbr"}}, "template": {
                     "metadata": {"labels": {"app": "bbr"}},
                     "spec": {"containers": [{"name": "bbr",
                                              "image": "registry.k8s.io/gateway-api-inference-extension/bbr:v1.5.0"}]}}}})
    assert not [f for f in findings_for(d, "routing", name) if "body-based router" in f.problem]


def test_rule_split_across_pools_serving_different_models(tmp_path):
    d = plan_copy("gcp", tmp_path, charts=False)
    name = "HTTPRoute/fleet-inference/tier-default"
    # The shipped stacks no longer split rules across pools (issue 17 item 15): add such a route.
    add(d, GCP, {"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute", "metadata": {"name": "tier-default", "namespace": "fleet-inference"}, "spec": {"parentRefs": [{"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "inference-gateway", "namespace": "fleet-gateway"}], "hostnames": ["gcp.gw.fleet.example.com"], "rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "/v1"}}], "backendRefs": [{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": "nvidia-t4", "weight": 70}]}]}})

    def backends(*pools):
        def change(doc):
            doc["spec"]["rules"][0]["backendRefs"] = [
                {"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": p, "weight": 50} for p in pools]
        return change
    edit(d, GCP, "HTTPRoute", "fleet-inference", "tier-default", backends("nvidia-t4"))
    assert not [f for f in findings_for(d, "routing", name) if "rule 0 splits" in f.problem]
    edit(d, GCP, "HTTPRoute", "fleet-inference", "tier-default", backends("nvidia-t4", "tpu-v6e"))
    got = [f for f in findings_for(d, "routing", name) if "rule 0 splits" in f.problem]
    assert got and any("weighted to tpu-v6e" in f.problem for f in got)
