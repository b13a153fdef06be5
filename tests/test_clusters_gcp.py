"""The gcp stack's GKE cluster, as the offline plan records it: Spot GPU and TPU pools that scale
from zero, the driver GKE installs, the TPU slice topology, a private Workload-Identity cluster
with no default pool, and an Artifact Registry the nodes may read."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import ROOT, plan_of
from fleet import catalog
from fleet.spec import SpecError, load_spec
from fleetctl.plan import run_plan
from wiring import fed_by

NODE_POOL = "gcp:container/nodePool:NodePool"


@pytest.fixture(scope="module")
def plan():
    return plan_of("gcp")


def _pool(plan, name):
    return plan.find(NODE_POOL, f"gcp-central-{name}")["inputs"]


def _fleet():
    return yaml.safe_load((ROOT / "Pulumi.gcp.yaml").read_text())["config"]["inference-fleet:fleet"]


def test_t4_pool_is_seed_002s_spot_n1_standard_4_from_zero(plan):
    pool = _pool(plan, "nvidia-t4")
    nc = pool["nodeConfig"]
    assert nc["machineType"] == "n1-standard-4"
    assert nc["spot"] is True
    assert pool["autoscaling"]["totalMinNodeCount"] == 0
    assert pool["autoscaling"]["totalMaxNodeCount"] == 3
    assert pool["initialNodeCount"] == 0
    assert [(g["type"], g["count"]) for g in nc["guestAccelerators"]] == [("nvidia-tesla-t4", 1)]


def test_every_nvidia_pool_has_the_driver_installed_by_gke(plan):
    nvidia = [r for r in plan.by_type(NODE_POOL)
              if (r["inputs"]["nodeConfig"].get("labels") or {}).get("inference-fleet.io/vendor") == "nvidia"]
    assert {r["inputs"]["name"] for r in nvidia} == {"nvidia-t4", "nvidia-l4"}
    for r in nvidia:
        accs = r["inputs"]["nodeConfig"]["guestAccelerators"]
        assert accs and all(a["gpuDriverInstallationConfig"] == {"gpuDriverVersion": "LATEST"} for a in accs), r["name"]
    l4 = _pool(plan, "nvidia-l4")["nodeConfig"]
    assert (l4["machineType"], l4["guestAccelerators"][0]["type"]) == ("g2-standard-8", "nvidia-l4")


def test_tpu_v6e_pool_is_a_compact_2x2_spot_slice_from_zero(plan):
    pool = _pool(plan, "tpu-v6e")
    assert pool["placementPolicy"] == {"type": "COMPACT", "tpuTopology": "2x2"}
    assert pool["nodeConfig"]["machineType"] == "ct6e-standard-4t"  # 4 chips: the whole 2x2 slice
    assert pool["nodeConfig"]["spot"] is True
    assert pool["autoscaling"]["totalMinNodeCount"] == 0
    assert "guestAccelerators" not in pool["nodeConfig"]  # the machine type carries the TPU
    assert pool["nodeLocations"] == ["us-central1-b"]


def test_cluster_is_private_with_workload_identity_and_no_default_pool(plan):
    record = plan.find("gcp:container/cluster:Cluster", "gcp-central-gke")
    cluster = record["inputs"]
    assert cluster["removeDefaultNodePool"] is True and cluster["initialNodeCount"] == 1
    # Workload Identity's pool is `<project>.svc.id.goog` (GKE docs), of the project the images go to.
    project = plan.by_type("docker-build:index:Image")[0]["inputs"]["tags"][0].split("/")[1]
    assert cluster["workloadIdentityConfig"]["workloadPool"] == f"{project}.svc.id.goog"
    assert cluster["privateClusterConfig"]["enablePrivateNodes"] is True
    assert cluster["releaseChannel"]["channel"] == catalog.GKE_RELEASE_CHANNEL
    assert fed_by(plan, record, "subnetwork") == {("gcp:compute/subnetwork:Subnetwork", "gcp-central-subnet")}
    # Private nodes reach Hugging Face and public images through Cloud NAT.
    assert plan.by_type("gcp:compute/routerNat:RouterNat")


def test_system_pool_is_small_and_on_demand(plan):
    system = _pool(plan, "system")
    assert not system["nodeConfig"].get("spot")
    assert system["autoscaling"]["totalMinNodeCount"] == plan.spec.clusters[0].system_nodes
    assert "taints" not in system["nodeConfig"] and "guestAccelerators" not in system["nodeConfig"]


def test_gke_nodes_pull_from_artifact_registry_with_their_own_service_account(plan):
    repo = plan.find("gcp:artifactregistry/repository:Repository", "gcp-central-registry")["inputs"]
    assert repo["format"] == "DOCKER" and repo["location"] == "us-central1"
    reader = plan.find("gcp:artifactregistry/repositoryIamMember:RepositoryIamMember",
                       "gcp-central-registry-nodes-read")["inputs"]
    assert reader["role"] == "roles/artifactregistry.reader"
    assert reader["repository"] == repo["repositoryId"]
    accounts = {r["inputs"]["nodeConfig"]["serviceAccount"] for r in plan.by_type(NODE_POOL)}
    assert len(accounts) == 1 and reader["member"] == f"serviceAccount:{accounts.pop()}"


def test_router_image_is_pushed_to_the_artifact_registry_with_a_secret_token(plan):
    build = plan.by_type("docker-build:index:Image")[0]
    image = build["inputs"]
    assert fed_by(plan, build, "tags") == {("gcp:artifactregistry/repository:Repository", "gcp-central-registry")}
    repo = plan.find("gcp:artifactregistry/repository:Repository", "gcp-central-registry")["inputs"]
    [tag] = image["tags"]
    host, _project, repository, name = tag.rsplit(":", 1)[0].split("/")  # Artifact Registry's Docker path
    assert (host, repository, name) == ("us-central1-docker.pkg.dev", repo["repositoryId"], "fleet-router")
    assert image["registries"] == [{"address": "us-central1-docker.pkg.dev", "username": "oauth2accesstoken",
                                    "password": "[secret]"}]


def test_cluster_layers_use_the_gke_provider_built_from_a_secret_kubeconfig(plan):
    provider = plan.find("pulumi:providers:kubernetes", "gcp-central-k8s")
    assert provider["inputs"]["kubeconfig"] == "[secret]"
    gke = plan.find("fleet:gke:GkeCluster", "gcp-central")
    assert provider["parent"] == gke["urn"]
    assert all(r["provider"] == provider["urn"] for r in plan.resources if r["type"].startswith("kubernetes:"))
    assert {r["parent"] for r in plan.by_type(NODE_POOL)} == {gke["urn"]}


def test_mi300x_pool_on_gcp_is_refused_naming_the_accelerator_field():
    fleet = copy.deepcopy(_fleet())
    fleet["pools"].append({"name": "amd", "cluster": "gcp-central", "accelerator": "mi300x", "max_nodes": 1})
    with pytest.raises(SpecError) as e:
        load_spec(fleet, "Pulumi.gcp.yaml")
    assert any(path == "pools[3].accelerator" and "not offered on gcp" in msg for path, msg in e.value.problems)


def test_tpu_topology_the_catalog_does_not_list_is_refused_naming_the_field():
    fleet = copy.deepcopy(_fleet())
    fleet["pools"][2]["tpu_topology"] = "4x4"
    with pytest.raises(SpecError) as e:
        load_spec(fleet, "Pulumi.gcp.yaml")
    assert [p for p, _ in e.value.problems] == ["pools[2].tpu_topology"]


def test_gateway_api_crds_have_one_owner_the_platform_layer(plan):
    # GKE's gatewayApiConfig CHANNEL_STANDARD makes GKE install and manage the Gateway API CRDs at
    # GKE's version (GKE docs, "Enable the Gateway API"); the platform layer applies its pinned
    # bundle (components/platform_versions.BUNDLES['gateway-api']) and Istio is the class.
    cluster = plan.find("gcp:container/cluster:Cluster", "gcp-central-gke")["inputs"]
    assert cluster.get("gatewayApiConfig", {}).get("channel", "CHANNEL_DISABLED") == "CHANNEL_DISABLED"
    assert any(r["name"].endswith("-platform-gateway-api-crds") for r in plan.resources)


def test_the_private_control_plane_reaches_the_webhooks_on_the_nodes(plan):
    # GKE private clusters: the firewall rule GKE creates lets the control plane reach nodes on
    # 443 and 10250 only. istiod's webhook listens on 15017 (istiod 1.28.5), KServe's and KEDA's
    # admission webhooks on 9443 (kserve-llmisvc-resources v0.19.0, keda 2.18.0 webhooks.port) and
    # KEDA's external-metrics APIService on 6443 (keda 2.18.0 service.portHttpsTarget).
    cluster = plan.find("gcp:container/cluster:Cluster", "gcp-central-gke")["inputs"]
    master = cluster["privateClusterConfig"]["masterIpv4CidrBlock"]
    opened = set()
    for fw in plan.by_type("gcp:compute/firewall:Firewall"):
        i = fw["inputs"]
        if i.get("direction", "INGRESS") == "INGRESS" and master in (i.get("sourceRanges") or []):
            opened |= {int(p) for a in i.get("allows") or [] if a["protocol"] == "tcp" for p in a.get("ports") or []}
    assert {15017, 9443, 6443} <= opened


def test_the_node_service_account_has_gkes_minimum_node_role(plan):
    # GKE hardening guide ("Use least privilege IAM service accounts"): a custom node service account
    # needs roles/container.defaultNodeServiceAccount.
    account = plan.find("gcp:serviceaccount/account:Account", "gcp-central-nodes")
    roles = {r["inputs"]["role"] for r in plan.by_type("gcp:projects/iAMMember:IAMMember")}
    assert account and "roles/container.defaultNodeServiceAccount" in roles


def test_the_clusters_project_flows_into_workload_identity_and_the_image_path(tmp_path):
    """A project set on the cluster (not the provider's default) is the one both use."""
    doc = yaml.safe_load((ROOT / "Pulumi.gcp.yaml").read_text())
    doc["config"]["inference-fleet:fleet"]["clusters"][0]["project"] = "wired-project-7"
    path = tmp_path / "Pulumi.gcp.yaml"
    path.write_text(yaml.safe_dump(doc))
    plan = run_plan("gcp", config_file=path, charts=False)
    cluster = plan.find("gcp:container/cluster:Cluster", "gcp-central-gke")["inputs"]
    assert cluster["workloadIdentityConfig"]["workloadPool"] == "wired-project-7.svc.id.goog"
    [tag] = plan.by_type("docker-build:index:Image")[0]["inputs"]["tags"]
    assert tag.split("/")[1] == "wired-project-7"
