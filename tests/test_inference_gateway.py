"""The cluster Gateway: HTTPS with a certificate cert-manager issues (seed 003), routes admitted only
from the inference and router namespaces, and the URLs the router and users are given."""

from __future__ import annotations

from components import inference_data
from conftest import plan_of
from fleet import layout
from inference_render import inference_objects, seed_plan


def _one(plan, cluster, kind, name):
    return next(o for o in inference_objects(plan, kind)[cluster] if o["metadata"]["name"] == name)


def test_gateway_terminates_tls_with_the_cert_manager_certificate():
    for plan in (plan_of("dev"), seed_plan()):
        for cluster in plan.spec.clusters:
            gw = _one(plan, cluster.name, "Gateway", layout.GATEWAY_NAME)
            assert gw["metadata"]["namespace"] == layout.NS_GATEWAY
            https = next(li for li in gw["spec"]["listeners"] if li["protocol"] == "HTTPS")
            assert https["port"] == layout.GATEWAY_HTTPS_PORT
            assert https["tls"]["mode"] == "Terminate"
            [ref] = https["tls"]["certificateRefs"]
            cert = _one(plan, cluster.name, "Certificate", inference_data.GATEWAY_TLS_SECRET)
            assert cert["spec"]["secretName"] == ref["name"]
            assert cert["metadata"]["namespace"] == gw["metadata"]["namespace"]
            if cluster.gateway_hostname:
                assert https["hostname"] == cluster.gateway_hostname
                assert cluster.gateway_hostname in cert["spec"]["dnsNames"]
            issuer = cert["spec"]["issuerRef"]
            issuers = {o["metadata"]["name"] for o in inference_objects(plan, "Issuer")[cluster.name]}
            assert issuer["kind"] == "Issuer" and issuer["name"] in issuers


def test_plain_http_listener_only_on_local_clusters():
    for plan in (plan_of("dev"), seed_plan()):
        for cluster in plan.spec.clusters:
            gw = _one(plan, cluster.name, "Gateway", layout.GATEWAY_NAME)
            protocols = {li["protocol"] for li in gw["spec"]["listeners"]}
            assert ("HTTP" in protocols) == (cluster.cloud == "local")


def test_gateway_admits_routes_only_from_inference_and_router_namespaces():
    gw = _one(plan_of("dev"), "local", "Gateway", layout.GATEWAY_NAME)
    for listener in gw["spec"]["listeners"]:
        ns = listener["allowedRoutes"]["namespaces"]
        assert ns["from"] == "Selector"
        [expr] = ns["selector"]["matchExpressions"]
        assert set(expr["values"]) == {layout.NS_INFERENCE, layout.NS_ROUTER}


def test_gateway_urls_are_exported_per_cluster():
    gateways = plan_of("dev").outputs["gateways"]
    assert gateways == {"local": f"https://{inference_data.GATEWAY_SERVICE}.{layout.NS_GATEWAY}.svc.cluster.local"}
