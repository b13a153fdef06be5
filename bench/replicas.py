"""Bench phase ``replicas`` (issue 19): does the replica count change routing quality?

The same three simulated pools as the routing phase (H100, MI300X and TPU v6e profiles), the same
kind of workload as issue 19 measured (``--replica-conversations`` 48 x ``--replica-turns`` 6 over
the four shared system prompts), prefix-affinity, once behind 1 router and once behind 3 router
replicas with each request sent to a random replica (``run_workload`` with a list of URLs), as a
Kubernetes Service spreads them. Fresh simulators for each variant, so both start cold.

Goals (issue 19): 3 replicas within 1 point of 1 replica's prefix-cache hit rate, and within 10 % of
its latency p95 (whole request; TTFT p95 reported beside it). Run: ``python bench/run.py --only replicas``.

What makes the comparison trustworthy on a small shared machine (one run of each showed a 3-vs-1
p95 ratio anywhere from 0.92 to 1.27, more than the effect):

* **Rounds, interleaved**: ``--replica-rounds`` rounds, each running both variants, in the order
  1-3, 3-1, 1-3, ... so drift in the machine's load hits both alike. Round ``r`` draws its arrival,
  think-time and balancer schedule from seed ``r`` (both variants of a round get the same one), so
  the figures are not one schedule's luck. The goal is judged on the **median of the rounds' 3-vs-1
  p95 ratios**, reported with every round's figures, the spread and the load average at each run;
  the p95 over every round's requests pooled (5x the samples of one run) is reported beside it.
* **Slow pools**: the sims run with ``--time-scale`` ``--replica-time-scale`` (every modelled
  prefill and decode time that many times longer) and the offered rate and think time are scaled
  to match, so the pools are exactly as busy as at scale 1 while a router's CPU time per request
  (well under a millisecond) and a scheduler hiccup on a shared core shrink against the latency the
  pools model. The p95 figures are the scaled run's milliseconds.
* **Warm-up**: each router serves a few short prompts (no prefix block: nothing to cache, no
  affinity learnt) before the run, so a replica's first requests do not pay its connection set-up
  and cold code paths; the sims' counters are read before and after the run and differenced.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from argparse import Namespace

HIT_RATE_POINTS = 0.01
P95_RATIO = 1.10
VARIANTS = (("1 replica", 1), ("3 replicas", 3))
WARM_PER_ROUTER = 6  # concurrent short requests per router before the run


async def _warm(bench, urls: list[str]) -> None:
    async with bench.session(64) as s:
        res = await asyncio.gather(*(bench.one(s, u, bench.SHORT, {}, False)
                                     for u in urls for _ in range(WARM_PER_ROUTER)))
    bad = [r for r in res if not r["ok"]]
    if bad:
        raise RuntimeError(f"warm-up: {len(bad)} of {len(res)} requests failed ({bad[0].get('status') or bad[0].get('error')})")


def _counters(bench, sims) -> dict[str, dict]:
    return {name: bench.sim_counters(url) for name, (url, _) in sims.items()}


async def _variant(cfg, bench, facts, convs, n: int, seed: int) -> tuple[dict, list[dict]]:
    """Fresh sims and ``n`` routers, warm-up, one run of the workload: its row and its requests."""
    scale = cfg.replica_time_scale
    loadavg = bench._loadavg()
    sims = {name: bench.start_sim(facts[name]["profile"], f"replicas-{name}", "--time-scale", f"{scale:g}")
            for name in facts}
    routers = []
    try:
        pools = [{"name": name, "url": sims[name][0], "vendor": facts[name]["vendor"], "models": [bench.MODEL],
                  "cost_per_hour": facts[name]["cost_per_hour"],
                  "tokens_per_second": facts[name]["tokens_per_second"],
                  "max_concurrency": facts[name]["max_concurrency"]} for name in facts]
        w = 100 // len(pools)
        backends = [{"pool": p["name"], "weight": w + (100 - w * len(pools) if i == 0 else 0)}
                    for i, p in enumerate(pools)]
        tiers = [{"name": t, "match": h, "ttft_slo_ms": slo * scale, "backends": backends}
                 for t, (h, slo) in bench.TIERS.items()]
        routers = [bench.start_router(pools, tiers, policy="prefix-affinity") for _ in range(n)]
        urls = [u for u, _, _ in routers]
        await _warm(bench, urls)
        before = _counters(bench, sims)
        t0 = time.perf_counter()
        res = await bench.run_workload(urls, convs, "prefix-affinity", cfg.max_tokens, cfg.routing_rate / scale,
                                       cfg.think_s * scale, cfg.routing_seconds * scale, seed=seed)
        wall = time.perf_counter() - t0
        after = _counters(bench, sims)
    finally:
        for _, p, _ in routers:
            bench.stop(p)
        for _, p in sims.values():
            bench.stop(p)
    ok = [r for r in res if r["ok"]]
    prompt = sum(after[s].get("prompt_tokens_total", 0) - before[s].get("prompt_tokens_total", 0) for s in sims)
    hits = sum(after[s].get("prefix_cache_hits_total", 0) - before[s].get("prefix_cache_hits_total", 0)
               for s in sims)
    lat = [r["lat"] for r in ok]
    row = {"replicas": n, "seed": seed, "loadavg": loadavg, "requests": len(res), "ok": len(ok),
           "errors": len(res) - len(ok), "wall_s": round(wall, 2),
           "prompt_tokens": prompt, "cached_tokens": hits, "hit_rate": round(hits / prompt, 4) if prompt else None,
           "latency_p50_ms": bench.ms(bench.pct(lat, 50)), "latency_p95_ms": bench.ms(bench.pct(lat, 95)),
           "ttft_p95_ms": bench.ms(bench.pct([r["ttft"] for r in ok], 95)),
           "requests_by_pool": {p: sum(1 for r in ok if r.get("pool") == p) for p in facts},
           "tail": _tail(bench, ok)}
    return row, ok


def _tail(bench, ok: list[dict]) -> dict:
    """Who the slowest 5 % are: first turns, the long-document conversations (every 4th: bench/run.py's
    workload puts the document in system prompt 0), which pool."""
    if not ok:
        return {}
    cut = bench.pct([r["lat"] for r in ok], 95)
    slow = [r for r in ok if r["lat"] >= cut]
    pools: dict[str, int] = {}
    for r in slow:
        pools[r.get("pool") or "?"] = pools.get(r.get("pool") or "?", 0) + 1
    return {"requests": len(slow), "first_turns": sum(1 for r in slow if r.get("turn") == 0),
            "long_document": sum(1 for r in slow if r.get("conv", 1) % 4 == 0), "by_pool": pools}


def _spread(xs: list[float]) -> dict:
    return {"median": round(statistics.median(xs), 3), "min": round(min(xs), 3), "max": round(max(xs), 3)}


async def replicas(cfg, bench) -> dict:
    """``bench`` is bench/run.py's module (its process bookkeeping, sims, routers and load)."""
    facts = bench.pool_facts()
    wl = Namespace(**{**vars(cfg), "conversations": cfg.replica_conversations, "turns": cfg.replica_turns})
    convs = bench.workload(wl)
    out = {"pools": {n: f["profile"] for n, f in facts.items()}, "requests": sum(map(len, convs)),
           "conversations": len(convs), "turns": cfg.replica_turns, "policy": "prefix-affinity",
           "balancer": "uniform random per request", "rounds": cfg.replica_rounds,
           "time_scale": cfg.replica_time_scale, "runs": [], "failures": {}}
    samples: dict[str, list[float]] = {label: [] for label, _ in VARIANTS}
    for r in range(cfg.replica_rounds):
        for label, n in (VARIANTS if r % 2 == 0 else VARIANTS[::-1]):
            try:
                row, ok = await _variant(cfg, bench, facts, convs, n, seed=r)
            except Exception as e:  # noqa: BLE001 - a failed run is reported, not fatal
                out["failures"][f"round {r} {label}"] = f"{type(e).__name__}: {e}"
                print(f"[replicas] round {r} {label}: failed: {e}", flush=True)
                continue
            out["runs"].append({"round": r, "variant": label, **row})
            samples[label] += [x["lat"] for x in ok]
            print(f"[replicas] round {r} {label}: hit {row['hit_rate']} latency p95 {row['latency_p95_ms']} ms "
                  f"ttft p95 {row['ttft_p95_ms']} ms errors {row['errors']} load {row['loadavg']} "
                  f"tail {row['tail']}", flush=True)
    by = {(x["round"], x["variant"]): x for x in out["runs"]}
    paired = [(by[(r, VARIANTS[0][0])], by[(r, VARIANTS[1][0])]) for r in range(cfg.replica_rounds)
              if (r, VARIANTS[0][0]) in by and (r, VARIANTS[1][0]) in by]
    out["rows"] = {}
    for label, _ in VARIANTS:
        runs = [x for x in out["runs"] if x["variant"] == label]
        if not runs:
            continue
        prompt, hits = sum(x["prompt_tokens"] for x in runs), sum(x["cached_tokens"] for x in runs)
        out["rows"][label] = {
            "runs": len(runs), "errors": sum(x["errors"] for x in runs),
            "hit_rate": round(hits / prompt, 4) if prompt else None,
            "latency_p95_ms_pooled": bench.ms(bench.pct(samples[label], 95)),
            "latency_p95_ms_by_round": [x["latency_p95_ms"] for x in runs],
            "ttft_p95_ms_by_round": [x["ttft_p95_ms"] for x in runs]}
    one, three = out["rows"].get(VARIANTS[0][0]), out["rows"].get(VARIANTS[1][0])
    if paired and one and three and one["hit_rate"] is not None and three["hit_rate"] is not None:
        ratios = [b["latency_p95_ms"] / a["latency_p95_ms"] for a, b in paired]
        ttft = [b["ttft_p95_ms"] / a["ttft_p95_ms"] for a, b in paired]
        drops = [(a["hit_rate"] - b["hit_rate"]) * 100 for a, b in paired]
        drop = (one["hit_rate"] - three["hit_rate"]) * 100
        med = statistics.median(ratios)
        out["goals"] = {
            "rounds_paired": len(paired),
            "hit_rate_drop_points": round(drop, 2), "hit_rate_drop_points_by_round": _spread(drops),
            "hit_rate_met": drop <= HIT_RATE_POINTS * 100,
            "latency_p95_ratio_by_round": [round(x, 3) for x in ratios],
            "latency_p95_ratio": _spread(ratios),
            "latency_p95_ratio_pooled": round(three["latency_p95_ms_pooled"] / one["latency_p95_ms_pooled"], 3),
            "latency_p95_met": med <= P95_RATIO,
            "ttft_p95_ratio": _spread(ttft),
        }
        print(f"[replicas] goals: {out['goals']}", flush=True)
    return out
