"""The policy pack on whole plans: shipped stacks pass; deliberately bad ones fail with the rule,
the resource and the fix, and `fleet plan` exits 1."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from fleetctl import policy_eval
from fleetctl.plan import ROOT, run_plan

from conftest import SHIPPED_STACKS, plan_of


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_every_shipped_stack_passes_the_mandatory_rules(stack):
    mandatory = [v for v in policy_eval.evaluate(plan_of(stack)) if v.level == policy_eval.MANDATORY]
    assert mandatory == [], "\n".join(f"{v.policy}: {v.name}: {v.message}" for v in mandatory)


def _bad_stack(tmp_path, mutate, base="dev"):
    doc = yaml.safe_load((ROOT / f"Pulumi.{base}.yaml").read_text())
    mutate(doc["config"]["inference-fleet:fleet"])
    path = tmp_path / "Pulumi.bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_single_router_replica_fails_the_router_rule(tmp_path):
    path = _bad_stack(tmp_path, lambda f: f["router"].update(replicas=1))
    found = policy_eval.evaluate(run_plan("bad", path))
    assert {v.policy for v in found if v.level == policy_eval.MANDATORY} == {"router-highly-available"}
    assert any("fewer than 2 replicas" in v.message for v in found)


def test_fleet_plan_exits_1_naming_rule_resource_and_fix(tmp_path):
    path = _bad_stack(tmp_path, lambda f: f["router"].update(replicas=1))
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "fleet", "plan", "--stack", "bad", "--config-file", str(path),
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "[router-highly-available]" in proc.stderr and "router-deployment" in proc.stderr
    assert "fix: Set router.replicas >= 2" in proc.stderr
    report = json.loads((out / "policy.json").read_text())
    assert report["mandatory"] >= 1 and (out / "policy.md").read_text().startswith("# Policy report")


def test_an_on_demand_h100_pool_at_min_8_fails_the_cost_rules(tmp_path):
    def mutate(f):
        f.update(topology="gcp", clusters=[{"name": "gke", "cloud": "gcp", "region": "us-central1",
                                            "gateway_hostname": "gw.example.com"}], tiers=[])
        f["pools"] = [{"name": "h100", "cluster": "gke", "accelerator": "h100", "spot": False,
                       "min_nodes": 8, "max_nodes": 8}]
        f["models"] = [{**f["models"][0], "pools": ["h100"]}]
    found = policy_eval.evaluate(run_plan("bad", _bad_stack(tmp_path, mutate)))
    rules = {v.policy for v in found if v.level == policy_eval.MANDATORY}
    assert {"accelerator-pools-spot-or-zero", "pool-monthly-cost-ceiling"} <= rules


def test_a_cloud_router_without_api_keys_is_flagged_until_keys_are_set(tmp_path):
    """The shipped gcp stack plans without `routerApiKeys`: the pack warns; with the secret set the
    router's config points at the hashed keys file and the warning is gone."""
    doc = yaml.safe_load((ROOT / "Pulumi.gcp.yaml").read_text())
    path = tmp_path / "Pulumi.keys.yaml"
    path.write_text(yaml.safe_dump(doc))
    without = [v for v in policy_eval.evaluate(run_plan("keys", path)) if v.policy == "router-requires-api-keys"]
    assert without and without[0].level == policy_eval.ADVISORY and "gcp pools without API keys" in without[0].message

    doc["config"]["inference-fleet:routerApiKeys"] = {"secure": "v1:AAAAAAAAAAAAAAAA:offline-test"}
    path.write_text(yaml.safe_dump(doc))
    plan = run_plan("keys", path)
    assert [v for v in policy_eval.evaluate(plan) if v.policy == "router-requires-api-keys"] == []
    configs = [o for o in plan.objects("ConfigMap") if "config.yaml" in o.get("data", {})
               and o["metadata"]["namespace"] == "fleet-router"]
    assert configs and yaml.safe_load(configs[0]["data"]["config.yaml"])["auth"]["api_key_hashes_file"]
