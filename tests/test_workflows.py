"""The GitHub workflows: valid Actions YAML, every action pinned, previews for every stack (forks
included), credentials by OIDC only, `pulumi up` only for stacks that opt in."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from conftest import ROOT, SHIPPED_STACKS

WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
SHA = re.compile(r"^[0-9a-f]{40}$")
EXACT_TAG = re.compile(r"^v?\d+\.\d+\.\d+$")
ALL_STACKS = set(SHIPPED_STACKS)
"""What the offline review plans: every stand-alone stack, and each stack set as one (multicloud)."""
DEPLOYABLE = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in ROOT.glob("Pulumi.*.yaml"))
"""What Pulumi previews and deploys: every stack file, a stack set's parts each on its own."""
CLOUD_STACKS = {s for s in DEPLOYABLE if s != "dev"}


def _load(name: str) -> dict[str, Any]:
    # PyYAML reads the key `on` as True (YAML 1.1); put it back.
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    if True in doc:
        doc["on"] = doc.pop(True)
    return doc


def _steps(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for job_name, job in doc["jobs"].items():
        for step in job.get("steps", []):
            yield job_name, step


def _uses(doc: dict[str, Any], action: str) -> list[tuple[str, dict[str, Any]]]:
    return [(j, s) for j, s in _steps(doc) if s.get("uses", "").split("@")[0].lower() == action.lower()]


def test_the_workflows_exist():
    assert {p.name for p in FILES} >= {"test.yml", "preview.yml", "preview-comment.yml", "up.yml", "up-stack.yml", "drift.yml"}


def test_workflows_are_valid_github_actions_yaml():
    """check-jsonschema's vendored GitHub workflow schema (actionlint cannot be installed here)."""
    import check_jsonschema  # noqa: F401 - pinned in requirements: missing is a failure, not a skip
    proc = subprocess.run(
        [str(Path(os.sys.executable).parent / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
         *map(str, FILES)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_or_an_exact_version(path):
    text = path.read_text()
    refs = re.findall(r"^\s*(?:-\s+)?uses:\s*(\S+)(.*)$", text, re.M)
    assert refs
    for ref, comment in refs:
        if ref.startswith("./"):
            continue
        if ref.startswith("docker://"):
            assert "@sha256:" in ref, ref
            continue
        action, _, version = ref.partition("@")
        assert SHA.match(version) or EXACT_TAG.match(version), f"{ref}: pin a full commit SHA or vX.Y.Z"
        if SHA.match(version):
            # Dependabot and reviewers read the version from the comment beside the SHA.
            assert re.match(r"\s*#\s*v\d+\.\d+\.\d+\s*$", comment), f"{ref}: add '# vX.Y.Z'"


def test_the_same_action_is_pinned_to_the_same_commit_everywhere():
    pins: dict[str, set[str]] = {}
    for path in FILES:
        for ref in re.findall(r"uses:\s*(\S+)", path.read_text()):
            action, _, version = ref.partition("@")
            pins.setdefault(action.lower(), set()).add(version)
    assert {a: v for a, v in pins.items() if len(v) > 1} == {}


def test_test_workflow_runs_make_test():
    doc = _load("test.yml")
    runs = [s["run"] for _, s in _steps(doc) if "run" in s]
    assert any(re.match(r"^make test\b", r.strip()) for r in runs)
    assert {"push", "pull_request"} <= set(doc["on"])


def test_every_workflow_starts_from_read_only_permissions():
    for path in FILES:
        assert _load(path.name)["permissions"] == {"contents": "read"}, path.name


def test_preview_diffs_every_stack_offline_without_secrets():
    doc = _load("preview.yml")
    job = doc["jobs"]["offline-diff"]
    assert set(job["strategy"]["matrix"]["stack"]) == ALL_STACKS, "a new stack file needs a row in the preview matrix"
    assert "multicloud" in ALL_STACKS and "multicloud.router" not in ALL_STACKS  # the set, reviewed whole
    text = yaml.safe_dump(job)
    assert "secrets." not in text and "id-token" not in text
    assert "permissions" not in job  # the workflow's read-only token: safe for forks' code
    diff_step = next(s for s in job["steps"] if "fleet diff" in s.get("run", ""))
    assert re.search(r'python -m fleet diff --stack "\$STACK" --base "\$base" --out diff\.md', diff_step["run"])
    assert 'git merge-base "origin/$BASE_REF" HEAD' in diff_step["run"]
    assert diff_step["env"] == {"STACK": "${{ matrix.stack }}", "BASE_REF": "${{ github.base_ref }}"}
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0
    upload = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["if"] == "always()" and "diff.md" in upload["with"]["path"]


def test_offline_diff_is_commented_on_the_pr_without_running_pr_code():
    doc = _load("preview-comment.yml")
    assert doc["on"] == {"workflow_run": {"workflows": ["preview"], "types": ["completed"]}}
    job = doc["jobs"]["comment"]
    assert job["permissions"] == {"actions": "read", "pull-requests": "write"}
    uses = [s.get("uses", "").split("@")[0] for s in job["steps"]]
    assert "actions/checkout" not in uses and not any("run" in s for s in job["steps"])
    script = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/github-script@"))["with"]["script"]
    assert "<!-- fleet-diff:" in script and "updateComment" in script and "createComment" in script


def test_pulumi_preview_covers_the_cloud_stacks_with_policy_pack_and_pr_comment():
    doc = _load("preview.yml")
    job = doc["jobs"]["pulumi-preview"]
    assert {row["stack"] for row in job["strategy"]["matrix"]["include"]} == CLOUD_STACKS
    (_, step), = [(j, s) for j, s in _uses(doc, "pulumi/actions") if j == "pulumi-preview"]
    w = step["with"]
    assert w["command"] == "preview"
    assert w["policyPacks"] == "policies"
    assert w["comment-on-pr"] is True
    assert w["stack-name"].endswith("/${{ matrix.stack }}")
    assert job["if"] == "github.event.pull_request.head.repo.full_name == github.repository"


@pytest.mark.parametrize("name, job", [("preview.yml", "pulumi-preview"), ("up-stack.yml", "up"),
                                       ("drift.yml", "drift")])
def test_cloud_credentials_come_from_oidc_only(name, job):
    doc = _load(name)
    j = doc["jobs"][job]
    assert j["permissions"]["id-token"] == "write"
    steps = {s.get("uses", "").split("@")[0].lower(): s for s in j["steps"]}
    for action, needed in {
        "pulumi/auth-actions": {"organization"},
        "google-github-actions/auth": {"workload_identity_provider", "service_account"},
        "aws-actions/configure-aws-credentials": {"role-to-assume", "aws-region"},
        "azure/login": {"client-id", "tenant-id", "subscription-id"},
    }.items():
        assert needed <= set(steps[action]["with"]), action
    text = (WORKFLOWS / name).read_text()
    for long_lived in ("credentials_json", "aws-access-key-id", "aws-secret-access-key", "creds:",
                       "PULUMI_ACCESS_TOKEN", "secrets."):
        assert long_lived not in text, long_lived


def _clouds_of(stack: str) -> set[str]:
    """Read from the stack file (and a stack set's fleet file) here, not through the tool: a stand-alone
    stack signs in to its clusters' clouds, a set's cluster part to its cluster's, its router part to
    the router's cluster's (the kubeconfig runs that cloud's CLI for a token)."""
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    if "inference-fleet:stackSet" not in config:
        return {c["cloud"] for c in config["inference-fleet:fleet"]["clusters"]} - {"local"}
    fleet = yaml.safe_load((ROOT / "fleets" / f"{config['inference-fleet:stackSet']}.yaml").read_text())["fleet"]
    part = config["inference-fleet:part"].split()
    name = part[1] if part[0] == "cluster" else fleet["router"]["cluster"]
    return {c["cloud"] for c in fleet["clusters"] if c["name"] == name}


@pytest.mark.parametrize("name, job", [("preview.yml", "pulumi-preview"), ("drift.yml", "drift")])
def test_preview_and_drift_log_in_to_exactly_the_clouds_each_stack_uses(name, job):
    rows = {r["stack"]: r for r in _load(name)["jobs"][job]["strategy"]["matrix"]["include"]}
    for stack, row in rows.items():
        path = ROOT / f"Pulumi.{stack}.yaml"
        assert path.exists(), f"the {job} matrix names {stack}, which has no {path.name}"
        assert {c for c in ("gcp", "aws", "azure") if row[c]} == _clouds_of(stack), stack


@pytest.mark.parametrize("stack", DEPLOYABLE)
def test_up_logs_in_to_the_clouds_fleet_clouds_names(stack):
    """up-stack.yml's step runs `fleet clouds` for the stack it deploys; its lines go to $GITHUB_OUTPUT."""
    step = next(s for s in _load("up-stack.yml")["jobs"]["up"]["steps"] if s.get("id") == "clouds")
    assert step["run"] == '.venv/bin/python -m fleet clouds --stack "$STACK" >> "$GITHUB_OUTPUT"'
    proc = subprocess.run([os.sys.executable, "-m", "fleet", "clouds", "--stack", stack], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert {ln.split("=")[0] for ln in proc.stdout.splitlines() if ln == ln.split("=")[0] + "=true"} \
        == _clouds_of(stack) and len(proc.stdout.splitlines()) == len(_clouds_of(stack))


def _find_step(doc: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in doc["jobs"]["stacks"]["steps"] if s.get("id") == "find")


def _opted_in(root: Path) -> tuple[list[str], list[str]]:
    """(first round, router parts) of the stacks that opt in, from a YAML parse."""
    out: tuple[list[str], list[str]] = ([], [])
    for path in sorted(root.glob("Pulumi.*.yaml")):
        config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
        if config.get("inference-fleet:deployOnMerge") is True:
            out[config.get("inference-fleet:part") == "router"].append(path.name[len("Pulumi."):-len(".yaml")])
    return sorted(out[0]), sorted(out[1])


@pytest.mark.parametrize("case", ["shipped", "none", "one-of-two", "set"])
def test_up_on_merge_deploys_exactly_the_stacks_that_opt_in(case, tmp_path):
    """Run the workflow's own discovery script (with the shell flags Actions uses) on stack files and
    compare with a YAML parse."""
    import json
    import shutil

    if shutil.which("jq") is None:
        pytest.skip("jq (preinstalled on GitHub runners) is not on this machine")
    root = ROOT
    if case != "shipped":
        root = tmp_path
        base = {"config": {"inference-fleet:fleet": {"topology": "dev"}}}
        (root / "Pulumi.a.yaml").write_text(yaml.safe_dump(base))
        opted = {"config": {**base["config"], "inference-fleet:deployOnMerge": case == "one-of-two"}}
        (root / "Pulumi.b.yaml").write_text(yaml.safe_dump(opted) + "# deployOnMerge: true (a comment)\n")
        if case == "set":  # a stack set: its router part goes second, its cluster parts first
            for part in ("cluster x", "router"):
                doc = {"config": {"inference-fleet:deployOnMerge": True, "inference-fleet:stackSet": "s",
                                  "inference-fleet:part": part}}
                (root / f"Pulumi.s.{part.split()[-1]}.yaml").write_text(yaml.safe_dump(doc))
    out = tmp_path / "github_output"
    out.touch()
    proc = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", _find_step(_load("up.yml"))["run"]], cwd=root,
                          env={**os.environ, "GITHUB_OUTPUT": str(out)}, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    found = dict(line.partition("=")[::2] for line in out.read_text().splitlines())
    assert set(found) == {"stacks", "routers"}
    assert (json.loads(found["stacks"]), json.loads(found["routers"])) == _opted_in(root)
    if case == "one-of-two":
        assert json.loads(found["stacks"]) == ["b"] and json.loads(found["routers"]) == []
    if case == "set":
        assert json.loads(found["stacks"]) == ["s.x"] and json.loads(found["routers"]) == ["s.router"]
    if case == "shipped":
        assert json.loads(found["routers"]) == ["multicloud.router"]
        assert {"multicloud.aws-east", "multicloud.azure-east", "multicloud.gcp-central"} <= set(
            json.loads(found["stacks"]))


def test_up_runs_pulumi_up_with_the_policy_pack_behind_an_environment():
    doc = _load("up.yml")
    assert doc["on"]["push"] == {"branches": ["main"]}
    job = doc["jobs"]["up"]
    assert job["if"] == "needs.stacks.outputs.stacks != '[]'"
    assert job["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.stacks) }}"
    assert job["uses"] == "./.github/workflows/up-stack.yml" and job["with"] == {"stack": "${{ matrix.stack }}"}
    assert doc["concurrency"]["cancel-in-progress"] is False
    stack = _load("up-stack.yml")
    assert stack["on"] == {"workflow_call": {"inputs": {"stack": {
        "description": "the stack to deploy (Pulumi.<stack>.yaml)", "required": True, "type": "string"}}}}
    assert stack["jobs"]["up"]["environment"] == "stack-${{ inputs.stack }}"
    ((_, step),) = _uses(stack, "pulumi/actions")
    assert step["with"]["command"] == "up"
    assert step["with"]["policyPacks"] == "policies"
    assert step["with"]["stack-name"] == "${{ vars.PULUMI_ORG }}/${{ inputs.stack }}"


def test_a_stack_sets_router_deploys_after_every_other_stack_and_only_if_they_succeeded():
    doc = _load("up.yml")
    router = doc["jobs"]["up-router"]
    assert router["needs"] == ["stacks", "up"]
    assert router["strategy"]["matrix"]["stack"] == "${{ fromJSON(needs.stacks.outputs.routers) }}"
    assert router["uses"] == "./.github/workflows/up-stack.yml" and router["with"] == {"stack": "${{ matrix.stack }}"}
    condition = " ".join(router["if"].split())
    assert "needs.stacks.result == 'success'" in condition and "needs.stacks.outputs.routers != '[]'" in condition
    assert "(needs.up.result == 'success' || needs.up.result == 'skipped')" in condition
    # The caller grants what the called job needs (GitHub: a called workflow cannot raise it).
    for name in ("up", "up-router"):
        assert doc["jobs"][name]["permissions"] == {"contents": "read", "id-token": "write"}


# Which job can reach which cloud identity: the role variables a job names, by purpose. A PR's
# preview must only ever see read-only identities; deploy identities only inside the reviewed
# `stack-*` environments (whose variables no other job can read), drift's only inside `drift`.
ROLE_VARS = re.compile(r"vars\.((?:GCP|AWS|AZURE)_(PREVIEW|DEPLOY|DRIFT)_\w+|PULUMI_(PREVIEW|DEPLOY|DRIFT)_TEAM)")


def _role_kinds(job: dict[str, Any]) -> set[str]:
    return {m.group(2) or m.group(3) for m in ROLE_VARS.finditer(yaml.safe_dump(job))}


@pytest.mark.parametrize("name, job, kind, environment", [
    ("preview.yml", "pulumi-preview", "PREVIEW", None),
    ("up-stack.yml", "up", "DEPLOY", "stack-${{ inputs.stack }}"),
    ("drift.yml", "drift", "DRIFT", "drift"),
])
def test_each_job_reaches_only_its_own_kind_of_role(name, job, kind, environment):
    j = _load(name)["jobs"][job]
    assert _role_kinds(j) == {kind}
    assert j.get("environment") == environment
    # The Pulumi token is scoped to a team, never the whole organisation.
    ((_, auth),) = [(n, s) for n, s in _uses({"jobs": {job: j}}, "pulumi/auth-actions")]
    assert auth["with"]["requested-token-type"] == "urn:pulumi:token-type:access_token:team"
    assert auth["with"]["scope"] == f"team:${{{{ vars.PULUMI_{kind}_TEAM }}}}"


def test_no_workflow_a_pull_request_triggers_can_name_a_deploy_role():
    for path in FILES:
        doc = _load(path.name)
        triggers = doc["on"] if isinstance(doc["on"], (dict, list)) else [doc["on"]]
        if not {"pull_request", "pull_request_target"} & set(triggers):
            continue
        for job_name, job in doc["jobs"].items():
            assert "DEPLOY" not in _role_kinds(job), (path.name, job_name)
            assert not str(job.get("environment", "")).startswith("stack-"), (path.name, job_name)


def test_up_refreshes_first_and_drift_is_checked_every_night():
    ((_, up),) = _uses(_load("up-stack.yml"), "pulumi/actions")
    assert up["with"]["refresh"] is True
    drift = _load("drift.yml")
    assert drift["on"]["schedule"]
    ((_, step),) = _uses(drift, "pulumi/actions")
    assert step["with"]["command"] == "preview"
    assert step["with"]["expect-no-changes"] is True and step["with"]["refresh"] is True
    rows = {r["stack"] for r in drift["jobs"]["drift"]["strategy"]["matrix"]["include"]}
    assert rows == CLOUD_STACKS
