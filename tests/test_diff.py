"""`python -m fleet diff`: what a reviewer reads on a pull request.

The end-to-end tests build a throwaway git repository from this checkout's files (tracked and
untracked, so the test never depends on this repository's history), commit it as the base,
change the working tree the way a PR would, and diff: both sides are planned offline by the
code in that repository, exactly as the preview workflow does.
"""

from __future__ import annotations

import functools
import json
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from fleet import catalog
from fleetctl import cli
from fleetctl.diff import compare, diff_stack, forces_replace, render_markdown, to_json

GIT_ENV = {"GIT_AUTHOR_NAME": "test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
           "GIT_COMMITTER_NAME": "test", "GIT_COMMITTER_EMAIL": "test@example.invalid"}

# Where each cloud's node-pool autoscaling ceiling lives in the recorded inputs.
CLOUD_CLUSTER_MODULES = {"gcp": "components.gke", "aws": "components.eks", "azure": "components.aks"}


def _git(repo: Path, *args: str) -> str:
    import os

    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout.strip()


@functools.lru_cache(maxsize=1)
def _template(tmp_root: str) -> Path:
    """This checkout's files (tracked + untracked, not ignored), once per session."""
    src = Path(tmp_root) / "template"
    files = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
                           check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    return src


@pytest.fixture
def repo(tmp_path_factory, tmp_path) -> Path:
    """A fresh git repository holding this checkout's files, committed once (the base)."""
    dst = tmp_path / "repo"
    shutil.copytree(_template(str(tmp_path_factory.getbasetemp())), dst)
    _git(dst, "init", "-q", "-b", "main")
    _git(dst, "add", "-A")
    _git(dst, "commit", "-q", "-m", "base")
    return dst


def _edit_fleet(path: Path, edit) -> None:
    doc = yaml.safe_load(path.read_text())
    edit(doc["config"]["inference-fleet:fleet"])
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


# --- end to end ---------------------------------------------------------------------------------------

def test_raising_a_models_max_replicas_updates_exactly_its_scalers(repo, capsys):
    """One spec change, through the CLI: the Markdown names the ScaledObjects and the property."""
    def edit(fleet):
        fleet["models"][0]["max_replicas"] = 3

    _edit_fleet(repo / "Pulumi.dev.yaml", edit)
    out = repo / "review.md"
    assert cli.main(["diff", "--stack", "dev", "--base", "main", "--repo", str(repo), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert out.read_text() == text
    assert text.startswith("<!-- fleet-diff:dev -->\n")
    assert "**3 to update · 0 to replace · 0 to create · 0 to delete**" in text
    scalers = [ln for ln in text.splitlines() if ln.startswith("- ~ **update** `kubernetes:keda.sh/v1alpha1:ScaledObject`")]
    assert len(scalers) == 3
    assert text.count("  - `spec.maxReplicaCount`: `1` → `3`") == 3
    assert "No pool's cost changes." in text


def test_renamed_pool_shows_as_replace_not_create_and_delete(repo):
    dev = repo / "Pulumi.dev.yaml"
    dev.write_text(dev.read_text().replace("amd-mi300x", "amd-instinct"))
    result = diff_stack("dev", "main", repo=repo)
    doc = to_json(result)
    assert result.count("create") == 0 and result.count("delete") == 0
    pool = result.find("local-inference-amd-instinct-pool", "kubernetes:inference.networking.k8s.io/v1:InferencePool")
    assert pool.action == "replace"
    assert pool.old_name == "local-inference-amd-mi300x-pool"
    assert ("metadata.name", "amd-mi300x", "amd-instinct", True) in \
        [(p["path"], p["old"], p["new"], p["forces_replace"])
         for p in next(c for c in doc["changes"] if c["name"] == pool.name)["properties"]]
    # Every resource of the renamed pool is a replace; the routes that merely point at it update.
    for ch in result.changes:
        if ch.old_name:
            assert "amd-mi300x" in ch.old_name and "amd-instinct" in ch.name
    text = render_markdown(result)
    assert "renamed local-inference-amd-mi300x-pool → local-inference-amd-instinct-pool" in text


def test_secrets_stay_masked_in_the_review(repo):
    dev = repo / "Pulumi.dev.yaml"
    ciphertext = "v1:c2VjcmV0LWNpcGhlcnRleHQ=:do-not-print-me"
    dev.write_text(dev.read_text() + f"  inference-fleet:routerApiKeys:\n    secure: {ciphertext}\n")
    result = diff_stack("dev", "main", repo=repo)
    assert result.changes, "router API keys change what the router declares"
    for text in (render_markdown(result), json.dumps(to_json(result))):
        assert "do-not-print-me" not in text and "c2VjcmV0" not in text
    masked = [r["name"] for r in result.head.plan["resources"] if '"[secret]"' in json.dumps(r["inputs"])]
    assert masked, "whatever carries the keys is recorded masked"


def test_a_stack_new_in_the_pr_is_all_creates(repo):
    shutil.copy(repo / "Pulumi.dev.yaml", repo / "Pulumi.scratch.yaml")
    result = diff_stack("scratch", "main", repo=repo)
    assert result.changes and {c.action for c in result.changes} == {"create"}
    assert result.unchanged == 0
    assert "stack `scratch` does not exist at `main`" in render_markdown(result)


def test_unknown_base_ref_is_bad_input(repo, capsys):
    assert cli.main(["diff", "--stack", "dev", "--base", "no-such-ref", "--repo", str(repo)]) == 2
    assert "unknown git ref 'no-such-ref'" in capsys.readouterr().err


def test_a_stack_that_no_longer_plans_is_explained_in_the_review(repo, capsys):
    def edit(fleet):
        fleet["pools"][0]["accelerator"] = "h200"

    _edit_fleet(repo / "Pulumi.dev.yaml", edit)
    out = repo / "review.md"
    assert cli.main(["diff", "--stack", "dev", "--base", "main", "--repo", str(repo), "--out", str(out)]) == 2
    text = out.read_text()
    assert text.startswith("<!-- fleet-diff:dev -->\n")
    assert "does not plan at the working tree" in text
    assert "fleet.pools[0].accelerator: unknown accelerator 'h200'" in text


def _cloud_stack_with_pools() -> str | None:
    for stack in ("gcp", "aws", "azure"):
        path = ROOT / f"Pulumi.{stack}.yaml"
        if path.exists() and importlib.util.find_spec(CLOUD_CLUSTER_MODULES[stack]) is not None:
            return stack
    return None


def test_raising_one_pools_max_nodes_changes_that_node_pool_and_the_max_cost(repo):
    stack = _cloud_stack_with_pools()
    if stack is None:
        pytest.skip("no cloud stack with its cluster component yet (Pulumi.gcp/aws/azure.yaml + components.gke/eks/aks)")
    before = {}

    def edit(fleet):
        pool = next(p for p in fleet["pools"] if not p.get("typical_nodes"))  # midpoint typical
        before.update(pool)
        pool["max_nodes"] = pool["max_nodes"] + 1

    _edit_fleet(repo / f"Pulumi.{stack}.yaml", edit)
    result = diff_stack(stack, "main", repo=repo)
    assert [c.action for c in result.changes] == ["update"], render_markdown(result)
    (change,) = result.changes
    assert before["name"] in change.name or before["name"] in str(change.properties)
    assert [(p.old, p.new) for p in change.properties] == [(before["max_nodes"], before["max_nodes"] + 1)]
    assert not change.properties[0].forces_replace
    # Cost: one more node at max, half a node more at the (midpoint) typical scale, none at min.
    from fleetctl.cost import cost_of_stack

    pool = cost_of_stack(stack, str(repo / f"Pulumi.{stack}.yaml")).pool(before["name"])
    node_month = catalog.monthly(pool.node_hourly)
    d = result.cost_delta["delta"]
    assert d["min"] == pytest.approx(0)
    assert d["typical"] == pytest.approx(node_month / 2)
    assert d["max"] == pytest.approx(node_month)
    assert [p["pool"] for p in result.cost_delta["pools"]] == [before["name"]]


# --- the comparison itself, on plan documents ------------------------------------------------------------

STACK = "urn:pulumi:s::inference-fleet::pulumi:pulumi:Stack::inference-fleet-s"


def _res(typ: str, name: str, inputs: dict, parent: str = STACK, custom: bool = True) -> dict:
    return {"urn": f"urn:pulumi:s::inference-fleet::{typ}::{name}", "type": typ, "name": name, "custom": custom,
            "parent": parent, "provider": "", "dependencies": [], "property_dependencies": {},
            "options": {}, "inputs": inputs}


GKE = "fleet:gke:GkeCluster"
NODE_POOL = "gcp:container/nodePool:NodePool"


def _gke_plan(pool_name: str, machine: str = "n1-standard-4", max_nodes: int = 2) -> dict:
    cluster = _res(GKE, "gcp-central", {}, custom=False)
    pool = _res(NODE_POOL, f"gcp-central-{pool_name}", {
        "name": pool_name, "cluster": "gcp-central", "location": "us-central1",
        "autoscaling": {"minNodeCount": 0, "maxNodeCount": max_nodes},
        "nodeConfig": {"machineType": machine, "spot": True,
                       "labels": {"inference-fleet.io/pool": pool_name, "inference-fleet.io/vendor": "nvidia"},
                       "guestAccelerators": [{"type": "nvidia-tesla-t4", "count": 1}]},
    }, parent=cluster["urn"])
    return {"resources": [cluster, pool]}


def test_a_node_pool_machine_type_change_updates_in_place():
    # terraform-provider-google v7.45.0 node_config.go: machine_type is not ForceNew; nodePoolNodeConfigUpdate
    # resizes the pool's nodes in place (a rolling node update, not a new pool).
    changes, unchanged = compare(_gke_plan("t4"), _gke_plan("t4", machine="n1-standard-8"))
    (ch,) = changes
    assert (ch.action, ch.component, unchanged) == ("update", f"{GKE} gcp-central", 1)
    assert [(p.path, p.old, p.new, p.forces_replace) for p in ch.properties] == [
        ("nodeConfig.machineType", "n1-standard-4", "n1-standard-8", False)]


def test_a_node_pool_spot_change_is_a_replace_citing_its_source():
    # node_config.go: spot is ForceNew.
    new = _gke_plan("t4")
    new["resources"][1]["inputs"]["nodeConfig"]["spot"] = False
    (ch,), _ = compare(_gke_plan("t4"), new)
    assert ch.action == "replace"
    assert ch.reason.startswith("nodeConfig.spot cannot change in place (ForceNew")
    assert "terraform-provider-google google/services/container/node_config.go @ v7.45.0" in ch.reason


def test_a_node_pool_max_change_is_an_update():
    (ch,), _ = compare(_gke_plan("t4"), _gke_plan("t4", max_nodes=3))
    assert ch.action == "update"
    assert [(p.path, p.old, p.new) for p in ch.properties] == [("autoscaling.maxNodeCount", 2, 3)]


def test_a_renamed_node_pool_is_one_replace():
    changes, _ = compare(_gke_plan("t4"), _gke_plan("t4-spot"))
    (ch,) = changes
    assert (ch.action, ch.old_name, ch.name) == ("replace", "gcp-central-t4", "gcp-central-t4-spot")
    assert "name" in [p.path for p in ch.properties]


def test_a_new_pool_of_another_shape_is_a_create_and_a_delete():
    old = _gke_plan("t4")
    new = _gke_plan("h100", machine="a3-highgpu-8g")
    new["resources"][1]["inputs"]["nodeConfig"]["guestAccelerators"] = []
    new["resources"][1]["inputs"]["autoscaling"] = {"minNodeCount": 1, "maxNodeCount": 8}
    new["resources"][1]["inputs"]["location"] = "us-east5"
    assert sorted(c.action for c in compare(old, new)[0]) == ["create", "delete"]


@pytest.mark.parametrize("typ, path, replaces", [
    # terraform-provider-aws eks/node_group.go: instance_types ForceNew, scaling_config updatable.
    ("aws:eks/nodeGroup:NodeGroup", "instanceTypes[0]", True),
    ("aws:eks/nodeGroup:NodeGroup", "scalingConfig.maxSize", False),
    # eks/cluster.go: vpc_config.subnet_ids is not ForceNew (UpdateClusterConfig).
    ("aws:eks/cluster:Cluster", "vpcConfig.subnetIds[0]", False),
    # pulumi-azure-native replacement.go: AgentPool vmSize force-new; ManagedCluster's agentPoolProfiles not.
    ("azure-native:containerservice:AgentPool", "vmSize", True),
    ("azure-native:containerservice:AgentPool", "maxCount", False),
    ("azure-native:containerservice:ManagedCluster", "agentPoolProfiles[1].vmSize", False),
    ("azure-native:containerservice:ManagedCluster", "agentPoolProfiles[0].name", False),
    ("azure-native:containerservice:ManagedCluster", "networkProfile.networkDataplane", True),
    # terraform-provider-google: node_locations, disk size/type and enable_private_nodes update in place;
    # master_ipv4_cidr_block, datapath_provider and shielded_instance_config are ForceNew.
    ("gcp:container/nodePool:NodePool", "nodeLocations[0]", False),
    ("gcp:container/nodePool:NodePool", "nodeConfig.diskSizeGb", False),
    ("gcp:container/nodePool:NodePool", "nodeConfig.diskType", False),
    ("gcp:container/nodePool:NodePool", "nodeConfig.shieldedInstanceConfig.enableSecureBoot", True),
    ("gcp:container/nodePool:NodePool", "nodeConfig.labels", False),
    ("gcp:container/cluster:Cluster", "privateClusterConfig.enablePrivateNodes", False),
    ("gcp:container/cluster:Cluster", "privateClusterConfig.masterIpv4CidrBlock", True),
    ("gcp:container/cluster:Cluster", "datapathProvider", True),
    # Whole-identity types: every input of an IAM member is ForceNew.
    ("gcp:projects/iAMMember:IAMMember", "role", True),
    ("azure-native:authorization:RoleAssignment", "principalId", True),
    # pulumi-kubernetes diff.go: metadata identity for every kind, apps/v1 selectors, Service clusterIP
    # (not clusterIPs), and a v1 PodDisruptionBudget updates (only policy/v1beta1 is listed).
    ("kubernetes:core/v1:ConfigMap", "metadata.name", True),
    ("kubernetes:core/v1:ConfigMap", "metadata.namespaceX", False),
    ("kubernetes:apps/v1:Deployment", "spec.selector.matchLabels.app", True),
    ("kubernetes:apps/v1:Deployment", "spec.replicas", False),
    ("kubernetes:core/v1:Service", "spec.clusterIP", True),
    ("kubernetes:core/v1:Service", "spec.clusterIPs[0]", False),
    ("kubernetes:policy/v1:PodDisruptionBudget", "spec.minAvailable", False),
    ("kubernetes:apps/v1:StatefulSet", "spec.podManagementPolicy", True),
])
def test_replace_rules(typ, path, replaces):
    assert forces_replace(typ, path) is replaces


def test_a_declared_replace_on_changes_option_is_honoured():
    assert forces_replace("kubernetes:core/v1:ConfigMap", "data.x", declared=["data"])
    assert forces_replace("kubernetes:core/v1:ConfigMap", "data.x", declared=["*"])


def test_cost_delta_of_one_more_node_at_max_is_that_nodes_month():
    """The review's cost section, from the two sides' cost reports (no plan needed)."""
    from fleet.cost import stack_cost
    from fleetctl.diff import _cost_delta
    from fleet.spec import load_spec

    def report(max_nodes: int) -> dict:
        fleet = {"topology": "gcp", "clusters": [{"name": "gke", "cloud": "gcp", "region": "us-central1"}],
                 "pools": [{"name": "t4-spot", "cluster": "gke", "accelerator": "t4", "max_nodes": max_nodes},
                           {"name": "l4", "cluster": "gke", "accelerator": "l4", "max_nodes": 1}]}
        return stack_cost(load_spec(fleet, "test"), "gcp").to_dict()

    d = _cost_delta(report(2), report(3))
    node_month = catalog.monthly(0.2753)  # n1-standard-4 + T4 at spot: seed 002's ~$201
    assert d["delta"] == pytest.approx({"min": 0, "typical": node_month / 2, "max": node_month}, abs=0.01)
    assert [(p["pool"], p["status"]) for p in d["pools"]] == [("t4-spot", "changed")]
    gone = _cost_delta(report(2), None)
    assert gone["delta"]["max"] == pytest.approx(-report(2)["totals"]["max"])


def test_policy_section_reports_the_working_trees_violations(repo):
    dev = repo / "Pulumi.dev.yaml"
    dev.write_text(dev.read_text().replace("amd-mi300x", "amd-instinct"))
    result = diff_stack("dev", "main", repo=repo)
    pol = result.policy
    # No skip when the policy run goes missing: that is the regression this test exists for.
    assert pol["evaluated"], pol.get("reason")
    assert pol["base_evaluated"]
    text = render_markdown(result)
    assert f"{len(pol['violations'])} violation(s) at the working tree" in text
    rows = [ln for ln in text.split("#### Policy", 1)[1].split("####", 1)[0].splitlines() if ln.startswith("| ")]
    assert len(rows) == (1 + min(len(pol["violations"]), 50) if pol["violations"] else 0)


def _side(violations):
    from fleetctl.diff import Side

    return Side(label="x", tree=Path("."), plan={}, policy={"violations": violations}, policy_available=True)


def test_policy_results_mark_what_the_change_breaks_and_fixes():
    from fleetctl.diff import Side, _policy_summary

    keep = {"policy": "images-pinned", "level": "mandatory", "urn": "urn:a::x", "name": "x", "message": "m",
            "remediation": "pin it"}
    fixed = {**keep, "policy": "router-highly-available", "urn": "urn:a::router"}
    broken = {**keep, "policy": "default-deny-every-namespace", "urn": "urn:a::ns", "name": "ns",
              "message": "namespace 'x' | has no default-deny"}
    pol = _policy_summary(_side([keep, fixed]), _side([keep, broken]))
    assert [v["rule"] for v in pol["new"]] == ["default-deny-every-namespace"]
    assert [v["rule"] for v in pol["resolved"]] == ["router-highly-available"]
    no_eval = _policy_summary(_side([]), Side(label="x", tree=Path("."), plan={}))
    assert no_eval["evaluated"] is False and "policy_eval" in no_eval["reason"]


def test_verify_section_lists_the_working_trees_findings(repo):
    # An edit the verifier sees: the endpoint picker's Role loses the pods grant in the PR.
    src = repo / "components" / "inference_data.py"
    text = src.read_text()
    assert '"pods"' in text
    src.write_text(text.replace('"pods"', '"podz"', 1))
    result = diff_stack("dev", "main", repo=repo)
    ver = result.verify
    assert ver["evaluated"] and ver["base_evaluated"], ver.get("reason")
    new = [f for f in ver["new"] if f["check"] == "identity" and "pods.core" in f["problem"]]
    assert new, ver["new"]
    md = render_markdown(result)
    section = md.split("#### Verify", 1)[1].split("####", 1)[0]
    assert f"{len(ver['findings'])} finding(s) at the working tree; {len(ver['new'])} new" in section
    assert any("identity (new)" in ln and new[0]["object"] in ln for ln in section.splitlines())


def test_verify_summary_marks_new_and_resolved_findings():
    from fleetctl.diff import Side, _verify_summary

    def side(findings):
        return Side(label="x", tree=Path("."), plan={}, verify={"findings": findings})

    a = {"check": "routing", "cluster": "c", "object": "HTTPRoute/ns/a", "problem": "p", "fix": "f", "file": "x"}
    b = {**a, "object": "HTTPRoute/ns/b"}
    c = {**a, "check": "flows"}
    v = _verify_summary(side([a, b]), side([a, c]))
    assert v["new"] == [c] and v["resolved"] == [b]
    assert _verify_summary(side([]), Side(label="x", tree=Path("."), plan={}))["evaluated"] is False


# --- chart-rendered objects in the review ---------------------------------------------------------------

def _chart_changes(result, release: str):
    return [c for c in result.changes if c.name.startswith(f"{release}:")]


def test_a_chart_values_change_shows_as_the_objects_it_changes(repo):
    platform = repo / "components" / "platform.py"
    text = platform.read_text()
    old = '"env": {"ENABLE_GATEWAY_API_INFERENCE_EXTENSION": "true"}'
    assert old in text
    platform.write_text(text.replace(old, old[:-1] + ', "PILOT_TRACE_SAMPLING": "5"}'))
    result = diff_stack("dev", "main", repo=repo)
    assert result.find("local-platform-istiod", "kubernetes:helm.sh/v3:Release").action == "update"
    changed = {c.name: c for c in _chart_changes(result, "local-platform-istiod")}
    # istiod 1.28.5 renders its env into the Deployment and echoes its values into two ConfigMaps.
    assert sorted(changed) == ["local-platform-istiod:istio-system/istio-sidecar-injector",
                               "local-platform-istiod:istio-system/istiod", "local-platform-istiod:istio-system/values"]
    dep = changed["local-platform-istiod:istio-system/istiod"]
    assert (dep.type, dep.action) == ("kubernetes:apps/v1:Deployment", "update")
    assert any(p.new == "PILOT_TRACE_SAMPLING" and p.path.startswith("spec.template.spec.containers[0].env[")
               for p in dep.properties)
    assert not [c for c in result.changes if ":" in c.name and not c.name.startswith("local-platform-istiod:")]
    assert "- ~ **update** `kubernetes:apps/v1:Deployment` `local-platform-istiod:istio-system/istiod`" \
        in render_markdown(result)


def test_a_chart_bump_shows_as_the_objects_it_changes(repo, tmp_path, monkeypatch):
    import helm_python

    from fleetctl.charts import CHARTS_ENV, charts_dir

    cache = tmp_path / "charts"
    shutil.copytree(charts_dir(), cache)
    # keda 2.18.1 here is 2.18.0 packaged under the new version (`helm package --version`): what changes
    # is what a version bump alone changes, the chart label on every object the chart renders.
    helm_python.expand(tmp_path / "src", cache / "keda-2.18.0.tgz")
    helm_python.package(tmp_path / "src" / "keda", destination=cache, version="2.18.1")
    monkeypatch.setenv(CHARTS_ENV, str(cache))
    pins = repo / "components" / "platform_versions.py"
    text = pins.read_text()
    assert '"keda", "https://kedacore.github.io/charts", "2.18.0"' in text
    pins.write_text(text.replace('"keda", "https://kedacore.github.io/charts", "2.18.0"',
                                 '"keda", "https://kedacore.github.io/charts", "2.18.1"'))
    result = diff_stack("dev", "main", repo=repo)
    release = result.find("local-platform-keda", "kubernetes:helm.sh/v3:Release")
    assert [(p.path, p.old, p.new) for p in release.properties] == [("version", "2.18.0", "2.18.1")]
    objects = _chart_changes(result, "local-platform-keda")
    assert len(objects) > 10 and {c.action for c in objects} == {"update"}
    for c in objects:
        assert ('metadata.labels["helm.sh/chart"]', "keda-2.18.0", "keda-2.18.1") in \
            [(p.path, p.old, p.new) for p in c.properties], c.name
    assert not [c for c in result.changes if ":" in c.name and not c.name.startswith("local-platform-keda:")]
