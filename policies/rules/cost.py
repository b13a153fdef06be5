"""Cost: accelerator pools are spot or scale to zero unless reserved with a reason; per-pool and
per-stack ceilings on the monthly cost at max scale; TPU topology matches the machine type.

Risk (issue 9): an on-demand H100 pool left at min 8 costs ~$320k a month doing nothing.
Prices come from the program's catalog (fleet/catalog.py), the same table `fleet cost` reads.
"""

from __future__ import annotations

from pulumi_policy import (EnforcementLevel, PolicyConfigSchema, ResourceValidationPolicy,
                           StackValidationPolicy)

from policies.rules._util import RESERVED_REASON, accelerator_pool, machine_of, max_monthly_usd, reserved_reason

DEFAULT_POOL_CEILING_USD = 150_000.0
DEFAULT_STACK_CEILING_USD = 500_000.0


def _ceiling(args, default: float) -> float:
    value = (args.get_config() or {}).get("maxUsd")
    return float(value) if value is not None else default


def _spot_or_zero(args, report):
    pool = accelerator_pool(args.resource_type, args.props)
    if pool is None or pool["spot"] or not pool["min"]:
        return
    if not reserved_reason(pool):
        report(f"on-demand {pool['accelerator']} pool keeps {pool['min']} node(s) up with no reserved reason")


def _pool_ceiling(args, report):
    pool = accelerator_pool(args.resource_type, args.props)
    if pool is None:
        return
    ceiling = _ceiling(args, DEFAULT_POOL_CEILING_USD)
    cost = max_monthly_usd(pool)
    if cost is None:
        report(f"machine {pool['machine']!r} for {pool['accelerator']} on {pool['cloud']} is not in the catalog: "
               "its cost cannot be bounded")
    elif cost > ceiling:
        report(f"{pool['machine']} x {pool['max']} ({'spot' if pool['spot'] else 'on-demand'}) can cost "
               f"${cost:,.0f}/month at max scale, above the ${ceiling:,.0f} ceiling")


def _stack_ceiling(args, report):
    ceiling = _ceiling(args, DEFAULT_STACK_CEILING_USD)
    total = 0.0
    for r in args.resources:
        pool = accelerator_pool(r.resource_type, r.props)
        if pool is not None:
            total += max_monthly_usd(pool) or 0.0
    if total > ceiling:
        report(f"accelerator pools can cost ${total:,.0f}/month at max scale, above the ${ceiling:,.0f} ceiling")


def _tpu_topology(args, report):
    pool = accelerator_pool(args.resource_type, args.props)
    if pool is None or not pool["accelerator"].startswith("tpu"):
        return
    m = machine_of(pool)
    if m is None:
        report(f"TPU machine {pool['machine']!r} is not in the catalog")
    elif pool["tpu_topology"] != m.tpu_topology:
        report(f"{m.name} is a {m.tpu_topology} slice but the pool asks for topology {pool['tpu_topology']!r}")


_MAX_USD = PolicyConfigSchema(properties={"maxUsd": {"type": "number", "minimum": 0}})

POLICIES = [
    ResourceValidationPolicy(
        name="accelerator-pools-spot-or-zero",
        description="Accelerator pools are spot or scale to zero unless reserved with a reason.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_spot_or_zero,
        remediation_steps=f"Set spot: true or min_nodes: 0 in the fleet spec, or give the pool a reserved_reason "
                          f"(recorded as {RESERVED_REASON})."),
    ResourceValidationPolicy(
        name="pool-monthly-cost-ceiling",
        description="No accelerator pool can cost more than the ceiling per month at max scale.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_pool_ceiling, config_schema=_MAX_USD,
        remediation_steps="Lower max_nodes, use spot, a smaller machine, or raise budget.pool_monthly_max_usd."),
    StackValidationPolicy(
        name="stack-monthly-cost-ceiling",
        description="All accelerator pools together stay under the stack's monthly ceiling at max scale.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_stack_ceiling, config_schema=_MAX_USD,
        remediation_steps="Lower max_nodes across pools or raise budget.monthly_max_usd in the fleet spec."),
    ResourceValidationPolicy(
        name="tpu-topology-matches-machine",
        description="A TPU pool's placement topology is the one its machine type provides.",
        enforcement_level=EnforcementLevel.MANDATORY, validate=_tpu_topology,
        remediation_steps="Use the catalog's machine for the topology (e.g. ct6e-standard-4t for 2x2)."),
]
