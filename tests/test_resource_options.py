"""Resource options that let a change complete, and keep what must not go: on what every cloud stack declares."""

from __future__ import annotations

import functools

import pytest

from fleetctl.diff import compare
from fleetctl.plan import run_plan

CLOUD_STACKS = ("gcp", "aws", "azure", "multicloud")

PROTECTED = {
    # Clusters, networks, registries and resource groups: the engine refuses to delete or replace a
    # protected resource (pulumi step_generator.go "unable to replace resource ... marked for protection").
    "gcp": {"gcp:container/cluster:Cluster", "gcp:compute/network:Network", "gcp:compute/subnetwork:Subnetwork",
            "gcp:artifactregistry/repository:Repository"},
    "aws": {"aws:eks/cluster:Cluster", "aws:ec2/vpc:Vpc", "aws:ecr/repository:Repository"},
    "azure": {"azure-native:containerservice:ManagedCluster", "azure-native:resources:ResourceGroup",
              "azure-native:containerregistry:Registry"},
}
POOLS = {"gcp:container/nodePool:NodePool", "aws:eks/nodeGroup:NodeGroup", "azure-native:containerservice:AgentPool"}


@functools.lru_cache(maxsize=None)
def _resources(stack: str) -> tuple:
    return tuple(run_plan(stack, charts=False).resources)


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_clusters_networks_and_registries_are_protected(stack):
    resources = _resources(stack)
    clouds = [c for c in PROTECTED if any(r["type"].startswith(c) for r in resources)]
    assert clouds
    for cloud in clouds:
        for typ in PROTECTED[cloud]:
            found = [r for r in resources if r["type"] == typ]
            assert found, (stack, typ)
            assert all((r["options"] or {}).get("protect") for r in found), [r["name"] for r in found]


@pytest.mark.parametrize("stack", ["gcp", "multicloud"])
def test_gke_clusters_keep_the_providers_deletion_protection(stack):
    # terraform-provider-google resource_container_cluster.go: Delete fails while deletion_protection is true.
    clusters = [r for r in _resources(stack) if r["type"] == "gcp:container/cluster:Cluster"]
    assert clusters and all(r["inputs"]["deletionProtection"] is True for r in clusters)


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_every_node_pool_is_deleted_before_it_is_replaced(stack):
    # Pool names are fixed and unique in their cluster (GKE 409 already exists, EKS ResourceInUseException,
    # azure-native refuses an existing ID): a create-first replacement would fail half-way through `up`.
    pools = [r for r in _resources(stack) if r["type"] in POOLS]
    assert pools
    assert [r["name"] for r in pools if not (r["options"] or {}).get("delete_before_replace")] == []


def _pool(options: dict, spot: bool) -> dict:
    return {"resources": [{
        "urn": "urn:pulumi:s::p::fleet:gke:GkeCluster$gcp:container/nodePool:NodePool::c-t4",
        "type": "gcp:container/nodePool:NodePool", "name": "c-t4", "custom": True, "parent": "", "provider": "",
        "dependencies": [], "property_dependencies": {}, "options": options,
        "inputs": {"name": "t4", "cluster": "c", "location": "us-central1", "nodeConfig": {"spot": spot}}}]}


def test_a_create_first_pool_replacement_is_reported_as_failing_and_a_delete_first_one_is_not():
    # Pulumi replaces create-first by default; GKE refuses a second pool named t4 in the cluster.
    (bare,), _ = compare(_pool({}, True), _pool({}, False))
    assert (bare.action, bare.order) == ("replace", "create before delete")
    assert "409" in bare.fails and "delete_before_replace" in bare.fails
    (safe,), _ = compare(_pool({"delete_before_replace": True}, True), _pool({"delete_before_replace": True}, False))
    assert (safe.action, safe.order, safe.fails) == ("replace", "delete first", "")


def test_deleting_a_protected_resource_is_reported_as_failing():
    doc = _pool({"protect": True}, True)
    (gone,), _ = compare(doc, {"resources": []})
    assert gone.action == "delete" and "protected" in gone.fails and "pulumi state unprotect" in gone.fails


def _aws_resources(doc_path=None) -> list:
    return run_plan("aws", config_file=doc_path, charts=False).resources


def _regions(resources: list) -> dict:
    """Each AWS resource's name -> the region of the provider it was given (None: a default provider)."""
    providers = {r["urn"]: r for r in resources if r["type"] == "pulumi:providers:aws"}
    return {r["name"]: (providers.get(r["provider"]) or {}).get("inputs", {}).get("region")
            for r in resources if r["type"].startswith("aws:")}


def test_every_aws_resource_lands_in_the_specs_region(tmp_path):
    import yaml

    from conftest import ROOT

    # Without an explicit provider the ambient region (AWS_REGION, aws:region) decides, while the
    # kubeconfig and the autoscaler use the spec's: one explicit provider per cluster, from the spec.
    doc = yaml.safe_load((ROOT / "Pulumi.aws.yaml").read_text())
    region = doc["config"]["inference-fleet:fleet"]["clusters"][0]["region"]
    assert set(_regions(list(_resources("aws"))).values()) == {region}
    doc["config"]["inference-fleet:fleet"]["clusters"][0]["region"] = "us-west-2"
    path = tmp_path / "Pulumi.aws.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    moved = _regions(_aws_resources(path))
    assert moved and set(moved.values()) == {"us-west-2"}


BUNDLE = "kubernetes:yaml/v2:ConfigFile"


def _crds_of(configfile: dict) -> set[str]:
    from fleetctl.charts import bundle_objects

    return {f"{kind}/{name}" for _, kind, name in bundle_objects(configfile["inputs"]["file"])
            if kind == "CustomResourceDefinition"}


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_every_crd_of_a_cloud_cluster_is_protected_and_retained(stack):
    # Deleting a CRD deletes every object of its kinds: removing the bundle's ConfigFile would take every
    # Gateway, HTTPRoute and InferencePool with it. The options are what the program's transform gives each
    # object the kubernetes provider registers under the ConfigFile (the plan applies it to the pinned list).
    bundles = [r for r in _resources(stack) if r["type"] == BUNDLE]
    crds = {b["name"]: _crds_of(b) for b in bundles}
    assert {"inferencepools.inference.networking.k8s.io", "httproutes.gateway.networking.k8s.io",
            "gateways.gateway.networking.k8s.io"} <= {c.split("/", 1)[1] for cs in crds.values() for c in cs}
    for b in bundles:
        kept = {k for k, o in b["child_options"].items() if o.get("protect") and o.get("retain_on_delete")}
        assert kept == crds[b["name"]], b["name"]


def test_a_local_clusters_crds_go_with_pulumi_destroy():
    # kind/k3d clusters are disposable: the e2e workflow tears dev down with `pulumi destroy`, which a
    # protected CRD would stop.
    bundles = [r for r in _resources("dev") if r["type"] == BUNDLE]
    assert bundles and all(b["child_options"] == {} for b in bundles)


def test_removing_a_cloud_clusters_crd_bundle_is_reported_as_failing():
    # The review reads the options the bundle's CRDs get: removing the ConfigFile would delete them.
    doc = {"resources": list(_resources("gcp"))}
    bundle = next(r for r in doc["resources"] if r["type"] == BUNDLE and "inference-extension" in r["name"])
    changes, _ = compare(doc, {"resources": [r for r in doc["resources"] if r is not bundle]})
    (gone,) = [c for c in changes if c.name == bundle["name"]]
    assert gone.action == "delete" and "protected" in gone.fails and "inferencepools" in gone.fails


def test_dropping_the_crds_protection_shows_in_the_review():
    # A change to keep_crds changes nothing a ConfigFile's own inputs record: the review compares the
    # options its objects get.
    import copy

    base = {"resources": list(_resources("gcp"))}
    head = copy.deepcopy(base)
    bundle = next(r for r in head["resources"] if r["type"] == BUNDLE and "gateway-api" in r["name"])
    bundle["child_options"] = {}
    (ch,), _ = compare(base, head)
    assert ch.name == bundle["name"] and ch.action == "update"
    assert "(option of CustomResourceDefinition/httproutes.gateway.networking.k8s.io)" in {p.path for p in ch.properties}
