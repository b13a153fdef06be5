"""The PR review's verdicts on realistic spec edits, checked against the providers' own rules.

Each case edits one shipped stack file the way a pull request would, plans both sides offline (the
whole program under mocks, as ``fleet diff`` does) and compares them. The expected verdict of every
resource named in a case is the upstream fact stated beside it (the source is also in
:mod:`fleetctl.diff_rules`); a case also fails if anything it does not name is replaced.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml

from conftest import ROOT
from fleetctl.diff import compare
from fleetctl.plan import run_plan

NODE_POOL = "gcp:container/nodePool:NodePool"
GKE = "gcp:container/cluster:Cluster"
NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
AGENT_POOL = "azure-native:containerservice:AgentPool"
AKS = "azure-native:containerservice:ManagedCluster"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


@dataclass(frozen=True)
class Expect:
    type: str
    name: str
    action: str
    """``update``, ``replace``, ``not-applied`` (an update the provider never sends), ``ignored`` (only
    fields an ``ignore_changes`` option keeps changed), ``create``, ``delete``."""
    blames: str | None = None
    """A property path the verdict must name (the one the upstream rule is about)."""
    fails: str | None = None
    """Text the review's "`up` fails" warning must contain (None: it must have none)."""
    order: str | None = None
    """For a replace: ``delete first`` or ``create before delete`` (None: not checked)."""


@dataclass(frozen=True)
class Case:
    id: str
    stack: str
    edit: Callable[[dict], None]
    expect: tuple[Expect, ...]
    others_may_replace: tuple[str, ...] = field(default=())
    """Names of resources that may also be replaced (the router ConfigMap any pool change rewrites)."""


def _set(path: str, value):
    """An edit of the fleet spec: ``pools.0.spot`` = value."""
    def edit(fleet: dict) -> None:
        *parents, last = path.split(".")
        node = fleet
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[int(last) if last.isdigit() else last] = value
    return edit


ROUTER_CONFIG = Expect(CONFIG_MAP, "router-config", "replace", 'data["config.yaml"]', order="delete first")
# ^ pulumi-kubernetes diff.go forceNewProperties: a ConfigMap's data replaces it unless the provider
#   sets enableConfigMapMutable (ours does not) — the router's config follows every pool and tier edit.
#   Its name stays, so the provider deletes it first (Diff: DeleteBeforeReplace for a same-named object).

CASES = [
    # --- GKE (terraform-provider-google v7.45.0) -----------------------------------------------------
    Case("gke-pool-spot-off", "gcp", _set("pools.0.spot", False), (
        # node_config.go: spot is ForceNew.
        # The pool's name stays and GKE holds names unique in a cluster: gke.py deletes first.
        Expect(NODE_POOL, "gcp-central-nvidia-t4", "replace", "nodeConfig.spot", order="delete first"),
        ROUTER_CONFIG)),
    Case("gke-pool-bigger-machine", "gcp", _set("pools.0.machine_type", "n1-standard-16"), (
        # machine_type is not ForceNew (nodePoolNodeConfigUpdate resizes the nodes in place), but the
        # catalog gives n1-standard-16 four T4s and guest_accelerator.count is ForceNew.
        Expect(NODE_POOL, "gcp-central-nvidia-t4", "replace", "nodeConfig.guestAccelerators[0].count"),
        ROUTER_CONFIG)),
    Case("gke-pool-more-nodes", "gcp", _set("pools.0.max_nodes", 4), (
        # autoscaling is updated in place (nodePoolUpdate: HasChange("autoscaling")).
        Expect(NODE_POOL, "gcp-central-nvidia-t4", "update"),)),
    Case("gke-tpu-topology", "gcp", _set("pools.2.tpu_topology", "2x4"), (
        # placement_policy is a ForceNew block, but tpu_topology inside it is not ForceNew and
        # nodePoolUpdate never sends it: the SDK diffs nested fields with their own schema.
        Expect(NODE_POOL, "gcp-central-tpu-v6e", "not-applied", "placementPolicy.tpuTopology"),)),
    Case("gke-public-nodes", "gcp", _set("clusters.0.private_nodes", False), (
        # private_cluster_config.enable_private_nodes is not ForceNew in resource_container_cluster.go.
        Expect(GKE, "gcp-central-gke", "update"),)),
    Case("gke-second-zone", "gcp", _set("clusters.0.zones", ["us-central1-b", "us-central1-c"]), (
        # node_locations is not ForceNew on the cluster or the pools (nodePoolUpdate sets Locations).
        Expect(GKE, "gcp-central-gke", "update"),
        Expect(NODE_POOL, "gcp-central-nvidia-t4", "update"),
        Expect(NODE_POOL, "gcp-central-nvidia-l4", "update"),
        Expect(NODE_POOL, "gcp-central-tpu-v6e", "update"))),
    Case("gke-model-context", "gcp", _set("models.0.max_context", 2048), (
        # A Deployment's pod template is not in diff.go's apps/v1 Deployment list (only spec.selector).
        Expect(DEPLOYMENT, "gcp-central-inference-qwen2-5-3b-nvidia-t4-deployment", "update"),)),
    Case("gke-tier-weights", "gcp", _set("tiers.1.backends", [{"pool": "nvidia-t4", "weight": 50},
                                                                {"pool": "tpu-v6e", "weight": 50}]), (
        ROUTER_CONFIG,
        # The router Deployment only changes its config-checksum annotation: an in-place rollout.
        Expect(DEPLOYMENT, "router-deployment", "update"))),
    # --- EKS (terraform-provider-aws v6, internal/service/eks/node_group.go) -----------------------
    Case("eks-group-spot-off", "aws", _set("pools.0.spot", False), (
        # capacity_type is ForceNew.
        Expect(NODE_GROUP, "aws-east-nvidia-t4", "replace", "capacityType", order="delete first"),
        # The cluster-autoscaler capacity-type tag goes with the spot flag (a plain delete).
        Expect("aws:autoscaling/tag:Tag", "aws-east-nvidia-t4-ca-label-eks-amazonaws-com-capacitytype", "delete"),
        ROUTER_CONFIG)),
    Case("eks-group-bigger-instance", "aws", _set("pools.0.machine_type", "g4dn.12xlarge"), (
        # instance_types is ForceNew.
        Expect(NODE_GROUP, "aws-east-nvidia-t4", "replace", "instanceTypes[0]"), ROUTER_CONFIG)),
    Case("eks-group-more-nodes", "aws", _set("pools.0.max_nodes", 5), (
        # scaling_config is updated in place (UpdateNodegroupConfig).
        Expect(NODE_GROUP, "aws-east-nvidia-t4", "update"),)),
    Case("eks-more-system-nodes", "aws", _set("clusters.0.system_nodes", 3), (
        # The system group ignores desiredSize too: minSize 3 > the kept desiredSize 2, which EKS refuses
        # (terraform-aws-modules/terraform-aws-eks#3306).
        Expect(NODE_GROUP, "aws-east-system", "update", fails="minSize 3 > desiredSize 2"),)),
    # --- AKS (pulumi-azure-native replacement.go forceNewMap) ---------------------------------------
    Case("aks-pool-bigger-vm", "azure", _set("pools.0.machine_type", "Standard_NC64as_T4_v3"), (
        # ContainerService AgentPool: vmSize is in forceNewMap.
        Expect(AGENT_POOL, "azure-east-nvidiat4", "replace", "vmSize", order="delete first"),),
        others_may_replace=("router-config",)),
    Case("aks-pool-more-nodes", "azure", _set("pools.0.max_nodes", 5), (
        Expect(AGENT_POOL, "azure-east-nvidiat4", "update"),)),
    Case("aks-more-system-nodes", "azure", _set("clusters.0.system_nodes", 3), (
        # agentPoolProfiles is not in ManagedCluster's forceNewMap: the system pool resizes in place.
        Expect(AKS, "azure-east-aks", "update"),)),
    # --- Kubernetes objects (pulumi-kubernetes diff.go) ---------------------------------------------
    Case("k8s-model-max-replicas", "dev", _set("models.0.max_replicas", 3), (
        # A custom resource (KEDA ScaledObject) replaces only on metadata.name/namespace.
        Expect("kubernetes:keda.sh/v1alpha1:ScaledObject",
               "local-inference-llama-3-1-8b-nvidia-h100-autoscaler-scaledobject", "update"),)),
    Case("k8s-router-policy", "dev", _set("router.policy", "round-robin"), (ROUTER_CONFIG,)),
    Case("k8s-tier-policy", "dev", _set("tiers.1.policy", "prefix-affinity"), (ROUTER_CONFIG,)),
    Case("k8s-router-hostname", "dev", _set("router.hostname", "api.fleet.localtest.me"), (
        # Gateway API objects are custom resources: hostnames update in place.
        Expect("kubernetes:gateway.networking.k8s.io/v1:HTTPRoute", "router-route", "update"),)),
    # --- what `up` really does: ignore_changes, providers, kubeconfigs ------------------------------
    Case("eks-min-nodes-up", "aws", _set("pools.0.min_nodes", 1), (
        # eks.py ignores scalingConfig.desiredSize (the cluster-autoscaler owns it), so the engine keeps
        # it at 0 (step_generator.go processIgnoreChanges) while minSize becomes 1: UpdateNodegroupConfig
        # answers InvalidParameterException "Minimum capacity 1 can't be greater than desired size 0"
        # (terraform-aws-modules/terraform-aws-eks#3306).
        Expect(NODE_GROUP, "aws-east-nvidia-t4", "update", fails="InvalidParameterException"),)),
    Case("k8s-router-replicas", "dev", _set("router.replicas", 3), (
        # router.py ignores the Deployment's spec.replicas (the HPA owns it): only the HPA's floor moves.
        Expect(DEPLOYMENT, "router-deployment", "ignored"),
        Expect("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "router-hpa", "update"))),
    Case("router-moves-cluster", "multicloud", _set("router.cluster", "gcp-central"), (
        # The router's objects keep their URNs but get the gcp-central provider: the engine asks the new
        # provider's DiffConfig, whose active cluster differs, and replaces each (providerChanged).
        # Another cluster: the new object is created there first, no name clash.
        Expect(DEPLOYMENT, "router-deployment", "replace", "(provider)", order="create before delete"),
        Expect("kubernetes:core/v1:Service", "router-service", "replace", "(provider)")),
        others_may_replace=("*",)),
    Case("gke-new-region", "gcp", lambda f: (_set("clusters.0.region", "us-east1")(f),
                                             _set("clusters.0.zones", ["us-east1-c"])(f)), (
        # resource_container_cluster.go: location is ForceNew. The kubeconfig is built from the new
        # cluster's endpoint, unknown at preview, so the provider's DiffConfig replaces it and with it
        # every Kubernetes object on the cluster (calculateDependentReplacements).
        # The cluster is protected (gke.py): the engine refuses the replacement at preview.
        Expect(GKE, "gcp-central-gke", "replace", "location", fails="protected"),
        Expect("pulumi:providers:kubernetes", "gcp-central-k8s", "replace", "kubeconfig"),
        Expect(DEPLOYMENT, "router-deployment", "replace", "(provider)")), others_may_replace=("*",)),
    Case("k8s-renamed-pool", "dev", lambda f: _rename_pool(f, "amd-mi300x", "amd-instinct"), (
        # A new name is a new URN: the engine deletes the old resource and creates the new one; the
        # review pairs them into one replace (and metadata.name is ForceNew for every kind anyway).
        Expect("kubernetes:inference.networking.k8s.io/v1:InferencePool", "local-inference-amd-instinct-pool",
               "replace", "metadata.name"),), others_may_replace=("*",)),
]


def _rename_pool(fleet: dict, old: str, new: str) -> None:
    """Rename a pool and every reference to it, as a PR would."""
    def swap(names):
        return [new if n == old else n for n in names]

    for p in fleet["pools"]:
        p["name"] = new if p["name"] == old else p["name"]
    for m in fleet.get("models", []):
        m["pools"] = swap(m["pools"])
    for t in fleet.get("tiers", []):
        for b in t.get("backends", []):
            b["pool"] = new if b["pool"] == old else b["pool"]
        t["overflow"] = swap(t.get("overflow", []))


def _spec_file(stack: str) -> tuple[Path, Callable[[dict], dict]]:
    """The file a stack's spec is in and where in it: a stack file's config, or a stack set's fleet file."""
    fleet = ROOT / "fleets" / f"{stack}.yaml"
    if fleet.exists():
        return fleet, lambda doc: doc["fleet"]
    return ROOT / f"Pulumi.{stack}.yaml", lambda doc: doc["config"]["inference-fleet:fleet"]


def _plan(stack: str, doc: dict, tmp: Path) -> dict:
    path = tmp / _spec_file(stack)[0].name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return {"resources": run_plan(stack, config_file=path, charts=False).resources}


@functools.lru_cache(maxsize=None)
def _base(stack: str) -> dict:
    return {"resources": run_plan(stack, charts=False).resources}


def _verdict(ch) -> str:
    if ch.action == "update" and any(p.not_applied for p in ch.properties):
        return "not-applied"
    return ch.action


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_the_review_states_what_the_provider_will_do(case: Case, tmp_path):
    path, fleet_of = _spec_file(case.stack)
    head_doc = copy.deepcopy(yaml.safe_load(path.read_text()))
    case.edit(fleet_of(head_doc))
    changes, _ = compare(_base(case.stack), _plan(case.stack, head_doc, tmp_path))
    by_name = {(c.type, c.name): c for c in changes}
    text = "\n".join(f"{c.action} {c.type} {c.name}: {c.reason}" for c in changes)
    for e in case.expect:
        ch = by_name.get((e.type, e.name))
        assert ch is not None, f"{case.id}: no change to {e.type} {e.name}\n{text}"
        assert _verdict(ch) == e.action, f"{case.id}: {e.name}\n{text}"
        if e.blames:
            blamed = [p.path for p in ch.properties if p.forces_replace or p.not_applied]
            assert e.blames in blamed, f"{case.id}: {e.name} blames {blamed}\n{text}"
            if not ch.old_name:  # a rename is a new URN: the engine's create + delete, not a provider rule
                assert e.blames in ch.reason and " @ " in ch.reason, ch.reason  # the upstream source is cited
        if e.order:
            assert ch.order == e.order, f"{case.id}: {e.name} replaces {ch.order!r}"
        if e.fails:
            assert e.fails in ch.fails, f"{case.id}: {e.name} should fail: {ch.fails!r}"
        else:
            assert not ch.fails, f"{case.id}: {e.name}: {ch.fails}"
    named = {e.name for e in case.expect}
    if "*" not in case.others_may_replace:
        extra = [c.name for c in changes if c.action == "replace" and c.name not in named
                 and c.name not in case.others_may_replace]
        assert not extra, f"{case.id}: also replaced {extra}\n{text}"


# --- what goes with a replacement ----------------------------------------------------------------------

def _edited(stack: str, edit, tmp: Path) -> list:
    doc = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    edit(doc["config"]["inference-fleet:fleet"])
    changes, _ = compare(_base(stack), _plan(stack, doc, tmp))
    return changes


def _models_on(stack: str, pool: str) -> set[str]:
    """The models the stack file serves on ``pool``, by the slug their objects are named with."""
    fleet = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]["inference-fleet:fleet"]
    return {m["name"].replace(".", "-") for m in fleet["models"] if pool in m["pools"]}


@pytest.mark.parametrize("stack,pool,resource", [
    ("gcp", "nvidia-t4", "gcp-central-nvidia-t4"),
    ("aws", "nvidia-t4", "aws-east-nvidia-t4"),
])
def test_a_pool_deleted_first_names_the_model_servers_and_inference_pools_that_go_with_it(
        stack, pool, resource, tmp_path):
    # Spot off replaces the pool, delete first (its name is unique in the cluster): until the new pool
    # has nodes, every model server whose nodeSelector targets it has no node, and its InferencePool
    # no endpoint. Servers on the other pools keep running.
    changes = _edited(stack, _set("pools.0.spot", False), tmp_path)
    ch = next(c for c in changes if c.name == resource)
    assert (ch.action, ch.order) == ("replace", "delete first")
    servers = [d for d in ch.dependants if d.startswith("Deployment ")]
    on_pool = _models_on(stack, pool)
    assert on_pool and all(any(m in d for d in servers) for m in on_pool), ch.dependants
    others = {m for p in ("nvidia-l4", "tpu-v6e", "nvidia-a10g", "nvidia-h100") for m in _models_on(stack, p)
              if p != pool} - on_pool
    assert not [d for d in ch.dependants if any(m in d for m in others)], ch.dependants
    assert [d for d in ch.dependants if d.startswith("InferencePool ") and pool in d], ch.dependants
    assert all("Pending" in d for d in servers)


def test_a_pool_created_first_takes_nothing_with_it():
    # Created first, the new pool is there before the old one drains: no gap for the pods.
    doc = {"resources": [{
        "urn": "urn:pulumi:s::p::fleet:gke:GkeCluster$gcp:container/nodePool:NodePool::c-t4",
        "type": NODE_POOL, "name": "c-t4", "custom": True, "parent": "urn:c", "provider": "", "dependencies": [],
        "property_dependencies": {}, "options": {},
        "inputs": {"name": "t4-a", "cluster": "c", "nodeConfig": {"spot": True, "labels": {"pool": "t4"}}}}]}
    head = copy.deepcopy(doc)
    head["resources"][0]["inputs"]["nodeConfig"]["spot"] = False
    (ch,), _ = compare(doc, head)
    assert ch.action == "replace" and ch.order == "create before delete" and ch.dependants == []


def test_a_replaced_cluster_takes_every_kubernetes_object_on_it(tmp_path):
    changes = _edited("gcp", lambda f: (_set("clusters.0.region", "us-east1")(f),
                                        _set("clusters.0.zones", ["us-east1-c"])(f)), tmp_path)
    cluster = next(c for c in changes if c.type == GKE)
    # Every resource on the cluster's kubernetes provider is replaced with it (calculateDependentReplacements).
    replaced_objects = [c for c in changes if c.type.startswith("kubernetes:") and c.action == "replace"
                        and any(p.path == "(provider)" for p in c.properties)]
    assert replaced_objects
    assert cluster.dependants and f"({len(replaced_objects)})" in cluster.dependants[0]
