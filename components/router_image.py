"""The router's container image (issue 8). Placeholder contract until the component lands."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi


@dataclass
class RouterImageArgs:
    registries: dict[str, Any] = field(default_factory=dict)
    """cluster name -> that cluster's registry component (Artifact Registry / ECR / ACR)."""


class RouterImage(pulumi.ComponentResource):
    def __init__(self, name: str, args: RouterImageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:router:RouterImage", name, None, opts)
        # cluster name -> image reference by digest in that cluster's registry
        self.refs: dict[str, pulumi.Output[str]] = {}
        self.local_ref = pulumi.Output.from_input("fleet-router:dev")
        self.register_outputs({})
