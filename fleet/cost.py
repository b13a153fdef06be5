"""What a stack costs: per pool and per stack, at min, typical and max scale, from the catalog.

``python -m fleet cost --stack S`` reads ``Pulumi.S.yaml`` (no plan, no cloud) and prints a
Markdown table, or JSON with ``--json``. ``fleet diff`` uses the same report for its cost delta.

Conventions (a cost report is only useful when its assumptions are written down):

* A month is :data:`fleet.catalog.HOURS_PER_MONTH` (730 h) of 24/7 running, as the clouds bill
  and the seeds' monthly figures assume.
* **min** is ``min_nodes`` (what an idle fleet still pays), **max** is ``max_nodes`` (the ceiling
  the policy pack's budget rules check), **typical** is ``typical_nodes`` when the spec sets it,
  else the midpoint of min and max — an autoscaled pool with no better estimate spends, on
  average, half its range. The report marks which pools use the midpoint.
* A pool is billed at the spot price when ``spot: true``, else on demand; the "on demand" and
  "spot saves" columns show what the same nodes would cost on demand and the difference.
* System (CPU) pools — ``system_nodes`` per cluster on :data:`fleet.catalog.SYSTEM_MACHINES` —
  run on demand: they host the controllers, the gateway and the router, which a spot eviction
  would take down with them.
* $ per million tokens is a node running flat out at the catalog's aggregate throughput
  (:func:`fleet.catalog.cost_per_million_tokens`), at the price the pool is billed.
* Local (dev) pools run the simulator on your laptop: nothing is billed; their $ per million
  tokens is the emulated accelerator's, so routing costs read as on the real fleet.
* Tier blends: a tier's backend weights applied to each backend's price per accelerator-hour
  and per million tokens, against sending all of it to the tier's dearest backend — seed 000's
  "60% AMD, 40% NVIDIA = 45% cost reduction" at $0.50 vs $2.00 per accelerator-hour.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from fleet import catalog
from fleet.spec import FleetSpec, PoolSpec

SCALES = ("min", "typical", "max")

SYSTEM_POOLS_SPOT = False
"""System pools run on demand (see the module docstring)."""


@dataclass(frozen=True)
class PoolCost:
    pool: str
    cluster: str
    cloud: str
    kind: str
    """``accelerator`` or ``system``."""
    machine: str
    accelerator: str | None
    accelerators_per_node: int
    spot: bool
    billed: bool
    """False for local pools: nothing is billed."""
    node_hourly: float
    """USD per node-hour as billed (spot or on demand); 0 when not billed."""
    on_demand_hourly: float
    spot_hourly: float
    nodes: dict[str, float]
    typical_from: str
    """``spec`` (typical_nodes set), ``midpoint`` (estimated) or ``fixed`` (min = max, system pools)."""
    monthly: dict[str, float]
    on_demand_monthly: dict[str, float]
    spot_savings_monthly: dict[str, float]
    """What billing at spot saves against on demand (0 for on-demand pools)."""
    usd_per_accelerator_hour: float | None
    usd_per_million_tokens: float | None
    price_source: str


@dataclass(frozen=True)
class TierBlend:
    tier: str
    weights: dict[str, int]
    usd_per_accelerator_hour: float
    """The weighted blend of the backends' prices per accelerator-hour."""
    baseline_pool: str
    """The tier's dearest backend per accelerator-hour: what all-on-one would cost."""
    baseline_usd_per_accelerator_hour: float
    reduction_pct: float
    """Saving of the blend against all traffic on the baseline pool, per accelerator-hour."""
    usd_per_million_tokens: float | None
    baseline_usd_per_million_tokens: float | None
    reduction_per_token_pct: float | None
    """The same saving per generated token (throughput-weighted)."""


@dataclass(frozen=True)
class StackCost:
    stack: str
    hours_per_month: float
    pools: list[PoolCost]
    totals: dict[str, float]
    on_demand_totals: dict[str, float]
    spot_savings: dict[str, float]
    tiers: list[TierBlend]
    budget: dict[str, Any] = field(default_factory=dict)
    """Ceilings from ``fleet.budget`` and whether max scale stays under them."""

    def pool(self, name: str) -> PoolCost:
        return next(p for p in self.pools if p.pool == name)

    def to_dict(self) -> dict[str, Any]:
        return _rounded(asdict(self))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def _rounded(x: Any) -> Any:
    if isinstance(x, float):
        return round(x, 4)
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return x


def _per_scale(hourly: float, nodes: Mapping[str, float]) -> dict[str, float]:
    return {s: catalog.monthly(hourly * nodes[s]) for s in SCALES}


def pool_cost(spec: FleetSpec, pool: PoolSpec) -> PoolCost:
    cloud = spec.cluster(pool.cluster).cloud
    m = pool.machine
    billed = cloud != "local"
    rate = m.price.hourly(pool.spot)
    typical = pool.typical_nodes if pool.typical_nodes is not None else (pool.min_nodes + pool.max_nodes) / 2
    nodes = {"min": float(pool.min_nodes), "typical": float(typical), "max": float(pool.max_nodes)}
    hourly = rate if billed else 0.0
    monthly = _per_scale(hourly, nodes)
    on_demand = _per_scale(m.price.on_demand if billed else 0.0, nodes)
    return PoolCost(
        pool=pool.name, cluster=pool.cluster, cloud=cloud, kind="accelerator", machine=m.name,
        accelerator=pool.accelerator, accelerators_per_node=m.accelerators, spot=pool.spot, billed=billed,
        node_hourly=hourly, on_demand_hourly=m.price.on_demand, spot_hourly=m.price.spot, nodes=nodes,
        typical_from=("spec" if pool.typical_nodes is not None else
                      "fixed" if pool.min_nodes == pool.max_nodes else "midpoint"),
        monthly=monthly, on_demand_monthly=on_demand,
        spot_savings_monthly={s: on_demand[s] - monthly[s] for s in SCALES},
        usd_per_accelerator_hour=rate / m.accelerators,
        usd_per_million_tokens=catalog.cost_per_million_tokens(rate, m.accelerators, pool.accelerator),
        price_source=m.price.source,
    )


def system_pool_cost(spec: FleetSpec, cluster_name: str) -> PoolCost:
    c = spec.cluster(cluster_name)
    sm = catalog.SYSTEM_MACHINES[c.cloud]
    billed = c.cloud != "local"
    nodes = {s: float(c.system_nodes) for s in SCALES}
    hourly = sm.price.hourly(SYSTEM_POOLS_SPOT) if billed else 0.0
    monthly = _per_scale(hourly, nodes)
    on_demand = _per_scale(sm.price.on_demand if billed else 0.0, nodes)
    return PoolCost(
        pool=f"{c.name}-system", cluster=c.name, cloud=c.cloud, kind="system", machine=sm.name,
        accelerator=None, accelerators_per_node=0, spot=SYSTEM_POOLS_SPOT, billed=billed,
        node_hourly=hourly, on_demand_hourly=sm.price.on_demand, spot_hourly=sm.price.spot, nodes=nodes,
        typical_from="fixed", monthly=monthly, on_demand_monthly=on_demand,
        spot_savings_monthly={s: on_demand[s] - monthly[s] for s in SCALES},
        usd_per_accelerator_hour=None, usd_per_million_tokens=None, price_source=sm.price.source,
    )


def blend(weights: Mapping[str, float], per_accelerator_hour: Mapping[str, float],
          per_million_tokens: Mapping[str, float] | None = None) -> tuple[float, str, float, float | None, float | None]:
    """Blend of backend prices by traffic weight, and its saving against the dearest backend.

    Returns ``(blended $/accelerator-hour, baseline pool, reduction %, blended $/Mtok,
    reduction per token %)``. Seed 000: ``{"amd": 60, "nvidia": 40}`` at 0.50 and 2.00 -> 1.10,
    a 45 % reduction against all-NVIDIA."""
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError("weights must sum to more than 0")
    share = {k: w / total for k, w in weights.items()}
    blended = sum(share[k] * per_accelerator_hour[k] for k in share)
    baseline = max(share, key=lambda k: (per_accelerator_hour[k], k))
    reduction = 100.0 * (1 - blended / per_accelerator_hour[baseline]) if per_accelerator_hour[baseline] else 0.0
    tok = tok_red = None
    if per_million_tokens is not None:
        tok = sum(share[k] * per_million_tokens[k] for k in share)
        base_tok = per_million_tokens[baseline]
        tok_red = 100.0 * (1 - tok / base_tok) if base_tok else 0.0
    return blended, baseline, reduction, tok, tok_red


def _tier_blends(spec: FleetSpec, pools: Mapping[str, PoolCost]) -> list[TierBlend]:
    out = []
    for t in spec.tiers:
        weights = {b.pool: b.weight for b in t.backends if b.weight > 0 and b.pool in pools}
        if not weights:
            continue
        acc_h = {p: pools[p].usd_per_accelerator_hour or 0.0 for p in weights}
        mtok = {p: pools[p].usd_per_million_tokens or 0.0 for p in weights}
        blended, base, red, tok, tok_red = blend(weights, acc_h, mtok)
        out.append(TierBlend(
            tier=t.name, weights=weights, usd_per_accelerator_hour=blended, baseline_pool=base,
            baseline_usd_per_accelerator_hour=acc_h[base], reduction_pct=red,
            usd_per_million_tokens=tok, baseline_usd_per_million_tokens=mtok[base],
            reduction_per_token_pct=tok_red,
        ))
    return out


def stack_cost(spec: FleetSpec, stack: str) -> StackCost:
    """The cost report for a validated spec (pools resolved against the catalog)."""
    accel = [pool_cost(spec, p) for p in spec.pools]
    system = [system_pool_cost(spec, c.name) for c in spec.clusters]
    rows = system + accel
    rows.sort(key=lambda r: (r.cluster, r.kind != "system", r.pool))

    def total(attr: str) -> dict[str, float]:
        return {s: sum(getattr(r, attr)[s] for r in rows) for s in SCALES}

    totals = total("monthly")
    budget: dict[str, Any] = {}
    if spec.budget.monthly_max_usd is not None:
        budget["monthly_max_usd"] = spec.budget.monthly_max_usd
        budget["stack_within"] = totals["max"] <= spec.budget.monthly_max_usd
    if spec.budget.pool_monthly_max_usd is not None:
        budget["pool_monthly_max_usd"] = spec.budget.pool_monthly_max_usd
        budget["pools_over"] = sorted(r.pool for r in accel if r.monthly["max"] > spec.budget.pool_monthly_max_usd)
    return StackCost(
        stack=stack, hours_per_month=catalog.HOURS_PER_MONTH, pools=rows, totals=totals,
        on_demand_totals=total("on_demand_monthly"), spot_savings=total("spot_savings_monthly"),
        tiers=_tier_blends(spec, {r.pool: r for r in accel}), budget=budget,
    )


# --- rendering ------------------------------------------------------------------------------------

def usd(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "—"
    if signed:
        return f"{'+' if x >= 0 else '−'}${abs(x):,.2f}"
    return f"${x:,.2f}"


def _nodes(n: Mapping[str, float]) -> str:
    return " / ".join(f"{v:g}" for v in (n["min"], n["typical"], n["max"]))


def render_markdown(report: StackCost) -> str:
    hours = f"{report.hours_per_month:g}"
    lines = [
        f"## Cost: stack `{report.stack}`",
        "",
        f"USD per month ({hours} h, 24/7) at min / typical / max scale. Spot pools are billed at spot; "
        "typical is `typical_nodes`, else the midpoint of min and max (marked *).",
        "",
        "| pool | cluster | machine | spot | nodes min / typ / max | $/node-h | min | typical | max "
        "| on demand (typ) | spot saves (typ) | $/M tokens |",
        "|---|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in report.pools:
        label = r.pool if r.kind == "accelerator" else f"{r.pool} (system)"
        machine = f"{r.machine} ({r.accelerators_per_node}× {r.accelerator})" if r.accelerator else r.machine
        if not r.billed and r.accelerator:
            machine = f"simulated, emulates {machine}"
        star = "*" if r.typical_from == "midpoint" else ""
        rate = usd(r.node_hourly) if r.billed else "not billed"
        lines.append(
            f"| {label} | {r.cluster} | {machine} | {'yes' if r.spot else 'no'} | {_nodes(r.nodes)}{star} | {rate} "
            f"| {usd(r.monthly['min'])} | {usd(r.monthly['typical'])} | {usd(r.monthly['max'])} "
            f"| {usd(r.on_demand_monthly['typical'])} | {usd(r.spot_savings_monthly['typical'])} "
            f"| {usd(r.usd_per_million_tokens)} |"
        )
    t, od, sv = report.totals, report.on_demand_totals, report.spot_savings
    lines.append(f"| **total** | | | | | | **{usd(t['min'])}** | **{usd(t['typical'])}** | **{usd(t['max'])}** "
                 f"| {usd(od['typical'])} | {usd(sv['typical'])} | |")
    if report.tiers:
        lines += [
            "",
            "### Tiers: blended price of each tier's traffic split",
            "",
            "| tier | split | $/accelerator-h | all on dearest backend | saving | $/M tokens | saving per token |",
            "|---|---|--:|--:|--:|--:|--:|",
        ]
        for b in report.tiers:
            split = ", ".join(f"{p} {w}" for p, w in b.weights.items())
            lines.append(
                f"| {b.tier} | {split} | {usd(b.usd_per_accelerator_hour)} "
                f"| {usd(b.baseline_usd_per_accelerator_hour)} ({b.baseline_pool}) | {b.reduction_pct:.1f}% "
                f"| {usd(b.usd_per_million_tokens)} | "
                f"{'—' if b.reduction_per_token_pct is None else f'{b.reduction_per_token_pct:.1f}%'} |"
            )
    if report.budget:
        lines += ["", "### Budget", ""]
        if "monthly_max_usd" in report.budget:
            ok = "within" if report.budget["stack_within"] else "**over**"
            lines.append(f"- stack at max scale {usd(t['max'])}: {ok} the ceiling of "
                         f"{usd(report.budget['monthly_max_usd'])}")
        if "pool_monthly_max_usd" in report.budget:
            over = report.budget["pools_over"]
            lines.append(f"- per-pool ceiling {usd(report.budget['pool_monthly_max_usd'])}: "
                         + (f"**over**: {', '.join(over)}" if over else "every pool within"))
    if not any(r.billed for r in report.pools):
        lines += ["", "Nothing in this stack is billed (local cluster); $/M tokens is the emulated accelerator's."]
    return "\n".join(lines) + "\n"
