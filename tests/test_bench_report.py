"""The benchmark's verdicts: each goal of issue 11 judged met / not met with its margin, from the
recorded results — so a report can never claim a goal its numbers do not support."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)

NV = "NVIDIA-only fleet (3x H100, fleet_router prefix-affinity)"


def _results(**over) -> dict:
    def target(rps, p50, p99, sp50, sp99):
        return {"closed": {"rps": rps}, "open": {"rate": 500, "p50_ms": p50, "p99_ms": p99},
                "open_stream": {"p50_ms": sp50, "p99_ms": sp99}}

    out = {
        "overhead": {"targets": {
            "direct": target(5000, 1.0, 3.0, 1.2, 3.5),
            "fleet_router": target(2000, 1.5, 6.0, 1.9, 9.5),
            "vllm-router": target(3000, 1.2, 3.5, 1.5, 4.0),
            "litellm": target(80, 900, 9000, 1500, 15000),
        }},
        "routing": {"rows": {
            "fleet_router round-robin": {"hit_rate": 0.80, "hit_rate_vs_best": 0.87, "ttft_p95_ms": 45.0,
                                         "sla_compliance": 0.98, "usd_per_mtok": 0.0122},
            "fleet_router prefix-affinity": {"hit_rate": 0.91, "hit_rate_vs_best": 0.99, "ttft_p95_ms": 18.0,
                                             "sla_compliance": 0.997, "usd_per_mtok": 0.0120},
            "fleet_router cost-aware": {"hit_rate": 0.91, "hit_rate_vs_best": 0.99, "ttft_p95_ms": 30.0,
                                        "sla_compliance": 0.992, "usd_per_mtok": 0.0057},
            NV: {"hit_rate": 0.91, "hit_rate_vs_best": 0.99, "ttft_p95_ms": 15.0, "sla_compliance": 0.999,
                 "usd_per_mtok": 0.0191},
        }},
        "failover": {"requests": 10000, "lost": 0},
    }
    for path, value in over.items():
        node = out
        *parents, leaf = path.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    for row in out["overhead"]["targets"].values():  # as bench/run.py derives them
        for k in ("open", "open_stream"):
            d = out["overhead"]["targets"]["direct"][k]
            row[k]["added_p50_ms"] = round(row[k]["p50_ms"] - d["p50_ms"], 3)
            row[k]["added_p99_ms"] = round(row[k]["p99_ms"] - d["p99_ms"], 3)
    return out


def _verdicts(out) -> dict[str, tuple[str, bool | None, str]]:
    return {name: (measured, met, margin) for name, measured, met, margin in report.goals(out)}


def test_every_goal_of_issue_11_is_judged():
    v = _verdicts(_results())
    assert len(v) == 10
    assert v["throughput >= 20x litellm"][1] is True  # 2000 / 80 = 25x
    assert v["throughput >= 0.5x vllm-router"][:2] == ("0.67x", True)
    assert v["added latency p50 <= 1 ms at 500 req/s (non-streaming)"][1] is True  # 0.5 ms
    assert v["added latency p99 <= 5 ms at 500 req/s (streaming)"][1] is False  # 6 ms
    assert v["added latency p99 <= 5 ms at 500 req/s (streaming)"][2] == "+1.000 ms vs goal"
    assert v["TTFT p95 >= 2x better than round-robin (prefix-affinity)"][:2] == ("2.50x", True)
    assert v["0 requests lost on a backend kill"][1] is True


def test_missed_goals_say_by_how_much():
    out = _results(failover__lost=3)
    out["overhead"]["targets"]["fleet_router"]["closed"]["rps"] = 1200  # 0.4x vllm-router
    v = _verdicts(out)
    assert v["throughput >= 0.5x vllm-router"] == ("0.40x", False, "-20% vs goal")
    assert v["0 requests lost on a backend kill"][:2] == ("3 lost of 10000", False)


def test_a_peer_at_the_load_generators_ceiling_makes_the_ratio_an_upper_bound():
    out = _results()
    out["overhead"]["targets"]["vllm-router"]["closed"]["rps"] = 4900  # ~ direct's 5000
    measured, met, margin = _verdicts(out)["throughput >= 0.5x vllm-router"]
    assert "upper bound" in margin


def test_cheap_but_slower_fleet_does_not_pass_the_cost_goal():
    """The saving counts only for a policy within a point of the NVIDIA-only SLA compliance."""
    out = _results()
    good = _verdicts(out)["cost/Mtok >= 35% below NVIDIA-only at the same SLA compliance (within 1 point)"]
    assert good[1] is True and "cost-aware" in good[0]
    worse = copy.deepcopy(out)
    for name, row in worse["routing"]["rows"].items():
        if name.startswith("fleet_router"):
            row["sla_compliance"] = 0.95
    bad = _verdicts(worse)["cost/Mtok >= 35% below NVIDIA-only at the same SLA compliance (within 1 point)"]
    assert bad[1] is False and "no fleet_router policy reached" in bad[0]


def test_the_committed_results_are_a_complete_run():
    """bench/results/ holds a real run of every phase, and its Markdown matches its JSON."""
    path = ROOT / "bench" / "results" / "results.json"
    if not path.exists():
        pytest.fail("bench/results/results.json is missing: run `make bench` and commit the results")
    out = json.loads(path.read_text())
    assert {"overhead", "routing", "failover"} <= set(out)
    assert {"direct", "fleet_router", "vllm-router", "litellm"} <= set(out["overhead"]["targets"])
    assert len(out["routing"]["rows"]) == 7
    md = (ROOT / "bench" / "results" / "results.md").read_text()
    for name, measured, met, _ in report.goals(out):
        assert f"| {name} | {measured} |" in md
    for png in ("overhead.png", "routing.png", "failover.png"):
        assert (ROOT / "bench" / "results" / png).stat().st_size > 10_000
