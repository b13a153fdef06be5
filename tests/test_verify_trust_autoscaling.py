"""fleet verify, trust (the router trusts each gateway's CA; certificates cover the names served)
and autoscaling (a workload that scales to zero has a signal that exists at zero pods)."""

from __future__ import annotations

import pytest
import yaml

from conftest import SHIPPED_STACKS
from verify_fixtures import add, edit, findings_for, plan_copy, template

pytestmark = pytest.mark.slow

GCP, ROUTER = "gcp-central-k8s", "Deployment/fleet-router/fleet-router"


MULTI_ROUTER = "aws-east-k8s"
CONFIG = ("ConfigMap", "fleet-router", "fleet-router-config")
BUNDLE = ("ConfigMap", "fleet-router", "fleet-router-upstream-ca")


def _mount_ca(doc):
    t = template(doc)
    t.setdefault("volumes", []).append({"name": "gateway-ca", "secret": {"secretName": "gateway-ca"}})
    c = t["containers"][0]
    c.setdefault("volumeMounts", []).append({"name": "gateway-ca", "mountPath": "/etc/fleet-ca", "readOnly": True})
    c.setdefault("env", []).append({"name": "SSL_CERT_FILE", "value": "/etc/fleet-ca/ca.crt"})


def _router_config(change):
    def edit_doc(doc):
        cfg = yaml.safe_load(doc["data"]["config.yaml"])
        change(cfg)
        doc["data"]["config.yaml"] = yaml.safe_dump(cfg, sort_keys=False)
    return edit_doc


def _no_ca_files(cfg):
    for p in cfg["pools"]:
        p.pop("ca_file", None)


def _private_ca(d, cluster=GCP):
    return [f for f in findings_for(d, "trust", ROUTER) if f.cluster == cluster and "private CA" in f.problem]


def test_router_must_trust_the_private_ca_of_the_gateways_it_calls(tmp_path):
    # The shipped plan: each pool's ca_file is its gateway's CA bundle, mounted (issue 17 item 12).
    d = plan_copy("gcp", tmp_path, charts=False)
    assert not findings_for(d, "trust", ROUTER)
    edit(d, GCP, *CONFIG, _router_config(_no_ca_files))
    got = _private_ca(d)
    assert {f.problem.split("(pool ")[1].split(")")[0] for f in got} == {"nvidia-l4", "nvidia-t4", "tpu-v6e"}
    assert "Issuer fleet-gateway-ca" in got[0].problem and "ca_file" in got[0].fix
    # SSL_CERT_FILE to a mounted bundle is the other way the router trusts a CA.
    edit(d, GCP, "Deployment", "fleet-router", "fleet-router", _mount_ca)
    assert not _private_ca(d)


def test_a_ca_file_the_router_does_not_mount_is_a_finding(tmp_path):
    d = plan_copy("gcp", tmp_path, charts=False)
    edit(d, GCP, "Deployment", "fleet-router", "fleet-router", lambda doc: template(doc).update(
        volumes=[v for v in template(doc)["volumes"] if v["name"] != "upstream-ca"]))
    got = findings_for(d, "trust", ROUTER)
    assert got and all("refuses to start" in f.problem for f in got)


def test_a_bundle_without_the_gateways_ca_is_a_finding(tmp_path):
    # multicloud: the router on aws-east trusts each pool's gateway only through its own cluster's
    # CA; a bundle that holds another cluster's CA fails every handshake to that gateway.
    d = plan_copy("multicloud", tmp_path, charts=False)
    assert not findings_for(d, "trust", ROUTER)
    edit(d, MULTI_ROUTER, *BUNDLE,
         lambda doc: doc["data"].update({"azure-east.pem": doc["data"]["gcp-central.pem"]}))
    got = findings_for(d, "trust", ROUTER)
    assert [f.problem.split("(pool ")[1].split(")")[0] for f in got] == ["amdmi300x"]
    assert "does not hold the CA of Issuer fleet-gateway-ca on azure-east-k8s" in got[0].problem


def test_a_publicly_trusted_issuer_needs_no_bundle(tmp_path):
    d = plan_copy("gcp", tmp_path, charts=False)
    edit(d, GCP, *CONFIG, _router_config(_no_ca_files))
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


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_every_shipped_stack_has_no_trust_or_routing_finding(stack, tmp_path):
    # Issue 17 item 12: the router's route attaches to a listener of its own hostname with a
    # certificate for it, and the router trusts every gateway it calls through that cluster's CA.
    d = plan_copy(stack, tmp_path)
    got = [f.line() for f in findings_for(d, "trust") + findings_for(d, "routing")]
    assert got == []
