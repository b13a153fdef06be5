"""The `azure` topology: one AKS cluster with seed 002's T4 pool and seed 000's AMD MI300X pool.

``Pulumi.azure.yaml``: Standard_NC4as_T4_v3 Spot (seed 002) and Standard_ND96isr_MI300X_v5
(seed 000) agent pools — Spot priority, eviction Delete, from zero, the AKS spot label and taint
declared — the MI300X pool driven by the AMD GPU operator rather than the NVIDIA driver. The
cluster component (``components/aks.py``) builds resource group, cluster, pools and ACR; the layers
in ``stacks/_compose.py`` go on top, the router last.
"""

from __future__ import annotations

from typing import Any

from fleet.spec import FleetSpec
from stacks._compose import build_fleet
from stacks.secrets import FleetSecrets


def build(spec: FleetSpec, secrets: FleetSecrets) -> dict[str, Any]:
    return build_fleet(spec, secrets)
