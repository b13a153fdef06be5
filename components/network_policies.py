"""NetworkPolicies (issue 6). Placeholder contract until the component lands."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.namespaces import Namespaces
from fleet.spec import ClusterSpec, FleetSpec


@dataclass
class NetworkPoliciesArgs:
    spec: FleetSpec
    cluster: ClusterSpec
    namespaces: Namespaces
    hosts_router: bool


class NetworkPolicies(pulumi.ComponentResource):
    def __init__(self, name: str, args: NetworkPoliciesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:network:NetworkPolicies", name, None, opts)
        self.register_outputs({})
