"""Monitoring as users see it: seed 000's alerts as written, cost recording rules, a dashboard the
Grafana sidecar loads, scrape targets for every exporter — and every PromQL expression parses and
reads only metrics that something really exports (checked against the router's and the simulator's
live ``/metrics``, and DCGM's published counter list)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import promql_parser
import pytest
import yaml

from conftest import ROOT, SHIPPED_STACKS, plan_of
from fleet import layout
from fleetctl.plan import run_plan

import schemas
from components import alerts
from components.monitoring import GRAFANA_DASHBOARD_LABEL, dashboard_files

# Grafana's own variables, replaced by what Grafana would send before the query is parsed.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def _monitoring_objects(plan, kind: str) -> list[dict]:
    return [o for o in plan.objects(kind) if o["metadata"].get("namespace") == layout.NS_MONITORING]


def _rules(plan) -> list[dict]:
    (rule,) = _monitoring_objects(plan, "PrometheusRule")
    return [r for g in rule["spec"]["groups"] for r in g["rules"]]


def _dashboard_exprs() -> list[tuple[str, str]]:
    out = []
    for path in dashboard_files():
        for panel in _panels(json.loads(path.read_text())):
            for target in panel.get("targets", []):
                expr = target["expr"]
                for var, value in GRAFANA_VARS.items():
                    expr = expr.replace(var, value)
                out.append((f"{path.name}: {panel['title']}", expr))
    return out


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for p in dashboard.get("panels", []):
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def _metric_names(node) -> set[str]:
    """Every metric a parsed PromQL expression selects."""
    if isinstance(node, promql_parser.VectorSelector):
        names = {node.name} if node.name else set()
        names |= {m.value for m in node.matchers.matchers if m.name == "__name__"}
        return names
    if isinstance(node, promql_parser.MatrixSelector):
        return _metric_names(node.vector_selector)
    if isinstance(node, promql_parser.Call):
        return set().union(*(_metric_names(a) for a in node.args)) if node.args else set()
    if isinstance(node, promql_parser.BinaryExpr):
        return _metric_names(node.lhs) | _metric_names(node.rhs)
    if isinstance(node, promql_parser.AggregateExpr):
        return _metric_names(node.expr) | (_metric_names(node.param) if node.param is not None else set())
    if isinstance(node, (promql_parser.ParenExpr, promql_parser.UnaryExpr, promql_parser.SubqueryExpr)):
        return _metric_names(node.expr)
    return set()


def _all_exprs() -> list[tuple[str, str]]:
    rules = [(r.get("alert") or r["record"], r["expr"]) for g in alerts.RULE_GROUPS for r in g["rules"]]
    return rules + _dashboard_exprs()


# --- what the rules say -------------------------------------------------------------------------

def test_seed_000_alerts_fire_on_the_seeds_thresholds(dev_plan):
    rules = {r["alert"]: r for r in _rules(dev_plan) if "alert" in r}
    sla, sat = rules["SLAViolation"], rules["VendorSaturation"]
    assert (sla["expr"], sla["for"], sla["labels"]["severity"]) == (
        "rate(ig_wva_sla_violations_total[5m]) > 0.01", "2m", "warning")
    assert (sat["expr"], sat["for"], sat["labels"]["severity"]) == (
        "avg(ig_wva_pool_utilization) by (vendor) > 0.9", "5m", "critical")
    assert sla["annotations"]["summary"] == "SLA violations detected in vendor routing"
    assert sat["annotations"]["summary"] == "{{ $labels.vendor }} pool approaching capacity"


def test_cost_per_million_tokens_is_recorded_per_pool_and_for_the_fleet(dev_plan):
    records = {r["record"]: r["expr"] for r in _rules(dev_plan) if "record" in r}
    assert "fleet:pool_cost_per_million_tokens:5m" in records
    assert "fleet:cost_per_million_tokens:5m" in records
    assert "1e6" in records["fleet:pool_cost_per_million_tokens:5m"]


def test_every_promql_expression_parses():
    exprs = _all_exprs()
    assert len(exprs) >= 10
    bad = []
    for where, expr in exprs:
        try:
            promql_parser.parse(expr)
        except Exception as e:  # the parser raises its own error types
            bad.append(f"{where}: {expr}: {e}")
    assert not bad, "\n".join(bad)


def test_metric_name_walker_sees_through_every_node_type():
    expr = ('histogram_quantile(0.9, sum by (le) (rate(a_bucket[5m]))) / on() group_left() '
            '(-(b) + max_over_time(c[10m:1m])) > bool topk(1, {__name__="d"})')
    assert _metric_names(promql_parser.parse(expr)) == {"a_bucket", "b", "c", "d"}


# --- what Kubernetes gets -----------------------------------------------------------------------

def test_dashboard_is_a_configmap_the_grafana_sidecar_loads(dev_plan):
    cms = [o for o in _monitoring_objects(dev_plan, "ConfigMap")
           if o["metadata"]["labels"].get(GRAFANA_DASHBOARD_LABEL[0]) == GRAFANA_DASHBOARD_LABEL[1]]
    assert len(cms) == len(dashboard_files()) >= 1
    for cm in cms:
        (body,) = cm["data"].values()
        dashboard = json.loads(body)
        titles = " | ".join(p["title"].lower() for p in _panels(dashboard))
        for topic in ("routing decisions", "ttft", "sla compliance", "utilization", "cost savings"):
            assert topic in titles, f"dashboard {dashboard['title']!r} has no {topic!r} panel"


def test_prometheus_scrapes_router_model_servers_and_endpoint_pickers(dev_plan):
    monitors = {o["metadata"]["name"]: o for o in _monitoring_objects(dev_plan, "ServiceMonitor")
                + _monitoring_objects(dev_plan, "PodMonitor")}
    router = monitors["fleet-router"]["spec"]
    assert router["namespaceSelector"]["matchNames"] == [layout.NS_ROUTER]
    assert router["selector"]["matchLabels"][layout.APP] == layout.APP_ROUTER
    assert router["endpoints"][0]["port"] == "admin"
    servers = monitors["model-servers"]["spec"]
    assert servers["selector"]["matchLabels"] == {layout.COMPONENT: layout.COMPONENT_MODEL_SERVER}
    assert servers["podMetricsEndpoints"][0]["portNumber"] == layout.VLLM_PORT
    epp = monitors["endpoint-pickers"]["spec"]
    assert epp["podMetricsEndpoints"][0]["portNumber"] == layout.EPP_METRICS_PORT


def test_dcgm_is_scraped_only_where_nvidia_gpus_run():
    for stack in SHIPPED_STACKS:
        plan = plan_of(stack)
        dcgm = [o for o in _monitoring_objects(plan, "PodMonitor") if o["metadata"]["name"] == "dcgm-exporter"]
        real_nvidia = {p.cluster for p in plan.spec.pools if p.vendor == "nvidia"
                       and plan.spec.cluster(p.cluster).cloud != "local"}
        if plan.spec.platform.monitoring:
            assert len(dcgm) == len(real_nvidia), stack


def test_the_dcgm_pod_monitor_selects_the_pods_the_chart_renders():
    # NVIDIA/dcgm-exporter chart 4.6.0 (tag 4.4.1-4.6.0, deployment/templates/_helpers.tpl and
    # daemonset.yaml): pods carry only selectorLabels — app.kubernetes.io/name (nameOverride or the
    # chart name "dcgm-exporter"), app.kubernetes.io/instance (the release name) and
    # app.kubernetes.io/component (the name again) — plus values.yaml `podLabels` ({}); the metrics
    # container port is values.yaml service.port (9400).
    for stack in ("aws", "azure", "gcp", "multicloud"):
        plan = plan_of(stack)
        monitors = {o["metadata"]["namespace"]: o for o in plan.objects("PodMonitor")
                    if o["metadata"]["name"] == "dcgm-exporter"}
        releases = [r for r in plan.resources
                    if r["type"] == "kubernetes:helm.sh/v3:Release" and r["inputs"]["chart"] == "dcgm-exporter"]
        assert releases and monitors, stack
        for r in releases:
            values = r["inputs"]["values"]
            name = values.get("nameOverride") or "dcgm-exporter"
            pod_labels = {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": r["inputs"]["name"],
                          "app.kubernetes.io/component": name, **values.get("podLabels", {})}
            for monitor in monitors.values():
                spec = monitor["spec"]
                assert spec["namespaceSelector"]["matchNames"] == [r["inputs"]["namespace"]]
                wanted = spec["selector"]["matchLabels"]
                assert wanted.items() <= pod_labels.items(), f"{stack}: {wanted} selects no dcgm-exporter pod"
                [endpoint] = spec["podMetricsEndpoints"]
                assert endpoint["portNumber"] == values.get("service", {}).get("port", 9400)


def test_monitoring_objects_are_absent_when_monitoring_is_off(tmp_path):
    doc = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    doc["config"]["inference-fleet:fleet"].setdefault("platform", {})["monitoring"] = False
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(yaml.safe_dump(doc))
    plan = run_plan("dev", config_file=path)
    kinds = {o["kind"] for o in plan.objects()}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule"}


@pytest.mark.parametrize("stack", SHIPPED_STACKS)
def test_monitoring_objects_match_the_prometheus_operator_crds(stack):
    schemas.require_crds()
    plan = plan_of(stack)
    objs = [o for k in ("ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap")
            for o in _monitoring_objects(plan, k)]
    problems = [p for o in objs for p in schemas.validate_object(o)]
    assert not problems, "\n".join(problems)


# --- every metric named is one something exports ----------------------------------------------

def _exported_names(text: str) -> set[str]:
    """Sample names a Prometheus text exposition can carry, from its samples and # TYPE lines."""
    names = set()
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"), "gauge": (), "untyped": (), "info": ("_info",)}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            names.update(name + s for s in suffixes.get(kind.strip(), ()))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live_metrics():
    """The dev fleet on loopback (`python -m fleet demo`), a few requests through it, then the
    router's and each simulator's /metrics; everything is stopped afterwards."""
    import openai
    import select

    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fleet", "demo", "--stack", "dev", "--port", str(port), "--api-key", "sk-metrics"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True)
    try:
        banner, deadline = "", time.monotonic() + 90
        while "ready:" not in banner:
            assert proc.poll() is None and time.monotonic() < deadline, f"demo did not start:\n{banner}"
            if select.select([proc.stdout], [], [], 1.0)[0]:
                # The raw fd, not readline(): a buffered read would hide lines from select().
                banner += os.read(proc.stdout.fileno(), 65536).decode(errors="replace")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-metrics", max_retries=0,
                               timeout=30)
        model = plan_of("dev").spec.models[0].name
        for headers in ({"X-Priority": "high"}, {"X-Cost-Tier": "standard"}, {}):
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                           max_tokens=4, extra_headers=headers)
            list(client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=4, stream=True, extra_headers=headers))
        urls = re.findall(r"(http://127\.0\.0\.1:\d+)\s+models:", banner)
        router_metrics = re.search(r"(http://127\.0\.0\.1:\d+/metrics)", banner).group(1)
        texts = {"router": urllib.request.urlopen(router_metrics, timeout=10).read().decode()}
        for i, base in enumerate(urls):
            texts[f"sim{i}"] = urllib.request.urlopen(f"{base}/metrics", timeout=10).read().decode()
        yield texts
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_every_metric_in_rules_and_dashboards_is_exported(live_metrics):
    exported = set().union(*(_exported_names(t) for t in live_metrics.values()))
    known = exported | alerts.DCGM_METRICS | alerts.recorded_series()
    missing = []
    for where, expr in _all_exprs():
        for name in sorted(_metric_names(promql_parser.parse(expr)) - known):
            missing.append(f"{where}: {name}")
    assert not missing, "not exported by the router, the simulator or DCGM:\n" + "\n".join(missing)


def test_seed_000_metric_names_are_on_the_routers_metrics_page(live_metrics):
    router = _exported_names(live_metrics["router"])
    for name in ("ig_wva_routing_decisions_total", "ig_wva_cost_savings_total", "ig_wva_sla_compliance_total",
                 "ig_wva_sla_violations_total", "ig_wva_pool_utilization"):
        assert name in router


def test_exposition_reader_knows_families_with_no_samples_yet():
    text = ("# HELP a_total x\n# TYPE a_total counter\n# TYPE b histogram\n"
            'b_bucket{le="1"} 0\n# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{m="x"} 0\n')
    names = _exported_names(text)
    assert {"a_total", "b_bucket", "b_count", "vllm:num_requests_waiting"} <= names
    assert "c" not in names
