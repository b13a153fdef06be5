"""``python -m fleet top``: a live view of a running router, from its ``/metrics``.

Two scrapes a second apart give rates; every number on screen is the router's own metric (names in
``router/fleet_router/metrics.py``), so the view works against the demo's router and against a
deployed one through ``kubectl -n fleet-router port-forward svc/fleet-router 9091``. Per pool:
where it runs, requests routed to it per second, requests in flight, the backend's prefix-cache hit rate, TTFT p50/p95,
failures and ejections, what it costs per hour and per million generated tokens at the observed
rate; per tier: requests per second and the share that met the tier's TTFT objective.
"""

from __future__ import annotations

import math
import re
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

DEFAULT_URL = "http://127.0.0.1:9091"

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Labels = tuple[tuple[str, str], ...]


def parse_metrics(text: str) -> dict[str, dict[Labels, float]]:
    """Prometheus text exposition -> {metric name: {sorted label pairs: value}}."""
    out: dict[str, dict[Labels, float]] = defaultdict(dict)
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        name, labels, value = m.groups()
        try:
            v = float(value)
        except ValueError:
            continue
        pairs = tuple(sorted((k, val.replace('\\"', '"').replace("\\\\", "\\"))
                             for k, val in _LABEL.findall(labels or "")))
        out[name][pairs] = v
    return out


def _by(samples: dict[Labels, float], key: str, **where: str) -> dict[str, float]:
    """Sum of the samples grouped by label ``key``, keeping those whose labels match ``where``."""
    out: dict[str, float] = defaultdict(float)
    for labels, v in samples.items():
        d = dict(labels)
        if all(d.get(k) == w for k, w in where.items()) and key in d:
            out[d[key]] += v
    return out


def _quantile(q: float, buckets: dict[float, float]) -> float | None:
    """histogram_quantile over cumulative ``{le: count}`` (linear within a bucket, as Prometheus)."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank, prev_b, prev_c = q * total, 0.0, 0.0
    for b in bounds:
        c = buckets[b]
        if c >= rank:
            if math.isinf(b):
                return prev_b
            return prev_b + (b - prev_b) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 0.0)
        prev_b, prev_c = b, c
    return prev_b


@dataclass
class PoolRow:
    pool: str
    vendor: str = ""
    cloud: str = ""
    accelerator: str = ""
    rps: float = 0.0
    in_flight: float = 0.0
    hit_rate: float | None = None
    ttft_p50_ms: float | None = None
    ttft_p95_ms: float | None = None
    errors: float = 0.0
    ejections: float = 0.0
    cost_per_hour: float | None = None
    tokens_per_s: float = 0.0

    @property
    def cost_per_mtok(self) -> float | None:
        """USD per million generated tokens if one replica-hour were spent at the observed rate."""
        if not self.cost_per_hour or self.tokens_per_s <= 0:
            return None
        return self.cost_per_hour / (self.tokens_per_s * 3600) * 1e6


@dataclass
class TierRow:
    tier: str
    rps: float = 0.0
    slo_met: float | None = None


@dataclass
class Frame:
    url: str
    seconds: float
    pools: list[PoolRow] = field(default_factory=list)
    tiers: list[TierRow] = field(default_factory=list)
    total_rps: float = 0.0


def frame(before: dict, after: dict, seconds: float, url: str = "") -> Frame:
    """One screen from two scrapes ``seconds`` apart."""
    def delta(name: str, key: str, **where: str) -> dict[str, float]:
        a, b = _by(after.get(name, {}), key, **where), _by(before.get(name, {}), key, **where)
        return {k: max(0.0, v - b.get(k, 0.0)) for k, v in a.items()}

    rows: dict[str, PoolRow] = {}
    for labels in after.get("fleet_router_pool_info", {}):
        d = dict(labels)
        rows[d["pool"]] = PoolRow(d["pool"], d.get("vendor", ""), d.get("cloud", ""), d.get("accelerator", ""))
    for labels in after.get("fleet_router_pool_cost_per_hour", {}):  # routers without pool_info
        d = dict(labels)
        rows.setdefault(d["pool"], PoolRow(d["pool"], d.get("vendor", "")))
    routed = delta("ig_wva_routing_decisions_total", "backend_pool")
    in_flight = _by(after.get("fleet_router_pool_in_flight", {}), "pool")
    hits, queries = delta("fleet_router_pool_prefix_cache_hits", "pool"), delta(
        "fleet_router_pool_prefix_cache_queries", "pool")
    failures = delta("fleet_router_failovers_total", "from_pool")
    ejections = delta("fleet_router_ejections_total", "pool")
    cost = _by(after.get("fleet_router_pool_cost_per_hour", {}), "pool")
    tokens = delta("fleet_router_tokens_total", "pool")
    ttft_now, ttft_then = after.get("fleet_router_ttft_seconds_bucket", {}), before.get(
        "fleet_router_ttft_seconds_bucket", {})
    for name, row in rows.items():
        row.rps = routed.get(name, 0.0) / seconds
        row.in_flight = in_flight.get(name, 0.0)
        if queries.get(name):
            row.hit_rate = hits.get(name, 0.0) / queries[name]
        else:  # the router scrapes its pools every few seconds: between two of them, the total so far
            q = _by(after.get("fleet_router_pool_prefix_cache_queries", {}), "pool").get(name)
            if q:
                row.hit_rate = _by(after.get("fleet_router_pool_prefix_cache_hits", {}), "pool").get(name, 0.0) / q
        row.errors = failures.get(name, 0.0) / seconds
        row.ejections = ejections.get(name, 0.0)
        row.cost_per_hour = cost.get(name)
        row.tokens_per_s = tokens.get(name, 0.0) / seconds
        buckets: dict[float, float] = {}
        for labels, v in ttft_now.items():
            d = dict(labels)
            if d.get("pool") == name:
                buckets[float(d["le"])] = v - ttft_then.get(labels, 0.0)
        for q, attr in ((0.5, "ttft_p50_ms"), (0.95, "ttft_p95_ms")):
            x = _quantile(q, buckets)
            setattr(row, attr, None if x is None else x * 1000)
    tier_rps = delta("ig_wva_routing_decisions_total", "tier")
    ok, bad = delta("ig_wva_sla_compliance_total", "tier"), delta("ig_wva_sla_violations_total", "tier")
    tiers = []
    for t in sorted(set(tier_rps) | set(ok) | set(bad)):
        judged = ok.get(t, 0.0) + bad.get(t, 0.0)
        tiers.append(TierRow(t, tier_rps.get(t, 0.0) / seconds, ok.get(t, 0.0) / judged if judged else None))
    return Frame(url, seconds, sorted(rows.values(), key=lambda r: r.pool), tiers, sum(routed.values()) / seconds)


def scrape(url: str, timeout: float = 5.0) -> dict[str, dict[Labels, float]]:
    with urllib.request.urlopen(f"{url.rstrip('/')}/metrics", timeout=timeout) as r:
        return parse_metrics(r.read().decode(errors="replace"))


COLUMNS = ("pool", "vendor", "cloud", "req/s", "in-flight", "cache hit", "TTFT p50", "TTFT p95", "fail/s",
           "ejected", "$/h", "$/Mtok")


def _num(x: float | None, fmt: str, suffix: str = "") -> str:
    return "—" if x is None else format(x, fmt) + suffix


def pool_cells(r: PoolRow) -> tuple[str, ...]:
    return (r.pool, r.vendor, r.cloud or "—", _num(r.rps, ".1f"), _num(r.in_flight, ".0f"),
            _num(None if r.hit_rate is None else r.hit_rate * 100, ".0f", " %"), _num(r.ttft_p50_ms, ".0f", " ms"),
            _num(r.ttft_p95_ms, ".0f", " ms"), _num(r.errors, ".1f"), _num(r.ejections, ".0f"),
            _num(r.cost_per_hour, ".2f"), _num(r.cost_per_mtok, ".2f"))


def render_text(f: Frame) -> str:
    """The frame as plain aligned text (``--once``, logs, tests)."""
    rows = [COLUMNS, *(pool_cells(r) for r in f.pools)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = [f"fleet top  {f.url}  {f.total_rps:.1f} req/s over {f.seconds:.1f} s", ""]
    lines += ["  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
              for row in rows]
    if f.tiers:
        lines += ["", "tier        req/s   TTFT objective met"]
        lines += [f"{t.tier:<10} {t.rps:6.1f}   {_num(None if t.slo_met is None else t.slo_met * 100, '.1f', ' %')}"
                  for t in f.tiers]
    return "\n".join(lines)


def render_rich(f: Frame):
    from rich import box
    from rich.console import Group
    from rich.table import Table

    pools = Table(title=f"fleet top — {f.url} — {f.total_rps:.1f} req/s", title_justify="left", expand=False,
                  box=box.SIMPLE_HEAD, padding=(0, 1))
    for i, c in enumerate(COLUMNS):
        pools.add_column(c, justify="left" if i < 3 else "right", no_wrap=True)
    for r in f.pools:
        pools.add_row(*pool_cells(r), style="dim" if r.rps == 0 and r.in_flight == 0 else None)
    tiers = Table(title="tiers", title_justify="left", box=box.SIMPLE_HEAD)
    for c in ("tier", "req/s", "TTFT objective met"):
        tiers.add_column(c, justify="left" if c == "tier" else "right")
    for t in f.tiers:
        tiers.add_row(t.tier, f"{t.rps:.1f}", _num(None if t.slo_met is None else t.slo_met * 100, ".1f", " %"))
    return Group(pools, tiers)


def snapshot(url: str, interval: float = 1.0) -> Frame:
    before, t0 = scrape(url), time.monotonic()
    time.sleep(interval)
    after = scrape(url)
    return frame(before, after, time.monotonic() - t0, url)


def run_top(url: str, once: bool, interval: float = 1.0, frames: int | None = None, out=None) -> int:
    """``--once``: one plain-text frame, then exit. Otherwise a live rich view until Ctrl-C
    (or ``frames`` refreshes, for scripts)."""
    import sys

    out = out or sys.stdout
    try:
        if once:
            print(render_text(snapshot(url, interval)), file=out)
            return 0
        from rich.live import Live

        before, t0 = scrape(url), time.monotonic()
        with Live(render_rich(frame(before, before, 1.0, url)), refresh_per_second=4, screen=False) as live:
            n = 0
            while frames is None or n < frames:
                time.sleep(interval)
                after, t1 = scrape(url), time.monotonic()
                live.update(render_rich(frame(before, after, t1 - t0, url)))
                before, t0, n = after, t1, n + 1
        return 0
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError) as e:
        print(f"error: cannot read {url.rstrip('/')}/metrics: {e} (is the router running? its admin port, "
              f"e.g. `kubectl -n fleet-router port-forward svc/fleet-router 9091`)", file=sys.stderr)
        return 2

