"""Two stacks of this program in one AWS account, Azure subscription or GCP project never ask for the
same cloud name, and the ACR name is not one anyone could compute from this repository (issue 17
item 6; the rule is fleet/naming.py's).

Where each name must be unique (the clouds' naming rules):
* EKS cluster names per account and region; ECR repository names per registry (account + region).
* Azure resource group names per subscription; AKS cluster names per resource group, but their
  ``dnsPrefix`` makes the API server's FQDN; ACR registry names in all of Azure (``<name>.azurecr.io``,
  checkNameAvailability is global).
* GCP networks, subnetworks, routers, firewall rules, service account ids and GKE clusters (per
  location) per project; Artifact Registry repository ids per project and location.
Node pools, agent pools, ACR scope maps and tokens live inside their cluster or registry.
"""

from __future__ import annotations

import pytest
import yaml

from conftest import ROOT
from fleet import naming
from fleetctl.plan import run_plan

# resource type -> the inputs that are its name in the cloud's account/subscription/project scope
SCOPED_NAMES = {
    "aws:eks/cluster:Cluster": ("name",),
    "aws:ecr/repository:Repository": ("name",),
    "azure-native:resources:ResourceGroup": ("resourceGroupName",),
    "azure-native:containerservice:ManagedCluster": ("resourceName", "dnsPrefix"),
    "azure-native:containerregistry:Registry": ("registryName",),
    "gcp:compute/network:Network": ("name",),
    "gcp:compute/subnetwork:Subnetwork": ("name",),
    "gcp:compute/router:Router": ("name",),
    "gcp:compute/routerNat:RouterNat": ("name",),
    "gcp:compute/firewall:Firewall": ("name",),
    "gcp:container/cluster:Cluster": ("name",),
    "gcp:serviceaccount/account:Account": ("accountId",),
    "gcp:artifactregistry/repository:Repository": ("repositoryId",),
}


def cloud_names(plan) -> set[tuple[str, str, str]]:
    out = set()
    for r in plan.resources:
        for key in SCOPED_NAMES.get(r["type"], ()):
            value = r["inputs"].get(key)
            assert isinstance(value, str) and value, f"{r['name']}: {key} is not set explicitly"
            out.add((r["type"], key, value))
    return out


@pytest.fixture(scope="module")
def plans():
    # Chart rendering says nothing about names: plan without it.
    return {s: run_plan(s, charts=False) for s in ("aws", "azure", "gcp", "multicloud")}


@pytest.mark.parametrize("a,b", [("aws", "multicloud"), ("azure", "multicloud"), ("gcp", "multicloud")])
def test_shipped_stacks_sharing_an_account_ask_for_no_common_cloud_name(plans, a, b):
    names_a, names_b = cloud_names(plans[a]), cloud_names(plans[b])
    clouds = {t.split(":")[0] for t, _, _ in names_a}
    assert names_a and {t.split(":")[0] for t, _, _ in names_b} >= clouds  # both have that cloud's resources
    assert names_a & names_b == set()


def test_a_copy_of_a_stack_under_another_name_asks_for_names_of_its_own(plans, tmp_path):
    # The multicloud set's spec as one stack named staging: its names must be its own.
    staging = tmp_path / "Pulumi.staging.yaml"
    fleet = yaml.safe_load((ROOT / "fleets" / "multicloud.yaml").read_text())["fleet"]
    staging.write_text(yaml.safe_dump({"config": {"inference-fleet:fleet": fleet}}))
    copy = run_plan("staging", config_file=staging, charts=False)
    ours, theirs = cloud_names(copy), cloud_names(plans["multicloud"])
    assert len(ours) == len(theirs)
    assert ours & theirs == set()


def test_every_cloud_name_fits_its_cloud(plans):
    limits = {"aws:eks/cluster:Cluster": 100, "azure-native:resources:ResourceGroup": 90,
              "azure-native:containerservice:ManagedCluster": 54, "gcp:container/cluster:Cluster": 40,
              "gcp:serviceaccount/account:Account": 30}
    for plan in plans.values():
        for typ, key, value in cloud_names(plan):
            if typ == "azure-native:containerregistry:Registry":
                assert value.isalnum() and value.islower() and 5 <= len(value) <= 50, value
            else:
                assert len(value) <= limits.get(typ, 63), (typ, value)


def test_the_acr_name_depends_on_the_subscription_not_only_on_public_code():
    name = naming.global_name("azure-east", stack="azure", account="sub-a", max_len=50)
    assert name == naming.global_name("azure-east", stack="azure", account="sub-a", max_len=50)  # stable
    assert name != naming.global_name("azure-east", stack="azure", account="sub-b", max_len=50)
    assert name != naming.global_name("azure-east", stack="multicloud", account="sub-a", max_len=50)
    # "a-b" and "ab" drop to the same letters; the digest still tells them apart.
    assert naming.global_name("a-b", stack="s", account="x", max_len=50) != \
        naming.global_name("ab", stack="s", account="x", max_len=50)
    long = naming.global_name("c" * 80, stack="s" * 80, account="x", max_len=50)
    assert long.isalnum() and len(long) == 50


def test_a_cloud_name_without_its_stack_or_account_is_refused():
    with pytest.raises(ValueError, match="stack"):
        naming.cloud_name("aws-east", stack="")
    with pytest.raises(ValueError, match="account"):
        naming.global_name("azure-east", stack="azure", account="", max_len=50)
