"""The Pulumi program body: spec from config -> topology from ``stacks/`` -> exported outputs.

``__main__.py`` (what ``pulumi up`` runs) calls :func:`main`; so does the offline plan
(``fleetctl.plan``), under mocks. It sits above ``stacks/``: the topologies never import it."""

from __future__ import annotations

from pathlib import Path

import pulumi

from fleet.secrets import HF_TOKEN, ROUTER_API_KEYS, ROUTER_BACKEND_KEYS, RequiredSecret, required_secrets
from fleet.spec import FleetSpec, SpecError, load_spec
from fleet.stackset import (FLEETS_DIR, PART_KEY, SET_KEY, Part, StackSetError, check_part, fleet_file, parse_part,
                            read_fleet_file)
from stacks import TOPOLOGIES
from stacks.parts import build_part
from stacks.secrets import FleetSecrets

ROOT = Path(__file__).resolve().parent
"""The project directory (``pulumi up`` runs the program here): a stack set's fleet file is under it."""

PLAN_SOURCE: str | None = None
"""Set by the offline plan to the stack file it read, so errors name it."""

OFFLINE_PLAN = False
"""Set by the offline plan: a missing required secret is recorded in :data:`MISSING_SECRETS`
(the shipped stack files hold no secrets, and the plan must still show the stack) instead of
failing the run, as it does under ``pulumi preview``/``up``."""

MISSING_SECRETS: list[RequiredSecret] = []

FLEET_FILES: dict[str, Path] = {}
"""Set by the offline plan when it plans an edited copy of a stack set: set -> its fleet file."""


def _source() -> str:
    return PLAN_SOURCE or f"Pulumi.{pulumi.get_stack()}.yaml"


def read_member() -> tuple[str, Part] | None:
    """``(set, part)`` when this stack is a part of a stack set (fleet/stackset.py), else None."""
    cfg = pulumi.Config()
    set_name, part = cfg.get(SET_KEY), cfg.get(PART_KEY)
    try:
        if not set_name:
            if part:
                raise StackSetError(_source(), f"{PART_KEY} is set but {SET_KEY} is not: name the stack set too")
            return None
        if cfg.get("fleet") is not None:
            raise StackSetError(_source(), f"a part of stack set {set_name!r} holds no fleet spec of its own: "
                                           f"the set's is {FLEETS_DIR}/{set_name}.yaml")
        return set_name, parse_part(part, _source())
    except SpecError as e:
        raise pulumi.RunError(str(e)) from None


def spec_source(member: tuple[str, Part] | None) -> str:
    return f"{FLEETS_DIR}/{member[0]}.yaml" if member else _source()


def read_spec(member: tuple[str, Part] | None = None) -> FleetSpec:
    try:
        raw = (read_fleet_file(FLEET_FILES.get(member[0]) or fleet_file(ROOT, member[0])) if member
               else pulumi.Config().get_object("fleet"))
        return load_spec(raw, spec_source(member))
    except SpecError as e:
        # A RunError is printed by the CLI as a message, not a stack trace.
        raise pulumi.RunError(str(e)) from None


def read_secrets(spec: FleetSpec, part: Part | None = None) -> FleetSecrets:
    """Each secret from Pulumi secret config. What the spec cannot be deployed without
    (:func:`fleet.secrets.required_secrets`) fails closed: ``require_secret`` stops a preview or an
    up with Pulumi's own "missing required configuration variable" error, naming the key — a public
    router with no API keys or a gated model with no token must never deploy by omission."""
    cfg = pulumi.Config()
    scope = {} if part is None else {"router": part.kind == "router",
                                     "clusters": {part.cluster} if part.cluster else set()}
    required = {r.key: r for r in required_secrets(spec, **scope)}
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
    member = read_member()
    spec = read_spec(member)
    topology = TOPOLOGIES[spec.topology]
    found = topology.problems(spec)
    if found:  # what this topology needs of the spec beyond the spec's own rules
        raise pulumi.RunError(str(SpecError(spec_source(member), found)))
    if member is None:
        outputs = topology.build(spec, read_secrets(spec))
    else:
        # One part of a stack set: that cluster's slice of the topology, or the router on top of them.
        set_name, part = member
        try:
            check_part(spec, set_name, part, pulumi.get_stack(), _source())
        except SpecError as e:
            raise pulumi.RunError(str(e)) from None
        outputs = build_part(spec, set_name, part, read_secrets(spec, part))
    for key, value in sorted(outputs.items()):
        pulumi.export(key, value)
