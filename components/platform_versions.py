"""Every chart and CRD bundle the platform layer installs, pinned, in one place.

Versions were taken from public install records of each project (the machine that wrote this
cannot reach chart repositories). Bump a version here and nowhere else; `fleet diff` shows the
change and the policy pack's charts-and-crds-pinned rule refuses ranges and moving URLs.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from fleet import layout


@dataclass(frozen=True)
class Chart:
    chart: str
    repo: str
    version: str
    namespace: str


@dataclass(frozen=True)
class Bundle:
    url: str
    version: str
    objects: tuple[tuple[str, str, str], ...] = ()
    """(apiVersion, kind, name) of every object the bundle installs, read from upstream at the tag:
    the offline plan cannot download the bundle, and needs them to give each object one owner."""


# Istio is the gateway class: the Gateway API release is the one its pinned version implements. Istio
# 1.28.5 is built against sigs.k8s.io/gateway-api v1.4.0 (go.mod) and supports Gateway API 1.4; v1.4.1
# is that minor's latest patch. Move both together.
GATEWAY_API_VERSION = "v1.4.1"
# The same release as the endpoint picker image (components/inference_data.EPP_IMAGE, v1.5.0):
# the picker and the InferencePool CRD it reads move together.
INFERENCE_EXTENSION_VERSION = "v1.5.0"
ISTIO_VERSION = "1.28.5"
KSERVE_VERSION = "v0.19.0"
# ROCm/gpu-operator: the chart and every image of the operator's own release move together.
AMD_OPERATOR_VERSION = "v1.4.0"

_CRD = "apiextensions.k8s.io/v1", "CustomResourceDefinition"

BUNDLES = MappingProxyType({
    # kubernetes-sigs/gateway-api v1.5.0 hack/build-install-yaml.sh: standard-install.yaml is every
    # config/crd/standard/gateway*.yaml — eight CRDs and the safe-upgrades admission policy.
    "gateway-api": Bundle(
        f"https://github.com/kubernetes-sigs/gateway-api/releases/download/{GATEWAY_API_VERSION}/standard-install.yaml",
        GATEWAY_API_VERSION,
        tuple((*_CRD, f"{plural}.gateway.networking.k8s.io") for plural in (
            "backendtlspolicies", "gatewayclasses", "gateways", "grpcroutes", "httproutes", "listenersets",
            "referencegrants", "tlsroutes"))
        + (("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "safe-upgrades.gateway.networking.k8s.io"),
           ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding",
            "safe-upgrades.gateway.networking.k8s.io"))),
    # kubernetes-sigs/gateway-api-inference-extension v1.5.0 Makefile: manifests.yaml is
    # `kustomize build config/crd`, whose kustomization lists these four CRDs.
    "inference-extension": Bundle(
        "https://github.com/kubernetes-sigs/gateway-api-inference-extension/releases/download/"
        f"{INFERENCE_EXTENSION_VERSION}/manifests.yaml", INFERENCE_EXTENSION_VERSION,
        ((*_CRD, "inferencepools.inference.networking.k8s.io"),
         (*_CRD, "inferencemodelrewrites.inference.networking.x-k8s.io"),
         (*_CRD, "inferenceobjectives.inference.networking.x-k8s.io"),
         (*_CRD, "inferencepoolimports.inference.networking.x-k8s.io"))),
})

_ISTIO_REPO = "https://istio-release.storage.googleapis.com/charts"
_KSERVE_REPO = "oci://ghcr.io/kserve/charts"

CHARTS = MappingProxyType({
    "cert-manager": Chart("cert-manager", "oci://quay.io/jetstack/charts", "v1.19.1", layout.NS_CERT_MANAGER),
    "istio-base": Chart("base", _ISTIO_REPO, ISTIO_VERSION, layout.NS_ISTIO),
    "istiod": Chart("istiod", _ISTIO_REPO, ISTIO_VERSION, layout.NS_ISTIO),
    "kserve-llmisvc-crd": Chart("kserve-llmisvc-crd", _KSERVE_REPO, KSERVE_VERSION, layout.NS_KSERVE),
    "kserve-llmisvc": Chart("kserve-llmisvc-resources", _KSERVE_REPO, KSERVE_VERSION, layout.NS_KSERVE),
    "keda": Chart("keda", "https://kedacore.github.io/charts", "2.18.0", layout.NS_KEDA),
    "kube-prometheus-stack": Chart("kube-prometheus-stack", "oci://ghcr.io/prometheus-community/charts",
                                   "79.12.0", layout.NS_MONITORING),
    "nvidia-device-plugin": Chart("nvidia-device-plugin", "https://nvidia.github.io/k8s-device-plugin", "0.18.0",
                                  layout.NS_GPU_OPERATORS),
    "dcgm-exporter": Chart("dcgm-exporter", "https://nvidia.github.io/dcgm-exporter/helm-charts", "4.6.0",
                           layout.NS_GPU_OPERATORS),
    "amd-gpu-operator": Chart("gpu-operator-charts", "https://rocm.github.io/gpu-operator", AMD_OPERATOR_VERSION,
                              layout.NS_GPU_OPERATORS),
    # EKS only (components/eks.py installs it with its IRSA role); the image by the cluster's minor.
    "cluster-autoscaler": Chart("cluster-autoscaler", "https://kubernetes.github.io/autoscaler", "9.46.6",
                                "kube-system"),
})

AUTOSCALER_IMAGE_TAGS = MappingProxyType({
    # The cluster-autoscaler minor must match the cluster's Kubernetes minor (kubernetes/autoscaler
    # README, version compatibility); latest patches: tags cluster-autoscaler-1.35.2 and -1.36.1
    # (2026-07-22). One row per minor catalog.KUBERNETES_SUPPORT['aws'] offers.
    "1.35": "v1.35.2",
    "1.36": "v1.36.1",
})

# The amdgpu driver KMM installs on MI300X nodes (DeviceConfig spec.driver.version, a ROCm release):
# the ROCm of the vLLM image (catalog.VENDORS['amd'].vllm_image, rocm7.0.0), into this repository of
# the cluster's registry.
AMD_DRIVER_VERSION = "7.0"
AMD_DRIVER_REPOSITORY = "amdgpu-driver"
# The chart's own default for the exporter (values.yaml deviceConfig.spec.metricsExporter.image, v1.4.0).
AMD_METRICS_EXPORTER_IMAGE = f"docker.io/rocm/device-metrics-exporter:{AMD_OPERATOR_VERSION}"

# Images of the AMD operator's release, by explicit release tag. ROCm/gpu-operator v1.4.0's git tree
# (helm-charts-k8s/values.yaml, charts/kmm/values.yaml) carries `tag: dev` for the operator and
# `latest` for every KMM image; the release pipeline rewrites them (Makefile IMAGE_TAG/KMM_IMAGE_TAG)
# and the chart published for v1.4.0 (gh-pages charts/gpu-operator-charts-v1.4.0.tgz, its image list
# charts/gpu-operator-charts-v1.4.0_meta.yml) names these at v1.4.0. Set as values so the release
# never depends on which build of the chart it got. Check a tag's digest: README, "What the offline
# plan cannot check".
AMD_OPERATOR_IMAGE_TAG = AMD_OPERATOR_VERSION
AMD_KMM_IMAGE_TAG = AMD_OPERATOR_VERSION
AMD_KMM_SIGNER_IMAGE = f"docker.io/rocm/kernel-module-management-signimage:{AMD_KMM_IMAGE_TAG}"
AMD_KMM_WORKER_IMAGE = f"docker.io/rocm/kernel-module-management-worker:{AMD_KMM_IMAGE_TAG}"
# What the operator runs when a DeviceConfig leaves an image out (v1.4.0 source): the device plugin
# `rocm/k8s-device-plugin:latest` (internal/kmmmodule/kmmmodule.go), the node labeller
# `rocm/k8s-device-plugin:labeller-latest` (internal/nodelabeller/nodelabeller.go) and the utils
# container `docker.io/rocm/gpu-operator-utils:latest` (internal/controllers/upgrademgr.go); the
# chart's own default DeviceConfig sets the same `latest` device plugin tags. So our DeviceConfig names
# released ones: the utils image at the operator's release (the chart's values.yaml
# deviceConfig.spec.commonConfig.utilsContainer.image, v1.4.0), and the device plugin at 1.31.0.7,
# the release ROCm/k8s-device-plugin's own chart pins in amd-gpu-helm-0.20.0 (helm/amd-gpu/values.yaml,
# `tag: "1.31.0.7"` / `"labeller-1.31.0.7"`), its last chart release before gpu-operator v1.4.0.
AMD_UTILS_IMAGE = f"docker.io/rocm/gpu-operator-utils:{AMD_OPERATOR_VERSION}"
AMD_DEVICE_PLUGIN_VERSION = "1.31.0.7"
AMD_DEVICE_PLUGIN_IMAGE = f"docker.io/rocm/k8s-device-plugin:{AMD_DEVICE_PLUGIN_VERSION}"
AMD_NODE_LABELLER_IMAGE = f"docker.io/rocm/k8s-device-plugin:labeller-{AMD_DEVICE_PLUGIN_VERSION}"

# Which operators each vendor's nodes need, where the cloud does not install them itself
# (catalog.CLOUD_TRAITS.installs_nvidia_driver). TPUs: GKE runs its own device plugin.
VENDOR_CHARTS = MappingProxyType({
    "nvidia": ("nvidia-device-plugin", "dcgm-exporter"),
    "amd": ("amd-gpu-operator",),  # MI300X: the AMD operator, never the NVIDIA driver (issue 5)
    "google": (),
})
VENDOR_CHARTS_WHEN_CLOUD_MANAGES_DRIVER = MappingProxyType({
    "nvidia": ("dcgm-exporter",),  # GKE installs driver + device plugin; metrics are still ours
})
