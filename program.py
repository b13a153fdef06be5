"""The Pulumi program body: spec from config -> topology from ``stacks/`` -> exported outputs.

``__main__.py`` (what ``pulumi up`` runs) calls :func:`main`; so does the offline plan
(``fleetctl.plan``), under mocks. It sits above ``stacks/``: the topologies never import it."""

from __future__ import annotations

import pulumi

from fleet.secrets import HF_TOKEN, ROUTER_API_KEYS, ROUTER_BACKEND_KEYS, RequiredSecret, required_secrets
from fleet.spec import FleetSpec, SpecError, load_spec
from stacks import TOPOLOGIES
from stacks.secrets import FleetSecrets

PLAN_SOURCE: str | None = None
"""Set by the offline plan to the stack file it read, so errors name it."""

OFFLINE_PLAN = False
"""Set by the offline plan: a missing required secret is recorded in :data:`MISSING_SECRETS`
(the shipped stack files hold no secrets, and the plan must still show the stack) instead of
failing the run, as it does under ``pulumi preview``/``up``."""

MISSING_SECRETS: list[RequiredSecret] = []


def _source() -> str:
    return PLAN_SOURCE or f"Pulumi.{pulumi.get_stack()}.yaml"


def read_spec() -> FleetSpec:
    try:
        return load_spec(pulumi.Config().get_object("fleet"), _source())
    except SpecError as e:
        # A RunError is printed by the CLI as a message, not a stack trace.
        raise pulumi.RunError(str(e)) from None


def read_secrets(spec: FleetSpec) -> FleetSecrets:
    """Each secret from Pulumi secret config. What the spec cannot be deployed without
    (:func:`fleet.secrets.required_secrets`) fails closed: ``require_secret`` stops a preview or an
    up with Pulumi's own "missing required configuration variable" error, naming the key — a public
    router with no API keys or a gated model with no token must never deploy by omission."""
    cfg = pulumi.Config()
    required = {r.key: r for r in required_secrets(spec)}
    MISSING_SECRETS.clear()

    def read(key: str) -> pulumi.Output[str] | None:
        if key not in required:
            return cfg.get_secret(key)
        if not OFFLINE_PLAN:
            return cfg.require_secret(key)
        value = cfg.get_secret(key)
        if value is None:
            MISSING_SECRETS.append(required[key])
        return value

    backend_keys = read(ROUTER_BACKEND_KEYS)
    if OFFLINE_PLAN and backend_keys is not None:
        # The offline plan holds a masked placeholder, not the JSON: planned as "no pool has a key"
        # (the Secret, the mounts and each pool's key file still appear).
        backend_keys = backend_keys.apply(lambda v: v if v.lstrip().startswith("{") else "{}")
    return FleetSecrets(hf_token=read(HF_TOKEN), router_api_keys=read(ROUTER_API_KEYS),
                        router_backend_keys=backend_keys)


def main() -> None:
    spec = read_spec()
    topology = TOPOLOGIES[spec.topology]
    found = topology.problems(spec)
    if found:  # what this topology needs of the spec beyond the spec's own rules
        raise pulumi.RunError(str(SpecError(_source(), found)))
    outputs = topology.build(spec, read_secrets(spec))
    for key, value in sorted(outputs.items()):
        pulumi.export(key, value)
