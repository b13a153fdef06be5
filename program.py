"""The Pulumi program body: spec from config -> topology from ``stacks/`` -> exported outputs.

``__main__.py`` (what ``pulumi up`` runs) calls :func:`main`; so does the offline plan
(``fleetctl.plan``), under mocks. It sits above ``stacks/``: the topologies never import it."""

from __future__ import annotations

import pulumi

from fleet.spec import FleetSpec, SpecError, load_spec
from stacks import TOPOLOGIES
from stacks.secrets import FleetSecrets

PLAN_SOURCE: str | None = None
"""Set by the offline plan to the stack file it read, so errors name it."""


def _source() -> str:
    return PLAN_SOURCE or f"Pulumi.{pulumi.get_stack()}.yaml"


def read_spec() -> FleetSpec:
    try:
        return load_spec(pulumi.Config().get_object("fleet"), _source())
    except SpecError as e:
        # A RunError is printed by the CLI as a message, not a stack trace.
        raise pulumi.RunError(str(e)) from None


def read_secrets() -> FleetSecrets:
    cfg = pulumi.Config()
    return FleetSecrets(hf_token=cfg.get_secret("hfToken"), router_api_keys=cfg.get_secret("routerApiKeys"))


def main() -> None:
    spec = read_spec()
    topology = TOPOLOGIES[spec.topology]
    found = topology.problems(spec)
    if found:  # what this topology needs of the spec beyond the spec's own rules
        raise pulumi.RunError(str(SpecError(_source(), found)))
    outputs = topology.build(spec, read_secrets())
    for key, value in sorted(outputs.items()):
        pulumi.export(key, value)
