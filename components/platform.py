"""Platform layer (issue 6). Placeholder contract until the platform component lands."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.namespaces import Namespaces
from fleet.spec import ClusterSpec, FleetSpec


@dataclass
class PlatformArgs:
    spec: FleetSpec
    cluster: ClusterSpec
    vendors: frozenset[str]
    namespaces: Namespaces


class Platform(pulumi.ComponentResource):
    def __init__(self, name: str, args: PlatformArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:platform:Platform", name, None, opts)
        self.gateway_class_name = "istio"
        self.register_outputs({})
