"""The offline plan: what a newcomer runs first. Deterministic, readable, and strict on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fleetctl.plan import ROOT, SECRET, read_stack_config, run_plan, write_plan

from conftest import plan_of


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def stack_file(tmp_path: Path, mutate=None, extra_config: dict | None = None, name="Pulumi.test.yaml") -> Path:
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    if mutate:
        mutate(doc["config"]["inference-fleet:fleet"])
    doc["config"].update(extra_config or {})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def test_dev_plan_writes_plan_json_and_manifests(tmp_path):
    proc = run_cli("plan", "--stack", "dev", "--out", str(tmp_path))
    # The shipped dev stack has no mandatory policy violation: exit 1 here is a regression.
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((tmp_path / "plan.json").read_text())
    assert doc["stack"] == "dev" and doc["project"] == "inference-fleet"
    urns = [r["urn"] for r in doc["resources"]]
    assert urns == sorted(urns) and len(urns) == len(set(urns))
    for r in doc["resources"]:
        assert {"urn", "type", "name", "parent", "provider", "dependencies", "inputs"} <= set(r)
    manifests = sorted((tmp_path / "manifests").rglob("*.yaml"))
    assert manifests
    # libyaml: the charts' CRDs under manifests/<cluster>/<release>/ are megabytes each
    kinds = {yaml.load(p.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))["kind"] for p in manifests}
    assert "Namespace" in kinds
    assert "resources" in proc.stdout and "planned offline in" in proc.stdout


@pytest.mark.parametrize("stack", ["dev", "multicloud"])
def test_plan_output_is_byte_identical_for_the_same_input(tmp_path, stack):
    # Two processes with different hash seeds: set and dict-of-set ordering, random names or ids
    # would differ between them (one process repeating itself would not show it).
    a, b = tmp_path / "a", tmp_path / "b"
    for out, seed in ((a, "1"), (b, "2")):
        proc = subprocess.run([sys.executable, "-m", "fleet", "plan", "--stack", stack, "--out", str(out)],
                              cwd=ROOT, capture_output=True, text=True, timeout=240,
                              env={**os.environ, "PYTHONHASHSEED": seed})
        assert proc.returncode == 0, proc.stderr
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_bad_config_exits_2_with_one_line_per_problem_and_no_traceback(tmp_path):
    path = stack_file(tmp_path, lambda f: f["pools"][0].update(max_nodes="many"))
    proc = run_cli("plan", "--stack", "test", "--config-file", str(path), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: Pulumi.test.yaml: fleet.pools[0].max_nodes: "
        "Input should be a valid integer, unable to parse string as an integer")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists(), "nothing is written for a bad config"


def test_missing_stack_file_is_a_clear_error():
    proc = run_cli("plan", "--stack", "nosuchstack")
    assert proc.returncode == 2
    assert "Pulumi.nosuchstack.yaml not found" in proc.stderr and "Traceback" not in proc.stderr


def test_invalid_yaml_is_a_clear_error(tmp_path):
    path = tmp_path / "Pulumi.broken.yaml"
    path.write_text("config:\n  inference-fleet:fleet: [unclosed\n")
    proc = run_cli("plan", "--stack", "broken", "--config-file", str(path))
    assert proc.returncode == 2 and "not valid YAML" in proc.stderr


def test_secure_config_values_are_masked_and_never_written(tmp_path):
    path = stack_file(tmp_path, extra_config={
        "inference-fleet:hfToken": {"secure": "AAABAHF0b2tlbi1jaXBoZXJ0ZXh0"},
        "inference-fleet:routerApiKeys": {"secure": "AAABAHJvdXRlci1rZXlz"},
    })
    cfg = read_stack_config("test", path)
    assert cfg.values["inference-fleet:hfToken"] == SECRET
    plan = run_plan("test", path)
    out = tmp_path / "out"
    write_plan(plan, out)
    text = "\n".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert "AAABAHF0b2tlbi1jaXBoZXJ0ZXh0" not in text and "AAABAHJvdXRlci1rZXlz" not in text
    assert plan.outputs["kubeconfigs"] == SECRET


def test_under_pulumi_up_a_bad_spec_is_a_run_error_not_a_traceback():
    """`pulumi up` runs __main__.py directly: the spec error surfaces as pulumi.RunError."""
    import pulumi
    from pulumi.runtime import config as pulumi_config

    import program

    bad = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]["inference-fleet:fleet"]
    bad["tiers"][0]["backends"][0]["weight"] = 1
    pulumi_config.set_all_config({"inference-fleet:fleet": json.dumps(bad)}, [])
    previous, program.PLAN_SOURCE = program.PLAN_SOURCE, "Pulumi.dev.yaml"
    try:
        with pytest.raises(pulumi.RunError, match=r"Pulumi.dev.yaml: fleet.tiers\[0\].backends: .*sum to 11"):
            program.read_spec()
    finally:
        program.PLAN_SOURCE = previous


def test_every_resource_below_the_stack_is_parented_to_a_component():
    plan = plan_of("dev")
    stack_urn = next(r["parent"] for r in plan.resources if r["parent"].endswith("::inference-fleet-dev"))
    top_level = [r for r in plan.resources if r["parent"] == stack_urn]
    assert top_level and all(not r["custom"] for r in top_level), [r["name"] for r in top_level if r["custom"]]


def test_every_kubernetes_object_names_itself_and_uses_a_cluster_provider():
    plan = plan_of("dev")
    for path, obj in plan.manifests.items():
        assert obj["metadata"].get("name"), path
        assert not path.startswith("default/"), f"{path} uses the ambient default provider"


def test_every_topology_the_spec_accepts_has_a_row_in_the_stacks_table():
    # A topology the spec accepts but `stacks.TOPOLOGIES` lacks would pass validation and then fail
    # `pulumi up` with a KeyError; one the table has but the spec refuses could never be selected.
    import typing

    from fleet.spec import Topology
    from stacks import TOPOLOGIES

    assert set(typing.get_args(Topology)) == set(TOPOLOGIES)


def test_fleet_plan_reports_a_topologys_refusal_as_bad_input_in_one_line(tmp_path):
    """The multicloud topology needs every remote cluster's gateway hostname (stacks/multicloud.problems):
    the program raises pulumi.RunError, and `fleet plan` says so as bad input, naming the field."""
    # The multicloud spec as one stack file (the shipped one is a stack set: fleets/multicloud.yaml).
    doc = {"config": {"inference-fleet:fleet": yaml.safe_load((ROOT / "fleets" / "multicloud.yaml").read_text())["fleet"]}}
    fleet = doc["config"]["inference-fleet:fleet"]
    home = fleet["router"]["cluster"]
    remote = next(i for i, c in enumerate(fleet["clusters"]) if c["name"] != home)
    del fleet["clusters"][remote]["gateway_hostname"]
    path = tmp_path / "Pulumi.multicloud.yaml"
    path.write_text(yaml.safe_dump(doc))
    p = subprocess.run([sys.executable, "-m", "fleet", "plan", "--stack", "multicloud", "--config-file", str(path),
                        "--no-charts", "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    [line] = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert f"fleet.clusters[{remote}].gateway_hostname" in line and "needs a gateway_hostname" in line
    assert not (tmp_path / "out" / "plan.json").exists()  # nothing half-written


def test_planning_again_into_the_same_directory_leaves_exactly_the_new_plan(tmp_path):
    # write_plan rewrites files in place and removes only what the new plan no longer has: the
    # result is what a fresh directory gets, stale objects and emptied folders gone.
    plan = plan_of("dev")
    fresh, reused = tmp_path / "fresh", tmp_path / "reused"
    write_plan(plan, fresh)
    write_plan(plan, reused)
    stale = reused / "manifests" / "local-k8s" / "gone-release" / "Deployment_x_gone.yaml"
    stale.parent.mkdir(parents=True)
    stale.write_text("kind: Deployment\n")
    kept = next((reused / "manifests").rglob("Namespace_*.yaml"))
    kept.write_text("kind: Edited\n")
    # Same size, other bytes: an unchanged-looking file is compared by content, not size or mtime.
    same_size = next((reused / "manifests").rglob("Service_*.yaml"))
    text = same_size.read_text()
    same_size.write_text(text.replace("apiVersion: v1", "apiVersion: v2", 1))
    assert same_size.read_text() != text and same_size.stat().st_size == len(text.encode())
    (reused / "plan.json").write_text("{}\n")
    write_plan(plan, reused)
    files = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(reused) for p in reused.rglob("*") if p.is_file())
    assert all((fresh / rel).read_bytes() == (reused / rel).read_bytes() for rel in files)
    assert not stale.parent.exists()


def test_make_plan_on_a_clone_with_no_chart_cache_still_prints_the_dev_plan_and_names_the_missing_chart(tmp_path):
    # `make plan` runs `fleet plan --stack dev --charts-if-cached`: a first clone, before any
    # `fleet charts pull`, gets the program's plan and is told which chart is missing, where plain
    # `fleet plan` refuses (exit 2) rather than report charts it could not check.
    env = {**os.environ, "FLEET_CHARTS_DIR": str(tmp_path / "no-charts"), "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def plan(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fleet", "plan", "--stack", "dev", "--out", str(tmp_path / "out"),
                               *extra], cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)

    refused = plan()
    assert refused.returncode == 2 and "is not in the chart cache" in refused.stderr
    assert not (tmp_path / "out" / "plan.json").exists()
    first = plan("--charts-if-cached")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "is not in the chart cache" in first.stderr and "python -m fleet charts pull" in first.stderr
    assert "charts: not rendered (not in the chart cache): chart objects were not checked" in first.stdout
    assert json.loads((tmp_path / "out" / "plan.json").read_text())["charts"]["rendered"] is None
    make_plan = (ROOT / "Makefile").read_text().split("\nplan: setup\n")[1].split("\n")[0]
    assert make_plan.split() == ["$(PY)", "-m", "fleet", "plan", "--stack", "dev", "--charts-if-cached"]
