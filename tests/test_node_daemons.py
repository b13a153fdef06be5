"""The per-node daemons of each vendor (device plugin, exporter, driver) land on every node of that
vendor's pools: their effective placement — the pinned chart's defaults, overridden by our values the
way Helm merges them — is evaluated against the labels and taints each cloud pool declares.

Without a device plugin on a node, the node advertises no ``nvidia.com/gpu`` / ``amd.com/gpu`` and no
model server is ever scheduled, while the autoscaler keeps adding nodes its templates say have GPUs.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from conftest import plan_of
from fleet import catalog

RELEASE = "kubernetes:helm.sh/v3:Release"
GKE_EFFECTS = {"NO_SCHEDULE": "NoSchedule", "PREFER_NO_SCHEDULE": "PreferNoSchedule", "NO_EXECUTE": "NoExecute"}

# Upstream defaults of the placement values, at the pinned versions (components/platform_versions.py).
CHART_DEFAULTS: dict[str, dict[str, Any]] = {
    # NVIDIA/k8s-device-plugin v0.18.0, deployments/helm/nvidia-device-plugin/values.yaml:
    # nodeSelector {}, an affinity that requires an NFD label or nvidia.com/gpu.present=true, and
    # tolerations for CriticalAddonsOnly and nvidia.com/gpu (Exists, NoSchedule).
    "nvidia-device-plugin": {
        "nodeSelector": {},
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "feature.node.kubernetes.io/pci-10de.present", "operator": "In",
                                   "values": ["true"]}]},
            {"matchExpressions": [{"key": "feature.node.kubernetes.io/cpu-model.vendor_id", "operator": "In",
                                   "values": ["NVIDIA"]}]},
            {"matchExpressions": [{"key": "nvidia.com/gpu.present", "operator": "In", "values": ["true"]}]},
        ]}}},
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"},
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    # NVIDIA/dcgm-exporter tag 4.4.1-4.6.0, deployment/values.yaml: nodeSelector {}, tolerations [],
    # affinity {}.
    "dcgm-exporter": {"nodeSelector": {}, "affinity": {}, "tolerations": []},
}
CHART_VENDOR = {"nvidia-device-plugin": "nvidia", "dcgm-exporter": "nvidia"}


def helm_merge(defaults: Any, values: Any) -> Any:
    """User values over chart defaults as Helm coalesces them: maps merge, anything else replaces,
    null deletes."""
    if not isinstance(defaults, dict) or not isinstance(values, dict):
        return copy.deepcopy(values)
    out = copy.deepcopy(defaults)
    for k, v in values.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = helm_merge(out.get(k), v) if k in out else copy.deepcopy(v)
    return out


def _term_matches(term: dict[str, Any], labels: dict[str, str]) -> bool:
    for e in term.get("matchExpressions", []):
        key, op, vals = e["key"], e["operator"], e.get("values", [])
        if op == "In" and labels.get(key) not in vals:
            return False
        if op == "NotIn" and labels.get(key) in vals:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _tolerates(tolerations: list[dict[str, Any]], taint: tuple[str, str, str]) -> bool:
    key, value, effect = taint
    for t in tolerations:
        if t.get("effect") not in (None, "", effect):
            continue
        if t.get("operator", "Equal") == "Exists":
            if t.get("key") in (None, "", key):
                return True
        elif t.get("key") == key and t.get("value", "") == value:
            return True
    return False


def placement_problems(placement: dict[str, Any], labels: dict[str, str], taints: set) -> list[str]:
    """Why a pod with this nodeSelector/affinity/tolerations cannot run on a node (empty: it can)."""
    problems = [f"nodeSelector {k}={v}" for k, v in (placement.get("nodeSelector") or {}).items()
                if labels.get(k) != v]
    required = (((placement.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms")
    if required and not any(_term_matches(t, labels) for t in required):
        problems.append(f"no required affinity term matches: {required}")
    problems += [f"taint {t} not tolerated" for t in sorted(taints)
                 if t[2] in ("NoSchedule", "NoExecute") and not _tolerates(placement.get("tolerations") or [], t)]
    return problems


def cloud_nodes(plan) -> list[tuple[str, dict[str, str], set]]:
    """(spec pool name, node labels, node taints) of every accelerator pool the plan declares."""
    out = []
    for r in plan.resources:
        i = r["inputs"]
        if r["type"] == "gcp:container/nodePool:NodePool":
            nc = i["nodeConfig"]
            labels, taints = nc.get("labels") or {}, {(t["key"], t["value"], GKE_EFFECTS[t["effect"]])
                                                      for t in nc.get("taints") or []}
        elif r["type"] == "aws:eks/nodeGroup:NodeGroup":
            labels, taints = i.get("labels") or {}, {(t["key"], t["value"], GKE_EFFECTS[t["effect"]])
                                                     for t in i.get("taints") or []}
        elif r["type"] == "azure-native:containerservice:AgentPool":
            labels = i.get("nodeLabels") or {}
            taints = {tuple(re.split("[=:]", t)) for t in i.get("nodeTaints") or []}
        else:
            continue
        pool = labels.get(f"{catalog.LABEL_PREFIX}/pool")
        if pool:
            out.append((pool, labels, taints))
    return out


@pytest.mark.parametrize("stack", ["aws", "azure", "gcp", "multicloud"])
@pytest.mark.parametrize("chart", sorted(CHART_DEFAULTS))
def test_vendor_daemons_run_on_every_node_of_their_vendors_pools(stack, chart):
    plan = plan_of(stack)
    pools = {p.name: p for p in plan.spec.pools}
    releases = {r["name"].split("-platform-")[0]: r for r in plan.resources
                if r["type"] == RELEASE and r["name"].endswith(f"-platform-{chart}")}
    checked = 0
    for pool_name, labels, taints in cloud_nodes(plan):
        pool = pools[pool_name]
        if pool.vendor != CHART_VENDOR[chart] or pool.cluster not in releases:
            continue
        placement = helm_merge(CHART_DEFAULTS[chart], releases[pool.cluster]["inputs"]["values"])
        assert placement_problems(placement, labels, taints) == [], f"{chart} on {pool_name}"
        checked += 1
    vendor_pools = [p for p in pools.values() if p.vendor == CHART_VENDOR[chart] and p.cluster in releases]
    assert checked == len(vendor_pools)


def test_the_placement_check_rejects_the_upstream_defaults_on_our_nodes():
    # The chart's own defaults on an AKS spot T4 node: NFD labels missing, spot taint not tolerated.
    labels = {**catalog.pool_labels("nvidia", "t4", "t4"), "kubernetes.azure.com/scalesetpriority": "spot"}
    taints = {("nvidia.com/gpu", "present", "NoSchedule"), ("kubernetes.azure.com/scalesetpriority", "spot", "NoSchedule")}
    problems = placement_problems(CHART_DEFAULTS["nvidia-device-plugin"], labels, taints)
    assert any("affinity" in p for p in problems)
    assert any("scalesetpriority" in p for p in problems)
    assert not any("nvidia.com/gpu" in p and "taint" in p for p in problems)


# ROCm/gpu-operator v1.4.0, helm-charts-k8s/values.yaml: the chart's default DeviceConfig (rendered
# by templates/default-deviceconfig.yaml when crds.defaultCR.install, default true) selects NFD's
# feature.node.kubernetes.io/amd-gpu, has driver.enable false, and every daemon's tolerations empty.
# The operator schedules the driver (KMM), device plugin, node labeller and metrics exporter of a
# DeviceConfig on spec.selector (api/v1alpha1/deviceconfig_types.go).
AMD_DAEMONS = {"driver": ("driver", "tolerations"), "device plugin": ("devicePlugin", "devicePluginTolerations"),
               "node labeller": ("devicePlugin", "nodeLabellerTolerations"),
               "metrics exporter": ("metricsExporter", "tolerations")}


def _device_configs(plan, release) -> list[dict[str, Any]]:
    """The DeviceConfigs the AMD operator acts on in a release's cluster: ours, and the chart's default
    one unless the release turns it off."""
    cluster = release["name"].split("-platform-")[0]
    out = [r["inputs"] for r in plan.resources
           if r["inputs"].get("kind") == "DeviceConfig" and r["name"].startswith(f"{cluster}-platform-")]
    values = release["inputs"]["values"]
    if values.get("crds", {}).get("defaultCR", {}).get("install", True):
        out.append({"metadata": {"name": "default"}, "spec": {
            "selector": {"feature.node.kubernetes.io/amd-gpu": "true"},
            "driver": {"enable": False, "tolerations": []},
            "devicePlugin": {"devicePluginTolerations": [], "nodeLabellerTolerations": []},
            "metricsExporter": {"tolerations": []}}})
    return out


@pytest.mark.parametrize("stack", ["azure", "multicloud"])
def test_amd_driver_and_device_plugin_run_on_every_mi300x_node(stack):
    plan = plan_of(stack)
    pools = {p.name: p for p in plan.spec.pools}
    releases = {r["name"].split("-platform-")[0]: r for r in plan.resources
                if r["type"] == RELEASE and r["name"].endswith("-platform-amd-gpu-operator")}
    amd_nodes = [n for n in cloud_nodes(plan) if pools[n[0]].vendor == "amd"]
    assert amd_nodes
    for pool_name, labels, taints in amd_nodes:
        configs = _device_configs(plan, releases[pools[pool_name].cluster])
        selecting = [c for c in configs if all(labels.get(k) == v for k, v in c["spec"]["selector"].items())]
        # One DeviceConfig per node: the operator refuses overlapping selectors.
        assert len(selecting) == 1, f"{pool_name}: selected by {[c['metadata']['name'] for c in selecting]}"
        [spec] = [c["spec"] for c in selecting]
        # Without the out-of-tree driver there is no /dev/kfd and the device plugin advertises nothing.
        assert spec["driver"]["enable"] is True
        for daemon, (section, field) in AMD_DAEMONS.items():
            placement = {"nodeSelector": spec["selector"], "tolerations": spec[section][field]}
            assert placement_problems(placement, labels, taints) == [], f"{daemon} on {pool_name}"


def test_the_amd_driver_is_the_rocm_release_of_the_vllm_image():
    # ROCm user space (the vLLM image) and the amdgpu kernel driver are released together; the driver
    # KMM installs is named by its ROCm version (DeviceConfig spec.driver.version, e.g. "7.0").
    [config] = plan_of("azure").objects("DeviceConfig")
    rocm = re.search(r":rocm(\d+\.\d+)", catalog.VENDORS["amd"].vllm_image).group(1)
    assert config["spec"]["driver"]["version"] == rocm
