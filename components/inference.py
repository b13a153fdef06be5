"""Inference layer (issue 7). Placeholder contract until the component lands."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from components.namespaces import Namespaces
from components.platform import Platform
from components.router_image import RouterImage
from fleet.spec import ClusterSpec, FleetSpec, PoolSpec


@dataclass
class InferenceLayerArgs:
    spec: FleetSpec
    cluster: ClusterSpec
    pools: list[PoolSpec]
    hf_token: pulumi.Output[str] | None
    platform: Platform
    namespaces: Namespaces
    image: RouterImage
    """The router image; simulated (local) pools run ``fleet_router.sim`` from it."""


class InferenceLayer(pulumi.ComponentResource):
    def __init__(self, name: str, args: InferenceLayerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:inference:InferenceLayer", name, None, opts)
        self.gateway_url = pulumi.Output.from_input(f"https://{args.cluster.name}.gateway.invalid")
        # pool name -> base URL the cross-cloud router sends that pool's traffic to
        self.pool_endpoints: dict[str, pulumi.Output[str]] = {
            p.name: pulumi.Output.from_input(f"https://{args.cluster.name}.gateway.invalid/pools/{p.name}")
            for p in args.pools
        }
        self.register_outputs({"gateway_url": self.gateway_url})
