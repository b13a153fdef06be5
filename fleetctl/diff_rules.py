"""What each provider does when a property of a resource changes: the facts ``fleet diff`` reviews with.

One entry per resource type the program declares (``tests/test_diff_rules.py`` fails when the program
declares a type this table does not cover). Each rule names the property pattern, the upstream file
and version it was read in, and why; nothing here is inferred from what the mocks record.

How each provider decides, at the pinned versions (``requirements.lock``):

* **Bridged Terraform providers** (pulumi-gcp 10.2.0 → terraform-provider-google(-beta),
  pulumi-aws 7.51.1 → terraform-provider-aws v6, pulumi-random 4.21.4 → terraform-provider-random):
  a change replaces the resource when the Terraform schema marks the attribute ``ForceNew`` (SDKv2)
  or ``RequiresReplace`` (plugin framework). A ``ForceNew`` *block* (a ``TypeList`` of a nested
  ``Resource``) forces replacement only when the block is added or removed: the SDK diffs its nested
  attributes with their own schemas (terraform-plugin-sdk/v2 ``schemaMap.diffList``), so a change
  to a nested field that is not itself ``ForceNew`` is an in-place update.
* **pulumi-azure-native 3.29.0**: URL path parameters (resource group, resource name) and the
  properties of ``forceNewMap`` in ``provider/pkg/gen/replacement.go`` replace; so do properties the
  Azure REST spec marks create-only (``x-ms-mutability`` without ``update``).
* **pulumi-kubernetes 4.34.2**: ``.metadata.name``/``.metadata.namespace`` of every kind plus the
  per-kind list in ``provider/pkg/provider/diff.go`` (``forceNewProperties``); ConfigMap
  ``data``/``binaryData`` and Secret ``data``/``stringData`` replace unless the provider sets
  ``enableConfigMapMutable``/``enableSecretMutable`` *and* the object is not ``immutable``. A named
  object replaced under the same name and namespace is deleted first (``Diff`` sets
  ``DeleteBeforeReplace``). The provider resource itself replaces when its kubeconfig's active
  cluster changes or is unknown at preview (``DiffConfig``), and the engine then replaces every
  resource it manages (pulumi ``step_generator.go``: ``providerChanged``, and
  ``calculateDependentReplacements`` for resources whose provider is in the replace set).
* **pulumi-docker-build 0.0.22**: ``Image.Diff`` reports every change as an update (rebuild), and
  ignores registry password changes.

Objects a Helm release installs are not Pulumi resources: ``helm upgrade`` patches them in place,
so none of the Kubernetes replace rules apply to them (:func:`rules_for` is not consulted for them).

Versions: the Terraform GCP sources were read at terraform-provider-google v7.45.0 (newest tag of
the snapshot; pulumi-gcp bridges the -beta provider, whose container and compute schemas carry the
same ``ForceNew`` flags); the AWS, Azure and random files are the index's copies, named by commit;
pulumi-kubernetes ``diff.go``/``provider.go`` at its v4.32.0+ snapshot (commit 9497796; ``diff.go``
last changed 2026-02-18), pulumi ``step_generator.go`` at the index's copy.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Mapping

REPLACE = "replace"
NOT_APPLIED = "not-applied"
"""The provider accepts the change but has no update call for it: ``up`` reports success and the
cloud keeps the old value until the resource is replaced another way."""


@dataclass(frozen=True)
class Source:
    project: str
    file: str
    version: str

    def __str__(self) -> str:
        return f"{self.project} {self.file} @ {self.version}"


def _google(f: str) -> Source:
    return Source("terraform-provider-google", f"google/{f}", "v7.45.0")


def _aws(f: str, commit: str) -> Source:
    return Source("terraform-provider-aws", f"internal/service/{f}", f"index copy {commit}")


K8S_DIFF = Source("pulumi-kubernetes", "provider/pkg/provider/diff.go", "v4.32.0+ 9497796")
K8S_PROVIDER = Source("pulumi-kubernetes", "provider/pkg/provider/provider.go", "v4.32.0+ 9497796")
K8S_HELM = Source("pulumi-kubernetes", "provider/pkg/provider/helm_release.go", "v4.32.0+ 9497796")
AZ_REPLACEMENT = Source("pulumi-azure-native", "provider/pkg/gen/replacement.go", "index copy 1b7112a")
AZ_PATH_PARAMS = Source("pulumi-azure-native", "provider/pkg/gen/__snapshots__/gen_managedcluster_test.snap",
                        "index copy 080cda1 (URL path parameters carry willReplaceOnChanges)")
AZ_UNCHECKED = Source("Azure REST spec (x-ms-mutability)", "Microsoft.ContainerService managedClusters.json",
                      "NOT CHECKED here")
ENGINE = Source("pulumi", "pkg/resource/deploy/step_generator.go", "index copy")
DOCKER_BUILD = Source("pulumi-docker-build", "provider/internal/image.go", "index copy 0b3ab4f")
RANDOM = Source("terraform-provider-random", "internal/provider/resource_password.go", "index copy 0117aa6")

GKE_POOL = _google("services/container/resource_container_node_pool.go")
GKE_NODE_CONFIG = _google("services/container/node_config.go")
GKE_CLUSTER = _google("services/container/resource_container_cluster.go")


@dataclass(frozen=True)
class Rule:
    path: str
    """Property path pattern (``[*]`` any index; a pattern covers everything beneath it; ``*``: any
    property of the resource)."""
    source: Source
    why: str
    effect: str = REPLACE
    when: str | None = None
    """Name of a condition in :data:`CONDITIONS`: the rule holds only when it does."""


@dataclass(frozen=True)
class TypeFacts:
    rules: tuple[Rule, ...]
    name_keys: tuple[str, ...] = ()
    """Inputs that name the cloud object, unique in their scope: a create-before-delete replacement
    that keeps them creates a second object of the same name, which the cloud refuses."""
    clash: str = ""
    """What the cloud answers to that second create."""
    delete_first: str = ""
    """Why the provider itself deletes before it re-creates (empty: Pulumi's default, create first)."""


def _r(source: Source, why: str, *paths: str, effect: str = REPLACE, when: str | None = None) -> tuple[Rule, ...]:
    return tuple(Rule(p, source, why, effect, when) for p in paths)


# --- conditions --------------------------------------------------------------------------------------

Context = Mapping[str, Any]
"""``old``/``new``: the resource's recorded inputs on each side; ``provider_old``/``provider_new``:
the inputs of the provider resource each side uses (``{}`` for a default provider)."""


def _block_added_or_removed(path: str, ctx: Context) -> bool:
    block = path.split(".", 1)[0].split("[", 1)[0]
    return (block in (ctx.get("old") or {})) != (block in (ctx.get("new") or {}))


def _cidr_not_expanded(path: str, ctx: Context) -> bool:
    old, new = (ctx.get("old") or {}).get("ipCidrRange"), (ctx.get("new") or {}).get("ipCidrRange")
    try:
        return not ipaddress.ip_network(new).supernet_of(ipaddress.ip_network(old))
    except (TypeError, ValueError):
        return True  # unknown or not a range: the provider cannot prove it an expansion


def _immutable_unless(flag: str) -> Callable[[str, Context], bool]:
    def cond(path: str, ctx: Context) -> bool:
        mutable = str((ctx.get("provider_new") or {}).get(flag, "false")).lower() == "true"
        return not mutable or bool((ctx.get("new") or {}).get("immutable"))
    return cond


CONDITIONS: Mapping[str, Callable[[str, Context], bool]] = {
    "block added or removed": _block_added_or_removed,
    "the new range does not contain the old one (a shrink or a move)": _cidr_not_expanded,
    "the kubernetes provider does not set enableConfigMapMutable, or the ConfigMap is immutable":
        _immutable_unless("enableConfigMapMutable"),
    "the kubernetes provider does not set enableSecretMutable, or the Secret is immutable":
        _immutable_unless("enableSecretMutable"),
}


# --- the table ---------------------------------------------------------------------------------------

_K8S_NAMED = "pulumi-kubernetes Diff: a named object replaced under the same name and namespace is deleted first"

TYPES: Mapping[str, TypeFacts] = {
    # --- GCP ---------------------------------------------------------------------------------------
    "gcp:container/nodePool:NodePool": TypeFacts(
        rules=_r(GKE_POOL, "ForceNew", "name", "namePrefix", "cluster", "location", "project", "initialNodeCount",
                 "maxPodsPerNode", "queuedProvisioning", "placementPolicy.policyName",
                 "networkConfig.createPodRange", "networkConfig.podRange", "networkConfig.podIpv4CidrBlock",
                 "networkConfig.podCidrOverprovisionConfig", "networkConfig.additionalNodeNetworkConfigs",
                 "networkConfig.additionalPodNetworkConfigs", "networkConfig.subnetwork",
                 "networkConfig.acceleratorNetworkProfile")
        + _r(GKE_POOL, "ForceNew block (nested fields are not)", "placementPolicy", when="block added or removed")
        # placement_policy.type / tpu_topology: neither ForceNew nor read by nodePoolUpdate.
        + _r(GKE_POOL, "not ForceNew and nodePoolUpdate never sends it", "placementPolicy.tpuTopology",
             "placementPolicy.type", effect=NOT_APPLIED)
        + _r(GKE_NODE_CONFIG, "ForceNew in schemaNodeConfig", "nodeConfig.guestAccelerators", "nodeConfig.spot",
             "nodeConfig.preemptible", "nodeConfig.serviceAccount", "nodeConfig.oauthScopes",
             "nodeConfig.shieldedInstanceConfig", "nodeConfig.localSsdCount", "nodeConfig.metadata",
             "nodeConfig.minCpuPlatform", "nodeConfig.reservationAffinity", "nodeConfig.sandboxConfig",
             "nodeConfig.bootDiskKmsKey", "nodeConfig.nodeGroup", "nodeConfig.ephemeralStorageLocalSsdConfig",
             "nodeConfig.localNvmeSsdBlockConfig", "nodeConfig.secondaryBootDisks",
             "nodeConfig.advancedMachineFeatures", "nodeConfig.soleTenantConfig",
             "nodeConfig.hostMaintenancePolicy", "nodeConfig.confidentialNodes.confidentialInstanceType",
             "nodeConfig.enableConfidentialStorage", "nodeConfig.localSsdEncryptionMode",
             "nodeConfig.maxRunDuration", "nodeConfig.flexStart"),
        # machineType, diskSizeGb, diskType, labels, taints, resourceLabels, workloadMetadataConfig and
        # nodeLocations update in place (nodePoolNodeConfigUpdate / node_locations in nodePoolUpdate).
        name_keys=("name", "cluster", "location"),
        clash="GKE refuses a second node pool of the same name in the cluster (409 already exists)"),
    "gcp:container/cluster:Cluster": TypeFacts(
        rules=_r(GKE_CLUSTER, "ForceNew", "name", "location", "project", "network", "subnetwork", "initialNodeCount",
                 "clusterIpv4Cidr", "datapathProvider", "defaultMaxPodsPerNode", "description", "enableAutopilot",
                 "enableKubernetesAlpha", "enableTpu", "ipAllocationPolicy", "networkingMode",
                 "privateClusterConfig.masterIpv4CidrBlock", "privateClusterConfig.privateEndpointSubnetwork",
                 "confidentialNodes", "masterAuth.clientCertificateConfig", "nodeConfig", "nodePools",
                 "userManagedKeysConfig", "dataplaneOptimizationMode"),
        # privateClusterConfig.enablePrivateNodes / enablePrivateEndpoint, nodeLocations, releaseChannel,
        # gatewayApiConfig, minMasterVersion update in place.
        name_keys=("name", "location"),
        clash="GKE refuses a second cluster of the same name in the location"),
    "gcp:compute/network:Network": TypeFacts(
        rules=_r(_google("services/compute/resource_compute_network.go"), "ForceNew", "name", "project",
                 "autoCreateSubnetworks", "description", "internalIpv6Range", "networkProfile", "params"),
        name_keys=("name",), clash="a network name is unique in the project"),
    "gcp:compute/subnetwork:Subnetwork": TypeFacts(
        rules=_r(_google("services/compute/resource_compute_subnetwork.go"), "ForceNew", "name", "network", "region",
                 "project", "description", "externalIpv6Prefix", "internalIpv6Prefix", "reservedInternalRange",
                 "resolveSubnetMask", "params")
        + _r(_google("services/compute/resource_compute_subnetwork.go"),
             "CustomizeDiff ForceNewIfChange(ip_cidr_range, IsShrinkageIpCidr); an expansion updates in place",
             "ipCidrRange", when="the new range does not contain the old one (a shrink or a move)"),
        name_keys=("name", "region"), clash="a subnetwork name is unique in the region"),
    "gcp:compute/firewall:Firewall": TypeFacts(
        rules=_r(_google("services/compute/resource_compute_firewall.go"), "ForceNew", "name", "project", "direction",
                 "params"),
        name_keys=("name",), clash="a firewall rule name is unique in the project"),
    "gcp:compute/router:Router": TypeFacts(
        rules=_r(_google("services/compute/resource_compute_router.go"), "ForceNew", "name", "network", "region",
                 "project", "encryptedInterconnectRouter", "nccGateway", "params"),
        name_keys=("name", "region"), clash="a router name is unique in the region"),
    "gcp:compute/routerNat:RouterNat": TypeFacts(
        rules=_r(_google("services/compute/resource_compute_router_nat.go"), "ForceNew", "name", "router", "region",
                 "project", "endpointTypes", "initialNatIps", "type"),
        name_keys=("name", "router"), clash="a NAT name is unique in its router"),
    "gcp:artifactregistry/repository:Repository": TypeFacts(
        rules=_r(_google("services/artifactregistry/resource_artifact_registry_repository.go"), "ForceNew",
                 "repositoryId", "location", "format", "project", "mode", "kmsKeyName", "remoteRepositoryConfig",
                 "mavenConfig"),
        name_keys=("repositoryId", "location"), clash="a repository id is unique in the location"),
    "gcp:artifactregistry/repositoryIamMember:RepositoryIamMember": TypeFacts(
        rules=_r(_google("services/artifactregistry/iam_artifact_registry_repository.go"), "ForceNew", "project",
                 "location", "repository")
        + _r(_google("tpgiamresource/resource_iam_member.go"), "ForceNew", "role", "member", "condition")),
    "gcp:projects/iAMMember:IAMMember": TypeFacts(
        rules=_r(_google("services/resourcemanager/iam_project.go"), "ForceNew", "project")
        + _r(_google("tpgiamresource/resource_iam_member.go"), "ForceNew", "role", "member", "condition")),
    "gcp:serviceaccount/account:Account": TypeFacts(
        rules=_r(_google("services/resourcemanager/resource_google_service_account.go"), "ForceNew", "accountId",
                 "project"),
        name_keys=("accountId",), clash="a service account id is unique in the project"),
    # --- AWS ---------------------------------------------------------------------------------------
    "aws:eks/nodeGroup:NodeGroup": TypeFacts(
        rules=_r(_aws("eks/node_group.go", "012e0a3"), "ForceNew", "amiType", "capacityType", "clusterName",
                 "diskSize", "instanceTypes", "launchTemplate.id", "launchTemplate.name", "nodeGroupName",
                 "nodeGroupNamePrefix", "nodeRoleArn", "remoteAccess", "subnetIds"),
        # scalingConfig, labels, taints, updateConfig, version, releaseVersion update in place.
        name_keys=("nodeGroupName", "clusterName"),
        clash="EKS refuses a second node group of the same name in the cluster (ResourceInUseException)"),
    "aws:eks/cluster:Cluster": TypeFacts(
        rules=_r(_aws("eks/cluster.go", "00555dc"), "ForceNew", "name", "roleArn",
                 "accessConfig.bootstrapClusterCreatorAdminPermissions", "bootstrapSelfManagedAddons",
                 "kubernetesNetworkConfig.ipFamily", "kubernetesNetworkConfig.serviceIpv4Cidr",
                 "outpostConfig.controlPlaneInstanceType", "outpostConfig.controlPlanePlacement.groupName",
                 "remoteNetworkConfig")
        + _r(_aws("eks/cluster.go", "00555dc"), "CustomizeDiff ForceNewIfChange: envelope encryption cannot be "
             "disabled", "encryptionConfig", when="block added or removed"),
        # vpcConfig.subnetIds, endpoint access, version, logging update in place (UpdateClusterConfig).
        name_keys=("name",), clash="an EKS cluster name is unique in the region (ResourceInUseException)"),
    "aws:eks/addon:Addon": TypeFacts(
        rules=_r(_aws("eks/addon.go", "00a3530"), "ForceNew", "addonName", "clusterName"),
        name_keys=("addonName", "clusterName"), clash="an add-on is unique in its cluster (ResourceInUseException)"),
    "aws:ec2/vpc:Vpc": TypeFacts(
        rules=_r(_aws("ec2/vpc_.go", "00081ce"), "ForceNew", "cidrBlock", "ipv4IpamPoolId", "ipv4NetmaskLength")),
    "aws:ec2/subnet:Subnet": TypeFacts(
        rules=_r(_aws("ec2/vpc_subnet.go", "00cda12"), "ForceNew", "availabilityZone", "availabilityZoneId",
                 "cidrBlock", "ipv4IpamPoolId", "ipv4NetmaskLength", "ipv6IpamPoolId", "ipv6Native",
                 "ipv6NetmaskLength", "outpostArn", "vpcId"),
        name_keys=("cidrBlock", "vpcId"), clash="EC2 refuses a second subnet with an overlapping CIDR in the VPC"),
    "aws:ec2/eip:Eip": TypeFacts(
        rules=_r(Source("terraform-provider-aws", "internal/service/ec2/ec2_eip.go", "index copies (two agree)"),
                 "ForceNew", "address", "domain", "networkBorderGroup", "publicIpv4Pool", "vpc")),
    "aws:ec2/internetGateway:InternetGateway": TypeFacts(rules=()),  # vpcId: detach + attach in Update
    "aws:ec2/natGateway:NatGateway": TypeFacts(
        rules=_r(_aws("ec2/vpc_nat_gateway.go", "04088ea"), "ForceNew", "allocationId", "connectivityType",
                 "privateIp", "secondaryPrivateIpAddressCount", "subnetId")),
    "aws:ec2/routeTable:RouteTable": TypeFacts(
        rules=_r(_aws("ec2/vpc_route_table.go", "0220924"), "ForceNew", "vpcId")),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": TypeFacts(
        rules=_r(_aws("ec2/vpc_route_table_association.go", "0be71be"), "ForceNew", "gatewayId", "subnetId"),
        # routeTableId updates in place (ReplaceRouteTableAssociation).
        name_keys=("subnetId",), clash="a subnet has one route table association (Resource.AlreadyAssociated)"),
    "aws:ecr/repository:Repository": TypeFacts(
        rules=_r(_aws("ecr/repository.go", "0072eea"), "ForceNew", "name", "encryptionConfigurations"),
        name_keys=("name",),
        clash="ECR refuses a second repository of the same name (RepositoryAlreadyExistsException)"),
    "aws:iam/role:Role": TypeFacts(
        rules=_r(_aws("iam/role.go", "0040ea6"), "ForceNew", "name", "namePrefix", "path"),
        name_keys=("name",), clash="an IAM role name is unique in the account (EntityAlreadyExists)"),
    "aws:iam/rolePolicy:RolePolicy": TypeFacts(
        rules=_r(_aws("iam/role_policy.go", "33aa0b5"), "ForceNew", "name", "namePrefix", "role")),
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": TypeFacts(
        rules=_r(_aws("iam/role_policy_attachment.go", "04c7984"), "ForceNew (the resource has no Update)", "role",
                 "policyArn")),
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": TypeFacts(
        rules=_r(_aws("iam/openid_connect_provider.go", "0160692"), "ForceNew", "url"),
        # clientIdLists and thumbprintLists update in place.
        name_keys=("url",), clash="IAM refuses a second OIDC provider for the same URL (EntityAlreadyExists)"),
    "aws:autoscaling/tag:Tag": TypeFacts(
        rules=_r(_aws("autoscaling/group_tag.go", "050ac11"), "ForceNew", "autoscalingGroupName", "tag.key")),
    # --- Azure -------------------------------------------------------------------------------------
    "azure-native:containerservice:ManagedCluster": TypeFacts(
        rules=_r(AZ_PATH_PARAMS, "URL path parameter", "resourceName", "resourceGroupName")
        + _r(AZ_REPLACEMENT, "forceNewMap", "location", "dnsPrefix", "diskEncryptionSetID", "fqdnSubdomain",
             "linuxProfile", "nodeResourceGroup", "windowsProfile", "networkProfile.serviceCidr",
             "networkProfile.serviceCidrs", "networkProfile.dnsServiceIP", "networkProfile.networkMode",
             "networkProfile.networkPlugin", "networkProfile.networkPluginMode", "networkProfile.podCidr",
             "networkProfile.networkDataplane", "networkProfile.networkPolicy", "networkProfile.outboundType"),
        # agentPoolProfiles[*] (name, vmSize, count...) is not in forceNewMap: it updates in place.
        name_keys=("resourceName", "resourceGroupName"),
        clash="azure-native refuses to create a resource that already exists at its ID"),
    "azure-native:containerservice:AgentPool": TypeFacts(
        rules=_r(AZ_PATH_PARAMS, "URL path parameter", "agentPoolName", "resourceName", "resourceGroupName")
        + _r(AZ_REPLACEMENT, "forceNewMap", "vmSize", "gpuInstanceProfile", "networkProfile.nodePublicIPTags")
        # Kept as replace, but from `az aks nodepool update` having no flag for them, not from the
        # spec's x-ms-mutability, which this table has not been checked against.
        + _r(AZ_UNCHECKED, "create-only on an existing pool (not checked in the spec)", "scaleSetPriority",
             "scaleSetEvictionPolicy", "spotMaxPrice", "osDiskSizeGB", "osDiskType", "osType",
             "availabilityZones", "vnetSubnetID"),
        name_keys=("agentPoolName", "resourceName", "resourceGroupName"),
        clash="azure-native refuses to create a resource that already exists at its ID"),
    "azure-native:resources:ResourceGroup": TypeFacts(
        rules=_r(AZ_PATH_PARAMS, "URL path parameter", "resourceGroupName")
        + _r(AZ_REPLACEMENT, "forceNewMap", "location"),
        name_keys=("resourceGroupName",), clash="azure-native refuses to create a resource that already exists"),
    "azure-native:containerregistry:Registry": TypeFacts(
        rules=_r(AZ_PATH_PARAMS, "URL path parameter", "registryName", "resourceGroupName")
        + _r(AZ_UNCHECKED, "a tracked resource's location is create-only (ARM RPC-Put-V1-14)", "location"),
        name_keys=("registryName",), clash="a registry name is globally unique in Azure"),
    "azure-native:containerregistry:ScopeMap": TypeFacts(
        rules=_r(AZ_PATH_PARAMS, "URL path parameter", "scopeMapName", "registryName", "resourceGroupName"),
        name_keys=("scopeMapName", "registryName"),
        clash="azure-native refuses to create a resource that already exists"),
    "azure-native:containerregistry:Token": TypeFacts(
        rules=_r(AZ_PATH_PARAMS, "URL path parameter", "tokenName", "registryName", "resourceGroupName"),
        name_keys=("tokenName", "registryName"),
        clash="azure-native refuses to create a resource that already exists"),
    "azure-native:authorization:RoleAssignment": TypeFacts(
        rules=_r(AZ_PATH_PARAMS, "URL path parameter", "roleAssignmentName")
        + _r(AZ_REPLACEMENT, "forceNewMap", "principalId", "scope")),
    # The AMD driver push refresher's identity (components/aks.py): replacement.go's forceNewMap has no
    # entry for these three, so their URL path parameters are what replaces them.
    "azure-native:authorization:RoleDefinition": TypeFacts(
        rules=_r(AZ_PATH_PARAMS, "URL path parameter", "roleDefinitionId", "scope")),
    "azure-native:managedidentity:UserAssignedIdentity": TypeFacts(
        rules=_r(AZ_PATH_PARAMS, "URL path parameter", "resourceName", "resourceGroupName")
        + _r(AZ_UNCHECKED, "a tracked resource's location is create-only (ARM RPC-Put-V1-14)", "location"),
        name_keys=("resourceName", "resourceGroupName"),
        clash="azure-native refuses to create a resource that already exists at its ID"),
    "azure-native:managedidentity:FederatedIdentityCredential": TypeFacts(
        rules=_r(AZ_PATH_PARAMS, "URL path parameter", "federatedIdentityCredentialResourceName", "resourceName",
                 "resourceGroupName"),
        name_keys=("federatedIdentityCredentialResourceName", "resourceName"),
        clash="azure-native refuses to create a resource that already exists at its ID"),
    # --- other providers -----------------------------------------------------------------------------
    "docker-build:index:Image": TypeFacts(rules=()),  # DOCKER_BUILD: Image.Diff reports only updates
    "random:index/randomPassword:RandomPassword": TypeFacts(
        rules=_r(RANDOM, "RequiresReplace", "length", "special", "upper", "lower", "number", "numeric",
                 "minNumeric", "minUpper", "minLower", "minSpecial", "overrideSpecial", "keepers")),
    "tls:index/privateKey:PrivateKey": TypeFacts(
        rules=_r(Source("terraform-provider-tls", "internal/provider/resource_private_key.go", "index copy 0fc9243"),
                 "RequiresReplace (Update is a no-op)", "algorithm", "rsaBits", "ecdsaCurve", "opensshComment")),
    "tls:index/selfSignedCert:SelfSignedCert": TypeFacts(
        # earlyRenewalHours updates in place.
        rules=_r(Source("terraform-provider-tls", "internal/provider/resource_self_signed_cert.go",
                        "index copy 0494451"), "RequiresReplace", "privateKeyPem", "validityPeriodHours",
                 "allowedUses", "dnsNames", "ipAddresses", "uris", "isCaCertificate", "setSubjectKeyId",
                 "setAuthorityKeyId", "subject")),
    "kubernetes:helm.sh/v3:Release": TypeFacts(
        rules=_r(K8S_HELM, "forceNewFields in Diff", "name", "namespace"),
        # DeleteBeforeReplace: false; a name change makes a release of the new name, no clash.
    ),
    # A provider for another region manages other resources: every resource on it is re-created there.
    "pulumi:providers:aws": TypeFacts(
        rules=_r(Source("pulumi-terraform-bridge", "DiffConfig", "NOT CHECKED here"),
                 "region: the resources it manages live in the old region", "region")),
    # The cluster's project and region (gke.py). A resource that leaves project/region unset takes the
    # provider's at plan time (the resources' CustomizeDiff tpgresource.DefaultProviderProject /
    # DefaultProviderRegion), and both are ForceNew: each resource replaces by its own diff. The bridge's
    # DiffConfig itself is not checked here.
    "pulumi:providers:gcp": TypeFacts(
        rules=_r(Source("terraform-provider-google", "CustomizeDiff tpgresource.DefaultProviderProject (e.g. "
                        "services/compute/resource_compute_router_bgp_peer.go)", "index copy"),
                 "project, region: resources that leave them unset take the provider's, and they are ForceNew",
                 "project", "region")),
    # aks.py: every resource names its own location (a new region replaces each by its own rules); a
    # subscription is where all of them live.
    "pulumi:providers:azure-native": TypeFacts(
        rules=_r(Source("pulumi-azure-native", "provider DiffConfig", "NOT CHECKED here"),
                 "subscriptionId: the resources it manages live in the old subscription", "subscriptionId")),
    # No configuration that places a resource: tls and random keep none; docker-build's host is where
    # images are built, not where they are pushed.
    "pulumi:providers:tls": TypeFacts(rules=()),
    "pulumi:providers:random": TypeFacts(rules=()),
    "pulumi:providers:docker-build": TypeFacts(rules=()),
    "pulumi:providers:kubernetes": TypeFacts(
        rules=_r(K8S_PROVIDER, "DiffConfig: the kubeconfig's active cluster changed, or it is unknown at preview",
                 "kubeconfig", "context", "cluster")
        + _r(K8S_PROVIDER, "DiffConfig", "renderYamlToDirectory")),
    # --- Kubernetes kinds (pulumi-kubernetes diff.go) ---------------------------------------------
    "kubernetes:*": TypeFacts(
        rules=_r(K8S_DIFF, "metadataForceNewProperties", "metadata.name", "metadata.namespace"),
        name_keys=("metadata.name", "metadata.namespace"),
        clash="the API server refuses a second object of the same name (AlreadyExists)",
        delete_first=_K8S_NAMED),
    "kubernetes:apps/v1:Deployment": TypeFacts(
        rules=_r(K8S_DIFF, "forceNew apps/v1 Deployment", "spec.selector"), delete_first=_K8S_NAMED),
    "kubernetes:apps/v1:DaemonSet": TypeFacts(
        rules=_r(K8S_DIFF, "forceNew apps/v1 DaemonSet", "spec.selector"), delete_first=_K8S_NAMED),
    "kubernetes:apps/v1:StatefulSet": TypeFacts(
        rules=_r(K8S_DIFF, "forceNew apps/v1 StatefulSet", "spec.podManagementPolicy", "spec.revisionHistoryLimit",
                 "spec.selector", "spec.serviceName", "spec.volumeClaimTemplates"), delete_first=_K8S_NAMED),
    "kubernetes:batch/v1:Job": TypeFacts(
        rules=_r(K8S_DIFF, "forceNew batch/v1 Job", "spec.completions", "spec.parallelism", "spec.selector",
                 "spec.template"), delete_first=_K8S_NAMED),
    "kubernetes:core/v1:Service": TypeFacts(
        rules=_r(K8S_DIFF, "forceNew core/v1 Service", "spec.clusterIP"), delete_first=_K8S_NAMED),
    "kubernetes:core/v1:ConfigMap": TypeFacts(
        rules=_r(K8S_DIFF, "forceNewProperties: ConfigMap data replaces",
                 "data", "binaryData",
                 when="the kubernetes provider does not set enableConfigMapMutable, or the ConfigMap is immutable"),
        delete_first=_K8S_NAMED),
    "kubernetes:core/v1:Secret": TypeFacts(
        rules=_r(K8S_DIFF, "forceNew core/v1 Secret", "type")
        + _r(K8S_DIFF, "forceNewProperties: Secret data replaces", "data", "stringData",
             when="the kubernetes provider does not set enableSecretMutable, or the Secret is immutable"),
        delete_first=_K8S_NAMED),
    "kubernetes:core/v1:PersistentVolumeClaim": TypeFacts(
        rules=_r(K8S_DIFF, "forceNew core/v1 PersistentVolumeClaim", "spec"), delete_first=_K8S_NAMED),
    "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding": TypeFacts(
        rules=_r(K8S_DIFF, "forceNew rbac/v1 RoleBinding", "roleRef"), delete_first=_K8S_NAMED),
    "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding": TypeFacts(
        rules=_r(K8S_DIFF, "forceNew rbac/v1 ClusterRoleBinding", "roleRef"), delete_first=_K8S_NAMED),
    "kubernetes:storage.k8s.io/v1:StorageClass": TypeFacts(
        rules=_r(K8S_DIFF, "forceNew storage/v1 StorageClass", "parameters", "provisioner"), delete_first=_K8S_NAMED),
    # policy/v1 PodDisruptionBudget: diff.go lists only policy/v1beta1, so a v1 PDB's spec updates in place.
}

COVERED_PREFIXES = ("kubernetes:",)
"""Types covered by a wildcard entry: every Kubernetes kind (``kubernetes:*`` plus its own entry)."""


def covers(typ: str) -> bool:
    return typ in TYPES or typ.startswith(COVERED_PREFIXES)


def facts_for(typ: str) -> list[TypeFacts]:
    """The entries that apply to ``typ``: its own and the ``kubernetes:*`` one for Kubernetes kinds."""
    out = [TYPES[typ]] if typ in TYPES else []
    if typ.startswith("kubernetes:") and typ != "kubernetes:helm.sh/v3:Release":
        out.insert(0, TYPES["kubernetes:*"])
    return out


def rules_for(typ: str) -> list[Rule]:
    return [r for f in facts_for(typ) for r in f.rules]
