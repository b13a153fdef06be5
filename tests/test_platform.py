"""The platform layer: installed in seed 003's order (asserted on recorded dependencies), pinned,
and with exactly the vendor operators each cluster's pools need."""

from __future__ import annotations

import re

import pytest

from components import platform_versions as pins
from components.platform import vendor_charts

from conftest import plan_of, needs_charts
from fleet import layout

RELEASE = "kubernetes:helm.sh/v3:Release"
BUNDLE = "kubernetes:yaml/v2:ConfigFile"


def _by_key(plan):
    """Platform releases and bundles by their key (the Pulumi name after '<cluster>-platform-')."""
    out = {}
    for r in plan.resources:
        if r["type"] in (RELEASE, BUNDLE) and "-platform-" in r["name"]:
            out[r["name"].split("-platform-", 1)[1]] = r
    return out


def _depends(plan, a: str, b: str) -> bool:
    """Whether `a` depends on `b`, directly or through other resources."""
    res = _by_key(plan)
    by_urn = {r["urn"]: r for r in plan.resources}
    seen, todo = set(), [res[a]["urn"]]
    while todo:
        urn = todo.pop()
        for dep in by_urn[urn]["dependencies"]:
            if dep == res[b]["urn"]:
                return True
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return False


@pytest.mark.parametrize("later,earlier", [
    ("inference-extension-crds", "gateway-api-crds"),
    ("istio-base", "gateway-api-crds"),
    ("istiod", "istio-base"),
    ("istiod", "inference-extension-crds"),
    ("kserve-llmisvc-crd", "cert-manager"),
    ("kserve-llmisvc", "cert-manager"),
    ("kserve-llmisvc", "kserve-llmisvc-crd"),
    ("kserve-llmisvc", "gateway-api-crds"),
    ("kserve-llmisvc", "inference-extension-crds"),
    ("kserve-llmisvc", "istiod"),
    ("keda", "kube-prometheus-stack"),
])
def test_install_order_is_explicit_in_the_recorded_dependencies(later, earlier):
    plan = plan_of("dev")
    assert _depends(plan, later, earlier), f"{later} does not wait for {earlier}"
    assert not _depends(plan, earlier, later)


def test_every_release_waits_for_its_namespace_and_never_creates_it():
    plan = plan_of("dev")
    names = {r["urn"]: r for r in plan.resources}
    for key, r in _by_key(plan).items():
        if r["type"] != RELEASE:
            continue
        ns = r["inputs"]["namespace"]
        assert r["inputs"].get("createNamespace") in (None, False), key
        assert any(names[d]["type"] == "kubernetes:core/v1:Namespace" and names[d]["inputs"]["metadata"]["name"] == ns
                   for d in r["dependencies"]), f"{key} does not wait for namespace {ns}"


def test_every_chart_and_bundle_is_pinned_to_an_exact_version():
    plan = plan_of("dev")
    for key, r in _by_key(plan).items():
        if r["type"] == RELEASE:
            assert re.fullmatch(r"v?\d+\.\d+\.\d+", r["inputs"]["version"]), key
            assert r["inputs"]["version"] == pins.CHARTS[key].version
        else:
            assert re.search(r"/v\d+\.\d+\.\d+/", r["inputs"]["file"]), key


@needs_charts
def test_istiod_enables_the_inference_extension():
    # What the istiod 1.28.5 chart renders from our values: the flag in istiod's container env (it
    # was set as `pilot.env`, which the chart does not read, so the rendered env lacked it).
    (rr,) = [rr for rr in plan_of("dev").releases if rr.release == "istiod"]
    (dep,) = [o["object"] for o in rr.objects if o["object"]["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["ENABLE_GATEWAY_API_INFERENCE_EXTENSION"] == "true"


def test_istio_gateway_pods_pass_the_restricted_level_of_their_namespace():
    # istiod 1.28.5 (manifests/charts/istio-control/istio-discovery): files/kube-gateway.yaml, the
    # template of every Gateway's Deployment, sets the pod's seccompProfile only from
    # `gateways.seccompProfile` (values.yaml: `{}`); its containers drop ALL, run as 1337, non-root,
    # no privilege escalation. PSA `restricted` also requires seccompProfile RuntimeDefault/Localhost.
    for stack in ("dev", "aws", "multicloud"):
        plan = plan_of(stack)
        levels = {o["metadata"]["name"]: o["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
                  for o in plan.objects("Namespace")}
        assert levels[layout.NS_GATEWAY] == "restricted"
        for r in plan.resources:
            if r["type"] == RELEASE and r["name"].endswith("-platform-istiod"):
                profile = r["inputs"]["values"].get("gateways", {}).get("seccompProfile", {})
                assert profile.get("type") in ("RuntimeDefault", "Localhost"), r["name"]


def test_model_server_namespaces_get_no_istio_sidecars():
    ns = {o["metadata"]["name"]: o["metadata"]["labels"] for o in plan_of("dev").objects("Namespace")}
    assert ns["fleet-inference"]["istio-injection"] == "disabled"


def test_the_picker_and_the_inferencepool_crd_move_together():
    from components.inference_data import EPP_IMAGE

    assert f":{pins.INFERENCE_EXTENSION_VERSION}@" in EPP_IMAGE


@pytest.mark.parametrize("cloud,vendors,expected", [
    ("local", {"nvidia", "amd", "google"}, []),  # simulated pools need no drivers
    ("gcp", {"nvidia", "google"}, ["dcgm-exporter"]),  # GKE installs driver + device plugin
    ("aws", {"nvidia"}, ["nvidia-device-plugin", "dcgm-exporter"]),
    ("azure", {"nvidia", "amd"}, ["amd-gpu-operator", "nvidia-device-plugin", "dcgm-exporter"]),
    ("azure", {"amd"}, ["amd-gpu-operator"]),  # MI300X: the AMD operator, never the NVIDIA driver
])
def test_vendor_operators_follow_the_pools_and_the_cloud(cloud, vendors, expected):
    assert vendor_charts(cloud, frozenset(vendors)) == expected


def test_disabled_parts_are_not_installed(tmp_path):
    import yaml

    from fleetctl.plan import ROOT, run_plan

    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["inference-fleet:fleet"]["platform"] = {"kserve": False, "keda": False}
    path = tmp_path / "Pulumi.lean.yaml"
    path.write_text(yaml.safe_dump(doc))
    keys = set(_by_key(run_plan("lean", path)))
    assert "keda" not in keys and not any(k.startswith("kserve") for k in keys)
    assert {"cert-manager", "istiod", "kube-prometheus-stack"} <= keys


def test_kserve_leaves_the_inference_extension_crds_to_the_bundle_and_points_at_our_gateway():
    # kserve-llmisvc-resources v0.19.0 (kserve/kserve charts/kserve-llmisvc-resources, values.yaml):
    # `kserve.llmisvc.createGIECRDs` defaults to true and templates/llmisvc/resources.yaml then renders
    # the InferencePool/InferenceObjective/InferencePoolImport/InferenceModelRewrite CRDs that the
    # GAIE v1.5.0 bundle (manifests.yaml) has already applied: Helm refuses to take them over.
    # The controller's gateway is `kserve.controller.gateway.ingressGateway.kserveGateway`
    # ("<ns>/<name>", files/common/configmap-patch.yaml -> ingress.kserveIngressGateway, which the
    # llmisvc controller's NewConfig splits into IngressGatewayNamespace/Name); values.yaml has no
    # `kserve.llmisvc.controller.gateway`.
    for stack in ("dev", "multicloud"):
        plan = plan_of(stack)
        releases = [r for r in plan.resources if r["type"] == RELEASE and r["name"].endswith("-platform-kserve-llmisvc")]
        assert releases
        for r in releases:
            cluster = r["name"].split("-platform-")[0]
            assert any(b["type"] == BUNDLE and b["name"] == f"{cluster}-platform-inference-extension-crds"
                       for b in plan.resources), "the Inference Extension CRDs come from the bundle"
            values = r["inputs"]["values"]["kserve"]
            assert values["llmisvc"]["createGIECRDs"] is False, r["name"]
            assert "gateway" not in values["llmisvc"].get("controller", {}), r["name"]
            assert values["controller"]["gateway"]["ingressGateway"]["kserveGateway"] == \
                f"{layout.NS_GATEWAY}/{layout.GATEWAY_NAME}"


def test_the_amd_operator_waits_for_cert_manager():
    # ROCm gpu-operator v1.4.0 bundles KMM v1.0.0 (helm-charts-k8s/charts/kmm): templates/
    # selfsigned-issuer.yaml and serving-cert.yaml are a cert-manager Issuer and Certificate for
    # KMM's webhook, so the release fails before cert-manager's CRDs exist.
    for stack in ("azure", "multicloud"):
        plan = plan_of(stack)
        by_urn = {r["urn"]: r for r in plan.resources}
        amd = [r for r in plan.resources if r["type"] == RELEASE and r["name"].endswith("-platform-amd-gpu-operator")]
        assert amd
        for r in amd:
            cluster = r["name"].split("-platform-")[0]
            assert f"{cluster}-platform-cert-manager" in {by_urn[d]["name"] for d in r["dependencies"]}, r["name"]


def test_the_gateway_api_bundle_is_a_release_the_pinned_istio_implements():
    # istio/istio 1.28.5 go.mod: sigs.k8s.io/gateway-api v1.4.0 — Istio 1.28 supports Gateway API 1.4;
    # the v1.5 CRDs add versions and fields its controller does not know.
    istio_minor = tuple(int(x) for x in pins.ISTIO_VERSION.split(".")[:2])
    assert istio_minor == (1, 28), "re-check the Gateway API release Istio supports when Istio moves"
    major, minor, _ = (int(x) for x in pins.GATEWAY_API_VERSION.lstrip("v").split("."))
    assert (major, minor) == (1, 4)
    [bundle] = [r for r in plan_of("dev").resources if r["type"] == BUNDLE and r["name"].endswith("gateway-api-crds")]
    assert f"/{pins.GATEWAY_API_VERSION}/standard-install.yaml" in bundle["inputs"]["file"]
