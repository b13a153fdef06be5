"""Queue-depth autoscaling for one model server with KEDA.

The signal is vLLM's own queue, ``vllm:num_requests_waiting``, summed over the model's servers on
the pool and compared per replica (``AverageValue``): CPU says nothing about an accelerator-bound
server. Bounds come from the model's ``min_replicas`` / ``max_replicas``. Where ``min_replicas`` is
0 the model scales to zero, and a second trigger on the endpoint picker's request counters (its
error counter counts the requests it fails while no server is up) wakes it; the accelerator node pool, at ``min_nodes:
0``, follows the pending pod up and its autoscaler removes the idle node after the pod is gone.

Labels ``pool`` and ``model`` on the series come from the PodMonitor's relabelling of the pod labels
(components/monitoring.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components import inference_data as data
from fleet import layout
from fleet.spec import ModelSpec, PoolSpec


def queue_query(model: ModelSpec, pool: PoolSpec) -> str:
    return (f'sum({data.QUEUE_METRIC}{{namespace="{layout.NS_INFERENCE}",pool="{pool.name}",'
            f'model="{model.slug}"}}) or vector(0)')


def demand_query(model: ModelSpec, pool: PoolSpec) -> str:
    """Requests per second the picker saw for this model: served ones and, at zero servers, the ones it
    had to fail (``data.DEMAND_METRICS``)."""
    sel = f'{{namespace="{layout.NS_INFERENCE}",pool="{pool.name}",model_name="{model.name}"}}'
    return " + ".join(f"(sum(rate({metric}{sel}[2m])) or vector(0))" for metric in data.DEMAND_METRICS)


def queue_triggers(model: ModelSpec, pool: PoolSpec) -> list[dict[str, Any]]:
    """The ScaledObject's KEDA triggers."""
    triggers = [{
        "type": "prometheus",
        "name": "queue-depth",
        "metricType": "AverageValue",
        "metadata": {
            "serverAddress": data.PROMETHEUS_URL,
            "query": queue_query(model, pool),
            "threshold": str(data.QUEUE_TARGET_PER_REPLICA),
        },
    }]
    if model.min_replicas == 0:
        triggers.append({
            "type": "prometheus",
            "name": "demand",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": data.PROMETHEUS_URL,
                "query": demand_query(model, pool),
                # Requests per second per replica; any demand at all activates the model from zero.
                "threshold": "1",
                "activationThreshold": "0",
            },
        })
    return triggers


@dataclass
class QueueAutoscalerArgs:
    model: ModelSpec
    pool: PoolSpec
    target: str
    """Name of the Deployment to scale (same namespace)."""


class QueueAutoscaler(pulumi.ComponentResource):
    def __init__(self, name: str, args: QueueAutoscalerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("fleet:inference:QueueAutoscaler", name, None, opts)
        model = args.model
        self.scaled_object = k8s.apiextensions.CustomResource(
            f"{name}-scaledobject",
            api_version="keda.sh/v1alpha1",
            kind="ScaledObject",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=args.target, namespace=layout.NS_INFERENCE,
                labels={**layout.COMMON_LABELS, layout.COMPONENT: "autoscaler",
                        layout.MODEL_LABEL: model.slug, layout.POOL_LABEL: args.pool.name}),
            spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": args.target},
                "minReplicaCount": model.min_replicas,
                "maxReplicaCount": model.max_replicas,
                "pollingInterval": data.POLLING_INTERVAL_S,
                "cooldownPeriod": data.COOLDOWN_S,
                # Prometheus unreachable: hold the floor rather than scale a serving model away.
                "fallback": {"failureThreshold": 3, "replicas": max(1, model.min_replicas)},
                "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {
                    # Up fast (a queue is users waiting), down one replica at a time.
                    "scaleUp": {"stabilizationWindowSeconds": 0,
                                "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
                    "scaleDown": {"stabilizationWindowSeconds": 300,
                                  "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]},
                }}},
                "triggers": queue_triggers(model, args.pool),
            },
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({"target": args.target})
