"""A GKE cluster with NVIDIA GPU and TPU node pools that scale from zero on Spot VMs.

Children: a VPC network and subnet (pod and service secondary ranges), Cloud Router + NAT (private
nodes still pull model weights and images), a node service account with only logging/metrics
rights, the cluster (release channel, Workload Identity, private nodes, no default node pool), a
small on-demand system pool, one node pool per accelerator pool, and an Artifact Registry Docker
repository the node service account may read.

Why these choices (issue 5, seed 002's notes):

* ``remove_default_node_pool`` + ``initial_node_count=1``: GKE must create a pool with the cluster;
  it is deleted at once so every pool is one we declare (and can scale to zero).
* NVIDIA pools set ``gpu_driver_installation_config``: GKE then installs the driver and runs its
  own device plugin (``catalog.CLOUD_TRAITS['gcp'].installs_nvidia_driver``) — without it the
  nodes come up with GPUs no pod can request.
* Accelerator pools autoscale with ``total_min_node_count`` / ``total_max_node_count`` (a count for
  the whole pool, not per zone) and ``location_policy=ANY``, so Spot capacity is taken in whichever
  zone has it.
* TPU pools: the machine type implies the chips; ``placement_policy`` COMPACT with the slice
  topology (seed 003's ``2x2``) is what makes GKE schedule the slice as one unit.
* The spot label GKE adds (``cloud.google.com/gke-spot``) lives on the Kubernetes node, not in
  ``node_config.labels``, so there is nothing to declare; GKE rejects labels in its own prefix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_gcp.artifactregistry as artifactregistry
import pulumi_gcp.compute as compute
import pulumi_gcp.container as container
import pulumi_gcp.organizations as organizations
import pulumi_gcp.projects as projects
import pulumi_gcp.serviceaccount as serviceaccount
import pulumi_kubernetes as k8s

from components.clusters import ClusterHandle, node_labels, naming_stack
from components.registry import RegistryAccess
from fleet import catalog, naming
from fleet.spec import ClusterSpec, PoolSpec

SUBNET_CIDR = "10.10.0.0/20"
PODS_CIDR = "10.16.0.0/14"
SERVICES_CIDR = "10.20.0.0/20"
MASTER_CIDR = "172.16.0.0/28"
NODE_ROLES = ("roles/container.defaultNodeServiceAccount",
              "roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/monitoring.viewer")
"""What the node service account needs besides registry read. GKE's hardening guide: a custom node
service account needs ``roles/container.defaultNodeServiceAccount`` (what nodes need to run, log and
report); without it node registration and GKE's system components on the node fail."""
CONTROL_PLANE_PORTS = (15017, 9443, 6443)
"""The private control plane calls these on nodes besides GKE's default 443/10250 (GKE private
clusters: the auto-created firewall rule opens only those two): istiod's injection/validation
webhook (15017), KServe's and KEDA's admission webhooks (9443) and KEDA's external-metrics
APIService (6443)."""
OAUTH_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
"""Access is governed by the service account's IAM roles; the scope no longer narrows it."""
TAINT_EFFECTS = {"NoSchedule": "NO_SCHEDULE", "PreferNoSchedule": "PREFER_NO_SCHEDULE", "NoExecute": "NO_EXECUTE"}
SYSTEM_DISK_GB = 100
ACCELERATOR_DISK_GB = 200
"""Model weights are pulled to the node: an 8B model in bf16 is 16 GB, plus the vLLM image."""


@dataclass
class GkeClusterArgs:
    cluster: ClusterSpec
    pools: list[PoolSpec]


def _kubeconfig(name: str, endpoint: str, ca: str) -> str:
    # The gke-gcloud-auth-plugin turns the user's gcloud login into a token at use time:
    # no long-lived credential is stored in the stack.
    return f"""apiVersion: v1
kind: Config
clusters:
- name: {name}
  cluster:
    server: https://{endpoint}
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
      command: gke-gcloud-auth-plugin
      provideClusterInfo: true
"""


class GkeCluster(pulumi.ComponentResource):
    def __init__(self, name: str, args: GkeClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:gke:GkeCluster", name, None, opts)
        spec = args.cluster
        self.spec = spec
        stack = naming_stack()  # in every name GCP sees: two stacks share a project (fleet/naming.py)
        # The spec's project and region, not the ambient ones: every GCP resource and lookup of the
        # cluster goes through this provider (Pulumi.yaml disables default providers). An explicit
        # provider reads no `gcp:` stack config, so a spec without a project takes `gcp:project` from
        # here, else the provider's own fallbacks (GOOGLE_PROJECT, gcloud's default).
        self.gcp = gcp.Provider(
            f"{name}-gcp", project=spec.project or pulumi.Config("gcp").get("project"), region=spec.region,
            opts=pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, provider=self.gcp)
        # Stateful or costly to rebuild: the engine refuses to delete or replace a protected resource
        # (pulumi step_generator.go "unable to replace resource ... marked for protection"), so a
        # change that would replace the network, the cluster or the registry stops at preview.
        kept = pulumi.ResourceOptions(parent=self, protect=True, provider=self.gcp)
        client = organizations.get_client_config_output(
            opts=pulumi.InvokeOutputOptions(parent=self, provider=self.gcp))
        project = pulumi.Output.from_input(spec.project) if spec.project else client.project
        region = spec.region

        # --- network ---------------------------------------------------------------------------
        self.network = compute.Network(
            f"{name}-net", name=naming.cloud_name(name, "net", stack=stack), project=spec.project,
            auto_create_subnetworks=False, opts=kept)
        self.subnet = compute.Subnetwork(
            f"{name}-subnet", name=naming.cloud_name(name, "nodes", stack=stack), project=spec.project,
            region=region, network=self.network.id, ip_cidr_range=SUBNET_CIDR,
            private_ip_google_access=True,  # private nodes reach Google APIs (Artifact Registry)
            secondary_ip_ranges=[
                compute.SubnetworkSecondaryIpRangeArgs(range_name="pods", ip_cidr_range=PODS_CIDR),
                compute.SubnetworkSecondaryIpRangeArgs(range_name="services", ip_cidr_range=SERVICES_CIDR),
            ],
            opts=kept)
        # Private nodes have no public IPs: NAT is their way to Hugging Face and public images.
        self.router = compute.Router(
            f"{name}-router", name=naming.cloud_name(name, "router", stack=stack), project=spec.project,
            region=region, network=self.network.id, opts=child)
        self.nat = compute.RouterNat(
            f"{name}-nat", name=naming.cloud_name(name, "nat", stack=stack), project=spec.project,
            region=region, router=self.router.name, nat_ip_allocate_option="AUTO_ONLY",
            source_subnetwork_ip_ranges_to_nat="ALL_SUBNETWORKS_ALL_IP_RANGES", opts=child)

        # --- node identity -----------------------------------------------------------------------
        self.node_account = serviceaccount.Account(
            f"{name}-nodes", account_id=naming.cloud_name(name, "nodes", stack=stack, max_len=30),
            display_name=f"GKE nodes of {spec.name}", project=spec.project, opts=child)
        node_member = self.node_account.email.apply(lambda e: f"serviceAccount:{e}")
        for role in NODE_ROLES:
            projects.IAMMember(f"{name}-nodes-{role.split('/')[1]}", project=project, role=role,
                               member=node_member, opts=child)

        # --- cluster ---------------------------------------------------------------------------
        self.cluster = container.Cluster(
            f"{name}-gke",
            name=naming.cloud_name(spec.name, stack=stack, max_len=40),
            project=spec.project,
            location=region,
            node_locations=list(spec.zones) or None,
            network=self.network.id,
            subnetwork=self.subnet.id,
            remove_default_node_pool=True,
            initial_node_count=1,
            min_master_version=spec.kubernetes_version,
            release_channel=container.ClusterReleaseChannelArgs(channel=catalog.GKE_RELEASE_CHANNEL),
            workload_identity_config=container.ClusterWorkloadIdentityConfigArgs(
                workload_pool=project.apply(lambda p: f"{p}.svc.id.goog")),
            private_cluster_config=container.ClusterPrivateClusterConfigArgs(
                enable_private_nodes=spec.private_nodes, enable_private_endpoint=False,
                master_ipv4_cidr_block=MASTER_CIDR),
            ip_allocation_policy=container.ClusterIpAllocationPolicyArgs(
                cluster_secondary_range_name="pods", services_secondary_range_name="services"),
            # Network policies are enforced (components/network_policies.py declares them).
            datapath_provider="ADVANCED_DATAPATH",
            # GKE's Gateway API channel would install and own the Gateway API CRDs at GKE's version;
            # the platform layer installs them (pinned) and Istio is the gateway class: one owner.
            gateway_api_config=container.ClusterGatewayApiConfigArgs(channel="CHANNEL_DISABLED"),
            # The cluster autoscaler prefers scaling the cheapest pool that fits; idle GPU nodes go.
            cluster_autoscaling=container.ClusterClusterAutoscalingArgs(
                autoscaling_profile="OPTIMIZE_UTILIZATION"),
            # terraform-provider-google resource_container_cluster.go: Delete refuses while
            # deletion_protection is true (the provider's own guard, beside Pulumi's protect).
            deletion_protection=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.nat], protect=True, provider=self.gcp),
        )

        self.control_plane_firewall = compute.Firewall(
            f"{name}-control-plane-webhooks",
            name=naming.cloud_name(name, "cp-webhooks", stack=stack), project=spec.project,
            network=self.network.id, direction="INGRESS", source_ranges=[MASTER_CIDR],
            allows=[compute.FirewallAllowArgs(protocol="tcp", ports=[str(p) for p in CONTROL_PLANE_PORTS])],
            description="GKE control plane -> webhooks and APIServices on the nodes",
            opts=child)

        # A pool's name is fixed and unique in its cluster: replaced create-first, GKE would refuse the
        # second pool of that name (409 already exists) half-way through `up`. Delete first: the pool
        # drains and comes back under the same name (a spot GPU pool at zero loses nothing).
        pool_opts = pulumi.ResourceOptions(parent=self, depends_on=[self.cluster], delete_before_replace=True,
                                           provider=self.gcp)
        self.system_pool = container.NodePool(
            f"{name}-system",
            name="system",
            project=spec.project,
            location=region,
            cluster=self.cluster.name,
            autoscaling=container.NodePoolAutoscalingArgs(
                total_min_node_count=spec.system_nodes, total_max_node_count=spec.system_nodes * 2),
            management=container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            node_config=container.NodePoolNodeConfigArgs(
                machine_type=catalog.SYSTEM_MACHINES["gcp"].name,
                disk_size_gb=SYSTEM_DISK_GB,
                service_account=self.node_account.email,
                oauth_scopes=OAUTH_SCOPES,
                workload_metadata_config=container.NodePoolNodeConfigWorkloadMetadataConfigArgs(
                    mode="GKE_METADATA"),
                shielded_instance_config=container.NodePoolNodeConfigShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_integrity_monitoring=True),
            ),
            opts=pool_opts,
        )

        self.pools: dict[str, container.NodePool] = {}
        for pool in args.pools:
            self.pools[pool.name] = self._accelerator_pool(name, spec, pool, pool_opts)

        # --- registry ----------------------------------------------------------------------------
        repo_id = naming.cloud_name(spec.name, "images", stack=stack)
        self.repository = artifactregistry.Repository(
            f"{name}-registry", repository_id=repo_id, project=spec.project, location=region,
            format="DOCKER", description=f"Images the {spec.name} cluster runs",
            docker_config=artifactregistry.RepositoryDockerConfigArgs(immutable_tags=True),
            opts=kept)
        # Nodes pull with their own service account: a reader binding on this repository only.
        self.registry_reader = artifactregistry.RepositoryIamMember(
            f"{name}-registry-nodes-read", project=project, location=region,
            repository=self.repository.name, role="roles/artifactregistry.reader", member=node_member,
            opts=child)
        address = f"{region}-docker.pkg.dev"
        self.registry = RegistryAccess(
            url=pulumi.Output.concat(address, "/", project, "/", self.repository.repository_id),
            address=pulumi.Output.from_input(address),
            # The deployer's own OAuth token pushes (valid for an hour, refreshed every run).
            username=pulumi.Output.from_input("oauth2accesstoken"),
            password=pulumi.Output.secret(client.access_token),
            resource=self.repository,
        )

        # --- kubeconfig and provider ----------------------------------------------------------------
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(
            self.cluster.name, self.cluster.endpoint, self.cluster.master_auth.cluster_ca_certificate,
        ).apply(lambda a: _kubeconfig(a[0], a[1], a[2])))
        self.provider = k8s.Provider(
            f"{name}-k8s", kubeconfig=self.kubeconfig, enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.system_pool]))

        self.handle = ClusterHandle(spec=self.spec, provider=self.provider, kubeconfig=self.kubeconfig,
                                    registry=self.registry, pools=self.pools, component=self)
        self.register_outputs({
            "cluster_name": self.cluster.name,
            "endpoint": self.cluster.endpoint,
            "registry": self.registry.url,
            "pools": {k: p.name for k, p in self.pools.items()},
        })

    def _accelerator_pool(self, name: str, spec: ClusterSpec, pool: PoolSpec,
                          opts: pulumi.ResourceOptions) -> container.NodePool:
        acc = catalog.accelerator(pool.accelerator)
        machine = pool.machine
        image = catalog.node_image("gcp", pool.vendor)
        guest = None
        if machine.guest_accelerator or (not acc.is_tpu and acc.gke_accelerator):
            # N1 machines attach GPUs as guest accelerators; A2/A3/G2 carry them, but GKE still
            # wants them declared so it can install the driver for the right count.
            guest = [container.NodePoolNodeConfigGuestAcceleratorArgs(
                type=machine.guest_accelerator or acc.gke_accelerator,
                count=machine.accelerators,
                gpu_driver_installation_config=(
                    container.NodePoolNodeConfigGuestAcceleratorGpuDriverInstallationConfigArgs(
                        gpu_driver_version=image.setting) if image.setting else None),
            )]
        taints = [container.NodePoolNodeConfigTaintArgs(key=t["key"], value=t["value"],
                                                        effect=TAINT_EFFECTS[t["effect"]])
                  for t in catalog.pool_taints(pool.vendor)]
        return container.NodePool(
            f"{name}-{pool.name}",
            name=naming.pool_name("gcp", pool.name),
            project=spec.project,
            location=spec.region,
            cluster=self.cluster.name,
            node_locations=list(spec.zones) or None,
            # Per zone, and ForceNew: set once from min_nodes, then the autoscaler owns the count.
            initial_node_count=math.ceil(pool.min_nodes / max(len(spec.zones), 1)),
            autoscaling=container.NodePoolAutoscalingArgs(
                total_min_node_count=pool.min_nodes, total_max_node_count=pool.max_nodes,
                location_policy="ANY"),
            management=container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            placement_policy=(container.NodePoolPlacementPolicyArgs(type="COMPACT", tpu_topology=pool.tpu_topology)
                              if acc.is_tpu else None),
            node_config=container.NodePoolNodeConfigArgs(
                machine_type=machine.name,
                spot=pool.spot,
                guest_accelerators=guest,
                disk_size_gb=ACCELERATOR_DISK_GB,
                disk_type="pd-ssd" if not acc.is_tpu else None,
                labels=node_labels(pool),
                taints=taints,
                service_account=self.node_account.email,
                oauth_scopes=OAUTH_SCOPES,
                workload_metadata_config=container.NodePoolNodeConfigWorkloadMetadataConfigArgs(mode="GKE_METADATA"),
                shielded_instance_config=container.NodePoolNodeConfigShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_integrity_monitoring=True),
                resource_labels={"fleet-pool": pool.name, "fleet-cluster": spec.name},
            ),
            # The autoscaler owns the node count once the pool exists.
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(ignore_changes=["initialNodeCount"])),
        )
