"""The Pulumi program body: spec from config -> topology from ``stacks/`` -> exported outputs."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import pulumi

from fleet.spec import FleetSpec, SpecError, load_spec

PLAN_SOURCE: str | None = None
"""Set by the offline plan to the stack file it read, so errors name it."""


@dataclass(frozen=True)
class FleetSecrets:
    """Secrets come from Pulumi secret config, never from the spec.

    ``pulumi config set --secret hfToken hf_...`` and
    ``pulumi config set --secret routerApiKeys 'key1,key2'``."""

    hf_token: pulumi.Output[str] | None
    router_api_keys: pulumi.Output[str] | None


def read_spec() -> FleetSpec:
    source = PLAN_SOURCE or f"Pulumi.{pulumi.get_stack()}.yaml"
    try:
        return load_spec(pulumi.Config().get_object("fleet"), source)
    except SpecError as e:
        # A RunError is printed by the CLI as a message, not a stack trace.
        raise pulumi.RunError(str(e)) from None


def read_secrets() -> FleetSecrets:
    cfg = pulumi.Config()
    return FleetSecrets(hf_token=cfg.get_secret("hfToken"), router_api_keys=cfg.get_secret("routerApiKeys"))


def main() -> None:
    spec = read_spec()
    topology = importlib.import_module(f"stacks.{spec.topology}")
    outputs = topology.build(spec, read_secrets())
    for key, value in sorted(outputs.items()):
        pulumi.export(key, value)
