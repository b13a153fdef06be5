"""What the charts the platform installs fail by design, beside their pins: checkov and policy-pack
exemptions for the objects they render.

The offline plan renders every Helm release (fleetctl/charts.py) and the rendered objects go
through checkov (tests/test_chart_checks.py) and the policy pack (fleetctl/policy_eval.py) like
the program's own. What the program can fix through a chart value is fixed there
(components/platform.py ``_values``); what is left is listed here, each entry naming the release,
the chart version its reason was read at, the objects (``Kind/name`` as the chart renders them in
the release's namespace), the checks (checkov ids or policy-pack rule names) and why, citing the
upstream chart file at that version.

An entry applies only at its ``version``: a chart bump makes its objects fail again until someone
re-reads the reason at the new version and moves the entry. An entry that matches nothing in any
shipped stack fails tests/test_chart_checks.py (stale).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Exemption:
    release: str
    """The Helm release (its name is the key in components/platform_versions.CHARTS)."""
    version: str
    """The chart version the reason was read at."""
    objects: tuple[str, ...]
    """``Kind/name`` of each rendered object it covers."""
    checks: tuple[str, ...]
    """checkov ids (``CKV_K8S_38``) or policy-pack rule names (``no-host-access``)."""
    reason: str

    def covers(self, release: str, version: str, kind: str, name: str, check: str) -> bool:
        return (release, version) == (self.release, self.version) and f"{kind}/{name}" in self.objects \
            and check in self.checks


# --- reasons shared by several charts (each entry still names its chart's own file) -------------------

def _digest(where: str) -> str:
    return (f"images by the tag this chart version pins ({where}), not by digest: this machine cannot reach the "
            "registries to read a digest, and one copied unverified would be a pin nobody checked (open work)")


def _pull(where: str) -> str:
    return (f"imagePullPolicy IfNotPresent, the chart's default ({where}), for a public image whose tag the chart "
            "pins: Always only keeps a private image cached on a node from pods without its pull secret; here it "
            "would make every pod start depend on the upstream registry")


def _token(what: str) -> str:
    return f"needs its ServiceAccount token: {what}"


def _uid(where: str) -> str:
    return (f"runs as non-root ({where}) under the image's own user; no value of the chart sets a UID >= 10000 for "
            "it and overriding the image's user is untested against the files it owns; the high-UID rule guards a "
            "host UID collision, and this pod shares no host namespace or path")


def _limits(where: str) -> str:
    return (f"no limits upstream ({where}); requests reserve what it needs (from the chart's documented example "
            "where it ships one: components/platform.py), and a limit picked without measurement OOM-kills "
            "(memory) or throttles (CPU) a cluster-critical component; limits follow measured usage")


_CM, _ISTIO, _KEDA, _KSERVE = "v1.19.1", "1.28.5", "2.18.0", "v0.19.0"
_KPS, _NVIDIA, _DCGM, _AMD, _CA = "79.12.0", "0.18.0", "4.6.0", "v1.4.0", "9.46.6"

_CM_PODS = ("Deployment/cert-manager", "Deployment/cert-manager-cainjector", "Deployment/cert-manager-webhook",
            "Job/cert-manager-startupapicheck")
_KEDA_PODS = ("Deployment/keda-admission-webhooks", "Deployment/keda-operator",
              "Deployment/keda-operator-metrics-apiserver")
_KPS_OPERATORS = ("Deployment/kube-prometheus-stack-kube-state-metrics", "Deployment/kube-prometheus-stack-operator")
_KPS_JOBS = ("Job/kube-prometheus-stack-admission-create", "Job/kube-prometheus-stack-admission-patch")
_GRAFANA = "Deployment/kube-prometheus-stack-grafana"
_NODE_EXPORTER = "DaemonSet/kube-prometheus-stack-prometheus-node-exporter"
_AMD_CONTROLLERS = ("Deployment/amd-gpu-operator-gpu-operator-charts-controller-manager",
                    "Deployment/amd-gpu-operator-kmm-controller", "Deployment/amd-gpu-operator-kmm-webhook-server")
_AMD_HOOKS = ("Job/delete-custom-resource-definitions", "Job/delete-leftover-deviceconfigs", "Job/pre-upgrade-check",
              "Job/upgrade-crd")
_CA_POD = ("Deployment/cluster-autoscaler-aws-cluster-autoscaler",)
_MPS = ("DaemonSet/nvidia-device-plugin-mps-control-daemon",)
_DEVICE_PLUGIN = ("DaemonSet/nvidia-device-plugin",)

EXEMPTIONS: tuple[Exemption, ...] = (
    # --- cert-manager v1.19.1 --------------------------------------------------------------------------
    Exemption("cert-manager", _CM, _CM_PODS, ("CKV_K8S_43",),
              _digest("values.yaml image.tag unset: the chart's appVersion")),
    Exemption("cert-manager", _CM, _CM_PODS, ("CKV_K8S_15",), _pull("values.yaml *.image.pullPolicy")),
    Exemption("cert-manager", _CM, _CM_PODS, ("CKV_K8S_38",), _token(
        "the controller, webhook and cainjector watch and write cert-manager resources, Secrets and webhook "
        "configurations, and startupapicheck probes the API (templates/rbac.yaml, webhook-rbac.yaml, "
        "cainjector-rbac.yaml, startupapicheck-rbac.yaml)")),
    Exemption("cert-manager", _CM, _CM_PODS, ("CKV_K8S_40",), _uid(
        "values.yaml securityContext runAsNonRoot: true, seccompProfile RuntimeDefault; no runAsUser")),
    Exemption("cert-manager", _CM, _CM_PODS, ("CKV_K8S_11", "CKV_K8S_13"),
              _limits("values.yaml resources: {} for each")),
    Exemption("cert-manager", _CM, ("Deployment/cert-manager", "Deployment/cert-manager-cainjector"), ("CKV_K8S_9",),
              "no readiness probe upstream (templates/deployment.yaml has a liveness probe only, "
              "cainjector-deployment.yaml none): neither serves traffic a Service routes, so readiness gates nothing"),
    Exemption("cert-manager", _CM, ("Deployment/cert-manager-cainjector",), ("CKV_K8S_8",),
              "no liveness probe upstream (templates/cainjector-deployment.yaml exposes no health endpoint); a "
              "stuck cainjector loses its leader lease and the kubelet restarts it on exit"),
    Exemption("cert-manager", _CM, ("ClusterRole/cert-manager-cainjector",), ("CKV_K8S_155",),
              "cainjector exists to write CA bundles into webhook configurations (templates/cainjector-rbac.yaml: "
              "get/list/watch/update on validating/mutatingwebhookconfigurations); the program's KServe and KMM "
              "webhooks rely on it"),

    # --- istiod 1.28.5 ---------------------------------------------------------------------------------
    Exemption("istiod", _ISTIO, ("Deployment/istiod",), ("CKV_K8S_43",), _digest("values.yaml global.hub/tag 1.28.5")),
    Exemption("istiod", _ISTIO, ("Deployment/istiod",), ("CKV_K8S_15",), _pull(
        "values.yaml global.imagePullPolicy unset: the kubelet's IfNotPresent for a non-latest tag")),
    Exemption("istiod", _ISTIO, ("Deployment/istiod",), ("CKV_K8S_38",), _token(
        "istiod is the control plane: it watches every Service, Gateway, HTTPRoute and InferencePool and signs "
        "workload certificates (templates/clusterrole.yaml)")),
    Exemption("istiod", _ISTIO, ("Deployment/istiod",), ("CKV_K8S_40",), _uid(
        "templates/deployment.yaml container securityContext runAsNonRoot: true, all capabilities dropped")),
    Exemption("istiod", _ISTIO, ("Deployment/istiod",), ("CKV_K8S_11", "CKV_K8S_13"), _limits(
        "values.yaml resources: requests 500m / 2048Mi only")),
    Exemption("istiod", _ISTIO, ("Deployment/istiod",), ("CKV_K8S_29",),
              "the pod-level securityContext is not templated (templates/deployment.yaml sets it on the discovery "
              "container: non-root, read-only root, no capabilities, and the seccomp profile set in platform.py)"),
    Exemption("istiod", _ISTIO, ("Deployment/istiod",), ("CKV_K8S_8",),
              "upstream defines a readiness probe only (templates/deployment.yaml readinessProbe on :8080/ready); "
              "istiod exits on fatal errors and is restarted"),
    Exemption("istiod", _ISTIO, ("ClusterRole/istiod-clusterrole-istio-system",), ("CKV_K8S_155",),
              "istiod patches the caBundle of its own sidecar-injector and validation webhooks "
              "(templates/clusterrole.yaml: admissionregistration.k8s.io mutating/validatingwebhookconfigurations)"),
    Exemption("istiod", _ISTIO, ("ClusterRole/istio-reader-clusterrole-istio-system",), ("CKV_K8S_49",),
              "the read-only role multicluster discovery uses lists `*` resources of Istio's own API groups "
              "(templates/reader-clusterrole.yaml: get/list/watch only)"),

    # --- keda 2.18.0 -------------------------------------------------------------------------------------
    Exemption("keda", _KEDA, _KEDA_PODS, ("CKV_K8S_43",), _digest("values.yaml image.*.tag: the chart's appVersion")),
    Exemption("keda", _KEDA, _KEDA_PODS, ("CKV_K8S_38",), _token(
        "the operator scales workloads and writes HPAs, the metrics server serves the external metrics API and "
        "the webhooks validate ScaledObjects (templates/manager/minimal-rbac.yaml, metrics-server/clusterrole.yaml, "
        "webhooks/clusterrole.yaml; serviceAccount.automountServiceAccountToken true)")),
    Exemption("keda", _KEDA, _KEDA_PODS, ("CKV_K8S_40",), _uid(
        "values.yaml podSecurityContext runAsNonRoot: true; container securityContext drops all capabilities")),
    Exemption("keda", _KEDA, ("ClusterRole/keda-operator-minimal-cluster-role",), ("CKV_K8S_155",),
              "the operator rotates the CA bundle of its own admission webhook and metrics APIService "
              "(templates/manager/minimal-rbac.yaml, certificates.autoGenerated)"),

    # --- kserve-llmisvc-resources v0.19.0 -------------------------------------------------------------------
    Exemption("kserve-llmisvc", _KSERVE, ("Deployment/llmisvc-controller-manager",), ("CKV_K8S_43",), _digest(
        "values.yaml kserve.llmisvc.controller.image/tag v0.19.0")),
    Exemption("kserve-llmisvc", _KSERVE, ("Deployment/llmisvc-controller-manager",), ("CKV_K8S_38",), _token(
        "the LLMInferenceService controller creates Deployments, Services, HTTPRoutes and InferencePools "
        "(templates/llmisvc/resources.yaml ClusterRole)")),
    Exemption("kserve-llmisvc", _KSERVE, ("Deployment/llmisvc-controller-manager",), ("CKV_K8S_40",), _uid(
        "templates/llmisvc/resources.yaml runAsNonRoot: true, runAsUser 1000, read-only root, no capabilities")),

    # --- kube-prometheus-stack 79.12.0 ---------------------------------------------------------------------
    Exemption("kube-prometheus-stack", _KPS, (_GRAFANA, _NODE_EXPORTER, *_KPS_OPERATORS, *_KPS_JOBS), ("CKV_K8S_43",),
              _digest("values.yaml of the chart and its grafana, kube-state-metrics and prometheus-node-exporter "
                      "subcharts: image tags")),
    Exemption("kube-prometheus-stack", _KPS, (_GRAFANA, _NODE_EXPORTER, *_KPS_OPERATORS, *_KPS_JOBS), ("CKV_K8S_15",),
              _pull("values.yaml image.pullPolicy of the chart and its subcharts")),
    Exemption("kube-prometheus-stack", _KPS, (_GRAFANA, *_KPS_OPERATORS, *_KPS_JOBS), ("CKV_K8S_38",), _token(
        "the operator reconciles Prometheus/Alertmanager, kube-state-metrics lists every object it reports, "
        "grafana's sidecars watch dashboard ConfigMaps, and the admission jobs write the webhook Secret and "
        "patch the webhook configurations")),
    Exemption("kube-prometheus-stack", _KPS, (_GRAFANA, *_KPS_JOBS), ("CKV_K8S_40",), _uid(
        "grafana 10.3.0 values.yaml securityContext runAsUser 472 (the image's grafana user); the admission "
        "jobs' runAsUser 2000 (templates/prometheus-operator/admission-webhooks/job-patch)")),
    Exemption("kube-prometheus-stack", _KPS, (_GRAFANA, _NODE_EXPORTER, *_KPS_OPERATORS, *_KPS_JOBS),
              ("CKV_K8S_11", "CKV_K8S_13"), _limits("values.yaml resources: {} for each component")),
    Exemption("kube-prometheus-stack", _KPS, (_GRAFANA,), ("CKV_K8S_8", "CKV_K8S_9"),
              "grafana itself has liveness and readiness probes (grafana 10.3.0 values.yaml); its two k8s-sidecar "
              "containers expose no endpoint to probe"),
    Exemption("kube-prometheus-stack", _KPS, (_GRAFANA,), ("CKV_K8S_22", "read-only-root-filesystem"),
              "grafana 10.3.0 writes its database, plugins and sessions under /var/lib/grafana and the sidecars "
              "write dashboards to their mount, and the chart's containerSecurityContext leaves the root writable; "
              "a read-only root is untested against the grafana 12.3 image"),
    Exemption("kube-prometheus-stack", _KPS, (_GRAFANA,), ("CKV_K8S_35",),
              "the chart passes the admin user and password from its Secret as env (grafana 10.3.0 "
              "templates/_pod.tpl GF_SECURITY_ADMIN_*), the only way grafana 12 reads them"),
    Exemption("kube-prometheus-stack", _KPS, (_NODE_EXPORTER,), ("CKV_K8S_17", "CKV_K8S_19", "no-host-access"),
              "node-exporter reports the node: hostNetwork and hostPID and read-only hostPath mounts of /proc, /sys "
              "and / (prometheus-node-exporter 4.49.2 templates/daemonset.yaml, hostNetwork/hostPID true); it runs "
              "as 65534 with no capabilities and a read-only root"),
    Exemption("kube-prometheus-stack", _KPS, ("ClusterRole/kube-prometheus-stack-admission",), ("CKV_K8S_155",),
              "the admission-patch job writes the CA bundle into the operator's own webhook configurations "
              "(templates/prometheus-operator/admission-webhooks/job-patch/clusterrole.yaml)"),
    Exemption("kube-prometheus-stack", _KPS, ("ClusterRole/kube-prometheus-stack-operator",), ("CKV_K8S_49",),
              "the operator manages every monitoring.coreos.com kind (`*` in that group only, "
              "templates/prometheus-operator/clusterrole.yaml)"),
    Exemption("kube-prometheus-stack", _KPS, ("ClusterRoleBinding/kube-prometheus-stack-grafana-clusterrolebinding",),
              ("CKV2_K8S_5",),
              "grafana's dashboard and datasource sidecars watch labelled ConfigMaps and Secrets in every namespace "
              "(searchNamespace ALL, components/monitoring.py ships dashboards that way); grafana 10.3.0 "
              "templates/clusterrole.yaml grants configmaps and secrets together and no value narrows it"),
    Exemption("kube-prometheus-stack", _KPS, ("RoleBinding/kube-prometheus-stack-admission",), ("CKV2_K8S_5",),
              "the admission-create job creates and reads the webhook's TLS Secret in its own namespace "
              "(templates/prometheus-operator/admission-webhooks/job-patch/role.yaml: secrets get/create)"),

    # --- nvidia-device-plugin 0.18.0 -------------------------------------------------------------------------
    Exemption("nvidia-device-plugin", _NVIDIA, (*_DEVICE_PLUGIN, *_MPS), ("CKV_K8S_43",), _digest(
        "values.yaml image.tag unset: the chart's appVersion v0.18.0")),
    Exemption("nvidia-device-plugin", _NVIDIA, (*_DEVICE_PLUGIN, *_MPS), ("CKV_K8S_15",), _pull(
        "values.yaml image.pullPolicy IfNotPresent")),
    Exemption("nvidia-device-plugin", _NVIDIA, _DEVICE_PLUGIN, ("CKV_K8S_38",), _token(
        "the plugin reads its Node for the config and sharing labels it reports (templates/role.yml, "
        "clusterrole for nodes)")),
    Exemption("nvidia-device-plugin", _NVIDIA, _DEVICE_PLUGIN,
              ("CKV_K8S_23", "CKV_K8S_40", "run-as-non-root", "no-host-access"),
              "a device plugin registers over the kubelet's root-owned socket directory: hostPath "
              "/var/lib/kubelet/device-plugins, /var/run/cdi for CDI specs and /run/nvidia/mps (templates/"
              "daemonset-device-plugin.yml), as root; the chart's container drops all capabilities and cannot "
              "escalate"),
    Exemption("nvidia-device-plugin", _NVIDIA, _DEVICE_PLUGIN, ("CKV_K8S_22", "read-only-root-filesystem"),
              "the container securityContext value replaces the chart's whole default (values.yaml "
              "securityContext: {}; templates/_helpers.tpl then gives no escalation and no capabilities); a "
              "read-only root on top is untested against the plugin"),
    Exemption("nvidia-device-plugin", _NVIDIA, (*_DEVICE_PLUGIN, *_MPS),
              ("CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13"),
              "values.yaml resources: {} with no documented sizing: a per-node daemon whose requests come from "
              "every GPU node's allocatable; sizing follows measurement"),
    Exemption("nvidia-device-plugin", _NVIDIA, _DEVICE_PLUGIN, ("CKV_K8S_8", "CKV_K8S_9"),
              "the plugin serves the kubelet over a unix socket, no probe endpoint (templates/"
              "daemonset-device-plugin.yml); the kubelet re-registers it when it restarts"),
    Exemption("nvidia-device-plugin", _NVIDIA, _MPS,
              ("CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_16", "CKV_K8S_17", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23",
               "CKV_K8S_28", "CKV_K8S_37", "CKV_K8S_38", "CKV_K8S_40", "no-host-access",
               "no-privileged-containers", "run-as-non-root", "read-only-root-filesystem"),
              "the MPS control daemon runs on no node of this platform: templates/daemonset-mps-control-daemon.yml "
              "selects nvidia.com/mps.capable=true, a label only GPU Feature Discovery sets for an MPS sharing "
              "config, and GFD and MPS sharing are off; the chart renders it whenever devicePlugin.enabled"),

    # --- dcgm-exporter 4.6.0 --------------------------------------------------------------------------------
    Exemption("dcgm-exporter", _DCGM, ("DaemonSet/dcgm-exporter",), ("CKV_K8S_43",), _digest(
        "values.yaml image.tag 4.4.1-4.6.0-ubuntu22.04")),
    Exemption("dcgm-exporter", _DCGM, ("DaemonSet/dcgm-exporter",), ("CKV_K8S_15",), _pull(
        "values.yaml image.pullPolicy IfNotPresent")),
    Exemption("dcgm-exporter", _DCGM, ("DaemonSet/dcgm-exporter",), ("CKV_K8S_38",), _token(
        "it maps GPUs to pods and reads pod labels for its metrics (templates/role.yaml)")),
    Exemption("dcgm-exporter", _DCGM, ("DaemonSet/dcgm-exporter",), ("CKV_K8S_11", "CKV_K8S_13"), _limits(
        "values.yaml resources: {}; the requests are its documented example")),
    Exemption("dcgm-exporter", _DCGM, ("DaemonSet/dcgm-exporter",),
              ("CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_25", "CKV_K8S_28", "CKV_K8S_29", "CKV_K8S_31",
               "CKV_K8S_37", "CKV_K8S_39", "CKV_K8S_40", "no-host-access", "no-privileged-containers",
               "run-as-non-root", "read-only-root-filesystem"),
              "DCGM reads GPU profiling counters, which needs CAP_SYS_ADMIN as root (values.yaml securityContext: "
              "runAsUser 0, capabilities add SYS_ADMIN), and maps GPUs to pods through the kubelet's "
              "pod-resources socket (hostPath /var/lib/kubelet/pod-resources, templates/daemonset.yaml); it runs "
              "only on NVIDIA nodes"),

    # --- gpu-operator-charts v1.4.0 (the AMD GPU operator) ----------------------------------------------------
    Exemption("amd-gpu-operator", _AMD, (*_AMD_CONTROLLERS, *_AMD_HOOKS), ("CKV_K8S_43",), _digest(
        "the operator's release tag, set in components/platform.py")),
    Exemption("amd-gpu-operator", _AMD, _AMD_HOOKS[:3], ("CKV_K8S_15",), _pull(
        "templates/pre-upgrade-hook.yaml and pre/post-delete-hook.yaml set none: the kubelet's IfNotPresent")),
    Exemption("amd-gpu-operator", _AMD, (*_AMD_CONTROLLERS, *_AMD_HOOKS), ("CKV_K8S_38",), _token(
        "the operator and KMM reconcile DeviceConfigs, Modules, DaemonSets and node labels, and the hooks "
        "delete or upgrade the operator's CRDs and CRs through kubectl (templates/manager-rbac.yaml, "
        "charts/kmm/templates/manager-rbac.yaml, the hook templates' ClusterRoles)")),
    Exemption("amd-gpu-operator", _AMD, _AMD_CONTROLLERS, ("CKV_K8S_40",), _uid(
        "templates/deployment.yaml and charts/kmm/templates/deployment.yaml pod securityContext runAsNonRoot: true")),
    Exemption("amd-gpu-operator", _AMD, _AMD_CONTROLLERS, ("CKV_K8S_22", "read-only-root-filesystem"),
              "the chart's containerSecurityContext values are written whole (templates/deployment.yaml, "
              "charts/kmm/templates/deployment.yaml) and platform.py drops capabilities and sets seccomp through "
              "them; a read-only root is untested against the operator and KMM images"),
    Exemption("amd-gpu-operator", _AMD, _AMD_HOOKS,
              ("CKV_K8S_10", "CKV_K8S_11", "CKV_K8S_12", "CKV_K8S_13", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23",
               "CKV_K8S_28", "CKV_K8S_29", "CKV_K8S_30", "CKV_K8S_31", "CKV_K8S_37", "CKV_K8S_40",
               "no-privileged-containers", "run-as-non-root", "read-only-root-filesystem"),
              "Helm hook Jobs with a fixed pod spec (templates/pre-upgrade-hook.yaml, pre-delete-hook.yaml, "
              "post-delete-hook.yaml: no securityContext or resources values): they run kubectl once around an "
              "upgrade or uninstall, never during serving"),

    # --- cluster-autoscaler 9.46.6 (EKS; values in components/eks.py) -------------------------------------------
    Exemption("cluster-autoscaler", _CA, _CA_POD, ("CKV_K8S_43",), _digest(
        "components/eks.py AUTOSCALER_IMAGE_TAGS by the cluster's minor")),
    Exemption("cluster-autoscaler", _CA, _CA_POD, ("CKV_K8S_15",), _pull("values.yaml image.pullPolicy IfNotPresent")),
    Exemption("cluster-autoscaler", _CA, _CA_POD, ("CKV_K8S_38",), _token(
        "it watches pods and nodes to scale node groups (templates/clusterrole.yaml)")),
    Exemption("cluster-autoscaler", _CA, _CA_POD,
              ("CKV_K8S_11", "CKV_K8S_13", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_29",
               "CKV_K8S_30", "CKV_K8S_31", "CKV_K8S_37", "CKV_K8S_40", "CKV_K8S_9", "no-privileged-containers",
               "run-as-non-root", "read-only-root-filesystem"),
              "values.yaml securityContext: {}, containerSecurityContext: {}, resources: {} and no readiness "
              "probe (templates/deployment.yaml); its values belong to components/eks.py, whose owner sets them "
              "with the IRSA wiring (the chart's own values take a hardened context)"),
)
