"""How long `python -m fleet plan` takes, side by side: charts rendered cold, warm, and not at all.

    .venv/bin/python bench/plan_timing.py                     # dev and multicloud, 3 rounds
    .venv/bin/python bench/plan_timing.py --stacks dev --rounds 5

Issue 15's targets are the plan's own printed timing ("planned offline in N s"): under 5 s for
dev and 15 s for multicloud on a 2-core machine. Each round runs, per stack and in a rotating
order, three plans as separate processes:

* **cold**: an empty render cache (``FLEET_RENDER_CACHE`` a fresh directory): every release
  rendered by Helm and every values check run, as on a first plan or after a chart bump;
* **warm**: the render cache the previous cold plan filled: renders and values checks are read
  back, keyed by the chart archive's digest and the inputs (fleetctl/charts.py);
* **no charts**: ``--no-charts``, the program alone under Pulumi's mocks: the floor the chart part
  sits on.

Reported per stack and configuration: the median printed timing, wall time, and the child's CPU
seconds (user + system, ``getrusage``), which a loaded machine changes far less than wall time;
the load average before and after. The verdict compares the printed timing with the target and
says how much of it is the chart part (warm minus no charts). Results: bench/results/plan_timing.json
and .md. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
TARGETS = {"dev": 5.0, "multicloud": 15.0}
PRINTED = re.compile(r"planned offline in ([0-9.]+) s")


def _git_commit() -> str:
    proc = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return proc.stdout.strip()


def run_once(stack: str, config: str, cache: Path, out: Path) -> dict[str, float]:
    env = {**os.environ, "FLEET_RENDER_CACHE": str(cache)}
    args = [sys.executable, "-m", "fleet", "plan", "--stack", stack, "--out", str(out)]
    if config == "no charts":
        args.append("--no-charts")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = PRINTED.search(proc.stdout)
    if m is None:
        raise SystemExit(f"fleet plan --stack {stack} ({config}) printed no timing (exit {proc.returncode}):\n"
                         f"{proc.stderr[-2000:]}")
    return {"printed_s": float(m.group(1)), "wall_s": wall,
            "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


CONFIGS = ["cold", "warm", "no charts"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stacks", default="dev,multicloud")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--report-only", action="store_true", help="rewrite plan_timing.md from plan_timing.json")
    args = ap.parse_args()
    if args.report_only:
        doc = json.loads((RESULTS / "plan_timing.json").read_text())
        report(doc)
        return 0
    stacks = args.stacks.split(",")
    configs = CONFIGS
    runs: dict[str, dict[str, list[dict[str, float]]]] = {s: {c: [] for c in configs} for s in stacks}
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="plan-timing-") as tmp:
        for rnd in range(args.rounds):
            for stack in stacks[rnd % len(stacks):] + stacks[:rnd % len(stacks)]:
                cache = Path(tmp, f"cache-{stack}-{rnd}")  # fresh: this round's cold plan fills it
                out = Path(tmp, f"out-{stack}")
                # cold must precede warm (it fills the cache); no charts goes first or last in turn.
                order = ["cold", "warm", "no charts"] if rnd % 2 == 0 else ["no charts", "cold", "warm"]
                for config in order:
                    r = run_once(stack, config, cache, out)
                    runs[stack][config].append(r)
                    print(f"round {rnd + 1} {stack:10s} {config:9s} printed {r['printed_s']:6.2f} s  "
                          f"wall {r['wall_s']:6.2f} s  cpu {r['cpu_s']:6.2f} s", flush=True)
    load_end = os.getloadavg()

    def med(stack: str, config: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[stack][config])

    summary = {}
    for s in stacks:
        row = {c: {k: med(s, c, k) for k in ("printed_s", "wall_s", "cpu_s")} for c in configs}
        target = TARGETS.get(s)
        row["target_s"] = target
        row["chart_part_warm_s"] = row["warm"]["printed_s"] - row["no charts"]["printed_s"]
        row["chart_part_cold_s"] = row["cold"]["printed_s"] - row["no charts"]["printed_s"]
        row["warm_over_no_charts"] = row["warm"]["printed_s"] / row["no charts"]["printed_s"]
        row["cold_over_warm"] = row["cold"]["printed_s"] / row["warm"]["printed_s"]
        row["met_warm"] = None if target is None else row["warm"]["printed_s"] < target
        row["met_cold"] = None if target is None else row["cold"]["printed_s"] < target
        summary[s] = row
    doc = {"commit": _git_commit(), "cpus": os.cpu_count(), "load_start": load_start, "load_end": load_end,
           "rounds": args.rounds, "stacks": stacks, "summary": summary, "runs": runs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "plan_timing.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    report(doc)
    return 0


def report(doc: dict) -> None:
    summary, stacks, configs = doc["summary"], doc["stacks"], CONFIGS
    load_start, load_end = doc["load_start"], doc["load_end"]
    lines = [f"# fleet plan timing (commit {doc['commit']}, {doc['cpus']} CPUs, load average "
             f"{load_start[0]:.1f} at start, {load_end[0]:.1f} at end; medians of {doc['rounds']} rounds)", "",
             "| stack | config | printed s | wall s | CPU s |", "|---|---|---|---|---|"]
    for s in stacks:
        for c in configs:
            r = summary[s][c]
            lines.append(f"| {s} | {c} | {r['printed_s']:.2f} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} |")
    lines += [""]
    for s in stacks:
        r = summary[s]
        verdict = "no target" if r["target_s"] is None else (
            f"target {r['target_s']:.0f} s: warm {'met' if r['met_warm'] else 'NOT met'}, "
            f"cold {'met' if r['met_cold'] else 'NOT met'}")
        lines.append(f"- {s}: {verdict}; charts add {r['chart_part_warm_s']:.2f} s warm and "
                     f"{r['chart_part_cold_s']:.2f} s cold to the program's {r['no charts']['printed_s']:.2f} s "
                     f"(warm/no-charts {r['warm_over_no_charts']:.2f}x, cold/warm {r['cold_over_warm']:.2f}x)")
        if r["target_s"] is not None:
            # The whole process's CPU time (plan, manifests, policy pack, verify) approximates, from
            # above, what the printed timing (the plan alone) would be on an otherwise idle core.
            cpu = {c: r[c]["cpu_s"] for c in configs}
            lines.append(f"  - by CPU seconds (a load-independent estimate): warm {cpu['warm']:.2f} s "
                         f"{'<' if cpu['warm'] < r['target_s'] else '>='} {r['target_s']:.0f} s, cold "
                         f"{cpu['cold']:.2f} s {'<' if cpu['cold'] < r['target_s'] else '>='} {r['target_s']:.0f} s, "
                         f"no charts {cpu['no charts']:.2f} s")
    lines += ["", "Wall-clock figures on a shared machine move with its load (above); the CPU seconds and the "
              "ratios, measured side by side, move less."]
    (RESULTS / "plan_timing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
