"""What every cloud's cluster component shares: the handle it gives the layers above it, and the
labels of accelerator pool nodes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import pulumi
import pulumi_kubernetes as k8s

from components.registry import RegistryAccess
from fleet import catalog, naming
from fleet.stackset import SET_KEY
from fleet.spec import ClusterSpec, PoolSpec


@dataclass(frozen=True)
class ClusterHandle:
    """What a cluster component (GKE, EKS, AKS, local) gives the layers above it, in the manner of
    pulumi-eks's ``CoreData``: everything they may use of a cluster, typed, and nothing cloud-specific.
    ``stacks/_compose.py`` reads it; no layer sees the cluster component itself."""

    spec: ClusterSpec
    provider: k8s.Provider
    """Kubernetes provider built from the cluster's kubeconfig: every object on the cluster uses it."""
    kubeconfig: pulumi.Output[str]
    """Always a secret."""
    registry: RegistryAccess | None
    """Where images for this cluster are pushed (None: kind/k3d load images directly)."""
    pools: Mapping[str, pulumi.Resource]
    """Pool name -> the node pool resource (empty for simulated pools)."""
    component: pulumi.ComponentResource
    """The cluster component itself, for ``depends_on``."""

    @property
    def cloud(self) -> str:
        return self.spec.cloud

    @property
    def simulated(self) -> bool:
        """Local pools have no nodes: their model servers run the simulator."""
        return self.spec.cloud == "local"


def naming_stack() -> str:
    """The stack name every cloud resource name starts with (fleet/naming.py): this stack's, or for a
    part of a stack set (``multicloud.aws-east``) the set's (``multicloud``), so a cluster keeps the
    names it had as part of one stack and parts of one set (one cluster each) never collide."""
    return pulumi.Config().get(SET_KEY) or pulumi.get_stack()


def node_labels(pool: PoolSpec) -> dict[str, str]:
    """The labels of an accelerator pool's nodes on every cloud: the catalog's (vendor,
    accelerator, pool), plus the reserved reason when the pool runs on demand."""
    labels = catalog.pool_labels(pool.vendor, pool.accelerator, pool.name)
    if pool.reserved_reason:
        labels[f"{catalog.LABEL_PREFIX}/reserved-reason"] = naming.label_value(pool.reserved_reason)
    return labels
