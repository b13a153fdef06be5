"""The cluster Gateway: HTTPS with a certificate cert-manager issues (seed 003), routes admitted only
from the inference and router namespaces, and the URLs the router and users are given."""

from __future__ import annotations

import pytest

from components import inference_data
from components.gateway import CA_ISSUER, ROUTER_LISTENER, ROUTER_TLS_SECRET
from components.router import UPSTREAM_CA_CONFIGMAP, UPSTREAM_CA_DIR
from conftest import SHIPPED_STACKS, plan_of
from fleet import layout
from fleetctl.plan import SECRET
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
        # The router's own listener takes the router's route only.
        want = {layout.NS_ROUTER} if listener["name"] == ROUTER_LISTENER else {layout.NS_INFERENCE, layout.NS_ROUTER}
        assert set(expr["values"]) == want


def test_gateway_urls_are_exported_per_cluster():
    gateways = plan_of("dev").outputs["gateways"]
    assert gateways == {"local": f"https://{inference_data.GATEWAY_SERVICE}.{layout.NS_GATEWAY}.svc.cluster.local"}


# --- the router's own hostname (issue 17 item 12) -------------------------------------------------

def _manifest(plan, cluster, kind, ns, name):
    return plan.manifests[f"{cluster}-k8s/{kind}_{ns}_{name}.yaml"]


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_the_router_is_served_at_its_own_hostname_with_a_certificate_for_it(stack):
    # Gateway API v1.4.1 (../shared/crds/gateway_httproutes.yaml, HTTPRouteSpec.hostnames): "If a
    # hostname is specified by both the Listener and HTTPRoute, there must be at least one
    # intersecting hostname for the HTTPRoute to be attached to the Listener" — the router's name
    # on the gateway's `https` listener (hostname gcp.gw...) was never accepted. Its own listener
    # serves its name, on 443 like the pools' (gateway_gateways.yaml: "Combination of port,
    # protocol and hostname must be unique"), with a certificate whose dnsNames cover it.
    plan = plan_of(stack)
    spec = plan.spec
    host = spec.router.hostname
    assert host, f"{stack}: the shipped stacks give the router a hostname of its own"
    cluster = spec.router_cluster().name
    gw = _manifest(plan, cluster, "Gateway", layout.NS_GATEWAY, layout.GATEWAY_NAME)
    [lst] = [li for li in gw["spec"]["listeners"] if li.get("hostname") == host]
    assert (lst["name"], lst["protocol"], lst["port"]) == (ROUTER_LISTENER, "HTTPS", layout.GATEWAY_HTTPS_PORT)
    keys = [(li["port"], li["protocol"], li.get("hostname")) for li in gw["spec"]["listeners"]]
    assert len(keys) == len(set(keys))
    [ref] = lst["tls"]["certificateRefs"]
    cert = _manifest(plan, cluster, "Certificate", layout.NS_GATEWAY, ROUTER_TLS_SECRET)
    assert cert["spec"]["secretName"] == ref["name"] and host in cert["spec"]["dnsNames"]
    route = _manifest(plan, cluster, "HTTPRoute", layout.NS_ROUTER, "fleet-router")
    assert route["spec"]["hostnames"] == [host]
    sections = {p.get("sectionName") for p in route["spec"]["parentRefs"]}
    # Only listeners whose certificate covers the name (or kind's plain HTTP), never the pools'.
    assert ROUTER_LISTENER in sections and sections <= {ROUTER_LISTENER, "http"}


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_each_gateway_is_signed_by_its_own_clusters_ca_whose_key_stays_secret(stack):
    # cert-manager v1.19.1 CA issuer (pkg/issuer/ca/setup.go): `spec.ca.secretName` is read from the
    # Issuer's own namespace, must hold tls.crt and tls.key, and tls.crt must be a CA certificate.
    plan = plan_of(stack)
    fingerprints = {}
    for cluster in plan.spec.clusters:
        issuer = _manifest(plan, cluster.name, "Issuer", layout.NS_GATEWAY, CA_ISSUER)
        secret = _manifest(plan, cluster.name, "Secret", layout.NS_GATEWAY, issuer["spec"]["ca"]["secretName"])
        assert secret["type"] == "kubernetes.io/tls"
        assert secret["stringData"] == SECRET  # the CA key never shows in a plan, let alone a file
        for name in (inference_data.GATEWAY_TLS_SECRET, ROUTER_TLS_SECRET):
            key = f"{cluster.name}-k8s/Certificate_{layout.NS_GATEWAY}_{name}.yaml"
            if key in plan.manifests:
                assert plan.manifests[key]["spec"]["issuerRef"] == {
                    "group": "cert-manager.io", "kind": "Issuer", "name": CA_ISSUER}
        ca = plan.find("tls:index/selfSignedCert:SelfSignedCert", f"{cluster.name}-inference-gateway-ca-cert")
        assert ca["inputs"]["isCaCertificate"] is True and "cert_signing" in ca["inputs"]["allowedUses"]
        assert ca["inputs"]["privateKeyPem"] == SECRET
        fingerprints[cluster.name] = issuer["metadata"]["annotations"][layout.CA_SHA256_ANNOTATION]
    assert len(set(fingerprints.values())) == len(fingerprints)  # one CA per cluster, none shared


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_the_router_trusts_each_pools_gateway_through_that_clusters_ca_only(stack):
    import yaml

    plan = plan_of(stack)
    spec = plan.spec
    host = spec.router_cluster().name
    cfg = yaml.safe_load(_manifest(plan, host, "ConfigMap", layout.NS_ROUTER, "fleet-router-config")["data"][
        "config.yaml"])
    https = [p for p in cfg["pools"] if p["url"].startswith("https://")]
    if not https:  # dev: the simulated pools are plain HTTP in-cluster
        assert f"{host}-k8s/ConfigMap_{layout.NS_ROUTER}_{UPSTREAM_CA_CONFIGMAP}.yaml" not in plan.manifests
        return
    bundle = _manifest(plan, host, "ConfigMap", layout.NS_ROUTER, UPSTREAM_CA_CONFIGMAP)["data"]
    pod = _manifest(plan, host, "Deployment", layout.NS_ROUTER, "fleet-router")["spec"]["template"]["spec"]
    assert {"name": "upstream-ca", "mountPath": UPSTREAM_CA_DIR, "readOnly": True} in pod["containers"][0][
        "volumeMounts"]
    assert {"name": "upstream-ca", "configMap": {"name": UPSTREAM_CA_CONFIGMAP}} in pod["volumes"]
    for p in https:
        assert p["ca_file"] == f"{UPSTREAM_CA_DIR}/{p['cluster']}.pem"
        issuer = _manifest(plan, p["cluster"], "Issuer", layout.NS_GATEWAY, CA_ISSUER)
        assert layout.pem_certificate_sha256s(bundle[f"{p['cluster']}.pem"]) == [
            issuer["metadata"]["annotations"][layout.CA_SHA256_ANNOTATION]]
    assert set(bundle) == {f"{p['cluster']}.pem" for p in https}


def test_clients_get_the_ca_that_signs_the_routers_certificate():
    plan = plan_of("gcp")
    issuer = _manifest(plan, plan.spec.router_cluster().name, "Issuer", layout.NS_GATEWAY, CA_ISSUER)
    assert layout.pem_certificate_sha256s(plan.outputs["router_ca_certificate"]) == [
        issuer["metadata"]["annotations"][layout.CA_SHA256_ANNOTATION]]
