"""fleet verify, trust (the router trusts each gateway's CA; certificates cover the names served)
and autoscaling (a workload that scales to zero has a signal that exists at zero pods)."""

from __future__ import annotations

import pytest

from verify_fixtures import add, edit, findings_for, plan_copy, template

pytestmark = pytest.mark.slow

GCP, ROUTER = "gcp-central-k8s", "Deployment/fleet-router/fleet-router"


def _mount_ca(doc):
    t = template(doc)
    t.setdefault("volumes", []).append({"name": "gateway-ca", "secret": {"secretName": "gateway-ca"}})
    c = t["containers"][0]
    c.setdefault("volumeMounts", []).append({"name": "gateway-ca", "mountPath": "/etc/fleet-ca", "readOnly": True})
    c.setdefault("env", []).append({"name": "SSL_CERT_FILE", "value": "/etc/fleet-ca/ca.crt"})


def _no_ca(doc):
    c = template(doc)["containers"][0]
    c["env"] = [e for e in c.get("env") or [] if e["name"] != "SSL_CERT_FILE"]


def test_router_must_trust_the_private_ca_of_the_gateways_it_calls(tmp_path):
    d = plan_copy("gcp", tmp_path, charts=False)
    edit(d, GCP, "Deployment", "fleet-router", "fleet-router", _no_ca)
    edit(d, GCP, "Deployment", "fleet-router", "fleet-router", _mount_ca)
    assert not [f for f in findings_for(d, "trust", ROUTER) if "private CA" in f.problem]
    edit(d, GCP, "Deployment", "fleet-router", "fleet-router", _no_ca)
    got = [f for f in findings_for(d, "trust", ROUTER) if "private CA" in f.problem]
    assert got and "Issuer fleet-gateway-ca" in got[0].problem and "SSL_CERT_FILE" in got[0].fix


def test_a_publicly_trusted_issuer_needs_no_bundle(tmp_path):
    d = plan_copy("gcp", tmp_path, charts=False)
    edit(d, GCP, "Deployment", "fleet-router", "fleet-router", _no_ca)
    add(d, GCP, {"apiVersion": "cert-manager.io/v1", "kind": "ClusterIssuer", "metadata": {"name": "letsencrypt"},
                 "spec": {"acme": {"server": "https://acme-v02.api.letsencrypt.org/directory",
                                   "privateKeySecretRef": {"name": "le"}, "solvers": [{"http01": {}}]}}})
    edit(d, GCP, "Certificate", "fleet-gateway", "inference-gateway-tls",
         lambda doc: doc["spec"].update(issuerRef={"group": "cert-manager.io", "kind": "ClusterIssuer",
                                                   "name": "letsencrypt"}))
    assert not [f for f in findings_for(d, "trust", ROUTER) if "private CA" in f.problem]


def test_certificate_must_cover_the_listener_hostname(tmp_path):
    d = plan_copy("gcp", tmp_path, charts=False)
    cert = "Certificate/fleet-gateway/inference-gateway-tls"
    assert not findings_for(d, "trust", cert)
    edit(d, GCP, "Certificate", "fleet-gateway", "inference-gateway-tls",
         lambda doc: doc["spec"].update(dnsNames=["other.example.com"]))
    got = findings_for(d, "trust", cert)
    assert got and "do not cover it" in got[0].problem


def test_scale_to_zero_on_metrics_of_its_own_pods_never_wakes_up(tmp_path):
    d = plan_copy("gcp", tmp_path, charts=False)
    so = "ScaledObject/fleet-inference/qwen2-5-3b-nvidia-t4"

    def triggers(doc, queries):
        doc["spec"]["minReplicaCount"] = 0
        doc["spec"]["triggers"] = [{"type": "prometheus", "name": f"t{i}", "metadata": {
            "serverAddress": "http://prometheus-operated.monitoring.svc.cluster.local:9090", "query": q,
            "threshold": "1"}} for i, q in enumerate(queries)]
    edit(d, GCP, "ScaledObject", "fleet-inference", "qwen2-5-3b-nvidia-t4",
         lambda doc: triggers(doc, ['sum(rate(istio_requests_total{destination_service_name="x"}[1m])) or vector(0)']))
    assert not findings_for(d, "autoscaling", so)
    edit(d, GCP, "ScaledObject", "fleet-inference", "qwen2-5-3b-nvidia-t4",
         lambda doc: triggers(doc, ['sum(vllm:num_requests_waiting{pool="nvidia-t4"}) or vector(0)',
                                    'sum(rate(inference_objective_request_total{pool="nvidia-t4"}[2m]))']))
    got = findings_for(d, "autoscaling", so)
    assert got and "vllm:num_requests_waiting" in got[0].problem and "inference_objective_request_total" in got[0].problem
    edit(d, GCP, "ScaledObject", "fleet-inference", "qwen2-5-3b-nvidia-t4",
         lambda doc: doc["spec"].update(minReplicaCount=1))
    assert not findings_for(d, "autoscaling", so)
