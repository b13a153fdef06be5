"""Which component builds a cluster of each cloud: one row per cloud, data rather than an if-chain.

Each row imports its module when called, so a dev plan never pays for importing the AWS, GCP or
Azure SDKs (pulumi-azure-native alone takes seconds). The imports are plain ``import`` statements,
visible to the import contracts; no ``importlib``."""

from __future__ import annotations

from typing import Callable

import pulumi

from components.clusters import ClusterHandle
from fleet.spec import ClusterSpec, PoolSpec

ClusterFactory = Callable[[ClusterSpec, list[PoolSpec], tuple[str, ...], pulumi.ResourceOptions | None], ClusterHandle]


def _local(cluster: ClusterSpec, pools: list[PoolSpec], repositories: tuple[str, ...],
           opts: pulumi.ResourceOptions | None) -> ClusterHandle:
    from components.local import LocalCluster, LocalClusterArgs

    return LocalCluster(cluster.name, LocalClusterArgs(cluster=cluster, pools=pools), opts).handle


def _gke(cluster: ClusterSpec, pools: list[PoolSpec], repositories: tuple[str, ...],
         opts: pulumi.ResourceOptions | None) -> ClusterHandle:
    from components.gke import GkeCluster, GkeClusterArgs

    return GkeCluster(cluster.name, GkeClusterArgs(cluster=cluster, pools=pools), opts).handle


def _eks(cluster: ClusterSpec, pools: list[PoolSpec], repositories: tuple[str, ...],
         opts: pulumi.ResourceOptions | None) -> ClusterHandle:
    from components.eks import EksCluster, EksClusterArgs

    args = EksClusterArgs(cluster=cluster, pools=pools, repositories=repositories)
    return EksCluster(cluster.name, args, opts).handle


def _aks(cluster: ClusterSpec, pools: list[PoolSpec], repositories: tuple[str, ...],
         opts: pulumi.ResourceOptions | None) -> ClusterHandle:
    from components.aks import AksCluster, AksClusterArgs

    return AksCluster(cluster.name, AksClusterArgs(cluster=cluster, pools=pools), opts).handle


CLUSTER_COMPONENTS: dict[str, ClusterFactory] = {"local": _local, "gcp": _gke, "aws": _eks, "azure": _aks}


def create_cluster(cluster: ClusterSpec, pools: list[PoolSpec], repositories: tuple[str, ...] = (),
                   opts: pulumi.ResourceOptions | None = None) -> ClusterHandle:
    """The cluster component for ``cluster.cloud``, created; returns its typed handle.

    ``repositories``: the images its registry must hold (only ECR creates one repository per image;
    Artifact Registry and ACR hold any image under the registry)."""
    return CLUSTER_COMPONENTS[cluster.cloud](cluster, pools, repositories, opts)
