"""Scheduling: every pod template fits a node pool of its cluster, as kube-scheduler would judge it.

For each pod (ours, the charts', and the ones controllers create): node selector and required node
affinity against the pool's labels (declared plus the cloud's own), tolerations against its taints
(declared plus the cloud's: AKS spot, GKE GPU/TPU), extended resources against the accelerators per
node *and* a device plugin that itself schedules onto the pool, CPU and memory against allocatable.
Kubernetes semantics (kubernetes.io/docs/concepts/scheduling-eviction/taint-and-toleration and
assign-pod-node, v1.32): only NoSchedule/NoExecute taints block; an empty-key Exists toleration
tolerates everything; nodeSelectorTerms are ORed, their expressions ANDed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from fleetctl.verify.controllers import controller_templates
from fleetctl.verify.findings import Finding
from fleetctl.verify.topology import Cluster, NodePool, PodTemplate, Taint, Topology, workload_templates

EXTENDED = ("nvidia.com/gpu", "amd.com/gpu", "google.com/tpu")

# Images of device plugins, by the resource they advertise: NVIDIA's k8s-device-plugin
# (nvidia-device-plugin chart 0.18.0: nvcr.io/nvidia/k8s-device-plugin) and ROCm's
# (gpu-operator-charts v1.4.0 deviceConfig.spec.devicePlugin.devicePluginImage: rocm/k8s-device-plugin).
_PLUGIN_IMAGES = (
    (re.compile(r"nvidia/k8s-device-plugin"), "nvidia.com/gpu"),
    (re.compile(r"rocm/k8s-device-plugin(?!:labeller)"), "amd.com/gpu"),
)

_UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def quantity(v: Any) -> float:
    """A Kubernetes quantity as a float (cores for CPU, bytes for memory)."""
    s = str(v).strip()
    if s.endswith("m"):
        return float(s[:-1]) / 1000
    for unit in sorted(_UNITS, key=len, reverse=True):
        if s.endswith(unit):
            return float(s[: -len(unit)]) * _UNITS[unit]
    return float(s)


def requests(spec: Mapping[str, Any]) -> dict[str, float]:
    """Effective pod requests: the sum over containers, or the largest init container if larger."""
    total: dict[str, float] = {}
    for c in spec.get("containers") or []:
        res = c.get("resources") or {}
        asked = {**(res.get("limits") or {}), **(res.get("requests") or {})} if res.get("requests") is not None \
            else dict(res.get("limits") or {})
        for k, v in asked.items():
            total[k] = total.get(k, 0.0) + quantity(v)
    for c in spec.get("initContainers") or []:
        res = c.get("resources") or {}
        for k, v in {**(res.get("limits") or {}), **(res.get("requests") or {})}.items():
            total[k] = max(total.get(k, 0.0), quantity(v))
    return total


def _expr_matches(e: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op, values = e.get("key"), e.get("operator"), [str(v) for v in e.get("values") or []]
    present, value = key in labels, labels.get(key)
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt") and present and values:
        try:
            return int(value) > int(values[0]) if op == "Gt" else int(value) < int(values[0])
        except ValueError:
            return False
    return False


def selector_problems(spec: Mapping[str, Any], labels: Mapping[str, str]) -> list[str]:
    out = []
    for k, v in (spec.get("nodeSelector") or {}).items():
        if labels.get(k) != str(v):
            out.append(f"nodeSelector {k}={v} but the pool's nodes have "
                       + (f"{k}={labels[k]}" if k in labels else f"no {k} label"))
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms")
    if terms:
        if not any(all(_expr_matches(e, labels) for e in t.get("matchExpressions") or []) for t in terms):
            wanted = " or ".join(
                " and ".join(f"{e.get('key')} {e.get('operator')} {','.join(map(str, e.get('values') or []))}".strip()
                             for e in t.get("matchExpressions") or []) for t in terms)
            out.append(f"required node affinity ({wanted}) matches no label of the pool's nodes")
    return out


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Taint) -> bool:
    for t in tolerations:
        op = t.get("operator", "Equal")
        if t.get("effect") and t["effect"] != taint.effect:
            continue
        if not t.get("key"):
            if op == "Exists":
                return True
            continue
        if t["key"] != taint.key:
            continue
        if op == "Exists" or str(t.get("value", "")) == taint.value:
            return True
    return False


def untolerated(spec: Mapping[str, Any], pool: NodePool) -> list[Taint]:
    tols = spec.get("tolerations") or []
    return [t for t in pool.taints if t.effect in ("NoSchedule", "NoExecute") and not tolerates(tols, t)]


def placement_problems(spec: Mapping[str, Any], pool: NodePool) -> list[str]:
    """Why a pod with this spec cannot be placed on the pool, ignoring resources (empty = it can)."""
    out = selector_problems(spec, pool.labels)
    for t in untolerated(spec, pool):
        out.append(f"does not tolerate the taint {t}" + (" (added by the cloud)" if t.added_by_cloud else ""))
    return out


@dataclass
class _Plugin:
    resource: str
    template: PodTemplate


def device_plugins(templates: Iterable[PodTemplate]) -> list[_Plugin]:
    out = []
    for t in templates:
        if t.owner.kind == "DeviceConfig":
            out.append(_Plugin("amd.com/gpu", t))
            continue
        if t.owner.kind != "DaemonSet":
            continue
        for c in t.spec.get("containers") or []:
            # The same NVIDIA image also runs the MPS control daemon (nvidia-device-plugin 0.18.0,
            # templates/daemonset-mps-control-daemon.yml: command mps-control-daemon), not a plugin.
            if any("mps-control-daemon" in str(a) for a in (c.get("command") or []) + (c.get("args") or [])):
                continue
            for rx, resource in _PLUGIN_IMAGES:
                if rx.search(str(c.get("image", ""))):
                    out.append(_Plugin(resource, t))
                    break
    return out


def advertised(pool: NodePool, plugins: list[_Plugin]) -> tuple[bool, list[str]]:
    """Whether the pool's nodes advertise their extended resource, and why not."""
    if pool.extended_resource is None:
        return False, ["the machine has no accelerators"]
    if pool.cloud_device_plugin:
        return True, []
    why = []
    for p in plugins:
        if p.resource != pool.extended_resource:
            continue
        problems = placement_problems(p.template.spec, pool)
        if not problems:
            return True, []
        why.append(f"{p.template.ref} {'; '.join(problems)}")
    if not why:
        why = [f"no device plugin for {pool.extended_resource} is deployed on this cluster"]
    return False, why


def _fix_for(problem: str) -> str:
    if "taint" in problem:
        m = re.search(r"taint (\S+?)=(\S*?):(\w+)", problem)
        if m:
            return f"add the toleration {{key: {m[1]}, operator: Equal, value: {m[2]}, effect: {m[3]}}}"
    if "nodeSelector" in problem or "node affinity" in problem:
        return "select labels the pool's nodes carry (or label the pool), e.g. inference-fleet.io/pool"
    if "device plugin" in problem or "advertise" in problem:
        return "deploy the vendor's device plugin so it schedules onto the pool (selector and tolerations)"
    if "CPU" in problem or "memory" in problem:
        return "lower the requests or pick a larger machine type"
    return "make the pod's placement match a pool of the cluster"


def _fit(t: PodTemplate, pool: NodePool, plugins: list[_Plugin]) -> list[str]:
    problems = placement_problems(t.spec, pool)
    req = requests(t.spec)
    for r in EXTENDED:
        n = req.get(r, 0)
        if not n:
            continue
        if pool.extended_resource != r:
            problems.append(f"requests {r} but the pool's {pool.machine_type} nodes carry "
                            + (pool.extended_resource or "no accelerators"))
            continue
        if n > pool.accelerators:
            problems.append(f"requests {n:g} {r} but a {pool.machine_type} node has {pool.accelerators}")
        ok, why = advertised(pool, plugins)
        if not ok:
            problems.append(f"requests {r} but no device plugin advertises it on this pool: {'; '.join(why)}")
    alloc = pool.allocatable()
    if alloc is not None:
        cpu, mem = req.get("cpu", 0.0), req.get("memory", 0.0) / 2**30
        if cpu > alloc[0]:
            problems.append(f"requests {cpu:g} CPU but a {pool.machine_type} node has {alloc[0]:.2f} allocatable")
        if mem > alloc[1]:
            problems.append(f"requests {mem:.1f} GiB memory but a {pool.machine_type} node has {alloc[1]:.1f} GiB "
                            "allocatable")
    return problems


# Labels a node labeller sets at run time only on nodes configured for a feature: a DaemonSet that
# requires one is meant to land nowhere until then. nvidia-device-plugin 0.18.0
# templates/daemonset-mps-control-daemon.yml selects nvidia.com/mps.capable=true, which GPU feature
# discovery sets only when MPS sharing is configured.
_RUNTIME_FEATURE_LABELS = ("nvidia.com/mps.capable",)


def _accelerator_intent(t: PodTemplate, plugin_templates: set[int]) -> bool:
    """A DaemonSet meant for accelerator nodes: a device plugin, or one aimed at our pool labels."""
    if id(t) in plugin_templates:
        return True
    spec = t.spec
    keys = set((spec.get("nodeSelector") or {}))
    if keys & set(_RUNTIME_FEATURE_LABELS):
        return False
    for term in ((((spec.get("affinity") or {}).get("nodeAffinity") or {})
                  .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []):
        keys |= {e.get("key", "") for e in term.get("matchExpressions") or []}
    return any(k.startswith("inference-fleet.io/") for k in keys)


def check(topo: Topology) -> list[Finding]:
    out: list[Finding] = []
    for cluster in topo.clusters.values():
        if not cluster.pools:
            continue  # an existing cluster (dev): its nodes are not declared, nothing to place against
        out += _check_cluster(cluster)
    return out


def _check_cluster(cluster: Cluster) -> list[Finding]:
    out: list[Finding] = []
    templates = workload_templates(cluster) + controller_templates(cluster)
    plugins = device_plugins(templates)
    plugin_ids = {id(p.template) for p in plugins}
    for pool in cluster.pools:
        if pool.extended_resource is None:
            continue
        ok, why = advertised(pool, plugins)
        if not ok:
            out.append(Finding("scheduling", cluster.name, pool.ref, "plan.json",
                               f"{pool.accelerators} x {pool.extended_resource} per node are never advertised: "
                               + "; ".join(why),
                               "deploy the vendor's device plugin with a selector and tolerations that fit this pool"))
        if not pool.driver_installed_by_cloud and not _driver_managed(cluster, pool):
            out.append(Finding("scheduling", cluster.name, pool.ref, "plan.json",
                               "the cloud installs no accelerator driver on this pool and no operator is set to",
                               "let the cloud install the driver or enable the operator's driver management "
                               "(AMD DeviceConfig spec.driver.enable: true) for these nodes"))
    for t in templates:
        if t.owner.kind == "DeviceConfig":
            continue  # judged through the pools above
        fits = {p.name: _fit(t, p, plugins) for p in cluster.pools}
        if any(not v for v in fits.values()):
            continue
        if t.owner.kind == "DaemonSet" and not _accelerator_intent(t, plugin_ids):
            continue  # a DaemonSet for nodes this cluster does not have (e.g. Windows) is not a fault
        best = min(fits.values(), key=len)
        shown = [f"{name}: {'; '.join(v)}" for name, v in fits.items() if len(v) == len(best)][:3]
        what = "lands on no node pool" if t.owner.kind == "DaemonSet" else "fits no node pool"
        out.append(Finding("scheduling", cluster.name, t.ref, t.owner.file, f"{what}: " + " | ".join(shown),
                           _fix_for(best[0])))
    return out


def _driver_managed(cluster: Cluster, pool: NodePool) -> bool:
    """The AMD operator installs the driver on the pool (DeviceConfig driver.enable, selector fits)."""
    if pool.extended_resource != "amd.com/gpu":
        return False
    for dc in cluster.of_kind("DeviceConfig"):
        drv = dc.spec.get("driver") or {}
        sel = dc.spec.get("selector") or {}
        if drv.get("enable") and all(pool.labels.get(k) == str(v) for k, v in sel.items()) \
                and not [t for t in pool.taints if t.effect in ("NoSchedule", "NoExecute")
                         and not tolerates(drv.get("tolerations") or [], t)]:
            return True
    return False
