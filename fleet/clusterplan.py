"""What one cluster runs, derived once from the fleet spec: the slice each layer on it takes.

Components used to receive the whole ``FleetSpec`` and re-derive their part of it (``pools_in``,
``models_on``, "does this cluster host the router"), each in its own way. ``stacks/_compose.py``
now builds one frozen :class:`ClusterPlan` per cluster with :func:`plan_cluster` and hands every
layer on that cluster (namespaces, platform, network policies, monitoring, inference) this plan
and nothing wider; only the router, whose config spans every cluster, reads the whole spec.
Pure: no Pulumi, no I/O — tests read the same plans the program uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from fleet.spec import ClusterSpec, FleetSpec, ModelSpec, PlatformSpec, PoolSpec


@dataclass(frozen=True)
class ClusterPlan:
    cluster: ClusterSpec
    platform: PlatformSpec
    """The platform switches (Istio, KServe, KEDA, monitoring): fleet-wide, every cluster alike."""
    pools: tuple[PoolSpec, ...]
    """The accelerator pools of this cluster, in spec order."""
    models: Mapping[str, tuple[ModelSpec, ...]]
    """Pool name -> the models served on it (empty tuple: a pool with no model yet)."""
    hosts_router: bool
    """The router runs here (it is enabled and this is its cluster)."""
    fleet_size: int
    """How many clusters the fleet has: the router calls the others' gateways when above one."""
    request_timeout_s: float
    """The router's longest request: every drain and gateway timeout follows from it (fleet.drain)."""
    router_hostname: str | None = None
    """The router's public hostname when it runs here (its Gateway gets a listener for it)."""

    @property
    def name(self) -> str:
        return self.cluster.name

    @property
    def cloud(self) -> str:
        return self.cluster.cloud

    @property
    def vendors(self) -> frozenset[str]:
        return frozenset(p.vendor for p in self.pools)

    @property
    def served_pools(self) -> tuple[PoolSpec, ...]:
        """Pools with at least one model: the ones that get servers, an InferencePool and a route."""
        return tuple(p for p in self.pools if self.models[p.name])

    def models_on(self, pool: str) -> tuple[ModelSpec, ...]:
        return self.models[pool]


def plan_cluster(spec: FleetSpec, cluster: str) -> ClusterPlan:
    pools = tuple(spec.pools_in(cluster))
    hosts_router = spec.router.enabled and spec.router_cluster().name == cluster
    return ClusterPlan(
        cluster=spec.cluster(cluster),
        platform=spec.platform,
        pools=pools,
        models=MappingProxyType({p.name: tuple(spec.models_on(p.name)) for p in pools}),
        hosts_router=hosts_router,
        fleet_size=len(spec.clusters),
        request_timeout_s=spec.router.request_timeout_s,
        router_hostname=spec.router.hostname if hosts_router else None,
    )
