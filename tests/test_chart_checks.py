"""checkov and the policy pack over everything a stack puts in its clusters: the program's own
objects and every object its Helm releases render (fleetctl/charts.py).

The program's objects pass or carry a ``checkov.io/skipN: CKV_K8S_n=<reason>`` annotation. A chart
object passes, or is covered by an entry of components/chart_exemptions.py (the release, the chart
version its reason was read at, the object, the check and the reason); anything else fails. An
entry that matches no failure in any shipped stack fails too (stale), so the table never outlives
what it excuses.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from components import chart_exemptions
from conftest import ROOT, SHIPPED_STACKS, needs_charts, plan_of
from fleetctl import charts, policy_eval
from fleetctl.plan import write_plan


def _checkov() -> str | None:
    env = os.environ.get("FLEET_CHECKOV")
    if env:
        return env
    local = ROOT / ".venv-checkov" / "bin" / "checkov"
    return str(local) if local.exists() else shutil.which("checkov")


SKIP_ANNOTATION = re.compile(r"^checkov\.io/skip\d+$")
SKIP_VALUE = re.compile(r"^(CKV2?_K8S_\d+)=(.{20,})$")


def _chart_items(plan) -> dict[str, tuple]:
    """manifests/-relative path -> (release, object) of every chart object."""
    return {item["path"]: (rr, item["object"]) for rr in plan.releases or () for item in rr.objects}


@functools.lru_cache(maxsize=None)
def _checkov_failures(stack: str) -> tuple[tuple[str, str, str], ...]:
    """(manifests/-relative file, check id, check name) of every failed checkov check of the stack.

    One checkov run over the program's objects and the charts' together: CKV2_K8S_6 (a pod with no
    NetworkPolicy) is a graph check, and the policies that cover chart pods are the program's
    (components/network_policies.py). CustomResourceDefinitions are left out of the scan: no
    Kubernetes check of checkov 3.3.30 applies to that kind (each check's supported kinds), and they
    are most of the bytes (kube-prometheus-stack's CRDs alone are megabytes)."""
    checkov = _checkov()
    # `make test` builds .venv-checkov first: missing is a broken setup, a failure rather than a skip.
    assert checkov is not None, ("checkov not installed: `make test` builds .venv-checkov from "
                                 "requirements-checkov.lock (or set FLEET_CHECKOV)")
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"checkov-{stack}-") as tmp:
        write_plan(plan_of(stack), Path(tmp))
        for f in Path(tmp, "manifests").rglob("*.yaml"):
            if f.name.startswith("CustomResourceDefinition_"):
                f.unlink()
        result = subprocess.run(
            [checkov, "-d", str(Path(tmp, "manifests")), "--framework", "kubernetes", "--output", "json",
             "--quiet", "--compact", "--skip-download"],
            capture_output=True, text=True, timeout=600,
            env={**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"},
        )
    assert result.stdout.strip(), result.stderr[-2000:]
    reports = json.loads(result.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    return tuple(sorted({(f["file_path"].lstrip("/"), f["check_id"], f["check_name"])
                         for r in reports for f in r.get("results", {}).get("failed_checks", [])}))


def _uncovered(stack: str) -> tuple[list[str], set[tuple]]:
    """(failures nothing excuses, (exemption, object, check) used) for one stack."""
    plan = plan_of(stack)
    items = _chart_items(plan)
    bad, used = [], set()
    for path, check, name in _checkov_failures(stack):
        if path not in items:
            bad.append(f"{check} manifests/{path} (the program's object: fix it or annotate "
                       f"checkov.io/skipN: {check}=<reason>): {name}")
            continue
        rr, obj = items[path]
        e = charts.exemption(rr, obj, check)
        if e is None:
            bad.append(f"{check} {rr.release} {rr.version} {obj['kind']}/{obj['metadata']['name']} "
                       f"(manifests/{path}): {name}")
        else:
            used.add((e, f"{obj['kind']}/{obj['metadata']['name']}", check))
    return bad, used


def _policy(stack: str):
    return policy_eval.evaluate_all(plan_of(stack))


# --- checkov ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_program_skips_name_a_check_and_a_reason(stack):
    for obj in plan_of(stack).objects():
        for key, value in (obj["metadata"].get("annotations") or {}).items():
            if SKIP_ANNOTATION.match(key):
                assert SKIP_VALUE.match(value), f"{obj['kind']} {obj['metadata']['name']}: {key}={value!r} " \
                                                f"needs CKV_K8S_<n>=<a reason of 20+ characters>"


@needs_charts
@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_checkov_finds_no_failure_without_a_written_reason(stack):
    bad, _ = _uncovered(stack)
    assert bad == [], "\n".join(bad)


# --- the policy pack -----------------------------------------------------------------------------------

@needs_charts
@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_policy_pack_judges_chart_objects_and_only_exemptions_pass_them(stack):
    violations, exempted = _policy(stack)
    on_charts = [v for v in violations if "$kubernetes:helm.sh/" in v.urn]
    # Advisory too: a chart object's finding is fixed through values or exempted with a reason.
    assert on_charts == [], "\n".join(f"{v.level} {v.policy}: {v.name}: {v.message}" for v in on_charts)
    assert all(x.reason for x in exempted)


@needs_charts
def test_a_chart_object_the_pack_rejects_fails_the_plan_unless_exempted(monkeypatch):
    """A chart object breaking a mandatory rule is a mandatory violation of the plan (fleet plan exits 1),
    named as fleet diff names chart objects; an exemption moves it to `exempted` with its reason."""
    import dataclasses

    plan = plan_of("dev")
    rr = next(r for r in plan.releases if r.release == "cert-manager")
    item = next(i for i in rr.objects if i["object"]["kind"] == "Deployment")
    pod = item["object"]["spec"]["template"]["spec"]
    bad = {**item["object"], "spec": {**item["object"]["spec"], "template": {
        **item["object"]["spec"]["template"], "spec": {**pod, "hostNetwork": True}}}}
    broken = dataclasses.replace(rr, objects=[{**item, "object": bad}])
    releases = [broken if r is rr else r for r in plan.releases]
    violations, _ = policy_eval.evaluate_all(dataclasses.replace(plan, releases=releases))
    (v,) = [v for v in violations if v.policy == "no-host-access"]
    assert v.level == policy_eval.MANDATORY and v.message == "pod uses hostNetwork"
    assert v.name == f"{rr.name}:{rr.namespace}/{bad['metadata']['name']}" and v.type == "kubernetes:apps/v1:Deployment"

    entry = chart_exemptions.Exemption(rr.release, rr.version, (f"Deployment/{bad['metadata']['name']}",),
                                       ("no-host-access",), "a reason for the test")
    monkeypatch.setattr(chart_exemptions, "EXEMPTIONS", (*chart_exemptions.EXEMPTIONS, entry))
    violations, exempted = policy_eval.evaluate_all(dataclasses.replace(plan, releases=releases))
    assert [v for v in violations if v.policy == "no-host-access"] == []
    assert [(x.violation.policy, x.reason) for x in exempted if x.violation.name == v.name] == [
        ("no-host-access", f"a reason for the test (chart cert-manager {rr.version})")]


# --- the exemption table ------------------------------------------------------------------------------

def test_every_exemption_names_a_pinned_release_at_its_pinned_version_and_says_why():
    pins = {p.key: p.version for p in charts.pinned_charts()}
    for e in chart_exemptions.EXEMPTIONS:
        assert e.release in pins, f"{e.release}: not a pinned chart release"
        assert e.version == pins[e.release], (
            f"{e.release}: exemption read at {e.version}, chart pinned at {pins[e.release]}: re-read the reason "
            "at the new version and move the entry")
        assert e.objects and e.checks and len(e.reason) >= 40, e
        assert all(re.fullmatch(r"[A-Za-z]+/[a-z0-9.-]+", o) for o in e.objects), e.objects


@needs_charts
def test_no_exemption_is_stale():
    """Every (object, check) an entry lists still fails in some shipped stack, in checkov or the pack."""
    used: set[tuple] = set()
    for stack in SHIPPED_STACKS:
        used |= _uncovered(stack)[1]
        chart_of = {r["urn"]: r["chart"] for r in policy_eval.chart_records(plan_of(stack))}
        for x in _policy(stack)[1]:
            rr, obj = chart_of[x.violation.urn]
            e = charts.exemption(rr, obj, x.violation.policy)
            used.add((e, f"{obj['kind']}/{obj['metadata']['name']}", x.violation.policy))
    stale = [f"{e.release} {e.version} {obj} {check}: {e.reason[:60]}"
             for e in chart_exemptions.EXEMPTIONS for obj in e.objects for check in e.checks
             if (e, obj, check) not in used]
    assert stale == [], "exemptions that no longer match anything (drop them):\n" + "\n".join(stale)
