"""An EKS cluster with NVIDIA managed node groups on Spot that scale from zero.

Children: a VPC with public subnets (NAT, load balancers) and private subnets (nodes), the cluster
and its IAM role, the IAM OIDC provider for IRSA, a node role (with ECR read: nodes pull the
router image with it), an on-demand system node group, one managed node group per accelerator
pool, the cluster-autoscaler node-template tags on each pool's Auto Scaling group, the
cluster-autoscaler itself (IRSA role + pinned chart), the vpc-cni add-on with network policy
enforcement on, and an ECR repository.

Why these choices (issue 5, seed 002's notes):

* ``ami_type=AL2023_x86_64_NVIDIA`` (``catalog.node_image``): the AMI ships the NVIDIA driver and
  container toolkit; the platform layer adds the device plugin.
* ``capacity_type=SPOT`` and ``min_size=0``. A group at zero has no node for the cluster-autoscaler
  to read labels, taints or GPU count from, so it reads them from ``k8s.io/cluster-autoscaler/
  node-template/...`` tags on the Auto Scaling group. EKS does not copy node-group labels to the
  ASG, hence the ``aws.autoscaling.Tag`` resources — without them a pending GPU pod never scales
  a pool up from zero.
* ``desired_size`` is ignored after creation: the autoscaler owns it, and a re-run must not scale
  a busy pool back to its initial size.
* Registry: one ECR repository per image under ``<cluster>/`` (``url`` is that prefix), scanned on
  push with immutable tags; nodes pull with ``AmazonEC2ContainerRegistryReadOnly``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_aws.autoscaling as autoscaling
import pulumi_aws.ec2 as ec2
import pulumi_aws.ecr as ecr
import pulumi_aws.eks as eks
import pulumi_aws.iam as iam
import pulumi_kubernetes as k8s

from components import platform_versions as pins
from components.clusters import ClusterHandle, node_labels, naming_stack
from components.registry import RegistryAccess
from fleet import catalog, naming
from fleet.spec import ClusterSpec, PoolSpec

VPC_CIDR = "10.0.0.0/16"
AZ_COUNT = 2
"""EKS needs subnets in at least two availability zones."""
PUBLIC_CIDRS = ("10.0.0.0/20", "10.0.16.0/20", "10.0.32.0/20")
PRIVATE_CIDRS = ("10.0.64.0/18", "10.0.128.0/18", "10.0.192.0/18")
SYSTEM_DISK_GB = 50
ACCELERATOR_DISK_GB = 200
TAINT_EFFECTS = {"NoSchedule": "NO_SCHEDULE", "PreferNoSchedule": "PREFER_NO_SCHEDULE", "NoExecute": "NO_EXECUTE"}
CLUSTER_POLICIES = ("AmazonEKSClusterPolicy",)
NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy",
                 # Pull rights on ECR: the router image is pulled by the node, no pull secret.
                 "AmazonEC2ContainerRegistryReadOnly")
NODE_TEMPLATE = "k8s.io/cluster-autoscaler/node-template"
AUTOSCALER_SERVICE_ACCOUNT = "cluster-autoscaler"
"""Named here because its IRSA trust policy must name it; chart and image pins: platform_versions."""
AUTOSCALER_ACTIONS = [
    "autoscaling:DescribeAutoScalingGroups", "autoscaling:DescribeAutoScalingInstances",
    "autoscaling:DescribeLaunchConfigurations", "autoscaling:DescribeScalingActivities",
    "autoscaling:DescribeTags", "ec2:DescribeImages", "ec2:DescribeInstanceTypes",
    "ec2:DescribeLaunchTemplateVersions", "ec2:GetInstanceTypesFromInstanceRequirements",
    "eks:DescribeNodegroup",
]
AUTOSCALER_WRITE_ACTIONS = ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"]


@dataclass
class EksClusterArgs:
    cluster: ClusterSpec
    pools: list[PoolSpec]
    repositories: tuple[str, ...] = ()
    """The images this cluster's registry holds (ECR has one repository per image): the stack says
    which (the router's, from components/router_image.py); the cluster does not know its images."""


def _assume(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})


def _kubeconfig(name: str, endpoint: str, ca: str, region: str) -> str:
    # `aws eks get-token` mints a short-lived token from the caller's AWS identity at use time.
    return f"""apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: {endpoint}
    certificate-authority-data: {ca}
contexts:
- name: {name}
  context: {{cluster: {name}, user: {name}}}
current-context: {name}
users:
- name: {name}
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: aws
      args: [eks, get-token, --cluster-name, {name}, --region, {region}, --output, json]
"""


def node_template_tags(pool: PoolSpec) -> dict[str, str]:
    """What the cluster-autoscaler must know about a node of ``pool`` while the pool is at zero."""
    labels = dict(node_labels(pool))
    spot_label = catalog.CLOUD_TRAITS["aws"].spot_label
    if pool.spot and spot_label:
        labels[spot_label[0]] = spot_label[1]  # EKS puts it on spot nodes; pods may select on it
    tags = {f"{NODE_TEMPLATE}/label/{k}": v for k, v in labels.items()}
    tags.update({f"{NODE_TEMPLATE}/taint/{t['key']}": f"{t['value']}:{t['effect']}"
                 for t in catalog.pool_taints(pool.vendor)})
    vendor = catalog.VENDORS[pool.vendor]
    tags[f"{NODE_TEMPLATE}/resources/{vendor.resource_name}"] = str(pool.accelerators)
    return tags


class EksCluster(pulumi.ComponentResource):
    def __init__(self, name: str, args: EksClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:eks:EksCluster", name, None, opts)
        spec = args.cluster
        self.spec = spec
        # The spec's region, not the ambient one (AWS_REGION / aws:region): every AWS resource and lookup of
        # the cluster goes through this provider; the kubeconfig and the autoscaler already use spec.region.
        self.aws = aws.Provider(f"{name}-aws", region=spec.region, opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, provider=self.aws)
        # The VPC, the cluster and the registry are protected: the engine refuses to delete or replace
        # them (pulumi step_generator.go "marked for protection"), so such a change stops at preview.
        kept = pulumi.ResourceOptions(parent=self, protect=True, provider=self.aws)
        invoke = pulumi.InvokeOutputOptions(parent=self, provider=self.aws)
        stack = naming_stack()  # in every name AWS sees: two stacks share an account (fleet/naming.py)
        cluster_name = naming.cloud_name(spec.name, stack=stack, max_len=100)
        base_tags = {"fleet-cluster": spec.name}
        owned = {f"kubernetes.io/cluster/{cluster_name}": "shared"}

        # --- network -----------------------------------------------------------------------------
        zones = (pulumi.Output.from_input(list(spec.zones)) if spec.zones
                 else aws.get_availability_zones_output(state="available", opts=invoke).names)
        az_count = max(len(spec.zones), AZ_COUNT) if spec.zones else AZ_COUNT
        self.vpc = ec2.Vpc(f"{name}-vpc", cidr_block=VPC_CIDR, enable_dns_hostnames=True, enable_dns_support=True,
                           tags={**base_tags, "Name": f"{cluster_name}-vpc"}, opts=kept)
        igw = ec2.InternetGateway(f"{name}-igw", vpc_id=self.vpc.id, tags=base_tags, opts=child)
        public_rt = ec2.RouteTable(f"{name}-public", vpc_id=self.vpc.id, tags=base_tags,
                                   routes=[ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", gateway_id=igw.id)],
                                   opts=child)
        self.public_subnets, self.private_subnets = [], []
        for i in range(az_count):
            az = zones.apply(lambda z, i=i: z[i % len(z)])
            pub = ec2.Subnet(f"{name}-public-{i}", vpc_id=self.vpc.id, cidr_block=PUBLIC_CIDRS[i],
                             availability_zone=az, map_public_ip_on_launch=False,
                             tags={**base_tags, **owned, "kubernetes.io/role/elb": "1"}, opts=child)
            ec2.RouteTableAssociation(f"{name}-public-{i}", subnet_id=pub.id, route_table_id=public_rt.id,
                                      opts=child)
            self.public_subnets.append(pub)
        # One NAT gateway: nodes only pull images and weights through it; a second per AZ would
        # double a fixed cost for a path that is not on the request path.
        nat_ip = ec2.Eip(f"{name}-nat", domain="vpc", tags=base_tags, opts=child)
        nat = ec2.NatGateway(f"{name}-nat", allocation_id=nat_ip.id, subnet_id=self.public_subnets[0].id,
                             tags=base_tags,
                             opts=pulumi.ResourceOptions(parent=self, depends_on=[igw], provider=self.aws))
        private_rt = ec2.RouteTable(f"{name}-private", vpc_id=self.vpc.id, tags=base_tags,
                                    routes=[ec2.RouteTableRouteArgs(cidr_block="0.0.0.0/0", nat_gateway_id=nat.id)],
                                    opts=child)
        for i in range(az_count):
            az = zones.apply(lambda z, i=i: z[i % len(z)])
            priv = ec2.Subnet(f"{name}-private-{i}", vpc_id=self.vpc.id, cidr_block=PRIVATE_CIDRS[i],
                              availability_zone=az,
                              tags={**base_tags, **owned, "kubernetes.io/role/internal-elb": "1"}, opts=child)
            ec2.RouteTableAssociation(f"{name}-private-{i}", subnet_id=priv.id, route_table_id=private_rt.id,
                                      opts=child)
            self.private_subnets.append(priv)
        private_ids = [s.id for s in self.private_subnets]

        # --- cluster -------------------------------------------------------------------------------
        self.cluster_role = iam.Role(f"{name}-cluster", assume_role_policy=_assume("eks.amazonaws.com"),
                                     tags=base_tags, opts=child)
        attachments = [iam.RolePolicyAttachment(f"{name}-cluster-{p}", role=self.cluster_role.name,
                                                policy_arn=f"arn:aws:iam::aws:policy/{p}", opts=child)
                       for p in CLUSTER_POLICIES]
        self.cluster = eks.Cluster(
            f"{name}-eks",
            name=cluster_name,
            version=spec.kubernetes_version,
            role_arn=self.cluster_role.arn,
            vpc_config=eks.ClusterVpcConfigArgs(
                subnet_ids=private_ids,
                # Nodes reach the API inside the VPC; the public endpoint serves `pulumi up`.
                endpoint_private_access=True, endpoint_public_access=True),
            # Access entries, not the aws-auth ConfigMap: node groups get theirs from EKS.
            access_config=eks.ClusterAccessConfigArgs(
                authentication_mode="API", bootstrap_cluster_creator_admin_permissions=True),
            enabled_cluster_log_types=["api", "audit", "authenticator"],
            tags=base_tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=attachments, protect=True, provider=self.aws),
        )
        # EKS enforces no NetworkPolicy unless the VPC CNI's network policy agent is on: the managed
        # vpc-cni add-on with `enableNetworkPolicy: "true"` in its configuration values (EKS user
        # guide, "Restrict Pod network traffic with Kubernetes network policies"). Adopts the
        # self-managed vpc-cni every new cluster has (OVERWRITE); the add-on version is EKS's
        # default for the cluster's Kubernetes version (`aws eks describe-addon-versions
        # --addon-name vpc-cni --kubernetes-version <v>` shows it; network policy needs >= v1.14).
        self.vpc_cni = eks.Addon(
            f"{name}-vpc-cni",
            cluster_name=self.cluster.name,
            addon_name="vpc-cni",
            configuration_values=json.dumps({"enableNetworkPolicy": "true"}),
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=base_tags,
            opts=child,
        )
        issuer = self.cluster.identities[0].oidcs[0].issuer
        self.oidc_provider = iam.OpenIdConnectProvider(
            f"{name}-oidc", url=issuer, client_id_lists=["sts.amazonaws.com"], tags=base_tags, opts=child)

        # --- nodes -----------------------------------------------------------------------------------
        self.node_role = iam.Role(f"{name}-nodes", assume_role_policy=_assume("ec2.amazonaws.com"),
                                  tags=base_tags, opts=child)
        node_attachments = [iam.RolePolicyAttachment(f"{name}-nodes-{p}", role=self.node_role.name,
                                                     policy_arn=f"arn:aws:iam::aws:policy/{p}", opts=child)
                            for p in NODE_POLICIES]
        # A group's name is fixed and unique in its cluster: replaced create-first, EKS would refuse the
        # second group of that name (ResourceInUseException) half-way through `up`. Delete first (the
        # autoscaler's ASG tags name the group, so a name suffix would not follow it).
        group_opts = pulumi.ResourceOptions(parent=self, depends_on=node_attachments, provider=self.aws,
                                            ignore_changes=["scalingConfig.desiredSize"], delete_before_replace=True)
        self.system_group = eks.NodeGroup(
            f"{name}-system",
            cluster_name=self.cluster.name,
            node_group_name="system",
            node_role_arn=self.node_role.arn,
            subnet_ids=private_ids,
            instance_types=[catalog.SYSTEM_MACHINES["aws"].name],
            ami_type=catalog.EKS_SYSTEM_AMI,
            capacity_type="ON_DEMAND",
            disk_size=SYSTEM_DISK_GB,
            scaling_config=eks.NodeGroupScalingConfigArgs(
                min_size=spec.system_nodes, desired_size=spec.system_nodes, max_size=spec.system_nodes * 2),
            update_config=eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            tags=base_tags,
            opts=group_opts,
        )
        self.pools: dict[str, eks.NodeGroup] = {}
        self.node_template_tags: dict[str, list[autoscaling.Tag]] = {}
        for pool in args.pools:
            group = self._node_group(name, pool, private_ids, base_tags, group_opts)
            self.pools[pool.name] = group
            asg = group.resources[0].autoscaling_groups[0].name
            self.node_template_tags[pool.name] = [
                autoscaling.Tag(
                    f"{name}-{pool.name}-ca-{naming.k8s_name(key.removeprefix(NODE_TEMPLATE + '/'), max_len=50)}",
                    autoscaling_group_name=asg,
                    # Not propagated: the tags describe the group for the autoscaler, not instances.
                    tag=autoscaling.TagTagArgs(key=key, value=value, propagate_at_launch=False),
                    opts=child)
                for key, value in sorted(node_template_tags(pool).items())
            ]

        # --- registry --------------------------------------------------------------------------------
        if not args.repositories:
            raise ValueError(f"{spec.name}: an EKS cluster needs at least one image repository")
        # The first keeps the resource name the router's repository always had (no replacement).
        self.repositories = {
            image: ecr.Repository(
                f"{name}-registry" if i == 0 else f"{name}-registry-{image}",
                name=f"{naming.cloud_name(spec.name, stack=stack)}/{image}",
                image_scanning_configuration=ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
                image_tag_mutability="IMMUTABLE",
                encryption_configurations=[ecr.RepositoryEncryptionConfigurationArgs(encryption_type="AES256")],
                tags=base_tags,
                opts=kept)
            for i, image in enumerate(args.repositories)
        }
        self.repository = next(iter(self.repositories.values()))
        token = ecr.get_authorization_token_output(registry_id=self.repository.registry_id, opts=invoke)
        host = self.repository.repository_url.apply(lambda u: u.split("/", 1)[0])
        self.registry = RegistryAccess(
            url=pulumi.Output.concat(host, "/", naming.cloud_name(spec.name, stack=stack)),
            address=host,
            username=token.user_name,
            password=pulumi.Output.secret(token.password),
            resource=self.repository,
        )

        # --- kubeconfig and provider -----------------------------------------------------------------
        region = spec.region
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(
            self.cluster.name, self.cluster.endpoint, self.cluster.certificate_authority.data,
        ).apply(lambda a: _kubeconfig(a[0], a[1], a[2], region)))
        self.provider = k8s.Provider(
            f"{name}-k8s", kubeconfig=self.kubeconfig, enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.system_group]))

        self.autoscaler = self._cluster_autoscaler(name, base_tags)

        self.handle = ClusterHandle(spec=self.spec, provider=self.provider, kubeconfig=self.kubeconfig,
                                    registry=self.registry, pools=self.pools, component=self)
        self.register_outputs({
            "cluster_name": self.cluster.name,
            "endpoint": self.cluster.endpoint,
            "oidc_provider_arn": self.oidc_provider.arn,
            "registry": self.registry.url,
            "pools": {k: g.node_group_name for k, g in self.pools.items()},
        })

    def _node_group(self, name: str, pool: PoolSpec, subnet_ids, tags: dict[str, str],
                    opts: pulumi.ResourceOptions) -> eks.NodeGroup:
        image = catalog.node_image("aws", pool.vendor)
        return eks.NodeGroup(
            f"{name}-{pool.name}",
            cluster_name=self.cluster.name,
            node_group_name=naming.pool_name("aws", pool.name),
            node_role_arn=self.node_role.arn,
            subnet_ids=subnet_ids,
            instance_types=[pool.machine.name],
            ami_type=image.setting,
            capacity_type="SPOT" if pool.spot else "ON_DEMAND",
            disk_size=ACCELERATOR_DISK_GB,
            scaling_config=eks.NodeGroupScalingConfigArgs(
                min_size=pool.min_nodes, desired_size=pool.min_nodes, max_size=pool.max_nodes),
            update_config=eks.NodeGroupUpdateConfigArgs(max_unavailable=1),
            labels=node_labels(pool),
            taints=[eks.NodeGroupTaintArgs(key=t["key"], value=t["value"], effect=TAINT_EFFECTS[t["effect"]])
                    for t in catalog.pool_taints(pool.vendor)],
            tags={**tags, "fleet-pool": pool.name,
                  **({f"{catalog.LABEL_PREFIX}/reserved-reason": pool.reserved_reason} if pool.reserved_reason else {})},
            opts=opts,
        )

    def _cluster_autoscaler(self, name: str, tags: dict[str, str]) -> k8s.helm.v3.Release:
        ca = pins.CHARTS["cluster-autoscaler"]
        subject = f"system:serviceaccount:{ca.namespace}:{AUTOSCALER_SERVICE_ACCOUNT}"
        issuer_host = self.cluster.identities[0].oidcs[0].issuer.apply(lambda u: u.removeprefix("https://"))
        trust = pulumi.Output.all(self.oidc_provider.arn, issuer_host).apply(lambda a: json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Federated": a[0]},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {f"{a[1]}:sub": subject, f"{a[1]}:aud": "sts.amazonaws.com"}}}]}))
        role = iam.Role(f"{name}-cluster-autoscaler", assume_role_policy=trust, tags=tags,
                        opts=pulumi.ResourceOptions(parent=self, provider=self.aws))
        # Write actions only on this cluster's groups (EKS tags every managed group's ASG with it).
        policy = self.cluster.name.apply(lambda n: json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": AUTOSCALER_ACTIONS, "Resource": "*"},
            {"Effect": "Allow", "Action": AUTOSCALER_WRITE_ACTIONS, "Resource": "*",
             "Condition": {"StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{n}": "owned"}}}]}))
        iam.RolePolicy(f"{name}-cluster-autoscaler", role=role.id, policy=policy,
                       opts=pulumi.ResourceOptions(parent=self, provider=self.aws))
        return k8s.helm.v3.Release(
            f"{name}-cluster-autoscaler",
            name="cluster-autoscaler",
            chart=ca.chart,
            version=ca.version,
            namespace=ca.namespace,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=ca.repo),
            values={
                "cloudProvider": "aws",
                "awsRegion": self.spec.region,
                "autoDiscovery": {"clusterName": self.cluster.name},
                "image": {"tag": pins.AUTOSCALER_IMAGE_TAGS[self.spec.kubernetes_version]},
                "rbac": {"serviceAccount": {"name": AUTOSCALER_SERVICE_ACCOUNT,
                                            "annotations": {"eks.amazonaws.com/role-arn": role.arn}}},
                "extraArgs": {
                    # Spot pools: try the next group when one has no capacity, quickly.
                    "balance-similar-node-groups": True, "expander": "least-waste",
                    "max-node-provision-time": "10m", "scale-down-unneeded-time": "10m",
                    "skip-nodes-with-system-pods": False,
                },
            },
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
        )
