"""fleet verify, admission: pods against their namespace's Pod Security level, including Istio's
gateway pods, which istiod creates from its kube-gateway template (istiod 1.28.5)."""

from __future__ import annotations

import pytest

from verify_fixtures import edit, edit_plan, findings_for, plan_copy, template

pytestmark = pytest.mark.slow

GW = "Gateway/fleet-gateway/inference-gateway (Istio gateway pod from istiod values)"


def test_istio_gateway_pods_need_a_seccomp_profile_under_restricted(tmp_path):
    # istiod 1.28.5 files/kube-gateway.yaml: the pod gets seccompProfile only from gateways.seccompProfile.
    d = plan_copy("dev", tmp_path, charts=False)
    edit_plan(d, "local-platform-istiod", lambda i: i["values"].update(gateways={"seccompProfile": {"type": "RuntimeDefault"}}))
    assert not findings_for(d, "admission", GW)
    edit_plan(d, "local-platform-istiod", lambda i: i["values"].pop("gateways"))
    got = findings_for(d, "admission", GW)
    assert got and "restricted" in got[0].problem and "seccompProfile" in got[0].problem
    assert "gateways.seccompProfile" in got[0].fix


def test_our_pod_losing_a_hardening_field_is_rejected(tmp_path):
    d = plan_copy("dev", tmp_path, charts=False)
    name = "Deployment/fleet-router/fleet-router"
    assert not findings_for(d, "admission", name)
    edit(d, "local-k8s", "Deployment", "fleet-router", "fleet-router",
         lambda doc: template(doc)["containers"][0]["securityContext"].pop("allowPrivilegeEscalation"))
    got = findings_for(d, "admission", name)
    assert got and "allowPrivilegeEscalation" in got[0].problem


def test_host_path_is_fine_where_privileged_and_rejected_under_baseline(tmp_path):
    d = plan_copy("dev", tmp_path, charts=False)
    name = "Deployment/fleet-inference/nvidia-h100-epp"

    def host(doc):
        template(doc).setdefault("volumes", []).append({"name": "h", "hostPath": {"path": "/var"}})
    edit(d, "local-k8s", "Deployment", "fleet-inference", "nvidia-h100-epp", host)
    edit(d, "local-k8s", "Namespace", "", "fleet-inference",
         lambda doc: doc["metadata"]["labels"].update({"pod-security.kubernetes.io/enforce": "privileged"}))
    assert not findings_for(d, "admission", name)
    edit(d, "local-k8s", "Namespace", "", "fleet-inference",
         lambda doc: doc["metadata"]["labels"].update({"pod-security.kubernetes.io/enforce": "baseline"}))
    got = findings_for(d, "admission", name)
    assert got and "hostPath volume h" in got[0].problem
