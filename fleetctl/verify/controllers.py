"""Pods that controllers create at run time, from templates whose content is known offline.

* Istio's deployed gateway: one Deployment per Gateway of class ``istio``, from istiod's
  ``kube-gateway`` template with istiod's values (istiod chart 1.28.5, files/kube-gateway.yaml).
* The AMD GPU operator's device plugin: a DaemonSet per ``DeviceConfig`` (amd.com/v1alpha1), placed
  by ``spec.selector`` and tolerating ``spec.devicePlugin.devicePluginTolerations`` (ROCm
  gpu-operator-charts v1.4.0, values.yaml ``deviceConfig.spec`` and templates/default-deviceconfig.yaml).
"""

from __future__ import annotations

from typing import Any, Mapping

from fleetctl.verify.topology import Cluster, Obj, PodTemplate

# istiod 1.28.5 values.yaml (_internal_defaults_do_not_set): gateways.securityContext {} and
# gateways.seccompProfile {}; global.proxy.resources requests cpu 100m / memory 128Mi.
_ISTIOD_DEFAULT_GATEWAYS: Mapping[str, Any] = {"securityContext": {}, "seccompProfile": {}}
_ISTIO_PROXY_REQUESTS = {"cpu": "100m", "memory": "128Mi"}

GATEWAY_NAME_LABEL = "gateway.networking.k8s.io/gateway-name"


def _istiod_values(cluster: Cluster) -> Mapping[str, Any] | None:
    r = cluster.release("istiod")
    return None if r is None else (r["inputs"].get("values") or {})


def istio_gateway_templates(cluster: Cluster) -> list[PodTemplate]:
    values = _istiod_values(cluster)
    if values is None:
        return []
    gateways = {**_ISTIOD_DEFAULT_GATEWAYS, **(values.get("gateways") or {})}
    out = []
    for gw in cluster.of_kind("Gateway"):
        if gw.spec.get("gatewayClassName") != "istio":
            continue
        # files/kube-gateway.yaml: the pod securityContext is gateways.securityContext if set, else the
        # unprivileged-port sysctl plus gateways.seccompProfile when set; the istio-proxy container
        # drops ALL, no privilege escalation, runAsNonRoot, uid/gid 1337, read-only root filesystem.
        if gateways.get("securityContext"):
            pod_sc = dict(gateways["securityContext"])
        else:
            pod_sc = {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}
            if gateways.get("seccompProfile"):
                pod_sc["seccompProfile"] = gateways["seccompProfile"]
        ports = [{"containerPort": 15020, "name": "metrics"}, {"containerPort": 15021, "name": "status-port"},
                 {"containerPort": 15090, "name": "http-envoy-prom"}]
        ports += [{"containerPort": int(lst["port"]), "name": lst.get("name", "")}
                  for lst in gw.spec.get("listeners") or [] if "port" in lst]
        spec = {
            "securityContext": pod_sc,
            "serviceAccountName": f"{gw.name}-istio",
            "containers": [{
                "name": "istio-proxy",
                "ports": ports,
                "resources": {"requests": dict(_ISTIO_PROXY_REQUESTS)},
                "securityContext": {"capabilities": {"drop": ["ALL"]}, "allowPrivilegeEscalation": False,
                                    "privileged": False, "readOnlyRootFilesystem": True, "runAsUser": 1337,
                                    "runAsGroup": 1337, "runAsNonRoot": True},
            }],
            "volumes": [{"name": "istio-envoy", "emptyDir": {}}, {"name": "istio-data", "emptyDir": {}},
                        {"name": "istio-token", "projected": {}}, {"name": "istio-ca-root-cert", "configMap": {}},
                        {"name": "istio-podinfo", "downwardAPI": {}}],
        }
        labels = {GATEWAY_NAME_LABEL: gw.name, "gateway.networking.k8s.io/gateway-class-name": "istio",
                  "service.istio.io/canonical-name": f"{gw.name}-istio", "sidecar.istio.io/inject": "false"}
        out.append(PodTemplate(gw, spec, labels, gw.namespace, what="Istio gateway pod from istiod values"))
    return out


def amd_device_plugin_templates(cluster: Cluster) -> list[PodTemplate]:
    out = []
    for dc in cluster.of_kind("DeviceConfig"):
        if not str(dc.doc.get("apiVersion", "")).startswith("amd.com/"):
            continue
        dp = dc.spec.get("devicePlugin") or {}
        spec = {
            "nodeSelector": dict(dc.spec.get("selector") or {}),
            "tolerations": list(dp.get("devicePluginTolerations") or []),
            "containers": [{"name": "device-plugin", "image": dp.get("devicePluginImage", "rocm/k8s-device-plugin")}],
        }
        out.append(PodTemplate(dc, spec, {"app.kubernetes.io/name": "amd-device-plugin"},
                               dc.namespace or "default", what="AMD device plugin DaemonSet the operator creates"))
    return out


def controller_templates(cluster: Cluster) -> list[PodTemplate]:
    return istio_gateway_templates(cluster) + amd_device_plugin_templates(cluster)


def device_configs(cluster: Cluster) -> list[Obj]:
    return [o for o in cluster.of_kind("DeviceConfig") if str(o.doc.get("apiVersion", "")).startswith("amd.com/")]
