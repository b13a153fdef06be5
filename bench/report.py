"""results.json -> results.md: tables, ratios to the peers, the issue's goals met / not met."""

from __future__ import annotations

from pathlib import Path


def _f(x, nd=1):
    return "n/a" if x is None else f"{x:.{nd}f}"


def _ratio(a, b):
    return None if not a or not b else a / b


def _generator_bound(targets: dict, rps) -> bool:
    """A target as fast as going direct is limited by the load generator, not by itself."""
    direct = targets.get("direct", {}).get("closed", {}).get("rps")
    return bool(rps and direct and rps >= 0.9 * direct)


def goals(out: dict) -> list[tuple[str, str, bool | None, str]]:
    g: list[tuple[str, str, bool | None, str]] = []
    t = (out.get("overhead") or {}).get("targets", {})
    me = t.get("fleet_router", {})
    rps = me.get("closed", {}).get("rps")
    for peer, want in (("litellm", 20.0), ("vllm-router", 0.5)):
        peer_rps = t.get(peer, {}).get("closed", {}).get("rps")
        r = _ratio(rps, peer_rps)
        margin = "" if r is None else f"{r / want * 100 - 100:+.0f}% vs goal"
        if r is not None and _generator_bound(t, peer_rps):
            margin += f"; {peer} ran at the load generator's ceiling (direct), so this ratio is an upper bound"
        g.append((f"throughput >= {want:g}x {peer}", f"{_f(r, 2)}x" if r else "peer not measured",
                  None if r is None else r >= want, margin))
    for k, label in (("open", "non-streaming"), ("open_stream", "streaming")):
        o = me.get(k, {})
        for q, lim in (("added_p50_ms", 1.0), ("added_p99_ms", 5.0)):
            v = o.get(q)
            g.append((f"added latency {q[6:9]} <= {lim:g} ms at {o.get('rate', 500):g} req/s ({label})",
                      f"{_f(v, 3)} ms", None if v is None else v <= lim,
                      "" if v is None else f"{v - lim:+.3f} ms vs goal"))
    rows = (out.get("routing") or {}).get("rows", {})
    affinity = rows.get("fleet_router prefix-affinity", {})
    if any(k.startswith("fleet_router") for k in rows):
        v = affinity.get("hit_rate_vs_best") or 0
        g.append(("prefix-cache hit rate >= 90% of best possible (prefix-affinity)", f"{_f(v * 100)}%", v >= 0.9, ""))
    rr = rows.get("fleet_router round-robin", {}).get("ttft_p95_ms")
    pa = affinity.get("ttft_p95_ms")
    r = _ratio(rr, pa)
    g.append(("TTFT p95 >= 2x better than round-robin (prefix-affinity)", f"{_f(r, 2)}x",
              None if r is None else r >= 2.0, ""))
    nv = rows.get("NVIDIA-only fleet (3x H100, fleet_router prefix-affinity)", {})
    cands = [(k, v) for k, v in rows.items() if k.startswith("fleet_router")
             and nv and v.get("sla_compliance") is not None and v["sla_compliance"] >= nv.get("sla_compliance", 1) - 0.01]
    if cands:
        k, v = min(cands, key=lambda kv: kv[1]["usd_per_mtok"])
        saving = 1 - v["usd_per_mtok"] / nv["usd_per_mtok"]
        g.append(("cost/Mtok >= 35% below NVIDIA-only at the same SLA compliance (within 1 point)",
                  f"{saving * 100:.1f}% below ({k}, SLA {v['sla_compliance'] * 100:.1f}% vs {nv['sla_compliance'] * 100:.1f}%)",
                  saving >= 0.35, ""))
    else:
        g.append(("cost/Mtok >= 35% below NVIDIA-only at the same SLA compliance (within 1 point)",
                  "no fleet_router policy reached the NVIDIA-only SLA compliance" if nv else "not measured", False if nv else None, ""))
    f = out.get("failover")
    if f:
        g.append(("0 requests lost on a backend kill", f"{f['lost']} lost of {f['requests']}", f["lost"] == 0, ""))
    return g


def _not_measured(phase: dict) -> list[str]:
    """A phase's targets that failed, each with its error; then the blank line ending the section."""
    return [f"\n**{name} not measured:** `{err}`" for name, err in phase.get("failures", {}).items()] + [""]


def write_markdown(out: dict, path: Path) -> None:
    m = out["machine"]
    L = ["# Router benchmarks", "",
         f"Run {out['started']}, {out['duration_s']} s. Machine: {m['nproc']} CPUs, {m['cpu']}, kernel {m['kernel']}; "
         f"{m['pinning']}. Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
         "", f"Settings: `{out['settings']}`", "",
         "Absolute numbers move between runs on this shared 2-core machine; compare the ratios.", ""]
    o = out.get("overhead")
    if o:
        t = o["targets"]
        me = t.get("fleet_router", {}).get("closed", {}).get("rps")
        L += ["## 1. Overhead and throughput (one `fast` sim, same load generator)", "",
              f"Closed loop: {out['settings']['workers']} concurrent workers for {out['settings']['seconds']} s, "
              f"short non-streaming requests. Open loop: fixed {out['settings']['rate']:g} req/s, latency from the "
              "scheduled send time; *added* = target minus direct, same percentile. Every target measured in "
              f"{o.get('rounds', 1)} interleaved rounds; each figure is the median over rounds "
              "(per-round figures in results.json).", "",
              "*CPU µs/req* is the target's own process tree (for direct: the backend's), from /proc, over the "
              "closed loop: what one request costs the proxy, steadier than req/s on a shared machine.", "",
              "| target | max req/s | fleet_router ÷ target | CPU µs/req | p50 ms | p99 ms | added p50 | added p99 | "
              "stream p50 | stream p99 | stream added p50 | stream added p99 | errors |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, row in t.items():
            c, op, st = row.get("closed", {}), row.get("open", {}), row.get("open_stream", {})
            r = _ratio(me, c.get("rps"))
            bound = " (generator ceiling)" if name != "direct" and _generator_bound(t, c.get("rps")) else ""
            L.append(f"| {name} | {_f(c.get('rps'))}{bound} | {_f(r, 2)}x | {_f(c.get('cpu_us_per_request'))} | {_f(op.get('p50_ms'), 3)} | {_f(op.get('p99_ms'), 3)} | "
                     f"{_f(op.get('added_p50_ms'), 3)} | {_f(op.get('added_p99_ms'), 3)} | {_f(st.get('p50_ms'), 3)} | "
                     f"{_f(st.get('p99_ms'), 3)} | {_f(st.get('added_p50_ms'), 3)} | {_f(st.get('added_p99_ms'), 3)} | "
                     f"{c.get('errors', 0) + op.get('errors', 0) + st.get('errors', 0)} |")
        L += _not_measured(o)
    rq = out.get("routing")
    if rq:
        L += ["## 2. Routing quality (three vendor sims, shared system prompts + multi-turn, mixed tiers)", "",
              f"{rq['requests']} streaming requests; best possible prefix-cache hit rate for this workload "
              f"(one infinite cache): **{rq['best_possible_hit_rate'] * 100:.1f}%**. TTFT targets per tier (ms): "
              f"{rq['tier_ttft_targets_ms']}. Cost = generated tokens per pool (sim counters) x the pool's "
              "$/Mtok (cost_per_hour / tokens_per_second).", "",
              "| pool | $/h | tokens/s | max_concurrency | $/Mtok |", "|---|---|---|---|---|"]
        for n, p in rq["pools"].items():
            L.append(f"| {n} | {p['cost_per_hour']} | {p['tokens_per_second']} | {p['max_concurrency']} | {p['usd_per_mtok']:.5f} |")
        L += ["", "| policy | hit rate | vs best | TTFT p50 ms | TTFT p95 ms | RR p95 ÷ this p95 | req/s | tok/s | "
              "SLA | $/Mtok | vs NVIDIA-only | errors |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        rr = rq["rows"].get("fleet_router round-robin", {}).get("ttft_p95_ms")
        for n, r in rq["rows"].items():
            L.append(f"| {n} | {_f((r['hit_rate'] or 0) * 100)}% | {_f((r['hit_rate_vs_best'] or 0) * 100)}% | "
                     f"{_f(r['ttft_p50_ms'])} | {_f(r['ttft_p95_ms'])} | {_f(_ratio(rr, r['ttft_p95_ms']), 2)}x | "
                     f"{_f(r['rps'])} | {_f(r['tokens_per_s'])} | {_f((r['sla_compliance'] or 0) * 100)}% | "
                     f"{r['usd_per_mtok']:.5f} | {r['cost_vs_nvidia_only'] * 100:+.1f}% | {r['errors']} |")
        L += _not_measured(rq)
    f = out.get("failover")
    if f:
        L += ["## 3. Failover (two `fast` sims behind fleet_router, one SIGKILLed mid-run)", "",
              "| requests | lost | lost as | kill at s | p99 before ms | p99 kill..kill+1s ms | p99 all ms |",
              "|---|---|---|---|---|---|---|",
              f"| {f['requests']} | {f['lost']} | {', '.join(f['lost_detail']) or '-'} | {f['kill_at_s']} | "
              f"{_f(f['p99_before_ms'], 3)} | {_f(f['p99_during_ms'], 3)} | {_f(f['p99_all_ms'], 3)} |", ""]
    L += ["## Goals (issue 11)", "", "| goal | measured | met | margin |", "|---|---|---|---|"]
    for name, val, met, margin in goals(out):
        L.append(f"| {name} | {val} | {'n/a' if met is None else ('met' if met else '**not met**')} | {margin} |")
    path.write_text("\n".join(L) + "\n")
