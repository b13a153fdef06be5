"""The platform layer, in seed 003's order, on any cluster's Kubernetes provider.

    Gateway API CRDs -> Inference Extension CRDs (InferencePool v1)
    cert-manager (with its CRDs)
    Istio base -> istiod (Gateway API inference extension on; no sidecars for model servers)
    KServe LLMInferenceService CRDs -> LLMInferenceService controller
    KEDA, the Prometheus Operator stack, vendor device plugins / operators and exporters

The order is explicit ``depends_on``, so `pulumi up` can never install KServe before its
webhooks have cert-manager, and it is recorded in the plan (tests/test_platform.py). Versions
live in components/platform_versions.py; values a user sets come from the fleet spec.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import platform_versions as pins
from components.namespaces import Namespaces
from components.driver_credentials import SECRET as DRIVER_SECRET, DriverCredentials
from components.registry import RegistryAccess
from fleet import catalog, layout
from fleet.clusterplan import ClusterPlan
from fleet.spec import PlatformSpec


def node_daemon_tolerations(vendor: str, cloud: str) -> list[dict[str, str]]:
    """What a per-node daemon of ``vendor``'s pools (device plugin, exporter, driver) must tolerate
    there: the vendor taint and, where the cloud taints spot nodes itself (AKS), the spot taint."""
    out = [{"key": t["key"], "operator": "Equal", "value": t["value"], "effect": t["effect"]}
           for t in catalog.pool_taints(vendor)]
    spot = catalog.CLOUD_TRAITS[cloud].spot_taint
    if spot is not None:
        out.append({"key": spot[0], "operator": "Equal", "value": spot[1], "effect": spot[2]})
    return out


def vendor_affinity(vendor: str) -> dict[str, Any]:
    """Required node affinity for ``vendor``'s pools, on the catalog's label (never on NFD's)."""
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": f"{catalog.LABEL_PREFIX}/vendor", "operator": "In", "values": [vendor]}]}]}}}


_CERT_MANAGER_REQUESTS = {"requests": {"cpu": "10m", "memory": "32Mi"}}
_NO_CAPABILITIES = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
_CONTROLLER_CONTAINER = {**_NO_CAPABILITIES, "seccompProfile": {"type": "RuntimeDefault"}}


def _values(key: str, platform: PlatformSpec, cloud: str) -> dict[str, Any]:
    """Chart values, by chart: only what differs from the chart's defaults, with the reason."""
    return {
        # cert-manager v1.19.1 values.yaml leaves every component's resources unset and gives
        # requests of 10m CPU / 32Mi as its example for each (controller, webhook, cainjector,
        # startupapicheck): requests so the scheduler reserves them (checkov CKV_K8S_10/12); limits
        # are exempted (components/chart_exemptions.py).
        "cert-manager": {"crds": {"enabled": True}, "prometheus": {"enabled": platform.monitoring},
                         "resources": _CERT_MANAGER_REQUESTS, "webhook": {"resources": _CERT_MANAGER_REQUESTS},
                         "cainjector": {"resources": _CERT_MANAGER_REQUESTS},
                         "startupapicheck": {"resources": _CERT_MANAGER_REQUESTS}},
        # Seed 003: istiod with the inference extension; sidecars only where a namespace asks.
        # Gateway pods run in the `restricted` namespace NS_GATEWAY (components/namespaces.py). istiod
        # 1.28.5 files/kube-gateway.yaml sets a pod seccompProfile only from `gateways.seccompProfile`
        # (values.yaml default {}), and PSA `restricted` rejects a pod without one. istiod's container
        # env is `env` (1.28.5 templates/deployment.yaml ranges over .Values.env); the chart has no
        # `pilot` key (that was the old umbrella chart's), so `pilot.env` set nothing.
        # istiod's own container gets the same profile through `seccompProfile` (values.yaml default
        # {}; templates/deployment.yaml writes it into the discovery container's securityContext).
        "istiod": {"env": {"ENABLE_GATEWAY_API_INFERENCE_EXTENSION": "true"},
                   "sidecarInjectorWebhook": {"enableNamespacesByDefault": False},
                   "gateways": {"seccompProfile": {"type": "RuntimeDefault"}},
                   "seccompProfile": {"type": "RuntimeDefault"}},
        # kserve-llmisvc-resources v0.19.0 (values.yaml, templates/llmisvc/resources.yaml): with
        # `kserve.llmisvc.createGIECRDs` true (its default) the release renders the Inference
        # Extension CRDs, which the inference-extension bundle already owns; Helm would refuse to
        # adopt them. The LLMInferenceService controller's Gateway is the ingress config's
        # `kserveIngressGateway` ("<namespace>/<name>", files/common/configmap-patch.yaml, read by
        # the llmisvc controller's NewConfig); the chart has no `kserve.llmisvc.controller.gateway`.
        "kserve-llmisvc": {"kserve": {
            "llmisvc": {"createGIECRDs": False},
            "controller": {"gateway": {"ingressGateway": {
                "kserveGateway": f"{layout.NS_GATEWAY}/{layout.GATEWAY_NAME}"}}},
        }},
        "keda": {"prometheus": {"operator": {"enabled": platform.monitoring}}},
        # The Grafana sidecar loads dashboards from ConfigMaps labelled grafana_dashboard=1
        # (components/monitoring.py); monitors are selected across namespaces.
        # The DeviceConfig is the program's (Platform._amd_operator), not the chart's default one.
        # Images by release tag, not the `dev`/`latest` of the chart's git tree (platform_versions).
        # The containers get what kubebuilder's scaffold gives a controller: no capabilities and the
        # runtime's default seccomp profile (the chart sets allowPrivilegeEscalation only, through
        # containerSecurityContext values it writes whole: templates/deployment.yaml,
        # charts/kmm/templates/deployment.yaml).
        # Node Feature Discovery is off (Chart.yaml: condition node-feature-discovery.enabled, and the
        # NodeFeatureRules of templates/gpu-nfd-default-rule.yaml / nic-nfd-default-rule.yaml behind
        # installdefaultNFDRule): nothing here reads NFD labels — the program's DeviceConfig selects on
        # the catalog's vendor label — and its worker is a DaemonSet of eight hostPath mounts.
        "amd-gpu-operator": {
            "crds": {"defaultCR": {"install": False}},
            "node-feature-discovery": {"enabled": False}, "installdefaultNFDRule": False,
            "controllerManager": {"manager": {"image": {"tag": pins.AMD_OPERATOR_IMAGE_TAG},
                                              "containerSecurityContext": _CONTROLLER_CONTAINER}},
            "kmm": {"controller": {"manager": {
                        "image": {"tag": pins.AMD_KMM_IMAGE_TAG}, "containerSecurityContext": _CONTROLLER_CONTAINER,
                        "env": {"relatedImageSign": pins.AMD_KMM_SIGNER_IMAGE,
                                "relatedImageWorker": pins.AMD_KMM_WORKER_IMAGE}}},
                    "webhookServer": {"webhookServer": {"image": {"tag": pins.AMD_KMM_IMAGE_TAG},
                                                        "containerSecurityContext": _CONTROLLER_CONTAINER}}},
        },
        # Requests are each subchart's documented example (values.yaml `resources: {}` comments:
        # grafana 10.3.0 100m/128Mi and its sidecars 50m/50Mi, prometheus-node-exporter 4.49.2
        # 100m/30Mi). node-exporter 4.49.2 sets only readOnlyRootFilesystem on its container and no
        # seccomp profile; it reads /proc and /sys as UID 65534 and the chart adds it no capability
        # (values.yaml only comments an example adding SYS_TIME), so dropping ALL takes nothing away.
        "kube-prometheus-stack": {
            "grafana": {"resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                        "sidecar": {"resources": {"requests": {"cpu": "50m", "memory": "50Mi"}},
                                    "dashboards": {"enabled": True, "label": "grafana_dashboard",
                                                   "searchNamespace": "ALL"}}},
            "prometheus-node-exporter": {
                "resources": {"requests": {"cpu": "100m", "memory": "30Mi"}},
                "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                "containerSecurityContext": _NO_CAPABILITIES},
            "prometheus": {"prometheusSpec": {"serviceMonitorSelectorNilUsesHelmValues": False,
                                              "podMonitorSelectorNilUsesHelmValues": False,
                                              "ruleSelectorNilUsesHelmValues": False}},
        },
        # nvidia-device-plugin 0.18.0 values.yaml: the default `affinity` requires an NFD label
        # (feature.node.kubernetes.io/pci-10de.present / cpu-model.vendor_id) or
        # nvidia.com/gpu.present=true. NFD is off (`nfd.enabled`) and no pool carries that label, so
        # the affinity is replaced (Helm replaces lists: nodeSelectorTerms become ours). Its default
        # tolerations (nvidia.com/gpu Exists, CriticalAddonsOnly) are replaced too: ours add AKS's spot taint.
        # Its pods (the plugin and the MPS daemon) take `podSecurityContext` whole (values.yaml {},
        # templates/daemonset-*.yml): the runtime's default seccomp profile.
        "nvidia-device-plugin": {"nodeSelector": {f"{catalog.LABEL_PREFIX}/vendor": "nvidia"},
                                 "podSecurityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                                 "affinity": vendor_affinity("nvidia"),
                                 "tolerations": node_daemon_tolerations("nvidia", cloud)},
        # dcgm-exporter 4.6.0 values.yaml: `resources: {}` with requests of 100m / 128Mi as its example.
        "dcgm-exporter": {"nodeSelector": {f"{catalog.LABEL_PREFIX}/vendor": "nvidia"},
                          "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                          "tolerations": node_daemon_tolerations("nvidia", cloud),
                          "serviceMonitor": {"enabled": False}},  # components/monitoring.py owns monitors
    }.get(key, {})


AMD_DRIVER_SECRET = DRIVER_SECRET
AMD_DEVICE_CONFIG = "mi300x"


def amd_device_config_spec(cloud: str, driver_image: Any) -> dict[str, Any]:
    """The DeviceConfig (amd.com/v1alpha1) that gives MI300X nodes their driver and device plugin.

    ROCm gpu-operator v1.4.0 helm-charts-k8s/values.yaml: the chart's default DeviceConfig selects
    ``feature.node.kubernetes.io/amd-gpu: "true"`` (an NFD label), has ``driver.enable: false`` (use
    an inbox driver) and tolerates nothing for the driver, device plugin, node labeller or exporter.
    Helm merges maps, so our selector could only be added to NFD's, not replace it; the program
    declares its own DeviceConfig instead (chart value ``crds.defaultCR.install: false``). Our pools
    carry the catalog's vendor label and taint (and AKS's spot taint) and no amdgpu driver (AKS
    installs none for MI300X: catalog.node_image), so: select on our label, let KMM install the
    out-of-tree driver at the ROCm release of the vLLM image, tolerate the pools' taints. KMM builds
    the driver image for the node's kernel when none exists and pushes it to ``driver.image`` with
    ``driver.imageRegistrySecret`` (docs/drivers/installation.md, v1.4.0).
    """
    tolerations = node_daemon_tolerations("amd", cloud)
    return {
        "selector": {f"{catalog.LABEL_PREFIX}/vendor": "amd"},
        "driver": {"enable": True, "version": pins.AMD_DRIVER_VERSION, "image": driver_image,
                   "imageRegistrySecret": {"name": AMD_DRIVER_SECRET}, "tolerations": tolerations},
        # Every image named: left out, the operator runs `latest` ones (platform_versions).
        "commonConfig": {"utilsContainer": {"image": pins.AMD_UTILS_IMAGE}},
        "devicePlugin": {"devicePluginImage": pins.AMD_DEVICE_PLUGIN_IMAGE,
                         "nodeLabellerImage": pins.AMD_NODE_LABELLER_IMAGE,
                         "enableNodeLabeller": True, "devicePluginTolerations": tolerations,
                         "nodeLabellerTolerations": tolerations},
        "metricsExporter": {"enable": True, "image": pins.AMD_METRICS_EXPORTER_IMAGE, "tolerations": tolerations},
    }


CRD_TYPE = "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition"


def keep_crds(args: pulumi.ResourceTransformArgs) -> pulumi.ResourceTransformResult | None:
    """A cloud cluster's CustomResourceDefinitions (every one a CRD bundle installs) are protected and
    retained on delete.

    Deleting a CRD deletes every object of its kinds (Kubernetes docs, "Delete a
    CustomResourceDefinition": the API server deletes all custom objects stored in it), so removing the
    bundle's ConfigFile would take every Gateway, HTTPRoute and InferencePool of the cluster with it.
    ``protect`` stops such a change at the engine (pulumi step_generator.go "marked for protection");
    ``retain_on_delete`` leaves the CRDs in the cluster should they go from the state all the same
    (after ``pulumi state unprotect``): the engine then skips the provider's Delete. A rename needs an
    alias: pulumi-kubernetes >= 4.29 creates with a client-side create, so a CRD under a new URN fails
    with AlreadyExists before anything is deleted. This is a transform, since the ConfigFile is a
    packaged component whose children the kubernetes provider registers itself: ``transforms`` reach
    them, ``transformations`` do not (Pulumi docs, "Resource option: transformations"). The bundle's
    other objects (Gateway API's admission policy) keep the defaults."""
    if args.type_ != CRD_TYPE:
        return None
    return pulumi.ResourceTransformResult(
        props=args.props,
        opts=pulumi.ResourceOptions.merge(args.opts, pulumi.ResourceOptions(protect=True, retain_on_delete=True)))


def vendor_charts(cloud: str, vendors: frozenset[str]) -> list[str]:
    """The device plugins, operators and exporters this cluster's pools need."""
    if cloud == "local":
        return []  # dev pools are simulated: no accelerators, no drivers
    managed = catalog.CLOUD_TRAITS[cloud].installs_nvidia_driver
    out: list[str] = []
    for vendor in sorted(vendors):
        table = pins.VENDOR_CHARTS_WHEN_CLOUD_MANAGES_DRIVER if managed else pins.VENDOR_CHARTS
        out += [c for c in table.get(vendor, pins.VENDOR_CHARTS[vendor]) if c not in out]
    return out


@dataclass
class PlatformArgs:
    plan: ClusterPlan
    namespaces: Namespaces
    registry: RegistryAccess | None = None
    """The cluster's registry: where KMM pushes and nodes pull the AMD driver image it builds."""
    tools_image: pulumi.Input[str] | None = None
    """The router image in this cluster's registry: it also ships the in-cluster jobs (fleet_ops)."""


class Platform(pulumi.ComponentResource):
    """cert-manager, Gateway API + Inference Extension CRDs, Istio, KServe, KEDA, monitoring and
    vendor operators, each pinned and in order. Disabled parts are ``None``."""

    def __init__(self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:platform:Platform", name, None, opts)
        p, ns = args.plan.platform, args.namespaces.resources
        cluster = args.plan.cluster
        self.gateway_class_name = "istio"

        def release(key: str, *after: pulumi.Resource | None, values: dict[str, Any] | None = None
                    ) -> k8s.helm.v3.Release:
            # helm.v3.Release, not helm.v4.Chart: Release installs with Helm's own engine (hooks such
            # as cert-manager's startupapicheck and the AMD operator's pre/post hooks, `crds/`,
            # atomic rollback, a release `helm list` shows), while v4 Chart is `helm template` plus
            # Pulumi-managed objects without hook semantics. The objects a Release installs are
            # invisible to a real `pulumi preview`, so the offline plan renders each one with the same
            # Helm engine and checks them (fleetctl/charts.py).
            pin = pins.CHARTS[key]
            oci = pin.repo.startswith("oci://")
            return k8s.helm.v3.Release(
                f"{name}-{key}",
                name=key,
                chart=f"{pin.repo}/{pin.chart}" if oci else pin.chart,
                version=pin.version,
                repository_opts=None if oci else k8s.helm.v3.RepositoryOptsArgs(repo=pin.repo),
                namespace=pin.namespace,
                create_namespace=False,  # components/namespaces.py owns namespaces (labels, policies)
                atomic=True,
                timeout=600,
                values=values if values is not None else _values(key, p, cluster.cloud),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[ns[pin.namespace], *[a for a in after if a]]),
            )

        # A cloud cluster's CRDs are kept (keep_crds); a local one (kind, k3d) is disposable, and
        # `pulumi destroy` of it must go through (the e2e workflow tears down that way).
        keep = [keep_crds] if cluster.cloud != "local" else None

        def bundle(key: str, *after: pulumi.Resource) -> k8s.yaml.v2.ConfigFile:
            return k8s.yaml.v2.ConfigFile(f"{name}-{key}-crds", file=pins.BUNDLES[key].url,
                                          opts=pulumi.ResourceOptions(parent=self, depends_on=list(after),
                                                                      transforms=keep))

        gateway_api = bundle("gateway-api")
        inference_ext = bundle("inference-extension", gateway_api)
        self.crds = [gateway_api, inference_ext]

        self.cert_manager = release("cert-manager") if p.cert_manager else None
        self.istio = None
        if p.istio:
            base = release("istio-base", gateway_api)
            self.istio = release("istiod", base, gateway_api, inference_ext)
        self.kserve = None
        if p.kserve:
            # LLMInferenceService only: kserve-llmisvc-crd, as KServe's own LLMISvc install does (v0.19.0
            # hack/setup/quick-install/llmisvc-full-install-helm.sh adds kserve-crd only with
            # ENABLE_KSERVE). kserve-crd (InferenceService & co.) ships the same ClusterStorageContainer
            # CRD as kserve-llmisvc-crd, so a second release of it could never own it.
            llmisvc_crd = release("kserve-llmisvc-crd", self.cert_manager)
            self.kserve = release("kserve-llmisvc", llmisvc_crd, self.cert_manager, gateway_api,
                                  inference_ext, self.istio)
        self.monitoring = release("kube-prometheus-stack") if p.monitoring else None
        self.keda = release("keda", self.monitoring) if p.keda else None
        self.vendor_operators = {}
        self.amd_device_config: k8s.apiextensions.CustomResource | None = None
        for key in vendor_charts(cluster.cloud, args.plan.vendors):
            if key == "amd-gpu-operator":
                self.vendor_operators[key] = self._amd_operator(name, args, release)
            else:
                self.vendor_operators[key] = release(key, self.monitoring)
        self.register_outputs({"gateway_class_name": self.gateway_class_name,
                               "vendor_operators": sorted(self.vendor_operators)})

    def _amd_operator(self, name: str, args: PlatformArgs, release) -> k8s.helm.v3.Release:
        """The AMD GPU operator, after cert-manager (its KMM subchart, charts/kmm v1.0.0, issues
        its webhook certificate from a cert-manager Issuer), with a push secret for the driver image."""
        cluster = args.plan.cluster
        if self.cert_manager is None:
            raise ValueError(f"{cluster.name}: the AMD GPU operator needs cert-manager "
                             "(KMM's webhook certificate); set platform.cert_manager: true")
        if args.registry is None:
            raise ValueError(f"{cluster.name}: the AMD GPU operator needs the cluster's registry "
                             "for the driver image KMM builds")
        reg = args.registry
        gpu_ns = args.namespaces.resources[layout.NS_GPU_OPERATORS]
        if reg.driver_push is not None:
            # The cluster keeps the push password valid itself (components/driver_credentials.py);
            # KMM sees the DeviceConfig only after the first refresh has written it.
            if args.tools_image is None:
                raise ValueError(f"{cluster.name}: the driver push credential's refresher needs the router image")
            creds = DriverCredentials(
                f"{name}-driver-credentials", login_server=reg.address, push=reg.driver_push,
                image=args.tools_image, depends_on=[gpu_ns],
                # The Secret was the Platform's own child: the same object, not a delete and a create.
                secret_alias=pulumi.Alias(name=f"{name}-amdgpu-driver-registry", parent=self),
                opts=pulumi.ResourceOptions(parent=self))
            secret: pulumi.Resource = creds.secret
            refreshed: list[pulumi.Resource] = [creds.first_run]
        else:
            refreshed = []
            # The registry's own credential (GKE/EKS: short-lived, from the deployer).
            auth = pulumi.Output.all(reg.address, reg.username, reg.password).apply(
                lambda a: json.dumps({"auths": {a[0]: {
                    "username": a[1], "password": a[2],
                    "auth": base64.b64encode(f"{a[1]}:{a[2]}".encode()).decode()}}}, sort_keys=True))
            secret = k8s.core.v1.Secret(
                f"{name}-amdgpu-driver-registry",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=AMD_DRIVER_SECRET, namespace=layout.NS_GPU_OPERATORS,
                                                    labels=dict(layout.COMMON_LABELS)),
                type="kubernetes.io/dockerconfigjson",
                string_data={".dockerconfigjson": pulumi.Output.secret(auth)},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[gpu_ns]),
            )
        image = pulumi.Output.concat(reg.url, "/", pins.AMD_DRIVER_REPOSITORY)
        operator = release("amd-gpu-operator", self.monitoring, self.cert_manager, secret)
        self.amd_device_config = k8s.apiextensions.CustomResource(
            f"{name}-amd-deviceconfig",
            api_version="amd.com/v1alpha1",
            kind="DeviceConfig",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=AMD_DEVICE_CONFIG, namespace=layout.NS_GPU_OPERATORS,
                                                labels=dict(layout.COMMON_LABELS)),
            spec=amd_device_config_spec(cluster.cloud, image),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[operator, *refreshed]),
        )
        return operator
