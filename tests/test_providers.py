"""Explicit providers (issue 22): every resource and function call of every shipped stack goes through a
provider the program declares, of its own package, made from the spec — nothing is left to a default
provider, whose region, project and subscription come from wherever `pulumi up` happens to run."""

from __future__ import annotations

import functools

import pytest
import yaml

from conftest import ROOT, SHIPPED_STACKS
from fleetctl.plan import Plan, run_plan

PROVIDER_TYPE = "pulumi:providers:"


@functools.lru_cache(maxsize=None)
def _plan(stack: str) -> Plan:
    return run_plan(stack, charts=False)  # providers do not depend on what charts render


def _package(token: str) -> str:
    return token.split(":", 1)[0]


def _providers(plan: Plan) -> dict[str, str]:
    """URN -> package of each provider the program declares."""
    return {r["urn"]: r["type"].removeprefix(PROVIDER_TYPE) for r in plan.resources
            if r["type"].startswith(PROVIDER_TYPE)}


def test_the_project_disables_every_default_provider():
    # pulumi/pulumi#8829 (default_providers.go shouldDenyRequest): a list of packages, "*" for all;
    # the engine then fails a registration or a call that names no provider.
    config = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert config["pulumi:disable-default-providers"]["value"] == ["*"]


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_every_resource_has_an_explicit_provider_of_its_package(stack):
    plan = _plan(stack)
    providers = _providers(plan)
    # Custom resources, and packaged components (the yaml/v2 ConfigFiles the kubernetes provider expands
    # itself): what the engine would hand to a provider. Our own fleet:* components have none.
    # The builtin pulumi package (StackReference) takes no provider: the engine always allows it.
    managed = [r for r in plan.resources if not r["type"].startswith(PROVIDER_TYPE) and _package(r["type"]) != "pulumi"
               and (r["custom"] or (r["options"] or {}).get("remote"))]
    assert managed
    wrong = {f"{r['type']} {r['name']}": providers.get(r["provider"], r["provider"] or "default provider")
             for r in managed if providers.get(r["provider"]) != _package(r["type"])}
    assert wrong == {}


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_every_function_call_has_an_explicit_provider_of_its_package(stack):
    plan = _plan(stack)
    providers = _providers(plan)
    wrong = {i["token"]: providers.get(i["provider"], i["provider"] or "default provider")
             for i in plan.invokes if providers.get(i["provider"]) != _package(i["token"])}
    assert wrong == {}


def test_the_cloud_stacks_call_functions_at_all():
    # The check above would pass on a plan that recorded no call: the cloud clusters do call some.
    # (multicloud: its parts' calls, merged by the stack set's plan)
    for stacks in (("gcp", "aws", "azure"), ("multicloud",)):
        tokens = {i["token"] for s in stacks for i in _plan(s).invokes}
        assert {"gcp:organizations/getClientConfig:getClientConfig", "aws:ecr/getAuthorizationToken:getAuthorizationToken",
                "azure-native:authorization:getClientConfig"} <= tokens


# --- a second region, project, subscription lands there ----------------------------------------------

def _moved(tmp_path, stack: str, cluster_edit: dict, config: dict | None = None) -> Plan:
    doc = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    doc["config"]["inference-fleet:fleet"]["clusters"][0].update(cluster_edit)
    doc["config"].update(config or {})
    path = tmp_path / f"Pulumi.{stack}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return run_plan(stack, config_file=path, charts=False)


def _placement(plan: Plan, package: str, *keys: str) -> set[tuple]:
    """The (keys...) of the provider behind every resource and call of ``package``."""
    by_urn = {r["urn"]: r for r in plan.resources}

    def of(urn: str) -> tuple:
        inputs = (by_urn.get(urn) or {}).get("inputs", {})
        return tuple(inputs.get(k) for k in keys)

    users = [r["provider"] for r in plan.resources
             if r["type"].startswith(package + ":") and not r["type"].startswith(PROVIDER_TYPE)]
    users += [i["provider"] for i in plan.invokes if i["token"].startswith(package + ":")]
    assert users
    return {of(u) for u in users}


def test_a_gke_cluster_in_another_project_and_region_is_managed_there(tmp_path):
    # The provider's project and region place what names neither (the service account, the IAM members,
    # the global network, getClientConfig's project), so they must be the spec's.
    base = yaml.safe_load((ROOT / "Pulumi.gcp.yaml").read_text())["config"]["inference-fleet:fleet"]["clusters"][0]
    assert base["region"] != "europe-west4"
    plan = _moved(tmp_path, "gcp", {"region": "europe-west4", "zones": ["europe-west4-a"], "project": "fleet-eu-7"})
    assert _placement(plan, "gcp", "project", "region") == {("fleet-eu-7", "europe-west4")}


def test_a_gke_cluster_without_a_project_takes_the_stacks_gcp_project(tmp_path):
    # An explicit provider reads no `gcp:` stack config (Pulumi.gcp.yaml tells users to set gcp:project):
    # the cluster passes it on.
    plan = _moved(tmp_path, "gcp", {}, {"gcp:project": "fleet-from-config"})
    assert _placement(plan, "gcp", "project") == {("fleet-from-config",)}
    # Workload Identity's pool is the project getClientConfig reports, which is the provider's.
    cluster = plan.find("gcp:container/cluster:Cluster", "gcp-central-gke")["inputs"]
    assert cluster["workloadIdentityConfig"]["workloadPool"] == "fleet-from-config.svc.id.goog"


def test_an_aks_cluster_in_another_region_and_subscription_is_managed_there(tmp_path):
    base = yaml.safe_load((ROOT / "Pulumi.azure.yaml").read_text())["config"]["inference-fleet:fleet"]["clusters"][0]
    assert base["region"] != "westeurope"
    sub = "11111111-2222-3333-4444-555555555555"
    plan = _moved(tmp_path, "azure", {"region": "westeurope", "zones": []}, {"azure-native:subscriptionId": sub})
    assert _placement(plan, "azure-native", "location", "subscriptionId") == {("westeurope", sub)}


def test_an_eks_clusters_lookups_go_to_its_region_too(tmp_path):
    # test_resource_options checks the AWS resources; the lookups (availability zones, the ECR token)
    # must ask the same region: a token for another region's registry does not log in to this one.
    plan = _moved(tmp_path, "aws", {"region": "us-west-2", "zones": []})
    assert {i["token"] for i in plan.invokes if i["token"].startswith("aws:")} >= {
        "aws:ecr/getAuthorizationToken:getAuthorizationToken", "aws:index/getAvailabilityZones:getAvailabilityZones"}
    assert _placement(plan, "aws", "region") == {("us-west-2",)}
