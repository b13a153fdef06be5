"""The `multicloud` topology: seed 000's multi-vendor fleet across clouds, one router in front.

``fleets/multicloud.yaml``: NVIDIA H100 on AWS, AMD MI300X on Azure, TPU v6e on GCP — one cluster
per cloud, each with the full layer stack of ``stacks/_compose.py`` and its own TLS Gateway. Shipped
as a stack set (fleet/stackset.py, stacks/parts.py): a stack per cluster and one for the router; a
stack file holding this spec itself still plans and deploys it as one stack, the same resources. The
router runs on one of them and reaches every pool through its cluster's Gateway, applying seed
000's tiers: ``X-Priority: high`` to NVIDIA 90/10 AMD, ``X-Cost-Tier: standard`` to AMD 80/20
NVIDIA, overflow to TPU.

That shape needs two things the fleet spec alone does not demand, checked here before any
resource is declared: the router must be on, and every cluster the router does not run on needs
a ``gateway_hostname`` — a remote Gateway is only reachable (and its certificate only valid) by a
public DNS name, not by an in-cluster Service name.
"""

from __future__ import annotations

from typing import Any

from fleet.spec import FleetSpec
from stacks._compose import build_fleet
from stacks.secrets import FleetSecrets


def problems(spec: FleetSpec) -> list[tuple[str, str]]:
    """What keeps ``spec`` from being one routed fleet, as ``(fleet field path, message)``."""
    if not spec.router.enabled:
        return [("router.enabled", "the multicloud topology is one fleet behind the router; enable it")]
    home = spec.router_cluster().name
    return [
        (f"clusters[{i}].gateway_hostname",
         f"cluster {c.name!r} needs a gateway_hostname: the router (on {home!r}) reaches its pools "
         f"through that cluster's Gateway by public DNS name")
        for i, c in enumerate(spec.clusters) if c.name != home and not c.gateway_hostname
    ]


def build(spec: FleetSpec, secrets: FleetSecrets) -> dict[str, Any]:
    return build_fleet(spec, secrets)
