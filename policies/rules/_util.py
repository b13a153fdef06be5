"""What every rule needs: walking Kubernetes workloads and cloud node pools in recorded props.

Props are the resource inputs with the wire (camelCase) names Pulumi records, the same in a real
``pulumi preview --policy-pack`` and in the offline plan (``fleetctl/policy_eval.py``).
"""

from __future__ import annotations

import re
from typing import Any, Iterator, Mapping

# The catalog (prices, machines, TPU topologies) is plain data in the program's own package, which
# the pack's entry point (policies/__main__.py) puts on the path for `pulumi preview --policy-pack`.
from fleet import catalog

WORKLOAD_KINDS = {
    "kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet", "kubernetes:apps/v1:DaemonSet",
    "kubernetes:batch/v1:Job", "kubernetes:core/v1:Pod",
}
ACCELERATOR_LABEL = f"{catalog.LABEL_PREFIX}/accelerator"
RESERVED_REASON = f"{catalog.LABEL_PREFIX}/reserved-reason"
WRITABLE_ROOT_REASON = f"{catalog.LABEL_PREFIX}/writable-root-reason"
SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|PASSWD|SECRET|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY)", re.I)


def pod_spec(resource_type: str, props: Mapping[str, Any]) -> tuple[dict, dict] | None:
    """(pod metadata, pod spec) of a workload, or None for other kinds."""
    if resource_type not in WORKLOAD_KINDS:
        return None
    if resource_type == "kubernetes:core/v1:Pod":
        return props.get("metadata") or {}, props.get("spec") or {}
    tmpl = ((props.get("spec") or {}).get("template")) or {}
    return tmpl.get("metadata") or {}, tmpl.get("spec") or {}


def containers(spec: Mapping[str, Any]) -> Iterator[dict]:
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def labels_of(meta: Mapping[str, Any]) -> dict:
    return dict(meta.get("labels") or {})


# --- cloud node pools, one shape ------------------------------------------------------------------

def node_pool(resource_type: str, props: Mapping[str, Any]) -> dict | None:
    """A cloud node pool in one shape: cloud, machine, spot, min/max nodes, labels, tags."""
    if resource_type == "gcp:container/nodePool:NodePool":
        nc = props.get("nodeConfig") or {}
        auto = props.get("autoscaling") or {}
        return {"cloud": "gcp", "machine": nc.get("machineType"),
                "spot": bool(nc.get("spot") or nc.get("preemptible")),
                "min": auto.get("totalMinNodeCount", auto.get("minNodeCount", props.get("nodeCount", 0))),
                "max": auto.get("totalMaxNodeCount", auto.get("maxNodeCount", props.get("nodeCount", 0))),
                "labels": dict(nc.get("labels") or {}), "tags": dict(nc.get("resourceLabels") or {}),
                "tpu_topology": (props.get("placementPolicy") or {}).get("tpuTopology")}
    if resource_type == "aws:eks/nodeGroup:NodeGroup":
        sc = props.get("scalingConfig") or {}
        types = props.get("instanceTypes") or [None]
        return {"cloud": "aws", "machine": types[0], "spot": props.get("capacityType") == "SPOT",
                "min": sc.get("minSize", 0), "max": sc.get("maxSize", 0),
                "labels": dict(props.get("labels") or {}), "tags": dict(props.get("tags") or {}),
                "tpu_topology": None}
    if resource_type == "azure-native:containerservice:AgentPool":
        return {"cloud": "azure", "machine": props.get("vmSize"), "spot": props.get("scaleSetPriority") == "Spot",
                "min": props.get("minCount", props.get("count", 0)), "max": props.get("maxCount", props.get("count", 0)),
                "labels": dict(props.get("nodeLabels") or {}), "tags": dict(props.get("tags") or {}),
                "tpu_topology": None}
    return None


def accelerator_pool(resource_type: str, props: Mapping[str, Any]) -> dict | None:
    """A node pool that carries accelerators (it has the catalog's accelerator label)."""
    pool = node_pool(resource_type, props)
    if pool is None or ACCELERATOR_LABEL not in pool["labels"]:
        return None
    pool["accelerator"] = pool["labels"][ACCELERATOR_LABEL]
    return pool


def machine_of(pool: dict) -> catalog.MachineType | None:
    try:
        acc = catalog.accelerator(pool["accelerator"])
    except catalog.CatalogError:
        return None
    return next((m for m in acc.machines_on(pool["cloud"]) if m.name == pool["machine"]), None)


def max_monthly_usd(pool: dict) -> float | None:
    m = machine_of(pool)
    if m is None:
        return None
    return catalog.monthly(m.price.hourly(pool["spot"])) * float(pool["max"] or 0)


def reserved_reason(pool: dict) -> str | None:
    return pool["labels"].get(RESERVED_REASON) or pool["tags"].get(RESERVED_REASON)
