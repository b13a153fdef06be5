"""Topologies: each module composes components into one stack shape and returns its outputs.

``fleet.spec.FleetSpec.topology`` names the entry of :data:`TOPOLOGIES`; ``program.main`` checks
the topology's own ``problems(spec)`` (what it needs beyond the spec's rules), then calls
``build(spec, secrets) -> dict[str, Output]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from fleet.spec import FleetSpec
from stacks import aws, azure, dev, gcp, multicloud
from stacks.secrets import FleetSecrets


def _no_problems(spec: FleetSpec) -> list[tuple[str, str]]:
    return []


@dataclass(frozen=True)
class Topology:
    build: Callable[[FleetSpec, FleetSecrets], dict[str, Any]]
    problems: Callable[[FleetSpec], list[tuple[str, str]]] = _no_problems


# One row per `topology:` value the spec accepts (fleet.spec.Topology; a test keeps the two equal).
TOPOLOGIES: dict[str, Topology] = {
    "dev": Topology(dev.build),
    "gcp": Topology(gcp.build),
    "aws": Topology(aws.build),
    "azure": Topology(azure.build),
    "multicloud": Topology(multicloud.build, multicloud.problems),
}
