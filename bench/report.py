"""results.json -> results.md: tables, ratios to the peers, the issue's goals met / not met."""

from __future__ import annotations

from pathlib import Path


def _f(x, nd=1):
    return "n/a" if x is None else f"{x:.{nd}f}"


def _ratio(a, b):
    return None if not a or not b else a / b


# The bench refuses a throughput ratio unless going direct (load generator + backend alone) is at
# least this many times faster than the fastest proxy of the workload: else wrk, not the proxies,
# may be what was measured (issue 18).
MIN_DIRECT_RATIO = 5.0

WORKLOAD_LABELS = {"short": "short chat", "short-stream": "short chat, streaming",
                   "long": "100 KB shared context + distinct question"}
# (workload, ours, peer, at least this ratio of req/s): issue 18's targets, then issue 11's LiteLLM one.
PAIRS = [
    ("short", "fleet_router round-robin", "vllm-router round_robin", 1.0),
    ("short", "fleet_router prefix-affinity", "vllm-router cache_aware", 1.5),
    ("short-stream", "fleet_router round-robin", "vllm-router round_robin", 1.0),
    ("short-stream", "fleet_router prefix-affinity", "vllm-router cache_aware", 1.5),
    ("long", "fleet_router prefix-affinity", "vllm-router cache_aware", 1.5),
    ("long", "fleet_router round-robin", "vllm-router round_robin", 1.0),
    ("short", "fleet_router round-robin", "litellm", 20.0),
]
# Added p99 at the fixed rate, ms (issue 18), for each of our policies measured.
LATENCY_GOALS = {"non-streaming": 2.0, "streaming": 5.0}
OURS = ("fleet_router round-robin", "fleet_router prefix-affinity")
# Below this share of the offered rate, a target did not sustain it: its latency is a backlog.
SUSTAINED = 0.95


# A target that used less of its core than this while measured was starved by other work on the
# (shared) machine: its req/s says how much CPU it was given, not what it costs. Ratios are then
# taken per core-second of CPU (1e6 / CPU µs per request: the req/s it would serve on a core of
# its own), which the other work does not change.
FULL_CORE = 0.8


def core_used(row: dict) -> float | None:
    """The share of one core a target's process tree used while measured: req/s x CPU per request."""
    if not row.get("rps") or row.get("cpu_us_per_request") is None:
        return None
    return row["rps"] * row["cpu_us_per_request"] / 1e6


def per_core(row: dict) -> float | None:
    """Req/s per core-second: what the target would serve with one core to itself."""
    cpu = row.get("cpu_us_per_request")
    return 1e6 / cpu if cpu else None


def _direct_per_core(direct: dict) -> float | None:
    """Load generator + backend per core-second (both share core 0)."""
    cpu, gen = direct.get("cpu_us_per_request"), direct.get("generator_cpu_us_per_request")
    return 1e6 / (cpu + gen) if cpu and gen else None


def pair_ratio(out: dict, wname: str, ours: str, peer: str) -> tuple[float | None, str]:
    """Our throughput over the peer's, or None and why no ratio is reported. Measured req/s when
    both had their core (>= FULL_CORE of it), else req/s per core-second; the margin text says which.
    Refused unless core 0's capacity — generator + backend per core-second, from their CPU per
    request in the direct run — is MIN_DIRECT_RATIO x the faster of the two: while either was
    measured, core 0 was then at most a fifth busy, so the generator was not what limited it.
    Direct's own req/s is that capacity only when core 0 was all its own: on a shared machine it
    measures the slice it was given (a run at load 6.6: 32 k req/s where the CPU figures give 71 k;
    a quiet run: 51 k both ways), which the capacity does not depend on."""
    tp = out.get("throughput") or {}
    w = tp.get("workloads", {}).get(wname)
    if w is None:
        return None, "workload not measured"
    t = w["targets"]
    for name in (ours, peer):
        if not (t.get(name) or {}).get("rps"):
            return None, f"{name} not measured" + (f": {tp['failures'][name]}" if name in tp.get("failures", {}) else "")
    a, b, d = t[ours], t[peer], t.get("direct", {})
    shares = [core_used(a), core_used(b)]
    measured = all(x is not None and x >= FULL_CORE for x in shares)
    if measured:
        ra, rb = a["rps"], b["rps"]
    else:
        ra, rb = per_core(a), per_core(b)
        if ra is None or rb is None:
            return None, "no CPU figures"
    rd = _direct_per_core(d)
    if not rd or rd < MIN_DIRECT_RATIO * max(ra, rb):
        return None, (f"not reported: core 0 (load generator + backend, per core-second) is only "
                      f"{_f(rd / max(ra, rb) if rd else None)}x the faster of the two (needs {MIN_DIRECT_RATIO:g}x), "
                      f"so the load generator may be the limit")
    return ra / rb, ("measured req/s" if measured else
                     f"per core-second (cores starved: {ours} used {shares[0] * 100:.0f}%, {peer} "
                     f"{shares[1] * 100:.0f}% of theirs)")


def goals(out: dict) -> list[tuple[str, str, bool | None, str]]:
    g: list[tuple[str, str, bool | None, str]] = []
    if out.get("throughput"):
        for wname, ours, peer, want in PAIRS:
            r, why = pair_ratio(out, wname, ours, peer)
            name = f"{WORKLOAD_LABELS[wname]}: {ours} req/s >= {want:g}x {peer}"
            if r is None:
                g.append((name, "no ratio", None, why))
            else:
                g.append((name, f"{r:.2f}x", r >= want, f"{r / want * 100 - 100:+.0f}% vs goal; {why}"))
    lat = out.get("latency")
    if lat:
        rate = lat["rate"]
        for mode, lim in LATENCY_GOALS.items():
            t = lat.get("modes", {}).get(mode, {}).get("targets", {})
            d = t.get("direct")
            for ours in OURS:
                name = f"added p99 <= {lim:g} ms at {rate:g} req/s, {mode} ({ours})"
                row = t.get(ours)
                if row is None or d is None:
                    g.append((name, "not measured", None, lat.get("failures", {}).get(ours, "")))
                elif d["achieved_rps"] < SUSTAINED * rate:
                    g.append((name, "no figure", None, f"the generator sustained only {d['achieved_rps']:g} req/s direct"))
                elif row["achieved_rps"] < SUSTAINED * rate:
                    cu = row.get("core_used")
                    g.append((name, f"sustained {row['achieved_rps']:g} req/s", False, "could not hold the rate" + (
                        f" (it got {cu * 100:.0f}% of its core: starved by other work)" if cu is not None and
                        cu < FULL_CORE else "")))
                else:
                    v = row["added_p99_ms"]
                    g.append((name, f"{v:.3f} ms", v <= lim, f"{v - lim:+.3f} ms vs goal"))
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
    for label, row in (out.get("migration") or {}).get("runs", {}).items():  # issue 20
        touched = row["streams_on_killed_pools"]
        # no stream on a killed pool when it died: nothing was tested, so no verdict
        g.append((f"0 streams lost, pools killed mid-stream ({label})",
                  f"{row['lost']} lost of {row['streams']} ({touched} on killed pools)",
                  (row["lost"] == 0) if touched else None, ""))
    return g


def _not_measured(phase: dict) -> list[str]:
    """A phase's targets that failed, each with its error; then the blank line ending the section."""
    return [f"\n**{name} not measured:** `{err}`" for name, err in phase.get("failures", {}).items()] + [""]


def _throughput_md(out: dict, tp: dict) -> list[str]:
    L = ["## 1. Throughput and CPU per request (wrk, closed loop)", "",
         "wrk 4.1 (compiled), one thread on core 0 with the bench backend (`bench/backend.py`: asyncio + "
         "httptools, canned answers, two ports = two pools); each proxy alone on core 1. "
         f"{tp['rounds']} interleaved rounds of {tp['seconds']:g} s per target; each figure the median over rounds "
         "(per-round figures in results.json). *CPU µs/req*: the target's process tree (for direct: the backend), "
         "user + system from /proc over the run, per completed request (*wrk CPU µs/req*: the generator's, from "
         "getrusage). *Core used* = req/s x CPU per request; a proxy that used under "
         f"{FULL_CORE * 100:.0f}% of its core was starved by other work on this shared machine, and then the judged "
         "ratio is per core-second (1e6 / CPU µs per request: what each would serve on a core of its own), "
         "else measured req/s. A ratio is refused unless core 0's capacity (wrk + backend per core-second, from "
         f"their CPU per request in the direct run) is at least {MIN_DIRECT_RATIO:g}x the faster of the two "
         "compared: core 0 was then at most a fifth busy while either was measured.", ""]
    for wname, w in tp["workloads"].items():
        L += [f"### {WORKLOAD_LABELS.get(wname, wname)} ({w['connections']} connections"
              f"{', streaming' if w['stream'] else ''})", "",
              "| target | req/s | CPU µs/req | core used | req/s per core-second | wrk CPU µs/req | p50 ms | p99 ms | "
              "errors |", "|---|---|---|---|---|---|---|---|---|"]
        for name, r in w["targets"].items():
            cu = core_used(r)
            pc = _direct_per_core(r) if name == "direct" else per_core(r)
            L.append(f"| {name} | {_f(r.get('rps'))} | {_f(r.get('cpu_us_per_request'))} | "
                     f"{'n/a' if cu is None else f'{cu * 100:.0f}%'} | {_f(pc, 0)}{' (wrk + backend)' if name == 'direct' else ''} | "
                     f"{_f(r.get('generator_cpu_us_per_request'))} | {_f(r.get('p50_ms'), 3)} | {_f(r.get('p99_ms'), 3)} | "
                     f"{r.get('errors', 0)} |")
        L.append("")
    L += ["### Side by side", "",
          "| workload | ours | peer | ours req/s | peer req/s | measured ratio | ours CPU µs/req | peer CPU µs/req | "
          "per-core ratio | judged ratio | goal |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for wname, ours, peer, want in PAIRS:
        t = tp["workloads"].get(wname, {}).get("targets", {})
        a, b = t.get(ours, {}), t.get(peer, {})
        r, why = pair_ratio(out, wname, ours, peer)
        L.append(f"| {WORKLOAD_LABELS[wname]} | {ours} | {peer} | {_f(a.get('rps'))} | {_f(b.get('rps'))} | "
                 f"{_f(_ratio(a.get('rps'), b.get('rps')), 2)}x | {_f(a.get('cpu_us_per_request'))} | "
                 f"{_f(b.get('cpu_us_per_request'))} | {_f(_ratio(per_core(a), per_core(b)), 2)}x | "
                 f"{_f(r, 2) + 'x (' + why + ')' if r is not None else 'n/a (' + why + ')'} | >= {want:g}x |")
    return L + _not_measured(tp)


def _latency_md(lat: dict) -> list[str]:
    L = [f"## 2. Added latency at a fixed {lat['rate']:g} req/s", "",
         f"wrk with `bench/wrk/rate.lua`: {lat['connections']} connections, one per wrk thread, each on its own "
         f"constant schedule ({lat['rate']:g} req/s in all), latency counted from the scheduled send time "
         "(wrk2's method: no coordinated omission; Debian ships no wrk2). "
         f"{lat['rounds']} interleaved rounds of {lat['seconds']:g} s; medians. *Added* = target minus direct, "
         "same percentile. Streaming latency is to the last byte.", ""]
    for mode, m in lat["modes"].items():
        L += [f"### {mode}", "", "| target | achieved req/s | core used | p50 ms | p90 ms | p99 ms | p99.9 ms | "
              "added p50 | added p99 | errors |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in m["targets"].items():
            cu = r.get("core_used")
            L.append(f"| {name} | {_f(r['achieved_rps'])} | {'n/a' if cu is None else f'{cu * 100:.0f}%'} | "
                     f"{_f(r['p50_ms'], 3)} | {_f(r['p90_ms'], 3)} | "
                     f"{_f(r['p99_ms'], 3)} | {_f(r['p999_ms'], 3)} | {_f(r.get('added_p50_ms'), 3)} | "
                     f"{_f(r.get('added_p99_ms'), 3)} | {r['errors']} |")
        L.append("")
    return L + _not_measured(lat)


def write_markdown(out: dict, path: Path) -> None:
    m = out["machine"]
    L = ["# Router benchmarks", "",
         f"Run {out['started']}, {out['duration_s']} s. Machine: {m['nproc']} CPUs, {m['cpu']}, kernel {m['kernel']}; "
         f"{m['pinning']}. Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
         "", f"Settings: `{out['settings']}`", "",
         f"Commit {m.get('commit')}; load average at start {m.get('loadavg_start')}, at end {m.get('loadavg_end')} "
         "(other work on this shared machine). Absolute numbers move between runs; the ratios are measured side "
         "by side in one run.", ""]
    runs = {(r or {}).get("started") for r in (out.get("phases") or {}).values()}
    if len(runs) > 1:  # bench/run.py --update: some phases re-run, the rest kept from an earlier run
        L += ["Phases from more than one run (`--update`): " + "; ".join(
            f"{phase} {r.get('started')} (commit {r.get('commit')}, load {r.get('loadavg_start')})"
            for phase, r in out["phases"].items() if r) + ".", ""]
    tp = out.get("throughput")
    if tp:
        L += _throughput_md(out, tp)
    lat = out.get("latency")
    if lat:
        L += _latency_md(lat)
    rq = out.get("routing")
    if rq:
        L += ["## 3. Routing quality (three vendor sims, shared system prompts + multi-turn, mixed tiers)", "",
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
        L += ["## 4. Failover (two `fast` sims behind fleet_router, one SIGKILLed mid-run)", "",
              "| requests | lost | lost as | kill at s | p99 before ms | p99 kill..kill+1s ms | p99 all ms |",
              "|---|---|---|---|---|---|---|",
              f"| {f['requests']} | {f['lost']} | {', '.join(f['lost_detail']) or '-'} | {f['kill_at_s']} | "
              f"{_f(f['p99_before_ms'], 3)} | {_f(f['p99_during_ms'], 3)} | {_f(f['p99_all_ms'], 3)} |", ""]
    mg = out.get("migration")
    if mg:
        L += [f"## 5. Stream migration ({mg['workers']} streams of {mg['tokens_per_stream']} tokens at a time, "
              f"{mg['seconds']:g} s per run; pools SIGKILLed mid-run)", "",
              "*Resume gap*: the longest silence between two events of a stream that was on a killed pool when it "
              "died; *untouched*: the same for streams no kill reached; *added* = the difference at p99. Router "
              "figures from its /metrics.", "",
              "| run | streams | exact | lost | lost as | on killed pools | resume gap p50 / p99 ms | "
              "untouched p50 / p99 ms | added p99 ms | router gap mean ms / p99 <= s | migrations (by reason) | "
              "tokens recomputed | failed |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for label, r in mg["runs"].items():
            reasons = ", ".join(f"{k} {v:.0f}" for k, v in sorted(r["router"]["by_reason"].items())) or "-"
            L.append(f"| {label} | {r['streams']} | {r['completed_exactly']} | {r['lost']} | "
                     f"{', '.join(r['lost_detail']) or '-'} | {r['streams_on_killed_pools']} | "
                     f"{_f(r['resume_gap_p50_ms'])} / {_f(r['resume_gap_p99_ms'])} | "
                     f"{_f(r['untouched_max_gap_p50_ms'])} / {_f(r['untouched_max_gap_p99_ms'])} | "
                     f"{_f(r['added_gap_p99_ms'])} | {_f(r['router']['gap_mean_ms'])} / "
                     f"{_f(r['router'].get('gap_p99_le_s'), 3)} | {r['router']['migrations']:.0f} ({reasons}) | "
                     f"{r['router']['recomputed_tokens']:.0f} | {r['router']['failed']:.0f} |")
        L += _not_measured(mg)
    L += ["## Goals (issues 11 and 18)", "", "| goal | measured | met | margin |", "|---|---|---|---|"]
    for name, val, met, margin in goals(out):
        L.append(f"| {name} | {val} | {'n/a' if met is None else ('met' if met else '**not met**')} | {margin} |")
    path.write_text("\n".join(L) + "\n")
