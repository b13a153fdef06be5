"""The router config the IaC generates: catalog prices per replica, the stack's tiers, each pool's
endpoint — and the router's own schema accepts it (one schema, two users)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, plan_of
from fleet import catalog
from fleet.routerconfig import RouterConfigError, replica_cost_per_hour, router_config_data
from fleet.spec import load_spec


def _dev_spec():
    return plan_of("dev").spec


def _endpoints(spec) -> dict[str, str]:
    return {p.name: f"http://127.0.0.1:{9000 + i}" for i, p in enumerate(spec.pools)}


def _spec_with(**changes):
    raw = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]["inference-fleet:fleet"]
    for path, value in changes.items():
        node = raw
        *head, last = path.split(".")
        for part in head:
            node = node[int(part)] if part.isdigit() else node[part]
        node[int(last) if last.isdigit() else last] = value
    return load_spec(raw, "test")


def test_seed_000_prices_come_out_per_accelerator_hour():
    data = router_config_data(_dev_spec(), _endpoints(_dev_spec()))
    cost = {p["name"]: p["cost_per_hour"] for p in data["pools"]}
    # Seed 000: "AMD MI300X ~$0.50/hour vs NVIDIA H100 ~$2.00/hour" (8 per node, spot).
    assert cost["nvidia-h100"] == pytest.approx(2.00)
    assert cost["amd-mi300x"] == pytest.approx(0.50)


def test_on_demand_pools_pay_the_on_demand_price():
    spot, on_demand = _dev_spec(), _spec_with(**{"pools.0.spot": False})
    pool = on_demand.pool("nvidia-h100")
    assert replica_cost_per_hour(on_demand, pool) == pytest.approx(pool.machine.price.on_demand / 8)
    assert replica_cost_per_hour(on_demand, pool) > replica_cost_per_hour(spot, spot.pool("nvidia-h100"))


def test_tensor_parallel_replicas_pay_for_every_accelerator_they_hold():
    spec = _spec_with(**{"models.0.tensor_parallel": 4})
    pool = spec.pool("nvidia-h100")
    assert replica_cost_per_hour(spec, pool) == pytest.approx(pool.machine.price.spot * 4 / 8)
    data = router_config_data(spec, _endpoints(spec))
    tps = {p["name"]: p["tokens_per_second"] for p in data["pools"]}
    assert tps["nvidia-h100"] == catalog.accelerator("h100").tokens_per_second * 4


def test_every_pool_gets_its_endpoint_vendor_and_models():
    spec = _dev_spec()
    eps = _endpoints(spec)
    pools = {p["name"]: p for p in router_config_data(spec, eps)["pools"]}
    assert set(pools) == {p.name for p in spec.pools}
    for p in spec.pools:
        assert pools[p.name]["url"] == eps[p.name]
        assert pools[p.name]["vendor"] == p.vendor
        assert pools[p.name]["models"] == [m.name for m in spec.models_on(p.name)]


def test_tiers_keep_the_stacks_headers_weights_overflow_and_slo():
    spec = _dev_spec()
    tiers = {t["name"]: t for t in router_config_data(spec, _endpoints(spec))["tiers"]}
    premium = tiers["premium"]
    assert premium["match"] == {"X-Priority": "high"}
    assert premium["backends"] == [{"pool": "nvidia-h100", "weight": 90}, {"pool": "amd-mi300x", "weight": 10}]
    assert premium["overflow"] == ["tpu-v6e"] and premium["ttft_slo_ms"] == 500
    assert tiers["default"]["match"] == {}


def test_a_pool_without_an_endpoint_is_an_error_naming_it():
    spec = _dev_spec()
    eps = _endpoints(spec)
    del eps["amd-mi300x"]
    with pytest.raises(RouterConfigError, match="amd-mi300x"):
        router_config_data(spec, eps)


def test_generator_is_pure_no_pulumi_import():
    code = "import sys, fleet.routerconfig; sys.exit('pulumi' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=60).returncode == 0


def test_the_routers_schema_accepts_the_generated_config_and_reads_it_back(tmp_path):
    from fleet_router import config
    from fleet.routerconfig import router_config

    spec = _dev_spec()
    generated = router_config(spec, _endpoints(spec))
    assert isinstance(generated, config.RouterConfig)
    path = tmp_path / "config.yaml"
    path.write_text(generated.to_yaml())
    assert config.load_config(path) == generated


def test_each_pool_gets_backend_timeouts_that_fit_how_vllm_answers():
    # Issue 23 item 2: per pool, from the spec. A non-streaming answer arrives whole at its end, so
    # it gets the spec's request timeout — far longer than a stream waits for its head; a pool in
    # another cloud gets a longer connect than one beside the router. The router accepts the result.
    from fleet_router.config import RouterConfig

    spec = plan_of("multicloud").spec
    data = router_config_data(spec, _endpoints(spec))
    RouterConfig.model_validate(data)
    home = spec.router_cluster().name
    connect = {}
    for p in data["pools"]:
        t = p["timeouts"]
        assert t["response_s"] == spec.router.request_timeout_s
        assert t["response_s"] >= 5 * t["stream_head_s"] and t["stream_idle_s"] >= t["stream_head_s"]
        connect.setdefault(p["cluster"] == home, set()).add(t["connect_s"])
    assert set(connect) == {True, False}  # the plan has pools on both sides
    assert min(connect[False]) > max(connect[True])


def test_pools_are_stream_continuation_targets_unless_the_spec_says_not():
    # Every pool runs vLLM (continue_final_message): a target by default; a pool the spec marks
    # resume: false is never sent a cut stream's continuation (fleet_router.migration).
    spec = _spec_with(**{"pools.0.resume": False})
    from fleet.routerconfig import router_config

    cfg = router_config(spec, _endpoints(spec))
    resume = {p.name: p.resume for p in cfg.pools}
    first = spec.pools[0].name
    assert resume[first] is False and all(v for n, v in resume.items() if n != first) and len(resume) > 1


def test_routing_header_grants_come_from_the_spec_by_key_digest():
    # Issue 23 item 10: only keys the spec names may pick their tier / policy by header; with no
    # grant nobody may (an unlisted key gets the default tier and its policy).
    from fleet.routerconfig import router_config
    from fleet_router.config import RouterConfig

    assert router_config(_dev_spec(), _endpoints(_dev_spec())).auth.routing_headers == {}
    digest = "ab" * 32
    spec = _spec_with(**{"router.routing_headers": {digest: ["tier"]}})
    cfg = router_config(spec, _endpoints(spec), routing_headers={"*": ["policy"]})
    assert cfg.auth.may_set(digest) == {"tier", "policy"} and cfg.auth.may_set("cd" * 32) == {"policy"}
    assert RouterConfig.model_validate(yaml.safe_load(cfg.to_yaml())) == cfg
    with pytest.raises(ValueError, match="sha256"):
        _spec_with(**{"router.routing_headers": {"sk-live-a-real-key": ["tier"]}})
