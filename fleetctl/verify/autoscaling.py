"""Autoscaling: every workload that may scale to zero has a scale-up signal that exists at zero.

A KEDA ScaledObject with ``minReplicaCount: 0`` (KEDA's default, keda.sh/docs/2.18/reference/
scaledobject-spec) scales from zero only on a trigger whose metric is produced while the target
has no pods. Not so: metrics the target's own pods export (vLLM's ``vllm:*``, docs.vllm.ai
"Production Metrics"); the picker's ``inference_objective_request_total``, which GAIE v1.5.0 counts
only for requests that got an endpoint (issue 17 item 10); KEDA's ``cpu``/``memory`` scalers, which
cannot scale to or from zero (keda.sh/docs/2.18/scalers/cpu).
"""

from __future__ import annotations

import re

from fleetctl.verify.findings import Finding
from fleetctl.verify.topology import Topology

DEAD_AT_ZERO_PREFIXES = ("vllm:",)
DEAD_AT_ZERO_METRICS = ("inference_objective_request_total",)
_METRIC = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{|\[|\)|$|\s)")
_PROMQL_WORDS = {"sum", "rate", "irate", "increase", "avg", "max", "min", "count", "by", "without", "or", "and",
                 "unless", "vector", "on", "ignoring", "group_left", "group_right", "clamp_min", "clamp_max",
                 "histogram_quantile", "topk", "bottomk", "abs", "ceil", "floor", "round", "offset", "bool"}


def metrics_of(query: str) -> set[str]:
    body = re.sub(r'"[^"]*"', '""', query)
    return {m for m in _METRIC.findall(body) if m not in _PROMQL_WORDS and not m.isdigit()}


def alive_at_zero(trigger: dict) -> tuple[bool, str]:
    kind = trigger.get("type")
    if kind in ("cpu", "memory"):
        return False, f"the {kind} scaler cannot scale from zero"
    if kind != "prometheus":
        return True, ""
    names = metrics_of(str((trigger.get("metadata") or {}).get("query", "")))
    dead = sorted(n for n in names if n.startswith(DEAD_AT_ZERO_PREFIXES) or n in DEAD_AT_ZERO_METRICS)
    live = sorted(names - set(dead))
    if live:
        return True, ""
    return False, (f"its query reads only {', '.join(dead)}, which no pod produces while the target has none"
                   if dead else "its query names no metric")


def check(topo: Topology) -> list[Finding]:
    out = []
    for cluster in topo.clusters.values():
        for so in cluster.of_kind("ScaledObject"):
            if int(so.spec.get("minReplicaCount", 0) or 0) != 0:
                continue
            triggers = so.spec.get("triggers") or []
            verdicts = [alive_at_zero(t) for t in triggers]
            if any(ok for ok, _ in verdicts):
                continue
            why = "; ".join(f"trigger {t.get('name') or t.get('type')}: {w}" for t, (_, w) in zip(triggers, verdicts))
            out.append(Finding("autoscaling", cluster.name, so.ref, so.file,
                               "scales to zero but nothing can scale it back up: " + (why or "it has no triggers"),
                               "add a trigger on a signal that exists at zero pods (requests waiting at the gateway "
                               "or router for this model, e.g. istio_requests_total on the gateway or the router's "
                               "per-pool queue metric)"))
    return out
