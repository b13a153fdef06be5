"""A small Prometheus registry: counters, gauges and histograms with labels, text exposition.

Kept in-house so the image needs no client library and the hot path is a dict update.
"""

from __future__ import annotations

import bisect
from typing import Iterable

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _labels(names: tuple[str, ...], values: tuple[str, ...], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Metric:
    kind = ""

    def __init__(self, name: str, help_: str, labels: Iterable[str] = ()):
        self.name, self.help, self.label_names = name, help_, tuple(labels)
        self.values: dict[tuple[str, ...], float] = {}

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(_Metric):
    kind = "counter"

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount

    def render(self) -> list[str]:
        return self.header() + [f"{self.name}{_labels(self.label_names, k)} {v:.10g}"
                                for k, v in sorted(self.values.items())]


class Gauge(Counter):
    kind = "gauge"

    def set(self, *labels: str, value: float) -> None:
        self.values[labels] = value


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_: str, labels: Iterable[str] = (), buckets=LATENCY_BUCKETS):
        super().__init__(name, help_, labels)
        self.buckets = tuple(buckets)
        self.series: dict[tuple[str, ...], list] = {}  # labels -> [bucket counts..., sum, count]

    def observe(self, *labels: str, value: float) -> None:
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = [0] * len(self.buckets) + [0.0, 0]
        i = bisect.bisect_left(self.buckets, value)
        if i < len(self.buckets):
            s[i] += 1
        s[-2] += value
        s[-1] += 1

    def render(self) -> list[str]:
        out = self.header()
        for k, s in sorted(self.series.items()):
            cum = 0
            for b, c in zip(self.buckets, s):
                cum += c
                le = 'le="%g"' % b
                out.append(f"{self.name}_bucket{_labels(self.label_names, k, le)} {cum}")
            inf = 'le="+Inf"'
            out.append(f"{self.name}_bucket{_labels(self.label_names, k, inf)} {s[-1]}")
            out.append(f"{self.name}_sum{_labels(self.label_names, k)} {s[-2]:.10g}")
            out.append(f"{self.name}_count{_labels(self.label_names, k)} {s[-1]}")
        return out


class Registry:
    def __init__(self):
        self.metrics: list[_Metric] = []

    def add(self, metric):
        self.metrics.append(metric)
        return metric

    def render(self) -> str:
        return "\n".join(line for m in self.metrics for line in m.render()) + "\n"


class Tally:
    """The counts of one kind of answered request — its decision's labels (tier, pool, vendor,
    policy, reason) and its vendor pair — bumped in place per answer (three attribute additions, not
    three counter updates) and added to the counters they stand for when those are read
    (:meth:`RouterMetrics.flush`)."""

    __slots__ = ("decision", "pool", "pair", "decisions", "answers", "tokens", "saved")

    def __init__(self, decision: tuple[str, ...], pool: tuple[str, str], pair: tuple[str]):
        self.decision, self.pool, self.pair = decision, pool, pair
        self.decisions = 0  # ig_wva_routing_decisions_total
        self.answers = 0  # answers with tokens (each one is a cost saving, if only of 0 USD)
        self.tokens = 0  # fleet_router_tokens_total
        self.saved = 0.0  # ig_wva_cost_savings_total


class RouterMetrics:
    """The router's metrics: seed 000's ``ig_wva_*`` names plus request, TTFT and overhead."""

    def __init__(self):
        r = self.registry = Registry()
        self.decisions = r.add(Counter("ig_wva_routing_decisions_total", "Routing decisions by tier, pool and vendor.",
                                       ("tier", "backend_pool", "backend_vendor", "policy", "reason")))
        self.cost_savings = r.add(Counter("ig_wva_cost_savings_total",
                                          "USD saved against the priciest pool serving the model.", ("vendor_pair",)))
        self.sla_ok = r.add(Counter("ig_wva_sla_compliance_total", "Requests whose TTFT met the tier's objective.",
                                    ("tier", "backend_pool", "pool", "vendor")))
        self.sla_bad = r.add(Counter("ig_wva_sla_violations_total", "Requests whose TTFT missed the tier's objective.",
                                     ("tier", "backend_pool", "pool", "vendor")))
        self.utilization = r.add(Gauge("ig_wva_pool_utilization", "Pool load: its running + queued requests from every replica, over capacity.",
                                       ("pool", "vendor")))
        self.requests = r.add(Counter("fleet_router_requests_total", "Requests by endpoint and status.",
                                      ("endpoint", "status")))
        self.retries = r.add(Counter("fleet_router_failovers_total", "Attempts moved to another pool.",
                                     ("from_pool", "reason")))
        self.ejections = r.add(Counter("fleet_router_ejections_total", "Pools ejected after failures.", ("pool",)))
        self.tokens = r.add(Counter("fleet_router_tokens_total", "Generated tokens by pool.", ("pool", "vendor")))
        self.cost_per_hour = r.add(Gauge("fleet_router_pool_cost_per_hour", "USD per replica-hour of each pool.",
                                         ("pool", "vendor")))
        # What a dashboard or `fleet top` needs to name a pool and see its load right now.
        self.pool_info = r.add(Gauge("fleet_router_pool_info", "1 per configured pool, with where it runs.",
                                     ("pool", "vendor", "cloud", "cluster", "accelerator")))
        self.pool_in_flight = r.add(Gauge("fleet_router_pool_in_flight", "Requests this replica has in flight "
                                          "to each pool.", ("pool",)))
        # The backend's own prefix-cache counters (vLLM v1: vllm:prefix_cache_{queries,hits}_total, in
        # tokens), as last scraped and summed over the pool's endpoints; rate() of hits over queries is the
        # pool's real hit rate, whatever the router predicted.
        self.pool_prefix_queries = r.add(Gauge("fleet_router_pool_prefix_cache_queries",
                                               "The pool's vllm:prefix_cache_queries_total, last scraped.", ("pool",)))
        self.pool_prefix_hits = r.add(Gauge("fleet_router_pool_prefix_cache_hits",
                                            "The pool's vllm:prefix_cache_hits_total, last scraped.", ("pool",)))
        self.ttft = r.add(Histogram("fleet_router_ttft_seconds", "Time to first byte from the backend.", ("pool",)))
        self.latency = r.add(Histogram("fleet_router_request_duration_seconds", "Whole request duration.",
                                       ("endpoint",)))
        self.overhead = r.add(Histogram("fleet_router_added_latency_seconds",
                                        "Time the router adds before the backend request is sent.", ()))
        self.stream_errors = r.add(Counter("fleet_router_stream_errors_total",
                                           "Streams cut after their head (backend silent or gone), ended with an "
                                           "SSE error event.", ("pool", "reason")))
        self.migrations = r.add(Counter("fleet_router_stream_migrations_total",
                                        "Streams cut after their first byte and continued on another pool.",
                                        ("reason", "from_vendor", "to_vendor")))
        self.migration_gap = r.add(Histogram("fleet_router_stream_migration_gap_seconds",
                                             "The silence a migrated stream's client saw: its last byte before "
                                             "the cut to its first byte after.", ()))
        self.migration_recomputed = r.add(Counter("fleet_router_stream_migration_recomputed_tokens_total",
                                                  "Tokens already sent that the next pool prefilled again.",
                                                  ("to_vendor",)))
        self.migrations_failed = r.add(Counter("fleet_router_stream_migrations_failed_total",
                                               "Cut streams no pool could continue (ended with an SSE error).",
                                               ("from_vendor",)))
        self.ejected = r.add(Gauge("fleet_router_pool_ejected",
                                   "1 while a pool is out of rotation (failures, or its Retry-After).", ("pool",)))
        # Per-key limits (fleet_router.limits): this replica's own counts, so sum() over replicas is the fleet's.
        self.rate_limited = r.add(Counter("fleet_router_rate_limited_total",
                                          "Requests refused by a per-key limit, by the limit that refused them.",
                                          ("reason",)))
        self.limits_degraded = r.add(Gauge("fleet_router_limits_degraded",
                                           "1 while the shared limit store is unreachable and this replica "
                                           "enforces per-replica limits (or refuses limited keys).", ()))
        self.limits_store_errors = r.add(Counter("fleet_router_limits_store_errors_total",
                                                 "Failed calls to the shared limit store.", ("error",)))

        #: (tier, pool, vendor, policy, reason, vendor pair) -> its Tally, until a reload (drop_pools)
        self._tallies: dict[tuple[str, ...], Tally] = {}

    def tally(self, tier: str, pool: str, vendor: str, policy: str, reason: str, pair: str) -> Tally:
        """The counts that answers routed so (``reason`` as the decision gives it) go to."""
        key = (tier, pool, vendor, policy, reason, pair)
        t = self._tallies.get(key)
        if t is None:
            if len(self._tallies) >= 4096:  # reasons carry a share cached: bounded, but not by much
                self.flush()
                self._tallies.clear()
            t = self._tallies[key] = Tally((tier, pool, vendor, policy, reason.split(" ")[0]), (pool, vendor), (pair,))
        return t

    def flush(self) -> None:
        """Add what the tallies counted since the last flush to their counters (before they are read)."""
        d, tok, sav = self.decisions.values, self.tokens.values, self.cost_savings.values
        for t in self._tallies.values():
            if t.decisions:
                d[t.decision] = d.get(t.decision, 0.0) + t.decisions
                t.decisions = 0
            if t.answers:
                tok[t.pool] = tok.get(t.pool, 0.0) + t.tokens
                sav[t.pair] = sav.get(t.pair, 0.0) + t.saved
                t.answers, t.tokens, t.saved = 0, 0, 0.0

    def render(self) -> str:
        """The exposition text, every tally counted."""
        self.flush()
        return self.registry.render()

    # Metrics whose labels name a pool, and the position of that label.
    def _pool_series(self):
        for metric in self.registry.metrics:
            for i, name in enumerate(metric.label_names):
                if name in ("pool", "backend_pool", "from_pool"):
                    yield metric, i

    def observe_pools(self, states, now: float) -> None:
        """Gauges read at scrape time (nothing on the hot path): load, in-flight, ejected."""
        for s in states:
            self.utilization.set(s.name, s.pool.vendor, value=round(s.load(), 4))
            self.pool_in_flight.set(s.name, value=s.in_flight)
            self.ejected.set(s.name, value=0 if s.available(now) else 1)

    def drop_pools(self, keep: set[str]) -> None:
        """Forget every series of pools not in ``keep`` (removed by a reload): a pool that is gone
        must not go on being exported with its last values."""
        self.flush()
        self._tallies.clear()  # a pool kept may have changed vendor
        for metric, i in self._pool_series():
            table = metric.series if isinstance(metric, Histogram) else metric.values
            for labels in [k for k in table if k[i] not in keep]:
                del table[labels]
