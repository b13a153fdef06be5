"""The aws stack's EKS cluster, as the offline plan records it: AL2023 NVIDIA Spot node groups
from zero, the cluster-autoscaler node-template tags that scale-from-zero needs, desired size left
to the autoscaler, IRSA, private node subnets, and an ECR repository the nodes may read."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from conftest import ROOT, plan_of
from fleet import catalog
from wiring import fed_by
from fleet.spec import SpecError, load_spec

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
ASG_TAG = "aws:autoscaling/tag:Tag"
TEMPLATE = "k8s.io/cluster-autoscaler/node-template"


@pytest.fixture(scope="module")
def plan():
    return plan_of("aws")


def _group(plan, name):
    return plan.find(NODE_GROUP, f"aws-east-{name}")


def _asg_tags(plan, group_name):
    # The tags on the group's Auto Scaling group: those whose group name is the node group's output.
    group = (NODE_GROUP, f"aws-east-{group_name}")
    tags = [r["inputs"] for r in plan.by_type(ASG_TAG) if fed_by(plan, r, "autoscalingGroupName") == {group}]
    return {t["tag"]["key"]: t["tag"]["value"] for t in tags}, tags


def test_every_node_template_tag_lands_on_an_auto_scaling_group_its_node_group_created(plan):
    tags = plan.by_type(ASG_TAG)
    assert tags
    for t in tags:
        [(typ, _)] = fed_by(plan, t, "autoscalingGroupName")
        assert typ == NODE_GROUP, t["name"]
    # ... one group per node group: each GPU group's tags reach its own ASG only.
    assert len({frozenset(_asg_tags(plan, p)[0].items()) for p in ("nvidia-t4", "nvidia-h100")}) == 2


def _fleet():
    return yaml.safe_load((ROOT / "Pulumi.aws.yaml").read_text())["config"]["inference-fleet:fleet"]


@pytest.mark.parametrize("pool,instance", [("nvidia-t4", "g4dn.xlarge"), ("nvidia-h100", "p5.48xlarge")])
def test_gpu_node_groups_are_al2023_nvidia_spot_from_zero(plan, pool, instance):
    group = _group(plan, pool)
    i = group["inputs"]
    assert i["amiType"] == "AL2023_x86_64_NVIDIA"
    assert i["capacityType"] == "SPOT"
    assert i["instanceTypes"] == [instance]
    assert i["scalingConfig"]["minSize"] == 0 and i["scalingConfig"]["desiredSize"] == 0
    # The autoscaler owns the size: a re-run must not undo a scale-up.
    assert "scalingConfig.desiredSize" in group["options"]["ignore_changes"]


@pytest.mark.parametrize("pool,gpus", [("nvidia-t4", "1"), ("nvidia-h100", "8")])
def test_gpu_groups_carry_the_node_template_tags_scale_from_zero_needs(plan, pool, gpus):
    tags, raw = _asg_tags(plan, pool)
    # Scale from zero works only if the template promises what the pending pods ask for: every model
    # server on this pool selects nodes by labels the template carries.
    template_labels = {k.removeprefix(f"{TEMPLATE}/label/"): v for k, v in tags.items() if "/label/" in k}
    servers = [d for d in plan.objects("Deployment")
               if d["spec"]["template"]["spec"].get("nodeSelector", {}).get(f"{catalog.LABEL_PREFIX}/pool") == pool]
    assert servers, f"no Deployment selects pool {pool}"
    for d in servers:
        assert d["spec"]["template"]["spec"]["nodeSelector"].items() <= template_labels.items(), d["metadata"]["name"]
    assert tags[f"{TEMPLATE}/label/eks.amazonaws.com/capacityType"] == "SPOT"
    assert tags[f"{TEMPLATE}/taint/nvidia.com/gpu"] == "present:NoSchedule"
    assert tags[f"{TEMPLATE}/resources/nvidia.com/gpu"] == gpus
    assert not any(t["tag"]["propagateAtLaunch"] for t in raw)


def test_node_template_labels_and_taints_match_what_the_group_puts_on_nodes(plan):
    for pool in ("nvidia-t4", "nvidia-h100"):
        group = _group(plan, pool)["inputs"]
        tags, _ = _asg_tags(plan, pool)
        labelled = {k.removeprefix(f"{TEMPLATE}/label/"): v for k, v in tags.items() if "/label/" in k}
        assert {k: v for k, v in labelled.items() if not k.startswith("eks.amazonaws.com/")} == group["labels"]
        tainted = {k.removeprefix(f"{TEMPLATE}/taint/"): v for k, v in tags.items() if "/taint/" in k}
        assert tainted == {t["key"]: f"{t['value']}:NoSchedule" for t in group["taints"]}


def test_nodes_run_in_private_subnets_only(plan):
    private = {(r["type"], r["name"]) for r in plan.by_type("aws:ec2/subnet:Subnet")
               if "kubernetes.io/role/internal-elb" in r["inputs"]["tags"]}
    assert len(private) >= 2
    for g in plan.by_type(NODE_GROUP):
        assert fed_by(plan, g, "subnetIds") == private, g["name"]
        assert len(g["inputs"]["subnetIds"]) == len(private)
    cluster = plan.find("aws:eks/cluster:Cluster", "aws-east-eks")["inputs"]
    assert cluster["vpcConfig"]["endpointPrivateAccess"] is True


def test_oidc_provider_for_irsa_trusts_the_cluster_issuer(plan):
    oidc = plan.find("aws:iam/openIdConnectProvider:OpenIdConnectProvider", "aws-east-oidc")["inputs"]
    assert fed_by(plan, plan.find("aws:iam/openIdConnectProvider:OpenIdConnectProvider", "aws-east-oidc"), "url") \
        == {("aws:eks/cluster:Cluster", "aws-east-eks")}  # the cluster's own issuer, whatever EKS calls it
    assert oidc["url"].startswith("https://")
    assert oidc["clientIdLists"] == ["sts.amazonaws.com"]


def test_cluster_autoscaler_runs_with_its_own_irsa_role_and_a_pinned_chart(plan):
    release = plan.find("kubernetes:helm.sh/v3:Release", "aws-east-cluster-autoscaler")["inputs"]
    # The autoscaler discovers the node groups of the cluster EKS knows, by its cloud name.
    eks_name = plan.find("aws:eks/cluster:Cluster", "aws-east-eks")["inputs"]["name"]
    assert release["version"].count(".") == 2 and release["values"]["autoDiscovery"]["clusterName"] == eks_name
    role_arn = release["values"]["rbac"]["serviceAccount"]["annotations"]["eks.amazonaws.com/role-arn"]
    role = plan.find("aws:iam/role:Role", "aws-east-cluster-autoscaler")
    assert ("aws:iam/role:Role", "aws-east-cluster-autoscaler") in fed_by(
        plan, plan.find("kubernetes:helm.sh/v3:Release", "aws-east-cluster-autoscaler"), "values")
    assert role_arn.startswith("arn:aws:iam::") and ":role/" in role_arn  # the Role's ARN output, IAM's form
    trust = role["inputs"]["assumeRolePolicy"]
    assert "system:serviceaccount:kube-system:cluster-autoscaler" in trust


def test_nodes_may_pull_from_ecr_which_scans_and_keeps_tags_immutable(plan):
    attached = {r["inputs"]["policyArn"] for r in plan.by_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment")
                if r["inputs"]["role"] == "aws-east-nodes"}
    assert "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly" in attached
    for g in plan.by_type(NODE_GROUP):
        assert fed_by(plan, g, "nodeRoleArn") == {("aws:iam/role:Role", "aws-east-nodes")}, g["name"]
    repo = plan.find("aws:ecr/repository:Repository", "aws-east-registry")["inputs"]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["imageTagMutability"] == "IMMUTABLE"
    build = plan.by_type("docker-build:index:Image")[0]
    image = build["inputs"]
    # Pushed to that repository: the tag is built from its URL (ECR's `<registry>/<name>` form).
    assert fed_by(plan, build, "tags") == {("aws:ecr/repository:Repository", "aws-east-registry")}
    [tag] = image["tags"]
    assert tag.rsplit(":", 1)[0].endswith(f".dkr.ecr.us-east-1.amazonaws.com/{repo['name']}")
    assert image["registries"][0]["password"] == "[secret]"


def test_h100_on_a_machine_the_catalog_does_not_list_is_refused_naming_machine_type():
    fleet = copy.deepcopy(_fleet())
    fleet["pools"][1]["machine_type"] = "p4d.24xlarge"  # an A100 machine
    with pytest.raises(SpecError) as e:
        load_spec(fleet, "Pulumi.aws.yaml")
    assert [p for p, _ in e.value.problems] == ["pools[1].machine_type"]
    assert "p5.48xlarge" in str(e.value)  # the message names what the catalog offers


def test_mi300x_on_aws_is_refused_naming_the_accelerator_field():
    fleet = copy.deepcopy(_fleet())
    fleet["pools"][1].update(accelerator="mi300x", machine_type=None)
    fleet["models"] = []
    fleet["tiers"] = [{"name": "default", "backends": [{"pool": "nvidia-t4", "weight": 100}]}]
    with pytest.raises(SpecError) as e:
        load_spec(fleet, "Pulumi.aws.yaml")
    assert e.value.problems == [("pools[1].accelerator",
                                 "pool 'nvidia-h100' on aws: AMD Instinct MI300X is not offered on aws; "
                                 "it is offered on: azure")]


def test_the_network_policies_are_enforced_by_the_vpc_cni(plan):
    # EKS user guide, "Restrict Pod network traffic with Kubernetes network policies": the VPC CNI
    # enforces NetworkPolicy only when its add-on sets `enableNetworkPolicy` to "true"; otherwise the
    # default-deny policies every namespace gets (components/network_policies.py) are accepted and
    # ignored.
    assert plan.objects("NetworkPolicy")
    clusters = plan.by_type("aws:eks/cluster:Cluster")
    addons = [r for r in plan.by_type("aws:eks/addon:Addon") if r["inputs"]["addonName"] == "vpc-cni"]
    assert len(addons) == len(clusters) == 1
    config = json.loads(addons[0]["inputs"]["configurationValues"])
    assert config["enableNetworkPolicy"] == "true"
    assert clusters[0]["urn"] in addons[0]["dependencies"]


def test_the_cluster_autoscaler_minor_matches_the_clusters(plan):
    # kubernetes/autoscaler: each cluster-autoscaler minor supports the same Kubernetes minor.
    [cluster] = plan.by_type("aws:eks/cluster:Cluster")
    [release] = [r for r in plan.by_type("kubernetes:helm.sh/v3:Release") if r["inputs"]["chart"] == "cluster-autoscaler"]
    tag = release["inputs"]["values"]["image"]["tag"]
    assert tag.lstrip("v").rsplit(".", 1)[0] == cluster["inputs"]["version"]
