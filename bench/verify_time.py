"""How long `python -m fleet verify --stack NAME` spends, by stage, and what the in-place write and
the in-memory verify save (issue 16: multicloud under 10 s, reported, not a timed test).

    .venv/bin/python bench/verify_time.py [--stack multicloud] [--rounds 3]

One process plans the stack once (run_plan: the program under Pulumi's mocks and the charts'
render), then, per round and side by side, times the two ways of writing and reading it back:
*before* (the manifests folder deleted and written anew, then every file parsed back) and *after*
(files rewritten in place, stale ones removed, the objects verified as the plan holds them). It
prints CPU and wall seconds per stage, the machine's load average at start and end, and the ratio
after/before of the write + load stages. On a shared machine read the CPU seconds and the ratio.

    .venv/bin/python bench/verify_time.py --whole [--against DIR] [--runs 5] [--stack multicloud]

``--whole`` times the command itself, ``python -m fleet verify --stack NAME``, as whole processes
(interpreter start, imports, plan, write, checks and the exit: what a user waits for, and what the
in-process stages above cannot show). With ``--against DIR`` (another checkout, e.g. ``git worktree
add /tmp/fleet-main main``) the two run in turn, this checkout first, then DIR, and so on, each into
a plan directory of its own that its warm-up run filled (the usual case: planning again into
build/plan/<stack>); each pair's ratio this/DIR is taken, so a machine whose speed drifts during the
call still compares like with like. Printed: every run's wall and CPU seconds (user + system of the
child, ``getrusage``), their medians, the median of the paired ratios, and the load average at start
and end. Not a test: nothing asserts a time.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "router")]

from fleetctl import verify  # noqa: E402
from fleetctl.charts import charts_dir  # noqa: E402
from fleetctl.plan import run_plan, write_plan  # noqa: E402


def _timed(fn):
    c, w = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c, time.perf_counter() - w


def _verify_process(checkout: Path, stack: str, out: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one ``python -m fleet verify --stack`` run from ``checkout``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(checkout / "router"), str(checkout)]),
           "FLEET_CHARTS_DIR": str(charts_dir())}  # both sides render from this checkout's chart cache
    cmd = [sys.executable, "-m", "fleet", "verify", "--stack", stack, "--out", str(out)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):  # 1: findings, still a full run
        raise SystemExit(f"{' '.join(cmd)} in {checkout} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def whole(stack: str, runs: int, against: Path | None) -> int:
    sides = {"this": ROOT} | ({"against": against.resolve()} if against else {})
    load_start = os.getloadavg()
    figures: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
    with tempfile.TemporaryDirectory(prefix="fleet-verify-whole-") as tmp:
        for side, checkout in sides.items():  # warm-up: fills each side's plan directory
            _verify_process(checkout, stack, Path(tmp, side))
        for i in range(runs):
            for side, checkout in sides.items():
                wall, cpu = _verify_process(checkout, stack, Path(tmp, side))
                figures[side].append((wall, cpu))
                print(f"run {i + 1} {side:7s} wall {wall:6.2f} s  cpu {cpu:6.2f} s", flush=True)
    load_end = os.getloadavg()
    print(f"\nfleet verify --stack {stack}, whole process, {runs} runs each after one warm-up; load average "
          f"{load_start[0]:.1f} at start, {load_end[0]:.1f} at end ({os.cpu_count()} cores)")
    for side, checkout in sides.items():
        walls, cpus = [w for w, _ in figures[side]], [c for _, c in figures[side]]
        print(f"  {side:7s} {str(checkout)}: wall median {statistics.median(walls):.2f} s "
              f"({', '.join(f'{w:.2f}' for w in walls)}), cpu median {statistics.median(cpus):.2f} s "
              f"({', '.join(f'{c:.2f}' for c in cpus)})")
    if against:
        pairs = list(zip(figures["this"], figures["against"]))
        print(f"  this/against, median of paired ratios: wall {statistics.median(a[0] / b[0] for a, b in pairs):.3f}x, "
              f"cpu {statistics.median(a[1] / b[1] for a, b in pairs):.3f}x")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stack", default="multicloud")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--whole", action="store_true", help="time `python -m fleet verify --stack` as whole processes")
    ap.add_argument("--runs", type=int, default=5, help="with --whole: counted runs per side (default 5)")
    ap.add_argument("--against", type=Path, help="with --whole: another checkout to run in turn with this one")
    args = ap.parse_args()
    if args.whole:
        return whole(args.stack, args.runs, args.against)
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
