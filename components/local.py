"""An existing local cluster (kind or k3d) reached through a kubeconfig context: the dev stack."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components.clusters import ClusterHandle
from fleet.spec import ClusterSpec, PoolSpec


@dataclass
class LocalClusterArgs:
    cluster: ClusterSpec
    pools: list[PoolSpec]


class LocalCluster(pulumi.ComponentResource):
    """Nothing to create: a Kubernetes provider for the context, and simulated pools.

    Local pools have no nodes of their own; their model servers run the simulator on the
    cluster's ordinary nodes (see components/inference), so they carry no accelerator taints."""

    def __init__(self, name: str, args: LocalClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:local:LocalCluster", name, None, opts)
        self.spec = args.cluster
        self.provider = k8s.Provider(
            f"{name}-k8s",
            context=args.cluster.kubeconfig_context,
            # Server-side apply matches what `kubectl apply --server-side` would do by hand.
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.kubeconfig = pulumi.Output.secret(f"context: {args.cluster.kubeconfig_context}")
        self.registry = None  # kind/k3d load images directly (`make image` + `kind load`)
        self.pools: dict[str, pulumi.Resource] = {}
        self.handle = ClusterHandle(spec=self.spec, provider=self.provider, kubeconfig=self.kubeconfig,
                                    registry=self.registry, pools=self.pools, component=self)
        self.register_outputs({"context": args.cluster.kubeconfig_context})
