"""Bench phase ``migration`` (issue 20): pools SIGKILLed while they stream; how many streams survive.

Three simulated pools (H100, MI300X and TPU v6e profiles: each stream takes a few hundred ms)
behind fleet_router, round-robin, ``failover.max_migrations`` 2. ``--migration-workers`` clients
each stream chat completions of ``--migration-tokens`` tokens back to back (closed loop) for
``--migration-seconds``. Two runs, fresh processes each:

* *one pool killed*: the NVIDIA pool is SIGKILLed halfway;
* *two pools killed in turn*: the NVIDIA pool at a third, the AMD one at two thirds (the TPU pool
  serves the end alone; a stream cut twice uses both its continuations).

Per stream the client checks what a user would: ``[DONE]`` came, one ``finish_reason``, no error
event, and the text is exactly the uninterrupted one (the simulator's token i is ``tok{i % 97}``
whichever server produces it). Reported: streams completed exactly and lost (goal 0); the
*resume gap* — the longest silence between two events of a stream that was on a killed pool when
it died, against the same figure for streams no kill touched (p50 / p99, and the difference: the
latency a migration adds); the router's own figures from its ``/metrics`` (migrations by reason,
its gap histogram's mean and the bucket holding its p99, tokens recomputed, migrations that failed).
On a loaded machine the client-side gaps carry the client's and the simulators' scheduling noise
(untouched streams then show long silences too); the router's histogram measures the gap itself. Bounded by wall time
(each run's load stops at its deadline, every stream has a 30 s timeout) and by
``--max-requests``; loopback only. Run: ``python bench/run.py --only migration``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request

POOLS = (("a", "nvidia-h100", "nvidia", 2.0), ("b", "amd-mi300x", "amd", 1.5), ("c", "google-tpu-v6e", "google", 1.0))
RUNS = {"one pool killed": (("a", 1 / 2),), "two pools killed in turn": (("a", 1 / 3), ("b", 2 / 3))}


def expected_text(tokens: int) -> str:
    """What an uninterrupted stream of ``tokens`` tokens says (fleet_router.sim's output)."""
    return "".join(f"tok{i % 97} " for i in range(tokens))


async def stream_one(session, url: str, body: dict) -> dict:
    """One streamed chat completion: its pool, event times, text, finish reasons, errors, [DONE]."""
    r = {"t0": time.perf_counter(), "ok": False, "gaps": [], "text": [], "finish": [], "errors": [], "done": False}
    last = None
    try:
        async with session.post(url + "/v1/chat/completions", json=body) as resp:
            r["status"], r["pool"] = resp.status, resp.headers.get("x-fleet-pool")
            if resp.status != 200:
                r["errors"].append(f"http {resp.status}")
                return r
            async for line in resp.content:
                if not line.startswith(b"data: "):
                    continue
                now = time.perf_counter()
                if last is not None:
                    r["gaps"].append(now - last)
                last = now
                payload = line[6:].strip()
                if payload == b"[DONE]":
                    r["done"] = True
                    continue
                obj = json.loads(payload)
                if "error" in obj:
                    r["errors"].append(obj["error"].get("code") or "error")
                for c in obj.get("choices") or []:
                    r["text"].append((c.get("delta") or {}).get("content") or "")
                    if c.get("finish_reason"):
                        r["finish"].append(c["finish_reason"])
    except Exception as e:  # noqa: BLE001 - every failure is a lost stream, with its kind
        r["errors"].append(type(e).__name__)
    r["end"] = time.perf_counter()
    r["ok"] = r["done"] and not r["errors"] and len(r["finish"]) == 1
    return r


def router_figures(admin: str) -> dict:
    """The router's migration metrics, summed over label sets (and per reason)."""
    text = urllib.request.urlopen(admin + "/metrics", timeout=10).read().decode()
    out = {"migrations": 0.0, "by_reason": {}, "gap_count": 0.0, "gap_sum": 0.0, "recomputed_tokens": 0.0,
           "failed": 0.0, "stream_errors": 0.0}
    buckets: dict[float, float] = {}  # upper bound -> cumulative count
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        v = float(value)
        if name.startswith("fleet_router_stream_migrations_total{"):
            out["migrations"] += v
            reason = name.split('reason="', 1)[1].split('"', 1)[0]
            out["by_reason"][reason] = out["by_reason"].get(reason, 0.0) + v
        elif name.startswith("fleet_router_stream_migration_gap_seconds_bucket{"):
            le = name.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(le)] = buckets.get(float(le), 0.0) + v
        elif name.startswith("fleet_router_stream_migration_gap_seconds_count"):
            out["gap_count"] += v
        elif name.startswith("fleet_router_stream_migration_gap_seconds_sum"):
            out["gap_sum"] += v
        elif name.startswith("fleet_router_stream_migration_recomputed_tokens_total"):
            out["recomputed_tokens"] += v
        elif name.startswith("fleet_router_stream_migrations_failed_total"):
            out["failed"] += v
        elif name.startswith("fleet_router_stream_errors_total"):
            out["stream_errors"] += v
    # p99 of the router's gap histogram: the upper bound of the bucket that holds it
    total = buckets.get(float("inf"), 0.0)
    out["gap_p99_le_s"] = next((le for le, c in sorted(buckets.items()) if total and c >= 0.99 * total), None)
    return out


async def one_run(cfg, bench, kills: tuple[tuple[str, float], ...]) -> dict:
    sims = {name: bench.start_sim(profile, f"migration-{name}") for name, profile, _, _ in POOLS}
    router = None
    try:
        pools = [{"name": name, "url": sims[name][0], "vendor": vendor, "models": [bench.MODEL], "cost_per_hour": cost,
                  "tokens_per_second": 1000.0} for name, _, vendor, cost in POOLS]
        router = bench.start_router(pools, policy="round-robin", failover={"max_migrations": 2})
        url, _, admin = router
        body = {"model": bench.MODEL, "max_tokens": cfg.migration_tokens, "stream": True,
                "messages": [{"role": "user", "content": "tell me a long story"}]}
        res: list[dict] = []
        killed_at: dict[str, float] = {}
        start = time.perf_counter()
        deadline = start + cfg.migration_seconds
        async with bench.session(cfg.migration_workers) as s:
            async def worker():
                while time.perf_counter() < deadline and len(res) < cfg.max_requests:
                    res.append(await stream_one(s, url, body))

            async def killer(name: str, at: float):
                await asyncio.sleep(cfg.migration_seconds * at)
                killed_at[name] = time.perf_counter()
                os.killpg(sims[name][1].pid, signal.SIGKILL)

            await asyncio.wait_for(asyncio.gather(*(killer(n, at) for n, at in kills),
                                                  *(worker() for _ in range(cfg.migration_workers))),
                                   cfg.migration_seconds + 60)
        figures = router_figures(admin)
    finally:
        if router is not None:
            bench.stop(router[1])
        for _, p in sims.values():
            bench.stop(p)
    want = expected_text(cfg.migration_tokens)
    exact = {id(r) for r in res if r["ok"] and "".join(r["text"]) == want}
    lost = [r for r in res if id(r) not in exact]
    # A stream a kill touched: it was on that pool, and in flight when the pool died.
    hit = [r for r in res if any(r.get("pool") == n and r["t0"] <= t <= r.get("end", t) for n, t in killed_at.items())]
    hit_ids = {id(r) for r in hit}
    calm = [r for r in res if id(r) not in hit_ids and r["gaps"]]
    gap_hit = [max(r["gaps"]) for r in hit if r["gaps"]]
    gap_calm = [max(r["gaps"]) for r in calm]
    dur_hit = [r["end"] - r["t0"] for r in hit if id(r) in exact]
    dur_calm = [r["end"] - r["t0"] for r in calm if id(r) in exact]
    p = bench.pct
    ms = bench.ms
    return {
        "streams": len(res), "completed_exactly": len(exact), "lost": len(lost),
        "lost_detail": sorted({", ".join(r["errors"]) or ("other text" if r["ok"] else "no [DONE] or finish_reason")
                               for r in lost}),
        "kills_at_s": {n: round(t - start, 3) for n, t in killed_at.items()},
        "streams_on_killed_pools": len(hit),
        "resume_gap_p50_ms": ms(p(gap_hit, 50)), "resume_gap_p99_ms": ms(p(gap_hit, 99)),
        "untouched_max_gap_p50_ms": ms(p(gap_calm, 50)), "untouched_max_gap_p99_ms": ms(p(gap_calm, 99)),
        "added_gap_p99_ms": ms(p(gap_hit, 99) - p(gap_calm, 99)) if gap_hit and gap_calm else None,
        "stream_p99_ms": {"touched": ms(p(dur_hit, 99)), "untouched": ms(p(dur_calm, 99))},
        "router": {**figures, "gap_mean_ms": ms(figures["gap_sum"] / figures["gap_count"]) if figures["gap_count"]
                   else None},
    }


async def migration(cfg, bench) -> dict:
    """``bench`` is bench/run.py's module (its process bookkeeping, sims, router and client)."""
    out = {"pools": {n: prof for n, prof, _, _ in POOLS}, "workers": cfg.migration_workers,
           "tokens_per_stream": cfg.migration_tokens, "seconds": cfg.migration_seconds, "runs": {}, "failures": {}}
    for label, kills in RUNS.items():
        try:
            row = out["runs"][label] = await one_run(cfg, bench, kills)
        except Exception as e:  # noqa: BLE001 - a failed run is reported, not fatal
            out["failures"][label] = f"{type(e).__name__}: {e}"
            print(f"[migration] {label}: failed: {e}", flush=True)
            continue
        print(f"[migration] {label}: {row['completed_exactly']}/{row['streams']} exact, {row['lost']} lost, "
              f"{row['streams_on_killed_pools']} on killed pools, resume gap p99 {row['resume_gap_p99_ms']} ms "
              f"(untouched {row['untouched_max_gap_p99_ms']} ms), recomputed {row['router']['recomputed_tokens']:.0f} "
              f"tokens", flush=True)
    return out
