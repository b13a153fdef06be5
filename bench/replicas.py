"""Bench phase ``replicas`` (issue 19): does the replica count change routing quality?

The same three simulated pools as the routing phase (H100, MI300X and TPU v6e profiles), the same
kind of workload as issue 19 measured (``--replica-conversations`` 48 x ``--replica-turns`` 6 over
the four shared system prompts), prefix-affinity, once behind 1 router and once behind 3 router
replicas with each request sent to a random replica (``run_workload`` with a list of URLs), as a
Kubernetes Service spreads them. Fresh simulators for each variant, so both start cold.

Goals (issue 19): 3 replicas within 1 point of 1 replica's prefix-cache hit rate, and within 10 % of
its latency p95 (whole request; TTFT p95 reported beside it). Run: ``python bench/run.py --only replicas``.
"""

from __future__ import annotations

import time
from argparse import Namespace

HIT_RATE_POINTS = 0.01
P95_RATIO = 1.10


async def replicas(cfg, bench) -> dict:
    """``bench`` is bench/run.py's module (its process bookkeeping, sims, routers and load)."""
    facts = bench.pool_facts()
    wl = Namespace(**{**vars(cfg), "conversations": cfg.replica_conversations, "turns": cfg.replica_turns})
    convs = bench.workload(wl)
    out = {"pools": {n: f["profile"] for n, f in facts.items()}, "requests": sum(map(len, convs)),
           "conversations": len(convs), "turns": cfg.replica_turns, "policy": "prefix-affinity",
           "balancer": "uniform random per request", "rows": {}, "failures": {}}
    for label, n in (("1 replica", 1), ("3 replicas", 3)):
        sims = {name: bench.start_sim(facts[name]["profile"], f"replicas-{name}") for name in facts}
        routers = []
        try:
            pools = [{"name": name, "url": sims[name][0], "vendor": facts[name]["vendor"], "models": [bench.MODEL],
                      "cost_per_hour": facts[name]["cost_per_hour"],
                      "tokens_per_second": facts[name]["tokens_per_second"],
                      "max_concurrency": facts[name]["max_concurrency"]} for name in facts]
            w = 100 // len(pools)
            backends = [{"pool": p["name"], "weight": w + (100 - w * len(pools) if i == 0 else 0)}
                        for i, p in enumerate(pools)]
            tiers = [{"name": t, "match": h, "ttft_slo_ms": slo, "backends": backends}
                     for t, (h, slo) in bench.TIERS.items()]
            routers = [bench.start_router(pools, tiers, policy="prefix-affinity") for _ in range(n)]
            t0 = time.perf_counter()
            res = await bench.run_workload([u for u, _, _ in routers], convs, "prefix-affinity", cfg.max_tokens,
                                           cfg.routing_rate, cfg.think_s, cfg.routing_seconds)
            wall = time.perf_counter() - t0
            counters = {name: bench.sim_counters(sims[name][0]) for name in facts}
        except Exception as e:  # noqa: BLE001 - a failed variant is reported, not fatal
            out["failures"][label] = f"{type(e).__name__}: {e}"
            print(f"[replicas] {label}: failed: {e}", flush=True)
            continue
        finally:
            for _, p, _ in routers:
                bench.stop(p)
            for _, p in sims.values():
                bench.stop(p)
        ok = [r for r in res if r["ok"]]
        prompt = sum(c.get("prompt_tokens_total", 0) for c in counters.values())
        hits = sum(c.get("prefix_cache_hits_total", 0) for c in counters.values())
        row = {"replicas": n, "requests": len(res), "ok": len(ok), "errors": len(res) - len(ok),
               "wall_s": round(wall, 2), "hit_rate": round(hits / prompt, 4) if prompt else None,
               "latency_p95_ms": bench.ms(bench.pct([r["lat"] for r in ok], 95)),
               "ttft_p95_ms": bench.ms(bench.pct([r["ttft"] for r in ok], 95)),
               "requests_by_pool": {p: sum(1 for r in ok if r.get("pool") == p) for p in facts}}
        out["rows"][label] = row
        print(f"[replicas] {label}: hit {row['hit_rate']} latency p95 {row['latency_p95_ms']} ms "
              f"ttft p95 {row['ttft_p95_ms']} ms errors {row['errors']}", flush=True)
    one, three = out["rows"].get("1 replica"), out["rows"].get("3 replicas")
    if one and three and one["hit_rate"] is not None and three["hit_rate"] is not None:
        drop = one["hit_rate"] - three["hit_rate"]
        ratio = three["latency_p95_ms"] / one["latency_p95_ms"] if one["latency_p95_ms"] else None
        out["goals"] = {
            "hit_rate_drop_points": round(drop * 100, 2), "hit_rate_met": drop <= HIT_RATE_POINTS,
            "latency_p95_ratio": round(ratio, 3) if ratio else None,
            "latency_p95_met": ratio is not None and ratio <= P95_RATIO,
            "ttft_p95_ratio": round(three["ttft_p95_ms"] / one["ttft_p95_ms"], 3) if one["ttft_p95_ms"] else None,
        }
        print(f"[replicas] goals: {out['goals']}", flush=True)
    return out
