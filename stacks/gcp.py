"""The `gcp` topology: one GKE cluster with seed 002's and seed 003's accelerator pools.

``Pulumi.gcp.yaml``: NVIDIA T4 spot pools that scale to zero (seed 002's n1-standard-4 + T4), L4,
and TPU v6e 2x2 slices (seed 003), each with the same labels and taints as on every other cloud.
The cluster component (``components/gke.py``) builds the network, cluster, system pool, node pools
and Artifact Registry; the layers in ``stacks/_compose.py`` go on top, the router last.
"""

from __future__ import annotations

from typing import Any

from fleet.spec import FleetSpec
from stacks._compose import build_fleet
from stacks.secrets import FleetSecrets


def build(spec: FleetSpec, secrets: FleetSecrets) -> dict[str, Any]:
    return build_fleet(spec, secrets)
