"""``fleet cost``: a stack file read, validated and priced (the pricing itself is ``fleet.cost``)."""

from __future__ import annotations

from fleet.cost import StackCost, stack_cost
from fleet.spec import load_spec
from fleet.stackset import parts_of, part_stack
from fleetctl.plan import read_stack_config

SCALES = ("min", "typical", "max")


def cost_of_stack(stack: str, config_file: str | None = None) -> StackCost:
    """Read ``Pulumi.<stack>.yaml`` (or ``config_file``), validate it, and price it."""
    cfg = read_stack_config(stack, config_file)
    return stack_cost(load_spec(cfg.fleet_raw(), cfg.spec_source), stack)


def by_part_stack(stack: str, report: StackCost, config_file: str | None = None) -> dict[str, dict[str, float]] | None:
    """A stack set's monthly cost per part stack (the bill each team running one of them owns): every
    pool of a cluster, accelerators and system nodes, is its cluster stack's; the router stack runs on
    its cluster's system nodes and owns no node. None when ``stack`` is no stack set."""
    cfg = read_stack_config(stack, config_file)
    if not cfg.is_set:
        return None
    spec = load_spec(cfg.fleet_raw(), cfg.spec_source)
    out: dict[str, dict[str, float]] = {}
    for part in parts_of(spec):
        pools = [p for p in report.pools if part.kind == "cluster" and p.cluster == part.cluster]
        out[part_stack(stack, part)] = {s: round(sum(p.monthly[s] for p in pools), 2) for s in SCALES}
    return out


def render_parts(parts: dict[str, dict[str, float]]) -> str:
    lines = ["", "### By stack", "", "Each stack of the set, its nodes' cost (USD per month).", "",
             "| stack | min | typical | max |", "|---|--:|--:|--:|"]
    lines += [f"| `{stack}` | {c['min']:,.0f} | {c['typical']:,.0f} | {c['max']:,.0f} |" for stack, c in parts.items()]
    return "\n".join(lines) + "\n"
