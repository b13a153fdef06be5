"""``fleet cost``: a stack file read, validated and priced (the pricing itself is ``fleet.cost``)."""

from __future__ import annotations

from fleet.cost import StackCost, stack_cost
from fleet.spec import load_spec
from fleetctl.plan import read_stack_config


def cost_of_stack(stack: str, config_file: str | None = None) -> StackCost:
    """Read ``Pulumi.<stack>.yaml`` (or ``config_file``), validate it, and price it."""
    cfg = read_stack_config(stack, config_file)
    return stack_cost(load_spec(cfg.fleet_raw(), cfg.spec_source), stack)
