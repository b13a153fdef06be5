"""The router's image and deployment (issue 8). Placeholder contract until the component lands."""

from __future__ import annotations

from dataclasses import dataclass
import pulumi

from components.namespaces import Namespaces
from components.platform import Platform
from components.router_image import RouterImage
from fleet.spec import ClusterSpec, FleetSpec


@dataclass
class RouterArgs:
    spec: FleetSpec
    cluster: ClusterSpec
    pool_endpoints: dict[str, pulumi.Output[str]]
    image: RouterImage
    api_keys: pulumi.Output[str] | None
    namespaces: Namespaces
    platform: Platform


class Router(pulumi.ComponentResource):
    def __init__(self, name: str, args: RouterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:router:Router", name, None, opts)
        self.url = pulumi.Output.from_input(f"https://{args.spec.router.hostname or 'router.invalid'}")
        self.register_outputs({"url": self.url})
