"""The azure stack's AKS cluster, as the offline plan records it: NVIDIA and MI300X agent pools on
Spot (evict Delete, max price -1) from zero, the spot label and taint AKS adds declared, the GPU
driver chosen per vendor, workload identity, and an ACR the kubelet identity may pull from."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import ROOT, plan_of
from fleet.spec import SpecError, load_spec
from wiring import fed_by

AGENT_POOL = "azure-native:containerservice:AgentPool"
SPOT_KEY = "kubernetes.azure.com/scalesetpriority"


@pytest.fixture(scope="module")
def plan():
    return plan_of("azure")


def _fleet():
    return yaml.safe_load((ROOT / "Pulumi.azure.yaml").read_text())["config"]["inference-fleet:fleet"]


@pytest.mark.parametrize("pool,vm", [("nvidiat4", "Standard_NC4as_T4_v3"), ("amdmi300x", "Standard_ND96isr_MI300X_v5")])
def test_gpu_agent_pools_are_spot_evict_delete_any_price_from_zero(plan, pool, vm):
    r = plan.find(AGENT_POOL, f"azure-east-{pool}")
    i = r["inputs"]
    assert (i["vmSize"], i["mode"], i["agentPoolName"]) == (vm, "User", pool)
    assert i["scaleSetPriority"] == "Spot"
    assert i["scaleSetEvictionPolicy"] == "Delete"
    assert i["spotMaxPrice"] == -1
    assert i["enableAutoScaling"] is True and i["minCount"] == 0 and i["count"] == 0
    assert r["options"]["ignore_changes"] == ["count"]


def test_the_spot_label_and_taint_aks_adds_are_declared(plan):
    for r in plan.by_type(AGENT_POOL):
        i = r["inputs"]
        assert i["nodeLabels"][SPOT_KEY] == "spot"
        assert f"{SPOT_KEY}=spot:NoSchedule" in i["nodeTaints"]


def test_nvidia_pool_gets_the_aks_driver_and_mi300x_pool_does_not(plan):
    assert plan.find(AGENT_POOL, "azure-east-nvidiat4")["inputs"]["gpuProfile"] == {"driver": "Install"}
    mi300x = plan.find(AGENT_POOL, "azure-east-amdmi300x")["inputs"]
    assert mi300x["gpuProfile"] == {"driver": "None"}
    assert "amd.com/gpu=present:NoSchedule" in mi300x["nodeTaints"]
    # The AMD GPU operator, from the platform layer, is what drives MI300X nodes.
    charts = {r["inputs"]["chart"] for r in plan.by_type("kubernetes:helm.sh/v3:Release")}
    assert "gpu-operator-charts" in charts


def test_cluster_has_workload_identity_and_a_system_pool(plan):
    cluster = plan.find("azure-native:containerservice:ManagedCluster", "azure-east-aks")["inputs"]
    assert cluster["oidcIssuerProfile"]["enabled"] is True
    assert cluster["securityProfile"]["workloadIdentity"]["enabled"] is True
    [system] = cluster["agentPoolProfiles"]
    assert system["mode"] == "System" and "scaleSetPriority" not in system
    assert system["minCount"] == plan.spec.clusters[0].system_nodes


def test_kubelet_identity_may_pull_from_acr_which_has_no_admin_user(plan):
    acr = plan.find("azure-native:containerregistry:Registry", "azure-east-registry")
    assert acr["inputs"]["adminUserEnabled"] is False
    pull = plan.find("azure-native:authorization:RoleAssignment", "azure-east-registry-kubelet-pull")["inputs"]
    assert pull["roleDefinitionId"].endswith("/roleDefinitions/7f951dda-4ed3-4680-a7ca-43fe172d538d")  # AcrPull
    record = plan.find("azure-native:authorization:RoleAssignment", "azure-east-registry-kubelet-pull")
    # On the registry, for the cluster's kubelet identity (ManagedCluster identityProfile.kubeletidentity).
    assert fed_by(plan, record, "scope") == {("azure-native:containerregistry:Registry", "azure-east-registry")}
    assert fed_by(plan, record, "principalId") == {("azure-native:containerservice:ManagedCluster", "azure-east-aks")}
    image = plan.by_type("docker-build:index:Image")[0]["inputs"]
    login = f"{acr['inputs']['registryName']}.azurecr.io"
    assert [t.rsplit(":", 1)[0] for t in image["tags"]] == [f"{login}/fleet-router"]
    # Issue 17 item 5: the push needs nothing generated after the first `up`. The program logs in as
    # the identity Pulumi runs as, with an ACR refresh token for its Entra token; the null GUID user
    # name is how ACR knows the password is one (Azure/acr docs/AAD-OAuth.md). Before, the user was
    # the push token, whose password was empty until `az acr token credential generate`.
    assert image["registries"] == [{"address": login, "username": "00000000-0000-0000-0000-000000000000",
                                    "password": "[secret]"}]


def test_the_in_cluster_push_token_can_only_touch_the_amd_driver_repository(plan):
    # The AMD operator's KMM pushes the driver image it builds with this token (components/platform.py);
    # the router image is no longer pushed with it.
    scope = plan.find("azure-native:containerregistry:ScopeMap", "azure-east-registry-push")["inputs"]
    repos = {a.split("/")[1] for a in scope["actions"]}
    assert repos == {"amdgpu-driver"}
    assert all(a.startswith("repositories/") and a.split("/", 2)[2] in ("content/read", "content/write", "metadata/read")
               for a in scope["actions"])


def test_acr_name_is_letters_and_digits_only(plan):
    name = plan.find("azure-native:containerregistry:Registry", "azure-east-registry")["inputs"]["registryName"]
    assert name.isalnum() and name.islower() and 5 <= len(name) <= 50


def test_agent_pool_name_aks_would_reject_is_refused_naming_the_field():
    fleet = copy.deepcopy(_fleet())
    fleet["pools"][0]["name"] = "nvidia-t4"  # AKS: letters and digits only
    fleet["models"][0]["pools"] = ["nvidia-t4"]
    fleet["tiers"][1]["backends"][0]["pool"] = "nvidia-t4"
    with pytest.raises(SpecError) as e:
        load_spec(fleet, "Pulumi.azure.yaml")
    assert [p for p, _ in e.value.problems] == ["pools[0].name"]


def test_tpu_on_azure_is_refused_naming_the_accelerator_field():
    fleet = copy.deepcopy(_fleet())
    fleet["pools"][1].update(accelerator="tpu-v6e", machine_type=None, tpu_topology="2x2")
    with pytest.raises(SpecError) as e:
        load_spec(fleet, "Pulumi.azure.yaml")
    assert ("pools[1].accelerator" in [p for p, _ in e.value.problems])
