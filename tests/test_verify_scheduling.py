"""fleet verify, scheduling: broken topologies (edited plan directories) are reported by object name.

Each test first puts the part it is about into a working state (so it holds whether or not the
shipped stack is fixed yet), checks the verifier is silent about it, then breaks it.
"""

from __future__ import annotations

import pytest

from verify_fixtures import edit, edit_plan, findings_for, needs_charts, plan_copy, template

pytestmark = [pytest.mark.slow, needs_charts]

AZ = "azure-east-k8s"
SPOT = {"key": "kubernetes.azure.com/scalesetpriority", "operator": "Equal", "value": "spot", "effect": "NoSchedule"}


def _nvidia_plugin_fits(plan_dir, cluster, extra_tolerations=()):
    """The NVIDIA device plugin placed on our pools (what the fix does): pool label, GPU (+ spot) toleration."""
    def change(d):
        t = template(d)
        t.pop("affinity", None)
        t["nodeSelector"] = {"inference-fleet.io/vendor": "nvidia"}
        t["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                            *extra_tolerations]
    edit(plan_dir, cluster, "DaemonSet", "gpu-operators", "nvidia-device-plugin", change)


def _amd_plugin_fits(plan_dir):
    def change(d):
        d["spec"]["selector"] = {"inference-fleet.io/vendor": "amd"}
        d["spec"]["devicePlugin"]["devicePluginTolerations"] = [
            {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"}, SPOT]
        d["spec"]["driver"]["enable"] = True
        d["spec"]["driver"]["tolerations"] = [{"operator": "Exists"}]
    # The program's DeviceConfig (components/platform.py; the chart's default one is off since issue 17 item 14).
    edit(plan_dir, AZ, "DeviceConfig", "gpu-operators", "mi300x", change)


def test_nvidia_device_plugin_with_upstream_default_affinity_advertises_no_gpu(tmp_path):
    # nvidia-device-plugin chart 0.18.0 values.yaml: required affinity on NFD's pci-10de label, the
    # Tegra CPU vendor label or nvidia.com/gpu.present=true; EKS node groups carry none of them.
    d = plan_copy("aws", tmp_path)
    _nvidia_plugin_fits(d, "aws-east-k8s")
    assert not findings_for(d, "scheduling", "NodePool/aws/nvidia-t4")
    assert not findings_for(d, "scheduling", "Deployment/fleet-inference/phi-3-mini-nvidia-t4")

    def upstream_default(doc):
        template(doc)["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "feature.node.kubernetes.io/pci-10de.present", "operator": "In", "values": ["true"]}]}]}}}
    edit(d, "aws-east-k8s", "DaemonSet", "gpu-operators", "nvidia-device-plugin", upstream_default)
    pool = findings_for(d, "scheduling", "NodePool/aws/nvidia-t4")
    assert pool and "pci-10de" in pool[0].problem and "never advertised" in pool[0].problem
    server = findings_for(d, "scheduling", "Deployment/fleet-inference/phi-3-mini-nvidia-t4")
    assert server and "no device plugin advertises" in server[0].problem
    assert server[0].file.endswith("Deployment_fleet-inference_phi-3-mini-nvidia-t4.yaml")


def test_amd_device_plugin_from_the_default_deviceconfig_lands_on_no_mi300x_node(tmp_path):
    # gpu-operator-charts v1.4.0: the default DeviceConfig selects feature.node.kubernetes.io/amd-gpu
    # (an NFD label) and its device plugin tolerates nothing; the pool is tainted amd.com/gpu + spot.
    d = plan_copy("azure", tmp_path)
    _amd_plugin_fits(d)
    assert not findings_for(d, "scheduling", "NodePool/azure/amdmi300x")
    assert not findings_for(d, "scheduling", "Deployment/fleet-inference/llama-3-1-8b-amdmi300x")

    edit(d, AZ, "DeviceConfig", "gpu-operators", "mi300x",
         lambda doc: doc["spec"]["devicePlugin"].update(devicePluginTolerations=[]))
    pool = findings_for(d, "scheduling", "NodePool/azure/amdmi300x")
    assert pool and "DeviceConfig/gpu-operators/mi300x" in pool[0].problem
    assert "amd.com/gpu=present:NoSchedule" in pool[0].problem
    assert findings_for(d, "scheduling", "Deployment/fleet-inference/llama-3-1-8b-amdmi300x")


def test_amd_pool_without_any_driver_is_a_finding(tmp_path):
    # AKS gpuProfile.driver None installs no driver; the DeviceConfig's driver.enable false (the
    # chart default) leaves the inbox driver, which the Ubuntu node image lacks for MI300X.
    d = plan_copy("azure", tmp_path)
    _amd_plugin_fits(d)
    assert not [f for f in findings_for(d, "scheduling", "NodePool/azure/amdmi300x") if "driver" in f.problem]
    edit(d, AZ, "DeviceConfig", "gpu-operators", "mi300x", lambda doc: doc["spec"]["driver"].update(enable=False))
    assert [f for f in findings_for(d, "scheduling", "NodePool/azure/amdmi300x") if "driver" in f.problem]


def test_dropped_spot_toleration_is_reported_even_when_the_pool_does_not_declare_the_taint(tmp_path):
    # AKS taints every Spot pool kubernetes.azure.com/scalesetpriority=spot:NoSchedule itself
    # (learn.microsoft.com/azure/aks/spot-node-pool), declared or not.
    d = plan_copy("azure", tmp_path)
    _nvidia_plugin_fits(d, AZ, [SPOT])
    name = "Deployment/fleet-inference/qwen2-5-3b-nvidiat4"
    assert not findings_for(d, "scheduling", name)
    edit_plan(d, "azure-east-nvidiat4",
              lambda i: i.update(nodeTaints=[t for t in i["nodeTaints"] if "scalesetpriority" not in t]))
    assert not findings_for(d, "scheduling", name)  # still tolerated: the toleration is there

    def drop_spot(doc):
        t = template(doc)
        t["tolerations"] = [x for x in t["tolerations"] if x["key"] != SPOT["key"]]
    edit(d, AZ, "Deployment", "fleet-inference", "qwen2-5-3b-nvidiat4", drop_spot)
    got = findings_for(d, "scheduling", name)
    assert got and "kubernetes.azure.com/scalesetpriority=spot:NoSchedule (added by the cloud)" in got[0].problem
    assert "add the toleration" in got[0].fix


def test_device_plugin_without_the_spot_toleration_leaves_the_aks_pool_unadvertised(tmp_path):
    d = plan_copy("azure", tmp_path)
    _nvidia_plugin_fits(d, AZ, [SPOT])
    assert not findings_for(d, "scheduling", "NodePool/azure/nvidiat4")
    _nvidia_plugin_fits(d, AZ)  # GPU toleration only
    got = findings_for(d, "scheduling", "NodePool/azure/nvidiat4")
    assert got and "scalesetpriority=spot" in got[0].problem


def test_gke_tpu_taint_is_the_clouds_even_when_not_declared(tmp_path):
    # GKE taints TPU nodes google.com/tpu=present:NoSchedule and runs the TPU device plugin itself.
    d = plan_copy("gcp", tmp_path, charts=False)
    name = "Deployment/fleet-inference/qwen2-5-3b-tpu-tpu-v6e"
    edit_plan(d, "gcp-central-tpu-v6e", lambda i: i["nodeConfig"].pop("taints"))
    assert not findings_for(d, "scheduling", name)

    def drop(doc):
        template(doc)["tolerations"] = [x for x in template(doc)["tolerations"] if x["key"] != "google.com/tpu"]
    edit(d, "gcp-central-k8s", "Deployment", "fleet-inference", "qwen2-5-3b-tpu-tpu-v6e", drop)
    got = findings_for(d, "scheduling", name)
    assert got and "google.com/tpu=present:NoSchedule (added by the cloud)" in got[0].problem


def test_cpu_request_above_the_machines_allocatable(tmp_path):
    d = plan_copy("gcp", tmp_path, charts=False)
    name = "Deployment/fleet-inference/qwen2-5-3b-nvidia-t4"
    assert not findings_for(d, "scheduling", name)

    def big(doc):  # n1-standard-4: 4 vCPU, about 3.92 allocatable
        for c in template(doc)["containers"]:
            c["resources"]["requests"]["cpu"] = "4"
            c["resources"]["limits"]["cpu"] = "4"
    edit(d, "gcp-central-k8s", "Deployment", "fleet-inference", "qwen2-5-3b-nvidia-t4", big)
    got = findings_for(d, "scheduling", name)
    assert got and "requests 4 CPU" in got[0].problem and "n1-standard-4" in got[0].problem


def test_more_gpus_than_the_node_has(tmp_path):
    d = plan_copy("gcp", tmp_path, charts=False)

    def eight(doc):
        for c in template(doc)["containers"]:
            c["resources"]["requests"]["nvidia.com/gpu"] = "2"
            c["resources"]["limits"]["nvidia.com/gpu"] = "2"
    edit(d, "gcp-central-k8s", "Deployment", "fleet-inference", "llama-3-1-8b-nvidia-l4", eight)
    got = findings_for(d, "scheduling", "Deployment/fleet-inference/llama-3-1-8b-nvidia-l4")
    assert got and "requests 2 nvidia.com/gpu but a g2-standard-8 node has 1" in got[0].problem


def test_accelerator_daemonset_that_lands_nowhere(tmp_path):
    # dcgm-exporter is aimed at our NVIDIA pools (nodeSelector inference-fleet.io/vendor); without the
    # AKS spot toleration it lands on no node.
    d = plan_copy("azure", tmp_path)
    name = "DaemonSet/gpu-operators/dcgm-exporter"
    edit(d, AZ, "DaemonSet", "gpu-operators", "dcgm-exporter",
         lambda doc: template(doc).update(tolerations=[{"operator": "Exists"}]))
    assert not findings_for(d, "scheduling", name)
    edit(d, AZ, "DaemonSet", "gpu-operators", "dcgm-exporter",
         lambda doc: template(doc).update(tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists"}]))
    got = findings_for(d, "scheduling", name)
    assert got and got[0].problem.startswith("lands on no node pool")
