"""Clusters use private nodes and workload identity: GKE Workload Identity and private nodes,
EKS private endpoint access with an OIDC provider for IRSA, AKS OIDC issuer and workload identity.

Risk: pods borrowing the node's cloud identity can read every bucket and registry the node can.
"""

from __future__ import annotations

from pulumi_policy import EnforcementLevel, ResourceValidationPolicy, StackValidationPolicy

EKS = "aws:eks/cluster:Cluster"
OIDC = "aws:iam/openIdConnectProvider:OpenIdConnectProvider"


def _cluster_identity(args, report):
    t, p = args.resource_type, args.props
    if t == "gcp:container/cluster:Cluster":
        if not (p.get("workloadIdentityConfig") or {}).get("workloadPool"):
            report("GKE cluster has no Workload Identity pool")
        if not (p.get("privateClusterConfig") or {}).get("enablePrivateNodes"):
            report("GKE nodes have public IPs (privateClusterConfig.enablePrivateNodes is off)")
    elif t == EKS:
        if not (p.get("vpcConfig") or {}).get("endpointPrivateAccess"):
            report("EKS API endpoint is not reachable privately (vpcConfig.endpointPrivateAccess)")
    elif t == "azure-native:containerservice:ManagedCluster":
        if not (p.get("oidcIssuerProfile") or {}).get("enabled"):
            report("AKS OIDC issuer is disabled")
        if not (((p.get("securityProfile") or {}).get("workloadIdentity")) or {}).get("enabled"):
            report("AKS workload identity is disabled")


def _irsa(args, report):
    if any(r.resource_type == EKS for r in args.resources) and not any(r.resource_type == OIDC for r in args.resources):
        report("EKS cluster without an IAM OIDC provider: pods cannot use IRSA and fall back to the node role")


POLICIES = [
    ResourceValidationPolicy(
        name="cluster-workload-identity", description="Clusters have private nodes and workload identity.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_cluster_identity,
        remediation_steps="GKE: workload_identity_config + private nodes; EKS: endpoint_private_access; AKS: "
                          "oidc_issuer_profile.enabled and security_profile.workload_identity.enabled."),
    StackValidationPolicy(
        name="eks-irsa", description="Every EKS cluster has an IAM OIDC provider for IRSA.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_irsa,
        remediation_steps="Create aws.iam.OpenIdConnectProvider for the cluster's OIDC issuer."),
]
