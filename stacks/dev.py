"""The `dev` topology: an existing local cluster (kind or k3d), simulated vendor pools, the router.

The stack a newcomer can really ``pulumi up`` on a laptop (``Pulumi.dev.yaml``): every layer the
cloud stacks get — namespaces, platform, network policies, monitoring, inference layer with its
Gateway and InferencePools — on one local cluster, with each accelerator pool played by the
simulator at its vendor's latency profile and priced as the accelerator it emulates, so tiers,
overflow and cost-aware routing behave as on the real fleet. Nothing here is billed
(``python -m fleet cost --stack dev``).
"""

from __future__ import annotations

from typing import Any

from fleet.spec import FleetSpec
from stacks._compose import build_fleet
from stacks.secrets import FleetSecrets


def build(spec: FleetSpec, secrets: FleetSecrets) -> dict[str, Any]:
    return build_fleet(spec, secrets)
