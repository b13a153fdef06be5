"""Every Helm release the program declares, rendered by Helm (helm-python-sdk, Helm v4.2.3) from the
chart cache: the values it sets exist in the chart, no object has two owners in a cluster, every
rendered object is written and listed by release, and a missing chart is a clear error.

These tests need the chart cache (``../shared/charts`` or ``FLEET_CHARTS_DIR``): without it they fail,
unless ``FLEET_UPSTREAM_OFFLINE=1`` says the run has no upstream data (conftest.py counts what did not run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, SHIPPED_STACKS, needs_charts, plan_of
from fleetctl import charts
from fleetctl.plan import write_plan

pytestmark = needs_charts

CLOUD_STACKS = [s for s in SHIPPED_STACKS if s != "dev"]


def _release(plan, release: str, cluster: str | None = None):
    found = [rr for rr in plan.releases if rr.release == release and (cluster is None or rr.cluster == cluster)]
    assert found, f"no release {release} in stack {plan.stack}"
    return found[0]


def _record(plan, rr) -> dict:
    return next(r for r in plan.resources if r["urn"] == rr.urn)


# --- the values each release sets ---------------------------------------------------------------------

@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_every_release_of_every_stack_sets_only_values_its_chart_has(stack):
    plan = plan_of(stack)
    assert plan.releases, f"{stack} renders no Helm release"
    problems = [f"{rr.cluster}/{rr.release}: {p}" for rr in plan.releases for p in rr.values_problems]
    assert problems == []


def test_an_unknown_value_is_reported_by_its_path_top_level_and_in_a_subchart():
    plan = plan_of("dev")
    istiod = _record(plan, _release(plan, "istiod"))
    # istiod 1.28.5 has no `pilot` (its container env is `env`): the key the program used to set.
    bad = {**istiod, "inputs": {**istiod["inputs"], "values": {"pilot": {"env": {"X": "1"}}, "env": {"Y": "2"}}}}
    assert charts.values_problems(bad) == ["pilot: not a value of chart istiod 1.28.5 (values.yaml)"]

    kps = _record(plan, _release(plan, "kube-prometheus-stack"))
    values = kps["inputs"]["values"]
    # grafana is a subchart (grafana 10.3.0): its values count under its key, and only there.
    sub = {**kps, "inputs": {**kps["inputs"], "values": {
        **values, "grafana": {"sidecar": {"dashboards": {"label": "x", "lable": "typo"}}}}}}
    assert charts.values_problems(sub) == [
        "grafana.sidecar.dashboards.lable: not a value of chart kube-prometheus-stack 79.12.0 (values.yaml)"]


def test_a_value_the_chart_schema_rejects_is_reported_with_the_schema_message():
    plan = plan_of("dev")
    cm = _record(plan, _release(plan, "cert-manager"))
    bad = {**cm, "inputs": {**cm["inputs"], "values": {"crds": {"enabled": True, "keepp": True}}}}
    problems = charts.values_problems(bad)
    assert problems[0] == "crds.keepp: not a value of chart cert-manager v1.19.1 (values.yaml or values.schema.json)"
    assert "values.schema.json of cert-manager v1.19.1" in problems[1] and "keepp" in problems[1]


def test_maps_the_templates_iterate_over_take_any_key():
    # cluster-autoscaler 9.46.6 templates/deployment.yaml: `range $key, $value := .Values.extraArgs`;
    # a key under a map the chart merely documents (e.g. `image`) is still checked.
    c = charts.load_chart("cluster-autoscaler", "9.46.6")
    free = charts.free_form_paths(c.templates)
    assert "extraArgs" in free
    defaults = c.values
    assert charts.unknown_values({"extraArgs": {"expander": "least-waste"}}, defaults, None, free=free) == []
    assert charts.unknown_values({"image": {"tagg": "x"}}, defaults, None, free=free) == ["image.tagg"]


# --- one owner per object ---------------------------------------------------------------------------

@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_no_object_has_two_owners_in_any_cluster(stack):
    plan = plan_of(stack)
    assert charts.owners(plan.resources, plan.manifests, plan.releases) == []


def test_one_owner_check_catches_kserve_rendering_the_inference_extension_crds():
    """kserve-llmisvc-resources v0.19.0 renders the GAIE CRDs itself while `kserve.llmisvc.createGIECRDs`
    is true (its values.yaml default), which the inference-extension bundle (GAIE v1.5.0
    manifests.yaml: config/crd's four CRDs) already installs: Helm would refuse to adopt them."""
    plan = plan_of("dev")
    rr = _release(plan, "kserve-llmisvc")
    record = _record(plan, rr)
    values = json.loads(json.dumps(record["inputs"]["values"]))
    values["kserve"]["llmisvc"]["createGIECRDs"] = True
    resources = [dict(r, inputs={**r["inputs"], "values": values}) if r["urn"] == rr.urn else r
                 for r in plan.resources]
    found = charts.owners(resources, plan.manifests, charts.render_releases(resources, plan.spec))
    gaie = ["inferencemodelrewrites.inference.networking.x-k8s.io", "inferenceobjectives.inference.networking.x-k8s.io",
            "inferencepoolimports.inference.networking.x-k8s.io", "inferencepools.inference.networking.k8s.io"]
    assert [next(n for n in gaie if f" {n} " in line) for line in found] == gaie
    for line in found:
        assert "CRD bundle local-platform-inference-extension-crds" in line
        assert "chart kserve-llmisvc-resources v0.19.0 (release kserve-llmisvc" in line


def test_one_owner_check_sees_a_component_object_a_chart_also_renders():
    plan = plan_of("dev")
    rr = _release(plan, "istiod")
    sa = next(o["object"] for o in rr.objects if o["object"]["kind"] == "ServiceAccount")
    manifests = {**plan.manifests, f"{rr.cluster}/ServiceAccount_x.yaml": sa}
    (line,) = charts.owners(plan.resources, manifests, plan.releases)
    assert f"ServiceAccount {sa['metadata']['namespace']}/{sa['metadata']['name']} has 2 owners" in line
    assert "component object" in line and "chart istiod 1.28.5" in line


# --- rendering: what each release installs -------------------------------------------------------------

@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_each_release_renders_with_its_clusters_kubernetes_version(stack):
    plan = plan_of(stack)
    versions = {c.name: c.kubernetes_version for c in plan.spec.clusters}
    by_urn = {r["urn"]: r for r in plan.resources}
    for rr in plan.releases:
        node = by_urn[_record(plan, rr)["provider"]]
        while node["name"] not in versions:
            node = by_urn[node["parent"]]
        assert rr.kube_version == f"v{versions[node['name']]}.0", rr.release


def test_render_passes_release_name_namespace_values_and_kube_version(tmp_path, monkeypatch):
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text("greeting: hello\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data:\n  ns: {{ .Release.Namespace }}\n  kube: {{ .Capabilities.KubeVersion.Version }}\n"
        "  greeting: {{ .Values.greeting }}\n  install: {{ .Release.IsInstall | quote }}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: t\n  annotations: {helm.sh/hook: test}\n")
    import helm_python

    helm_python.package(chart, destination=tmp_path)
    monkeypatch.setenv(charts.RENDER_CACHE_ENV, "off")
    items = charts.render("probe", "0.1.0", {"greeting": "hi"}, "rel", "space", "v1.33.0", where=tmp_path)
    assert [i["object"]["kind"] for i in items] == ["ConfigMap"]  # `helm install` never creates test hooks
    assert items[0]["object"]["metadata"]["name"] == "rel"
    assert items[0]["object"]["data"] == {"ns": "space", "kube": "v1.33.0", "greeting": "hi", "install": "true"}


def _probe_chart(tmp_path, greeting_default: str, where) -> None:
    import helm_python

    chart = tmp_path / f"src-{greeting_default}" / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (chart / "values.yaml").write_text(f"greeting: {greeting_default}\nextra: {{}}\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}\n"
        "data:\n  greeting: {{ .Values.greeting }}\n")
    helm_python.package(chart, destination=where)


def test_renders_and_values_checks_are_cached_by_the_chart_archive_digest(tmp_path, monkeypatch):
    """A warm plan reads each release's render and values check back without loading the chart; the
    same chart name and version with other bytes (a re-pulled or repackaged archive) renders again."""
    where = tmp_path / "charts"
    where.mkdir()
    _probe_chart(tmp_path, "hello", where)
    monkeypatch.setenv(charts.RENDER_CACHE_ENV, str(tmp_path / "cache"))
    record = {"inputs": {"chart": "probe", "version": "0.1.0", "values": {"greetin": "typo"}}}
    first = charts.render("probe", "0.1.0", {}, "rel", "ns", "v1.33.0", where=where)
    assert first[0]["object"]["data"] == {"greeting": "hello"}
    assert charts.values_problems(record, where) == ["greetin: not a value of chart probe 0.1.0 (values.yaml)"]

    monkeypatch.setattr(charts, "_MEMO", {})  # a new process: only the on-disk cache is left
    monkeypatch.setattr(charts, "load_chart", lambda *a, **k: pytest.fail("a warm render loaded the chart"))
    assert charts.render("probe", "0.1.0", {}, "rel", "ns", "v1.33.0", where=where) == first
    assert charts.values_problems(record, where) == ["greetin: not a value of chart probe 0.1.0 (values.yaml)"]
    monkeypatch.undo()

    monkeypatch.setenv(charts.RENDER_CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(charts, "_MEMO", {})
    monkeypatch.setattr(charts, "_CHARTS", {})
    (where / "probe-0.1.0.tgz").unlink()
    _probe_chart(tmp_path, "bonjour", where)
    again = charts.render("probe", "0.1.0", {}, "rel", "ns", "v1.33.0", where=where)
    assert again[0]["object"]["data"] == {"greeting": "bonjour"}


def test_chart_secrets_are_masked_so_plans_do_not_change_run_to_run(monkeypatch):
    """grafana 10.3.0 (kube-prometheus-stack 79.12.0) generates its admin password per render
    (templates/_helpers.tpl, randAlphaNum 40): two cold renders differ unless the plan masks chart
    Secrets as it masks the program's."""
    from fleetctl.plan import SECRET

    monkeypatch.setenv(charts.RENDER_CACHE_ENV, "off")
    plan = plan_of("dev")
    rr = _release(plan, "kube-prometheus-stack")
    values = _record(plan, rr)["inputs"]["values"]
    renders = []
    for _ in range(2):
        monkeypatch.setattr(charts, "_MEMO", {})
        items = charts.render(rr.chart, rr.version, values, rr.release, rr.namespace, rr.kube_version)
        renders.append([i["object"] for i in items if i["object"]["kind"] == "Secret"])
    grafana = next(o for o in renders[0] if o["metadata"]["name"].endswith("-grafana"))
    assert grafana["data"] == SECRET
    assert renders[0] == renders[1]


EXPECTED_WORKLOADS = {
    # release -> (kind, name) its chart renders with the program's values (read from each chart's
    # templates at the pinned version: cert-manager v1.19.1 deployment.yaml, istiod 1.28.5
    # deployment.yaml, keda 2.18.0 manager/deployment.yaml, kserve-llmisvc-resources v0.19.0
    # llmisvc/resources.yaml, nvidia-device-plugin 0.18.0 daemonset-device-plugin.yml, ROCm
    # gpu-operator-charts v1.4.0 deployment.yaml).
    "cert-manager": ("Deployment", "cert-manager"),
    "istiod": ("Deployment", "istiod"),
    "keda": ("Deployment", "keda-operator"),
    "kserve-llmisvc": ("Deployment", "llmisvc-controller-manager"),
    "nvidia-device-plugin": ("DaemonSet", "nvidia-device-plugin"),
    "amd-gpu-operator": ("Deployment", "amd-gpu-operator-gpu-operator-charts-controller-manager"),
}


@pytest.mark.parametrize("stack", CLOUD_STACKS)
def test_cloud_plans_include_the_objects_the_platform_charts_render(stack):
    plan = plan_of(stack)
    for cluster in plan.spec.clusters:
        vendors = {p.vendor for p in plan.spec.pools_in(cluster.name)}
        want = {"cert-manager", "istiod", "keda", "kserve-llmisvc"}
        if "amd" in vendors:
            want.add("amd-gpu-operator")
        if "nvidia" in vendors and cluster.cloud != "gcp":  # GKE installs the NVIDIA device plugin itself
            want.add("nvidia-device-plugin")
        rendered = {rr.release: rr for rr in plan.releases if rr.cluster == f"{cluster.name}-k8s"}
        for release in sorted(want):
            kind, name = EXPECTED_WORKLOADS[release]
            objs = {(o["object"]["kind"], o["object"]["metadata"]["name"]) for o in rendered[release].objects}
            assert (kind, name) in objs, f"{stack}/{cluster.name}: {release} renders no {kind} {name}"


def test_plan_writes_each_chart_object_under_cluster_and_release_and_lists_it(tmp_path):
    plan = plan_of("azure")
    write_plan(plan, tmp_path)
    doc = json.loads((tmp_path / "plan.json").read_text())
    listed = doc["charts"]["rendered"]
    assert [x["urn"] for x in listed] == [rr.urn for rr in plan.releases]
    amd = next(x for x in listed if x["release"] == "amd-gpu-operator")
    assert amd["chart"] == "gpu-operator-charts" and amd["version"] == "v1.4.0"
    # The chart's crds/ count: ROCm gpu-operator-charts v1.4.0 ships its CRDs there.
    crds = [o for o in amd["objects"] if o["template"].startswith("crds/")]
    assert {o["name"] for o in crds} >= {"deviceconfigs.amd.com"}
    for x in listed:
        for o in x["objects"]:
            assert o["file"].startswith(f"{x['cluster']}/{x['release']}/")
            on_disk = yaml.safe_load((tmp_path / "manifests" / o["file"]).read_text())
            assert (on_disk["kind"], on_disk["metadata"]["name"]) == (o["kind"], o["name"])
            assert on_disk["metadata"].get("namespace", "") == o["namespace"]


def test_namespaced_chart_objects_get_the_release_namespace():
    plan = plan_of("dev")
    rr = _release(plan, "keda")
    kinds = {o["object"]["kind"]: o["object"]["metadata"].get("namespace") for o in rr.objects}
    assert kinds["Deployment"] == rr.namespace
    assert kinds["ClusterRole"] is None and kinds["CustomResourceDefinition"] is None


# --- the command line ---------------------------------------------------------------------------------

def _fleet(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fleet", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_a_missing_chart_is_one_line_naming_chart_version_and_the_pull_command(tmp_path):
    proc = _fleet("plan", "--stack", "dev", "--out", str(tmp_path / "out"), env={charts.CHARTS_ENV: str(tmp_path)})
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: chart cert-manager v1.19.1 is not in the chart cache")
    assert "python -m fleet charts pull" in line


def test_no_charts_skips_rendering_and_says_so(tmp_path):
    proc = _fleet("plan", "--stack", "dev", "--no-charts", "--out", str(tmp_path),
                  env={charts.CHARTS_ENV: str(tmp_path / "none")})
    assert proc.returncode == 0, proc.stderr
    assert "Helm charts not rendered (--no-charts)" in proc.stdout
    assert "charts: not rendered (--no-charts)" in proc.stdout
    assert json.loads((tmp_path / "plan.json").read_text())["charts"]["rendered"] is None


def test_charts_list_shows_pinned_against_cached(tmp_path):
    (tmp_path / "keda-2.18.0.tgz").write_bytes((Path(charts.charts_dir()) / "keda-2.18.0.tgz").read_bytes())
    proc = _fleet("charts", "list", env={charts.CHARTS_ENV: str(tmp_path)})
    assert proc.returncode == 1  # some pinned chart is missing
    lines = proc.stdout.splitlines()
    assert any(line.split()[:3] == ["cached", "keda", "2.18.0"] for line in lines)
    assert any(line.split()[:3] == ["MISSING", "cert-manager", "v1.19.1"] for line in lines)
    assert len([line for line in lines if line.startswith("  ")]) == len(charts.pinned_charts())


def test_charts_pull_fails_clearly_when_a_repository_is_unreachable(tmp_path):
    # No chart repository is reachable from the test machine's sandbox; unreachable hosts (.invalid) make
    # the test independent of that.
    failed = charts.pull(tmp_path, [charts.Pin("x", "keda", "https://charts.example.invalid", "2.18.0"),
                                    charts.Pin("y", "cert-manager", "oci://registry.example.invalid/c", "v1.19.1")])
    assert [(p.chart, p.version) for p, _ in failed] == [("keda", "2.18.0"), ("cert-manager", "v1.19.1")]
    assert all("example.invalid" in err for _, err in failed)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left in the cache


# --- the rendered objects pass the checks the program's own objects pass --------------------------------

def _chart_crd_schemas(plan) -> dict:
    """(apiVersion, kind) -> schema of every CRD the plan's charts install: the pinned versions."""
    out = {}
    for o in plan.chart_objects("CustomResourceDefinition"):
        for v in o["spec"]["versions"]:
            if v.get("served", True) and "schema" in v:
                out[(f"{o['spec']['group']}/{v['name']}", o["spec"]["names"]["kind"])] = v["schema"]["openAPIV3Schema"]
    return out


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_every_chart_object_is_schema_valid(stack):
    """Core kinds against Kubernetes' OpenAPI (tests/schemas.py); custom kinds against the CRD the
    same plan installs at its pinned version where a chart ships it, else ../shared/crds."""
    import jsonschema

    import schemas

    plan = plan_of(stack)
    crds = _chart_crd_schemas(plan)
    problems = []
    for rr in plan.releases:
        for item in rr.objects:
            o = item["object"]
            key = (o.get("apiVersion"), o.get("kind"))
            if key in crds:
                v = jsonschema.Draft7Validator(schemas._strip_k8s_extensions(crds[key]))
                found = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(o)]
            else:
                found = schemas.validate_object(o)
            problems += [f"{item['path']}: {p}" for p in found]
    assert problems == []
