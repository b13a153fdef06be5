"""Secrets fail closed: what a deploy cannot work without is required under the Pulumi engine, and
listed — by name, with the command that sets it — by the offline plan, its reports and `--strict`."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, plan_of
from fleetctl.plan import run_plan

# What an encrypted value looks like in a stack file (`pulumi config set --secret` writes `secure:`).
SET = {"secure": "v1:AAAAAAAAAAAAAAAA:offline-test"}


def _stack_file(tmp_path, stack: str, **secrets) -> str:
    doc = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    for key in secrets:
        doc["config"][f"inference-fleet:{key}"] = SET
    path = tmp_path / f"Pulumi.{stack}-secrets.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_a_cloud_stack_without_secrets_lists_each_missing_one_with_its_command():
    # gcp: the router runs on GKE behind a public Gateway; llama-3.1-8b is a gated meta-llama repo.
    missing = {m["key"]: m for m in plan_of("gcp").missing_secrets}
    assert set(missing) == {"routerApiKeys", "hfToken"}
    assert missing["routerApiKeys"]["command"] == "pulumi config set --secret routerApiKeys <value>"
    assert "llama-3.1-8b" in missing["hfToken"]["why"]


def test_the_dev_stack_needs_no_secret():
    # A router on the local cluster and simulators that download nothing.
    assert plan_of("dev").missing_secrets == []


def test_a_set_secret_is_no_longer_listed(tmp_path):
    plan = run_plan("gcp", _stack_file(tmp_path, "gcp", routerApiKeys=True))
    assert [m["key"] for m in plan.missing_secrets] == ["hfToken"]


def test_an_ungated_model_needs_no_token(tmp_path):
    doc = yaml.safe_load((ROOT / "Pulumi.gcp.yaml").read_text())
    models = doc["config"]["inference-fleet:fleet"]["models"]
    for m in models:
        m["gated"] = False
    path = tmp_path / "Pulumi.ungated.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert [m["key"] for m in run_plan("ungated", path).missing_secrets] == ["routerApiKeys"]


def test_plan_strict_fails_on_missing_secrets_and_says_how_to_set_them(tmp_path):
    cmd = [sys.executable, "-m", "fleet", "plan", "--stack", "gcp", "--out", str(tmp_path / "out")]
    lenient = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    strict = subprocess.run([*cmd, "--strict"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert lenient.returncode == 0, lenient.stderr
    assert strict.returncode == 1
    for key in ("routerApiKeys", "hfToken"):
        assert f"pulumi config set --secret {key}" in strict.stderr
    policy = yaml.safe_load((tmp_path / "out" / "policy.json").read_text())
    assert {m["key"] for m in policy["missing_secrets"]} == {"routerApiKeys", "hfToken"}
    assert "Missing secrets (blocking" in (tmp_path / "out" / "policy.md").read_text()


def test_under_the_pulumi_engine_the_same_stack_fails_closed(tmp_path):
    # `pulumi preview` semantics (no offline-plan leniency): Config.require_secret raises Pulumi's own
    # "Missing required configuration variable 'inference-fleet:…'" before anything deploys.
    with pytest.raises(Exception, match=r"inference-fleet:(routerApiKeys|hfToken)"):
        run_plan("gcp", as_engine=True)
    # ... and with both secrets set, the same run goes through.
    plan = run_plan("gcp", _stack_file(tmp_path, "gcp", routerApiKeys=True, hfToken=True), as_engine=True)
    assert plan.missing_secrets == []
