"""What Prometheus scrapes and alerts on in one cluster, and the Grafana dashboards it shows.

Prometheus and Grafana themselves come from the platform layer (kube-prometheus-stack); this
component only declares prometheus-operator objects and dashboard ConfigMaps, all in the
monitoring namespace, so they exist exactly when monitoring is enabled:

* a ServiceMonitor for the router's admin port (cluster that hosts the router);
* PodMonitors for the model servers (vLLM, or the simulator in dev: same port, same metric names),
  the endpoint pickers and, where NVIDIA pools run, DCGM's exporter;
* a PrometheusRule with seed 000's alerts and the cost recording rules (components/alerts.py);
* dashboards from components/dashboards/*.json, labelled for Grafana's sidecar.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_kubernetes as k8s

from components import alerts
from components.namespaces import Namespaces
from fleet import layout
from fleet.clusterplan import ClusterPlan

DASHBOARDS = Path(__file__).resolve().parent / "dashboards"
SCRAPE_INTERVAL = "15s"
GRAFANA_DASHBOARD_LABEL = ("grafana_dashboard", "1")
"""The label kube-prometheus-stack's Grafana sidecar looks for on ConfigMaps."""
PROMETHEUS_SELECTOR_LABELS = {"release": "kube-prometheus-stack"}
"""kube-prometheus-stack's Prometheus picks up monitors and rules carrying its release label."""

# Pod labels copied onto every scraped series, so dashboards can group by pool, vendor and model.
POD_LABELS_TO_TARGET = {
    layout.POOL_LABEL: "pool",
    layout.VENDOR_LABEL: "vendor",
    layout.MODEL_LABEL: "model",
}


def _relabelings() -> list[dict[str, str]]:
    def meta(label: str) -> str:
        return "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in label)

    return [{"sourceLabels": [meta(src)], "targetLabel": dst, "action": "replace"}
            for src, dst in POD_LABELS_TO_TARGET.items()]


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


@dataclass
class MonitoringArgs:
    plan: ClusterPlan
    namespaces: Namespaces


class Monitoring(pulumi.ComponentResource):
    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:monitoring:Monitoring", name, None, opts)
        ns = layout.NS_MONITORING
        labels = {**layout.COMMON_LABELS, **PROMETHEUS_SELECTOR_LABELS}
        child = pulumi.ResourceOptions(parent=self)
        has_pools = bool(args.plan.pools)
        self.monitors: list[pulumi.CustomResource] = []

        def meta(obj_name: str, extra: dict[str, str] | None = None) -> dict:
            return {"name": obj_name, "namespace": ns, "labels": {**labels, **(extra or {})}}

        def add(kind: str, obj_name: str, spec: dict) -> None:
            self.monitors.append(k8s.apiextensions.CustomResource(
                f"{name}-{obj_name}",
                api_version="monitoring.coreos.com/v1",
                kind=kind,
                metadata=meta(obj_name),
                spec=spec,
                opts=child,
            ))

        if args.plan.hosts_router:
            add("ServiceMonitor", "fleet-router", {
                "namespaceSelector": {"matchNames": [layout.NS_ROUTER]},
                "selector": {"matchLabels": {layout.APP: layout.APP_ROUTER,
                                             layout.COMPONENT: layout.COMPONENT_ROUTER}},
                "endpoints": [{"port": "admin", "path": "/metrics", "interval": SCRAPE_INTERVAL,
                               "scheme": "http"}],
            })
        if has_pools:
            add("PodMonitor", "model-servers", {
                "namespaceSelector": {"matchNames": [layout.NS_INFERENCE]},
                "selector": {"matchLabels": {layout.COMPONENT: layout.COMPONENT_MODEL_SERVER}},
                "podMetricsEndpoints": [{"portNumber": layout.VLLM_PORT, "path": "/metrics",
                                         "interval": SCRAPE_INTERVAL, "relabelings": _relabelings()}],
            })
            add("PodMonitor", "endpoint-pickers", {
                "namespaceSelector": {"matchNames": [layout.NS_INFERENCE]},
                "selector": {"matchLabels": {layout.COMPONENT: layout.COMPONENT_EPP}},
                "podMetricsEndpoints": [{"portNumber": layout.EPP_METRICS_PORT, "path": "/metrics",
                                         "interval": SCRAPE_INTERVAL, "relabelings": _relabelings()}],
            })
        if "nvidia" in args.plan.vendors and args.plan.cloud != "local":
            add("PodMonitor", "dcgm-exporter", {
                "namespaceSelector": {"matchNames": [alerts.DCGM_EXPORTER["namespace"]]},
                "selector": {"matchLabels": dict(alerts.DCGM_EXPORTER["labels"])},
                "podMetricsEndpoints": [{"portNumber": alerts.DCGM_EXPORTER["port"], "path": "/metrics",
                                         "interval": SCRAPE_INTERVAL}],
            })

        self.rules = k8s.apiextensions.CustomResource(
            f"{name}-fleet-rules",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata=meta("fleet-router"),
            spec={"groups": alerts.RULE_GROUPS},
            opts=child,
        )

        self.dashboards: list[k8s.core.v1.ConfigMap] = []
        for path in dashboard_files():
            # Re-serialised compactly and sorted: the ConfigMap is byte-stable whatever the editor did.
            body = json.dumps(json.loads(path.read_text()), sort_keys=True, separators=(",", ":"))
            self.dashboards.append(k8s.core.v1.ConfigMap(
                f"{name}-dashboard-{path.stem}",
                metadata=meta(f"dashboard-{path.stem}", {GRAFANA_DASHBOARD_LABEL[0]: GRAFANA_DASHBOARD_LABEL[1]}),
                data={path.name: body},
                opts=child,
            ))
        self.register_outputs({})
