"""The `gcp` topology (see README, "Stacks")."""

from __future__ import annotations

from typing import Any

from fleet.program import FleetSecrets
from fleet.spec import FleetSpec
from stacks._compose import build_fleet


def build(spec: FleetSpec, secrets: FleetSecrets) -> dict[str, Any]:
    return build_fleet(spec, secrets)
