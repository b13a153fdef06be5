"""How long `python -m fleet verify --stack NAME` spends, by stage, and what the in-place write and
the in-memory verify save (issue 16: multicloud under 10 s, reported, not a timed test).

    .venv/bin/python bench/verify_time.py [--stack multicloud] [--rounds 3]

One process plans the stack once (run_plan: the program under Pulumi's mocks and the charts'
render), then, per round and side by side, times the two ways of writing and reading it back:
*before* (the manifests folder deleted and written anew, then every file parsed back) and *after*
(files rewritten in place, stale ones removed, the objects verified as the plan holds them). It
prints CPU and wall seconds per stage, the machine's load average at start and end, and the ratio
after/before of the write + load stages. On a shared machine read the CPU seconds and the ratio.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "router")]

from fleetctl import verify  # noqa: E402
from fleetctl.plan import run_plan, write_plan  # noqa: E402


def _timed(fn):
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stack", default="multicloud")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    load_start = os.getloadavg()
    plan, plan_cpu, plan_wall = _timed(lambda: run_plan(args.stack, None))
    work = Path(tempfile.mkdtemp(prefix="fleet-verify-bench-"))
    before, after = work / "before", work / "after"
    write_plan(plan, before)
    write_plan(plan, after)  # both warm: a plan directory already there, as on a second run
    rows: dict[str, list[tuple[float, float]]] = {k: [] for k in ("write before", "load before", "write after",
                                                                  "load after", "checks")}
    try:
        for _ in range(args.rounds):
            def old_write():
                shutil.rmtree(before / "manifests")
                write_plan(plan, before)
            _, c, w = _timed(old_write)
            rows["write before"].append((c, w))
            topo, c, w = _timed(lambda: verify.load(before))
            rows["load before"].append((c, w))
            _, c, w = _timed(lambda: write_plan(plan, after))
            rows["write after"].append((c, w))
            topo, c, w = _timed(lambda: verify.load_plan(plan, after))
            rows["load after"].append((c, w))
            _, c, w = _timed(lambda: verify.verify(topo))
            rows["checks"].append((c, w))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {k: (statistics.median(c for c, _ in v), statistics.median(w for _, w in v)) for k, v in rows.items()}
    print(f"stack {args.stack}, {args.rounds} rounds, load average {load_start[0]:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end ({os.cpu_count()} cores)")
    print(f"  {'run_plan (once)':18s} cpu {plan_cpu:6.2f} s  wall {plan_wall:6.2f} s")
    for k, (c, w) in med.items():
        print(f"  {k:18s} cpu {c:6.2f} s  wall {w:6.2f} s  (median)")
    b = med["write before"][0] + med["load before"][0]
    a = med["write after"][0] + med["load after"][0]
    bw = med["write before"][1] + med["load before"][1]
    aw = med["write after"][1] + med["load after"][1]
    print(f"write + load: cpu {a:.2f} s vs {b:.2f} s ({a / b:.2f}x), wall {aw:.2f} s vs {bw:.2f} s ({aw / bw:.2f}x)")
    print(f"verify --stack {args.stack} estimate: cpu {plan_cpu + a + med['checks'][0]:.2f} s "
          f"(was {plan_cpu + b + med['checks'][0]:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
