"""fleet verify on the command line: one line per finding, --json, exit 0 / 1 / 2, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from verify_fixtures import edit, plan_copy

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", "verify", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_findings_exit_1_one_line_each_and_json_lists_them(tmp_path):
    d = plan_copy("dev", tmp_path, charts=False)
    edit(d, "local-k8s", "Role", "fleet-inference", "nvidia-h100-epp",
         lambda doc: doc["rules"].__setitem__(slice(None), [r for r in doc["rules"] if "pods" not in r["resources"]]))
    r = run("--plan-dir", str(d))
    assert r.returncode == 1, r.stderr
    lines = [x for x in r.stdout.splitlines() if x.startswith("identity: Role/fleet-inference/nvidia-h100-epp")]
    pods = [x for x in lines if "pods.core" in x]
    assert pods and "; fix: grant" in pods[0] and "(manifests/local-k8s/Role_fleet-inference_nvidia-h100-epp.yaml)" in pods[0]
    j = run("--plan-dir", str(d), "--json")
    assert j.returncode == 1
    doc = json.loads(j.stdout)
    assert doc["count"] == len(doc["findings"]) >= 1
    hit = [f for f in doc["findings"] if f["object"] == "Role/fleet-inference/nvidia-h100-epp"]
    assert hit and set(hit[0]) == {"check", "cluster", "object", "file", "problem", "fix"}


def test_missing_plan_dir_and_broken_yaml_exit_2_with_a_clear_error(tmp_path):
    r = run("--plan-dir", str(tmp_path / "nowhere"))
    assert r.returncode == 2 and "no plan.json" in r.stderr and "Traceback" not in r.stderr
    d = plan_copy("dev", tmp_path, charts=False)
    bad = next((d / "manifests" / "local-k8s").glob("Role_*.yaml"))
    bad.write_text("kind: Role\nmetadata: [unclosed\n")
    r = run("--plan-dir", str(d))
    assert r.returncode == 2 and bad.name in r.stderr and "not valid YAML" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_list_document_and_nested_chart_folders_are_read(tmp_path):
    d = plan_copy("dev", tmp_path, charts=False)
    role = next((d / "manifests" / "local-k8s").glob("Role_fleet-inference_nvidia-h100-epp.yaml"))
    doc = yaml.safe_load(role.read_text())
    doc["rules"] = []
    role.unlink()
    nested = d / "manifests" / "local-k8s" / "some-release" / "deeper"
    nested.mkdir(parents=True)
    (nested / "all.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": [doc]}))
    r = run("--plan-dir", str(d), "--json")
    hit = [f for f in json.loads(r.stdout)["findings"] if f["object"] == "Role/fleet-inference/nvidia-h100-epp"]
    assert hit and hit[0]["file"] == "manifests/local-k8s/some-release/deeper/all.yaml"


def test_plan_prints_and_writes_the_verify_result(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fleet", "plan", "--stack", "dev", "--out", str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads((tmp_path / "verify.json").read_text())
    assert doc["stack"] == "dev" and doc["count"] == len(doc["findings"])
    assert f"verify: {doc['count']} findings" in r.stdout


def test_unrendered_helm_releases_are_named_in_a_note(tmp_path):
    bare = plan_copy("dev", tmp_path / "bare", charts=False)
    r = run("--plan-dir", str(bare))
    assert "Helm release(s) have no rendered objects" in r.stdout and "local-platform-keda" in r.stdout
    rendered = plan_copy("dev", tmp_path / "rendered")  # the charts the checks place and connect, rendered
    r = run("--plan-dir", str(rendered))
    assert "local-platform-keda" not in r.stdout.split("note:", 1)[-1]


@pytest.mark.parametrize("stack", ["azure", "multicloud"])
def test_the_plan_in_memory_verifies_as_the_directory_it_wrote(tmp_path, stack):
    # `fleet plan` and `fleet verify --stack` verify the objects they hold instead of parsing back
    # the thousand files they just wrote: the same objects, files and findings.
    from conftest import plan_of
    from fleetctl import verify
    from fleetctl.plan import write_plan

    plan = plan_of(stack)
    write_plan(plan, tmp_path)
    disk, memory = verify.load(tmp_path), verify.load_plan(plan, tmp_path)
    assert set(disk.clusters) == set(memory.clusters)
    for name, c in disk.clusters.items():
        # CRDs are read from disk by name only (no check reads their schema); in memory they are whole.
        def objs(cl):
            return [(o.file, o.doc if o.kind != "CustomResourceDefinition" else o.name) for o in cl.objects]
        assert objs(c) == objs(memory.clusters[name]), name
    assert verify.verify(disk) == verify.verify(memory)

