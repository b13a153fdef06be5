"""An AKS cluster with NVIDIA and AMD MI300X agent pools on Spot that scale from zero.

Children: a resource group, the managed cluster (system-assigned identity, OIDC issuer + workload
identity, Azure CNI overlay with Cilium network policy, a system pool), one user agent pool per
accelerator pool, and an Azure Container Registry (admin user off) whose AcrPull role is granted
to the cluster's kubelet identity, with a repository-scoped push token for the router image.

Why these choices (issue 5, seed 002's notes):

* Spot pools: ``scale_set_priority=Spot``, ``scale_set_eviction_policy=Delete`` (a deallocated
  spot VM still bills its disk and counts against quota), ``spot_max_price=-1`` (pay up to the
  on-demand price, never evicted for price), autoscaler ``min_count=0``.
* AKS adds ``kubernetes.azure.com/scalesetpriority=spot`` as a label *and* a NoSchedule taint to
  every Spot pool and reports them in the pool's state. They are declared here
  (``catalog.CLOUD_TRAITS['azure']``) so every ``pulumi up`` does not try to remove them; the
  model servers already tolerate them (components/model_server.py adds cloud spot taints).
* GPU drivers per vendor (``catalog.node_image``): NVIDIA pools let AKS install the driver
  (``gpuProfile.driver=Install``; the platform layer adds the device plugin); MI300X pools skip it
  (``None``) — the AMD GPU operator in the platform layer installs the amdgpu driver.
* ``count`` is ignored after creation: the cluster autoscaler owns it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pulumi
import pulumi_azure_native.authorization as authorization
import pulumi_azure_native.containerregistry as containerregistry
import pulumi_azure_native.containerservice as containerservice
import pulumi_azure_native.resources as resources
import pulumi_kubernetes as k8s

from components import clusters
from components import platform_versions as pins
from components.registry import RegistryAccess
from components.router_image import REPOSITORY
from fleet import catalog, naming
from fleet.spec import ClusterSpec, PoolSpec

ACR_PULL_ROLE = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
"""Built-in role definition id of AcrPull."""
ACR_SKU = "Standard"
ACR_NAME_MAX = 50
"""Registry names: 5-50 letters and digits (Microsoft.ContainerRegistry naming rules)."""
SYSTEM_DISK_GB = 128
ACCELERATOR_DISK_GB = 256
SPOT_MAX_PRICE = -1.0
"""-1: pay up to the on-demand price; the VM is evicted for capacity only, never for price."""
PUSH_PASSWORD_CONFIG = "acrPushPassword"
"""Secret config key holding the push token's password (`az acr token credential generate`)."""


@dataclass
class AksClusterArgs:
    cluster: ClusterSpec
    pools: list[PoolSpec]


def node_labels(pool: PoolSpec) -> dict[str, str]:
    """Every cloud's pool labels, plus the spot label AKS adds itself (declared so Pulumi does not
    fight it)."""
    labels = clusters.node_labels(pool)
    spot_label = catalog.CLOUD_TRAITS["azure"].spot_label
    if pool.spot and spot_label:
        labels[spot_label[0]] = spot_label[1]
    return labels


def node_taints(pool: PoolSpec) -> list[str]:
    """``key=value:Effect`` strings: the catalog's vendor taint, plus AKS's own spot taint."""
    taints = [f"{t['key']}={t['value']}:{t['effect']}" for t in catalog.pool_taints(pool.vendor)]
    spot_taint = catalog.CLOUD_TRAITS["azure"].spot_taint
    if pool.spot and spot_taint:
        taints.append(f"{spot_taint[0]}={spot_taint[1]}:{spot_taint[2]}")
    return taints


def _kubeconfig(result) -> str:
    return base64.b64decode(result.kubeconfigs[0].value).decode()


class AksCluster(pulumi.ComponentResource):
    def __init__(self, name: str, args: AksClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:aks:AksCluster", name, None, opts)
        spec = args.cluster
        self.spec = spec
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        tags = {"fleet-cluster": spec.name}
        stack = pulumi.get_stack()  # in every name Azure sees: two stacks share a subscription (fleet/naming.py)
        client = authorization.get_client_config_output(opts=invoke)

        self.resource_group = resources.ResourceGroup(
            f"{name}-rg", resource_group_name=naming.cloud_name(spec.name, "rg", stack=stack, max_len=90),
            location=spec.region, tags=tags, opts=child)
        rg_name = self.resource_group.name
        cluster_name = naming.cloud_name(spec.name, stack=stack, max_len=63)
        system_pool = containerservice.ManagedClusterAgentPoolProfileArgs(
            name="system",
            mode="System",
            vm_size=catalog.SYSTEM_MACHINES["azure"].name,
            os_type="Linux",
            os_sku="AzureLinux",
            type="VirtualMachineScaleSets",
            count=spec.system_nodes,
            enable_auto_scaling=True,
            min_count=spec.system_nodes,
            max_count=spec.system_nodes * 2,
            os_disk_size_gb=SYSTEM_DISK_GB,
            availability_zones=list(spec.zones) or None,
        )
        self.cluster = containerservice.ManagedCluster(
            f"{name}-aks",
            resource_name_=cluster_name,
            resource_group_name=rg_name,
            location=spec.region,
            dns_prefix=naming.cloud_name(spec.name, stack=stack, max_len=54),
            kubernetes_version=spec.kubernetes_version,
            identity=containerservice.ManagedClusterIdentityArgs(type="SystemAssigned"),
            agent_pool_profiles=[system_pool],
            enable_rbac=True,
            oidc_issuer_profile=containerservice.ManagedClusterOIDCIssuerProfileArgs(enabled=True),
            security_profile=containerservice.ManagedClusterSecurityProfileArgs(
                workload_identity=containerservice.ManagedClusterSecurityProfileWorkloadIdentityArgs(enabled=True)),
            network_profile=containerservice.ContainerServiceNetworkProfileArgs(
                network_plugin="azure", network_plugin_mode="overlay",
                network_dataplane="cilium", network_policy="cilium",  # NetworkPolicies are enforced
                load_balancer_sku="standard", outbound_type="loadBalancer"),
            auto_upgrade_profile=containerservice.ManagedClusterAutoUpgradeProfileArgs(
                upgrade_channel="patch", node_os_upgrade_channel="NodeImage"),
            auto_scaler_profile=containerservice.ManagedClusterPropertiesAutoScalerProfileArgs(
                # Spot GPU capacity: give up on a pool that cannot get a VM and try the next.
                expander="least-waste", max_node_provision_time="10m", scale_down_unneeded_time="10m",
                balance_similar_node_groups="true"),
            sku=containerservice.ManagedClusterSKUArgs(name="Base", tier="Standard"),
            tags=tags,
            # The system pool's count belongs to the autoscaler.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["agentPoolProfiles[0].count"]),
        )

        self.pools: dict[str, containerservice.AgentPool] = {}
        for pool in args.pools:
            self.pools[pool.name] = self._agent_pool(name, pool, rg_name, cluster_name, tags)

        # --- registry: pull by kubelet identity, push with a repository-scoped token ----------------
        self.acr = containerregistry.Registry(
            f"{name}-registry",
            # 5-50 letters and digits, unique across Azure (the name is a DNS label under azurecr.io):
            # stack and cluster, then a hash of the subscription with them (fleet/naming.global_name).
            registry_name=client.subscription_id.apply(lambda sub: naming.global_name(
                spec.name, stack=stack, account=sub, max_len=ACR_NAME_MAX, charset="a-z0-9")),
            resource_group_name=rg_name, location=spec.region,
            sku=containerregistry.SkuArgs(name=ACR_SKU),
            admin_user_enabled=False,
            tags=tags, opts=child)
        kubelet_object_id = self.cluster.identity_profile.apply(
            lambda p: (p or {})["kubeletidentity"].object_id)
        self.acr_pull = authorization.RoleAssignment(
            f"{name}-registry-kubelet-pull",
            principal_id=kubelet_object_id,
            principal_type="ServicePrincipal",
            role_definition_id=client.subscription_id.apply(
                lambda s: f"/subscriptions/{s}/providers/Microsoft.Authorization/roleDefinitions/{ACR_PULL_ROLE}"),
            scope=self.acr.id,
            opts=child)
        scope_map = containerregistry.ScopeMap(
            f"{name}-registry-push", scope_map_name="fleet-router-push", registry_name=self.acr.name,
            resource_group_name=rg_name,
            description="Push and pull the router image and the AMD driver image KMM builds, nothing else",
            actions=[f"repositories/{repo}/{a}" for repo in (REPOSITORY, pins.AMD_DRIVER_REPOSITORY)
                     for a in ("content/read", "content/write", "metadata/read")],
            opts=child)
        self.push_token = containerregistry.Token(
            f"{name}-registry-push", token_name="fleet-router-push", registry_name=self.acr.name,
            resource_group_name=rg_name, scope_map_id=scope_map.id, status="enabled", opts=child)
        password = pulumi.Config().get_secret(PUSH_PASSWORD_CONFIG)
        login = self.acr.login_server
        self.registry = RegistryAccess(
            url=login,
            address=login,
            username=self.push_token.name,
            # ACR returns token passwords only from `generateCredentials`, which has no resource:
            # `az acr token credential generate` once, then `pulumi config set --secret acrPushPassword`.
            password=pulumi.Output.secret(password if password is not None else ""),
            resource=self.acr,
        )

        creds = containerservice.list_managed_cluster_user_credentials_output(
            resource_group_name=rg_name, resource_name=self.cluster.name, opts=invoke)
        self.kubeconfig = pulumi.Output.secret(creds.apply(_kubeconfig))
        self.provider = k8s.Provider(
            f"{name}-k8s", kubeconfig=self.kubeconfig, enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.cluster]))

        self.handle = clusters.ClusterHandle(spec=self.spec, provider=self.provider, kubeconfig=self.kubeconfig,
                                             registry=self.registry, pools=self.pools, component=self)
        self.register_outputs({
            "cluster_name": self.cluster.name,
            "fqdn": self.cluster.fqdn,
            "oidc_issuer": self.cluster.oidc_issuer_profile.apply(lambda p: p.issuer_url if p else None),
            "registry": self.registry.url,
            "pools": {k: p.name for k, p in self.pools.items()},
        })

    def _agent_pool(self, name: str, pool: PoolSpec, rg_name, cluster_name: str,
                    tags: dict[str, str]) -> containerservice.AgentPool:
        image = catalog.node_image("azure", pool.vendor)
        spot = {"scale_set_priority": "Spot", "scale_set_eviction_policy": "Delete",
                "spot_max_price": SPOT_MAX_PRICE} if pool.spot else {"scale_set_priority": "Regular"}
        pool_tags = {**tags, "fleet-pool": pool.name}
        return containerservice.AgentPool(
            f"{name}-{pool.name}",
            agent_pool_name=naming.pool_name("azure", pool.name),
            resource_group_name=rg_name,
            resource_name_=cluster_name,
            mode="User",
            vm_size=pool.machine.name,
            os_type="Linux",
            os_sku="Ubuntu",  # the AMD GPU operator supports Ubuntu node images
            type="VirtualMachineScaleSets",
            enable_auto_scaling=True,
            count=pool.min_nodes,
            min_count=pool.min_nodes,
            max_count=pool.max_nodes,
            os_disk_size_gb=ACCELERATOR_DISK_GB,
            availability_zones=list(self.spec.zones) or None,
            node_labels=node_labels(pool),
            node_taints=node_taints(pool),
            gpu_profile=containerservice.GPUProfileArgs(driver=image.setting) if image.setting else None,
            tags=pool_tags,
            **spot,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.cluster], ignore_changes=["count"]),
        )
