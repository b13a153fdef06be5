"""`python -m fleet cost`: the money each pool and stack moves, and the seeds' tables reproduced."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import ROOT, SHIPPED_STACKS, fleet_raw
from fleet import catalog
from fleetctl import cli
from fleet.cost import blend, render_markdown, stack_cost
from fleet.spec import load_spec

# Seed 002: one T4 spot node per cloud, 24/7.
SEED_002 = {
    "topology": "multicloud",
    "clusters": [
        {"name": "aws-t4", "cloud": "aws", "region": "us-east-1", "system_nodes": 1},
        {"name": "azure-t4", "cloud": "azure", "region": "eastus", "system_nodes": 1},
        {"name": "gcp-t4", "cloud": "gcp", "region": "us-central1", "system_nodes": 1},
    ],
    "pools": [
        {"name": "t4aws", "cluster": "aws-t4", "accelerator": "t4", "min_nodes": 1, "max_nodes": 1},
        {"name": "t4azure", "cluster": "azure-t4", "accelerator": "t4", "min_nodes": 1, "max_nodes": 1},
        {"name": "t4gcp", "cluster": "gcp-t4", "accelerator": "t4", "min_nodes": 1, "max_nodes": 1},
    ],
}

# Seed 000: H100 ~$2.00/h vs MI300X ~$0.50/h per accelerator; a 60 % AMD / 40 % NVIDIA mix.
SEED_000_MIX = {
    "topology": "multicloud",
    "clusters": [
        {"name": "aws-east", "cloud": "aws", "region": "us-east-1"},
        {"name": "azure-east", "cloud": "azure", "region": "eastus"},
    ],
    "pools": [
        {"name": "nvidia-h100", "cluster": "aws-east", "accelerator": "h100", "max_nodes": 2},
        {"name": "amdmi300x", "cluster": "azure-east", "accelerator": "mi300x", "max_nodes": 2},
    ],
    "tiers": [
        {"name": "mix", "backends": [{"pool": "amdmi300x", "weight": 60}, {"pool": "nvidia-h100", "weight": 40}]},
    ],
}


def _cost(fleet: dict[str, Any]):
    return stack_cost(load_spec(json.loads(json.dumps(fleet)), "test"), "test")


def test_seed_002_one_t4_spot_node_per_cloud_costs_114_151_201_a_month():
    report = _cost(SEED_002)
    monthly = {p.cloud: p.monthly["typical"] for p in report.pools if p.kind == "accelerator"}
    assert {c: round(v) for c, v in monthly.items()} == {"aws": 114, "azure": 151, "gcp": 201}
    assert {p.machine for p in report.pools if p.kind == "accelerator"} == {
        "g4dn.xlarge", "Standard_NC4as_T4_v3", "n1-standard-4"}
    assert round(sum(monthly.values())) == 466  # seed 002's "Total: ~$466/month"


def test_seed_002_cpu_nodes_are_21_a_month_at_spot_and_run_on_demand():
    report = _cost(SEED_002)
    system = [p for p in report.pools if p.kind == "system"]
    assert len(system) == 3
    # Seed 002's ~$21/month per CPU node is the spot price; system pools here run on demand.
    assert [round(catalog.monthly(p.spot_hourly)) for p in system] == [21, 21, 21]
    assert round(sum(catalog.monthly(p.spot_hourly) for p in system)) == 63
    assert all(not p.spot and p.monthly["typical"] == pytest.approx(catalog.monthly(p.on_demand_hourly))
               for p in system)


def test_seed_000_h100_and_mi300x_price_per_accelerator_hour():
    report = _cost(SEED_000_MIX)
    assert report.pool("nvidia-h100").usd_per_accelerator_hour == pytest.approx(2.00)
    assert report.pool("amdmi300x").usd_per_accelerator_hour == pytest.approx(0.50)


def test_seed_000_sixty_forty_amd_nvidia_mix_cuts_cost_45_percent():
    (tier,) = _cost(SEED_000_MIX).tiers
    assert tier.baseline_pool == "nvidia-h100"
    assert tier.usd_per_accelerator_hour == pytest.approx(0.6 * 0.50 + 0.4 * 2.00)
    assert tier.reduction_pct == pytest.approx(45.0)


def test_blend_weights_are_shares_of_traffic():
    blended, base, reduction, _, _ = blend({"a": 90, "b": 10}, {"a": 2.0, "b": 0.5})
    assert (round(blended, 4), base, round(reduction, 4)) == (1.85, "a", 7.5)
    with pytest.raises(ValueError):
        blend({"a": 0}, {"a": 1.0})


def test_typical_defaults_to_the_midpoint_and_the_spec_overrides_it():
    fleet = json.loads(json.dumps(SEED_000_MIX))
    fleet["pools"][0].update(min_nodes=0, max_nodes=3)
    fleet["pools"][1].update(min_nodes=1, max_nodes=3, typical_nodes=2.5)
    report = _cost(fleet)
    h100, mi = report.pool("nvidia-h100"), report.pool("amdmi300x")
    assert (h100.nodes, h100.typical_from) == ({"min": 0, "typical": 1.5, "max": 3}, "midpoint")
    assert (mi.nodes, mi.typical_from) == ({"min": 1, "typical": 2.5, "max": 3}, "spec")
    node = catalog.monthly(16.00)  # p5.48xlarge at spot
    assert [h100.monthly[s] for s in ("min", "typical", "max")] == pytest.approx([0, 1.5 * node, 3 * node])
    assert "0 / 1.5 / 3*" in render_markdown(report)


def test_on_demand_pool_pays_list_price_and_saves_nothing():
    fleet = json.loads(json.dumps(SEED_002))
    fleet["pools"][0].update(spot=False, reserved_reason="steady daytime load on one node")
    report = _cost(fleet)
    spot, on_demand = report.pool("t4azure"), report.pool("t4aws")
    assert on_demand.node_hourly == pytest.approx(0.526)
    assert on_demand.spot_savings_monthly["max"] == 0
    assert spot.spot_savings_monthly["max"] == pytest.approx(catalog.monthly(0.526 - 0.2068))
    assert report.spot_savings["max"] == pytest.approx(
        sum(p.spot_savings_monthly["max"] for p in report.pools))


def test_price_per_million_tokens_is_the_catalogs_at_the_billed_price():
    report = _cost(SEED_000_MIX)
    h100 = report.pool("nvidia-h100")
    assert h100.usd_per_million_tokens == pytest.approx(
        catalog.cost_per_million_tokens(16.00, 8, "h100"))
    assert h100.usd_per_million_tokens == pytest.approx(16.00 / (2500 * 8 * 3600) * 1e6)


def test_stack_totals_add_up_pools_at_every_scale():
    report = _cost(SEED_000_MIX)
    for scale in ("min", "typical", "max"):
        assert report.totals[scale] == pytest.approx(sum(p.monthly[scale] for p in report.pools))
        assert report.on_demand_totals[scale] >= report.totals[scale]


def test_budget_ceilings_flag_what_is_over_at_max_scale():
    fleet = json.loads(json.dumps(SEED_000_MIX))
    fleet["budget"] = {"monthly_max_usd": 10_000, "pool_monthly_max_usd": 20_000}
    report = _cost(fleet)
    assert report.budget["stack_within"] is False
    assert report.budget["pools_over"] == ["nvidia-h100"]  # 2 x $11,680 at max
    assert "**over**: nvidia-h100" in render_markdown(report)


def test_dev_stack_bills_nothing(capsys):
    assert cli.main(["cost", "--stack", "dev", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["totals"] == {"min": 0, "typical": 0, "max": 0}
    assert {p["billed"] for p in doc["pools"]} == {False}
    assert all(p["usd_per_million_tokens"] > 0 for p in doc["pools"] if p["kind"] == "accelerator")


def test_cost_markdown_has_a_row_per_pool_and_a_total(tmp_path, capsys):
    path = Path(tmp_path) / "Pulumi.seed002.yaml"
    path.write_text(yaml.safe_dump({"config": {"inference-fleet:fleet": SEED_002}}))
    assert cli.main(["cost", "--stack", "seed002", "--config-file", str(path)]) == 0
    text = capsys.readouterr().out
    rows = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert rows[0].startswith("| pool | cluster | machine |")
    body = rows[1:]
    assert len([r for r in body if "(system)" in r]) == 3
    assert any(r.startswith("| t4gcp | gcp-t4 | n1-standard-4 (1× t4) | yes | 1 / 1 / 1 | $0.28 | $200.97 |")
               for r in body)
    assert body[-1].startswith("| **total** |")


def test_bad_stack_file_is_bad_input(tmp_path, capsys):
    path = Path(tmp_path) / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump({"config": {"inference-fleet:fleet": {"topology": "gcp", "clusters": []}}}))
    assert cli.main(["cost", "--stack", "bad", "--config-file", str(path)]) == 2
    assert "fleet.clusters" in capsys.readouterr().err


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_every_shipped_stack_is_priced(stack):
    from fleetctl.cost import cost_of_stack

    report = cost_of_stack(stack)
    assert {p.pool for p in report.pools if p.kind == "accelerator"} == {
        p.name for p in load_spec(_fleet_of(stack), stack).pools}
    assert report.totals["min"] <= report.totals["typical"] <= report.totals["max"]


def _fleet_of(stack: str) -> Any:
    return fleet_raw(stack)


# --- what the first mutation run (make mutation) showed no test would notice --------------------------

def test_a_tier_blend_also_prices_each_token_against_the_dearest_backend():
    # Seed 000's mix per generated token: the pools' own $/Mtok, weighted by traffic.
    report = _cost(SEED_000_MIX)
    (tier,) = report.tiers
    h100, mi = report.pool("nvidia-h100").usd_per_million_tokens, report.pool("amdmi300x").usd_per_million_tokens
    assert tier.tier == "mix" and tier.weights == {"amdmi300x": 60, "nvidia-h100": 40}
    assert tier.usd_per_million_tokens == pytest.approx(0.6 * mi + 0.4 * h100)
    assert tier.baseline_usd_per_million_tokens == pytest.approx(h100)
    assert tier.baseline_usd_per_accelerator_hour == pytest.approx(2.00)
    assert tier.reduction_per_token_pct == pytest.approx(100 * (1 - (0.6 * mi + 0.4 * h100) / h100))


def test_blend_per_token_and_its_edges():
    _, base, _, tok, tok_red = blend({"a": 60, "b": 40}, {"a": 0.5, "b": 2.0}, {"a": 1.0, "b": 4.0})
    assert (base, tok, tok_red) == ("b", pytest.approx(2.2), pytest.approx(45.0))
    assert blend({"a": 1}, {"a": 2.0}) == (2.0, "a", 0.0, None, None)  # one backend: no saving, no token price
    # Nothing to save against a free baseline (local pools), per hour or per token.
    assert blend({"a": 1, "b": 1}, {"a": 0.0, "b": 0.0}, {"a": 0.0, "b": 0.0})[2:] == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="weights must sum to more than 0"):
        blend({"a": 0, "b": 0}, {"a": 1.0, "b": 1.0})


def test_a_zero_weight_backend_takes_no_traffic_and_is_no_baseline():
    fleet = json.loads(json.dumps(SEED_000_MIX))
    fleet["tiers"][0]["backends"] = [{"pool": "amdmi300x", "weight": 100}, {"pool": "nvidia-h100", "weight": 0}]
    (tier,) = _cost(fleet).tiers
    assert tier.weights == {"amdmi300x": 100}
    assert (tier.baseline_pool, tier.reduction_pct) == ("amdmi300x", 0.0)


def test_system_pools_run_on_demand_on_each_clouds_system_machine():
    report = _cost(SEED_002)
    system = {p.cluster: p for p in report.pools if p.kind == "system"}
    assert set(system) == {"aws-t4", "azure-t4", "gcp-t4"}
    for cluster, p in system.items():
        machine = catalog.SYSTEM_MACHINES[p.cloud]
        assert p.pool == f"{cluster}-system" and p.cloud == cluster.split("-")[0]
        assert (p.machine, p.accelerator, p.accelerators_per_node, p.spot) == (machine.name, None, 0, False)
        assert p.node_hourly == p.on_demand_hourly == machine.price.on_demand
        assert p.spot_hourly == machine.price.spot and p.price_source == machine.price.source
        assert p.nodes == {"min": 1, "typical": 1, "max": 1} and p.typical_from == "fixed"
        assert p.monthly == p.on_demand_monthly == {s: catalog.monthly(machine.price.on_demand) for s in p.monthly}
        assert p.spot_savings_monthly == {"min": 0, "typical": 0, "max": 0}
        assert (p.usd_per_accelerator_hour, p.usd_per_million_tokens) == (None, None)


def test_an_accelerator_pool_reports_both_prices_and_where_they_come_from():
    p = _cost(SEED_002).pool("t4aws")
    assert p.node_hourly == p.spot_hourly == pytest.approx(0.1562) and p.on_demand_hourly == pytest.approx(0.526)
    assert p.on_demand_monthly["max"] == pytest.approx(catalog.monthly(0.526))
    assert p.price_source.startswith("seed 002")  # where the price was read (fleet/catalog.py)
    assert (p.typical_from, p.kind, p.cluster, p.cloud) == ("fixed", "accelerator", "aws-t4", "aws")


def test_nothing_local_is_billed_not_even_on_demand():
    report = stack_cost(load_spec(yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"][
        "inference-fleet:fleet"], "Pulumi.dev.yaml"), "dev")
    for p in report.pools:
        assert p.node_hourly == 0 and set(p.monthly.values()) == set(p.on_demand_monthly.values()) == {0}, p.pool
        assert set(p.spot_savings_monthly.values()) == {0}, p.pool
    assert report.on_demand_totals == report.spot_savings == {"min": 0, "typical": 0, "max": 0}


def test_the_json_report_carries_every_pool_and_tier_rounded():
    report = _cost(SEED_000_MIX)
    doc = json.loads(report.to_json())
    assert doc["stack"] == "test" and doc["hours_per_month"] == catalog.HOURS_PER_MONTH
    assert [p["pool"] for p in doc["pools"]] == [p.pool for p in report.pools]
    assert doc["tiers"][0]["reduction_pct"] == round(report.tiers[0].reduction_pct, 4) == 45.0
    assert doc["totals"]["max"] == round(report.totals["max"], 4)
