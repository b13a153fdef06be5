"""The `aws` topology: one EKS cluster with seed 002's T4 pool and an H100 pool.

``Pulumi.aws.yaml``: g4dn T4 spot managed node groups from zero (seed 002), with the
cluster-autoscaler node-template tags that scale-from-zero needs, and a p5 H100 pool. The cluster
component (``components/eks.py``) builds VPC, cluster, IAM/IRSA, node groups and ECR; the layers
in ``stacks/_compose.py`` go on top, the router last.
"""

from __future__ import annotations

from typing import Any

from fleet.spec import FleetSpec
from stacks._compose import build_fleet
from stacks.secrets import FleetSecrets


def build(spec: FleetSpec, secrets: FleetSecrets) -> dict[str, Any]:
    return build_fleet(spec, secrets)
