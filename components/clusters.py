"""Which component builds a cluster of each cloud: data, not an if-chain."""

from __future__ import annotations

import importlib

import pulumi

from fleet import catalog, naming
from fleet.spec import ClusterSpec, PoolSpec

# cloud -> (module, component class, args class). Imported lazily: a dev plan never pays for
# importing the AWS, GCP or Azure SDKs.
CLUSTER_COMPONENTS = {
    "local": ("components.local", "LocalCluster", "LocalClusterArgs"),
    "gcp": ("components.gke", "GkeCluster", "GkeClusterArgs"),
    "aws": ("components.eks", "EksCluster", "EksClusterArgs"),
    "azure": ("components.aks", "AksCluster", "AksClusterArgs"),
}


def create_cluster(cluster: ClusterSpec, pools: list[PoolSpec],
                   opts: pulumi.ResourceOptions | None = None) -> pulumi.ComponentResource:
    """The cluster component for ``cluster.cloud``.

    Every one exposes ``spec``, ``cloud``, ``provider`` (a Kubernetes provider built from its
    kubeconfig), ``kubeconfig`` (secret), ``registry`` (or None) and ``pools``."""
    module, cls, args_cls = CLUSTER_COMPONENTS[cluster.cloud]
    mod = importlib.import_module(module)
    return getattr(mod, cls)(cluster.name, getattr(mod, args_cls)(cluster=cluster, pools=pools), opts)


def node_labels(pool: PoolSpec) -> dict[str, str]:
    """The labels of an accelerator pool's nodes on every cloud: the catalog's (vendor,
    accelerator, pool), plus the reserved reason when the pool runs on demand."""
    labels = catalog.pool_labels(pool.vendor, pool.accelerator, pool.name)
    if pool.reserved_reason:
        labels[f"{catalog.LABEL_PREFIX}/reserved-reason"] = naming.label_value(pool.reserved_reason)
    return labels
