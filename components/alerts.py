"""Alerting and recording rules, and the exporters they read: data, no Pulumi.

Seed 000's two alerts are kept exactly (expression, ``for``, severity, summary). The recording
rules turn the router's per-pool token counters and the catalog prices it is configured with into
cost per million tokens, which the dashboard and the cost report read.

Every metric named here is exported by one of three things, listed below so the tests can check
each expression against the real ``/metrics`` of the router and the simulator (and DCGM's
published counter list, which cannot run here).
"""

from __future__ import annotations

from types import MappingProxyType

# --- who exports what ------------------------------------------------------------------------------

# NVIDIA dcgm-exporter's default counters (etc/default-counters.csv, NVIDIA/dcgm-exporter,
# commit 00d6d344): the ones the dashboard and rules read.
DCGM_METRICS = frozenset({
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_FB_USED",
    "DCGM_FI_DEV_FB_FREE",
    "DCGM_FI_DEV_POWER_USAGE",
    "DCGM_FI_DEV_GPU_TEMP",
})

# Where each exporter listens, for the PodMonitor of each (namespace, pod labels, port). The
# dcgm-exporter chart 4.6.0 labels its pods with templates/_helpers.tpl's selectorLabels:
# app.kubernetes.io/name = the chart name, "dcgm-exporter" (no nameOverride here), plus instance and
# component; its container port is values.yaml service.port, 9400.
DCGM_EXPORTER = MappingProxyType({
    "namespace": "gpu-operators",
    "labels": MappingProxyType({"app.kubernetes.io/name": "dcgm-exporter"}),
    "port": 9400,
})

# --- rules -------------------------------------------------------------------------------------------

def alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict:
    """One alerting rule in the PrometheusRule shape every alert here has."""
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description}}


SLA_VIOLATION = alert(
    "SLAViolation", "rate(ig_wva_sla_violations_total[5m]) > 0.01", "2m", "warning",
    "SLA violations detected in vendor routing",
    "Pool {{ $labels.pool }} misses its tier's TTFT objective on {{ $value | humanize }} requests per second.")

VENDOR_SATURATION = alert(
    "VendorSaturation", "avg(ig_wva_pool_utilization) by (vendor) > 0.9", "5m", "critical",
    "{{ $labels.vendor }} pool approaching capacity",
    "Average utilization of {{ $labels.vendor }} pools is {{ $value | humanizePercentage }}; "
    "the router overflows to other vendors, raise max_replicas or max_nodes.")

# Router replicas that lost the shared limit store enforce per-key limits each on its own: a key
# can get up to (replicas x its limit) until the store is back (fleet_router.limits).
ROUTER_LIMITS_DEGRADED = alert(
    "RouterLimitsDegraded", "sum(fleet_router_limits_degraded) > 0", "5m", "warning",
    "Router replicas enforce per-key limits without the shared store",
    "{{ $value }} router replica(s) cannot reach fleet-router-store: per-key limits and budgets "
    "hold per replica, not for the fleet (or limited keys get 503 if limits fail closed).")

# A stream cut mid-way that no pool could continue (fleet_router.migration: no resumable pool left
# serving the model, or failover.max_migrations used up) ended with an error: a lost stream, goal 0.
# Any in the last 10 minutes fires; migrations that succeed are the dashboard's (they are the
# design working: a spot pool went away).
STREAMS_LOST = alert(
    "StreamsLostAfterCut", "sum by (from_vendor) (increase(fleet_router_stream_migrations_failed_total[10m])) > 0",
    "0m", "warning", "Streams cut on {{ $labels.from_vendor }} pools could not be continued",
    "{{ $value | humanize }} stream(s) cut on {{ $labels.from_vendor }} pools in 10 minutes ended with an error: "
    "no other pool that serves the model could resume them (resume: false, ejected, refusing "
    "continue_final_message) or they used up failover.max_migrations.")

RECORDING_RULES = [
    # Tokens the router saw each pool generate and read, per second.
    {
        "record": "fleet:pool_tokens:rate5m",
        "expr": "sum by (pool, vendor) (rate(fleet_router_tokens_total[5m]))",
    },
    # What each pool costs per hour (the catalog price the router's config carries). Every router
    # replica exports the same configured price, so it is max, not sum: a sum would grow with the
    # number of router replicas (issue 19: metrics per replica must aggregate correctly).
    {
        "record": "fleet:pool_cost_dollars_per_hour",
        "expr": "max by (pool, vendor) (fleet_router_pool_cost_per_hour)",
    },
    # Cost per million tokens, per pool: $/h over tokens/h.
    {
        "record": "fleet:pool_cost_per_million_tokens:5m",
        "expr": "fleet:pool_cost_dollars_per_hour / (fleet:pool_tokens:rate5m * 3600) * 1e6",
    },
    # The same for the whole fleet, weighted by where tokens really went.
    {
        "record": "fleet:cost_per_million_tokens:5m",
        "expr": "sum(fleet:pool_cost_dollars_per_hour) / (sum(fleet:pool_tokens:rate5m) * 3600) * 1e6",
    },
    # Savings against sending everything to the most expensive candidate, in $/h.
    {
        "record": "fleet:cost_savings_dollars_per_hour:5m",
        "expr": "sum(rate(ig_wva_cost_savings_total[5m])) * 3600",
    },
]

RULE_GROUPS = [
    {"name": "fleet-router.alerts", "rules": [SLA_VIOLATION, VENDOR_SATURATION, ROUTER_LIMITS_DEGRADED,
                                                  STREAMS_LOST]},
    {"name": "fleet-router.cost", "interval": "1m", "rules": RECORDING_RULES},
]


def expressions() -> list[str]:
    """Every PromQL expression in the rule groups."""
    return [r["expr"] for g in RULE_GROUPS for r in g["rules"]]


def recorded_series() -> set[str]:
    """Series the recording rules define (other rules and dashboards may read them)."""
    return {r["record"] for g in RULE_GROUPS for r in g["rules"] if "record" in r}
